"""HDF5 chunks filtered in threads: the bytes HDF5's own pipeline writes, made off its lock.

Every compressed array of a network file goes through HDF5's filters shuffle → gzip (deflate) →
Fletcher-32 (`network._dataset`). HDF5 runs them on the calling thread under h5py's global lock,
so a writer's compression used one core: two thirds of `generate`, most of `reinit` and the other
writers. Here each chunk is filtered by the same steps in a thread pool (zlib releases the GIL),
and the finished chunks are stored in order with `write_direct_chunk`, so the file is byte for
byte the one HDF5 writes itself (tested against it).

The steps, as HDF5 1.x does them:
- the last chunk is padded with the fill value (zeros) to the full chunk length;
- shuffle: byte j of every element, then byte j + 1 … (a transpose of the chunk's bytes);
- deflate: zlib's `compress2` at the given level (Python's `zlib.compress` is the same call);
- Fletcher-32 of the compressed bytes, appended as 4 little-endian bytes: 16-bit words, each its
  first byte the high one (an odd last byte is a word with a zero low byte), sums mod 65535 kept
  in 1..65535 once any word is non-zero (HDF5 reduces by end-around carry, never to 0).
"""

from __future__ import annotations

import io
import os
import zlib
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import cache

import h5py
import numpy as np


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 checksum of `data` (H5_checksum_fletcher32)."""
    raw = np.frombuffer(data, np.uint8)
    if raw.size % 2:
        raw = np.concatenate([raw, np.zeros(1, np.uint8)])
    words = raw.view(">u2").astype(np.int64)
    if not words.any():
        return 0
    # sum1 = Σ w_i, sum2 = Σ of the running sum1, both mod 65535 (running sums < 2^47 for < 2^31 words).
    running = np.cumsum(words)
    sum1 = int(running[-1]) % 65535 or 65535
    sum2 = int((running % 65535).sum()) % 65535 or 65535
    return (sum2 << 16) | sum1


def filtered_chunk(chunk: np.ndarray, level: int) -> bytes:
    """One full chunk through shuffle, deflate at `level` and Fletcher-32, as HDF5 stores it."""
    shuffled = np.ascontiguousarray(chunk).view(np.uint8).reshape(-1, chunk.dtype.itemsize).T.tobytes()
    packed = zlib.compress(shuffled, level)
    return packed + fletcher32(packed).to_bytes(4, "little")


def _chunk_at(array: np.ndarray, lo: int, length: int) -> np.ndarray:
    """array[lo:lo + length], padded with zeros to `length` (HDF5's fill value) if it ends early."""
    part = array[lo:lo + length]
    return part if part.size == length else np.concatenate([part, np.zeros(length - part.size, array.dtype)])


def write_filtered(dataset, array: np.ndarray, level: int, pool: Executor) -> None:
    """Store 1-D `array` in `dataset` (created empty, chunked, with shuffle, gzip at `level` and
    Fletcher-32, in that order) chunk by chunk, filtering the chunks in `pool`."""
    length = dataset.chunks[0]
    starts = range(0, array.size, length)
    filtered = pool.map(lambda lo: filtered_chunk(_chunk_at(array, lo, length), level), starts)
    for lo, data in zip(starts, filtered):
        dataset.id.write_direct_chunk((lo,), data, filter_mask=0)


@cache
def same_as_hdf5(level: int) -> bool:
    """Whether this process's zlib deflates as the zlib HDF5 was built with: a probe array (both
    kinds the files hold: sorted integers and random floats) filtered by HDF5 into an in-memory
    file and by `filtered_chunk`, chunk by chunk. A Python linked against another deflate (zlib-ng
    in some distributions) gives valid but other bytes: there the writers keep HDF5's own filters."""
    rng = np.random.default_rng(0)
    probes = [np.cumsum(rng.integers(0, 50, 5000)).astype(np.int64), rng.standard_normal(5000).astype(np.float32)]
    with h5py.File(io.BytesIO(), "w") as f:
        for i, probe in enumerate(probes):
            d = f.create_dataset(str(i), data=probe, chunks=(4096,), shuffle=True, compression="gzip",
                                 compression_opts=level, fletcher32=True)
            for lo in (0, 4096):  # a whole chunk and a padded one
                if d.id.read_direct_chunk((lo,))[1] != filtered_chunk(_chunk_at(probe, lo, 4096), level):
                    return False
    return True


def chunk_pool(level: int) -> ThreadPoolExecutor | None:
    """Threads for the chunks: one per core this process may use, at most 4. None (HDF5 filters
    them itself) on one core, or where this zlib does not give HDF5's bytes (`same_as_hdf5`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if cores < 2 or not same_as_hdf5(level):
        return None
    return ThreadPoolExecutor(min(4, cores), thread_name_prefix="spdnn-chunks")
