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

Reading is the same steps backwards (`read_filtered`): HDF5 hands over each stored chunk as it is
(`read_direct_chunk`), and the threads check its Fletcher-32, inflate it and undo the shuffle into
the output array. Any chunk that does not pass (a checksum, a stream or a length that is off, a
filter skipped) sends the whole dataset back to HDF5's own read: a damaged file gets HDF5's error,
as before, and a disagreement of ours with HDF5 can never fail a good file.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import cache

import h5py
import numpy as np
from h5py import h5z

from .host import usable_cores

_BLOCK = 4096  # words per row of the block sums below


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 checksum of `data` (H5_checksum_fletcher32)."""
    # Over the n 16-bit words w_i: sum1 = Σ w_i and sum2 = Σ of the running sum1 = Σ (n − i) w_i,
    # both mod 65535. In blocks of B words (zero-padded to n' = nb·B, which adds (n' − n)·sum1 to
    # the weighted sum): within a block a float matrix product with B..1 (exact: < 2^40), across
    # blocks (nb − 1 − b)·B times the block's sum, in integers (< 2^63 for data < 2^31 bytes).
    raw = np.frombuffer(data, np.uint8)
    words = -(-raw.size // 2)
    blocks = -(-words // _BLOCK)
    padded = np.zeros(blocks * _BLOCK * 2, np.uint8)
    padded[:raw.size] = raw
    w = padded.view(">u2").astype(np.float64).reshape(blocks, _BLOCK)
    block_sums = w.sum(axis=1).astype(np.int64)
    sum1 = int(block_sums.sum())
    if sum1 == 0:
        return 0
    within = int((w @ np.arange(_BLOCK, 0, -1, dtype=np.float64)).astype(np.int64).sum())
    later = np.arange(blocks - 1, -1, -1, dtype=np.int64) * _BLOCK
    sum2 = within + int((block_sums * later).sum()) - (blocks * _BLOCK - words) * sum1
    return ((sum2 % 65535 or 65535) << 16) | (sum1 % 65535 or 65535)


def filtered_chunk(chunk: np.ndarray, level: int) -> bytes:
    """One full chunk through shuffle, deflate at `level` and Fletcher-32, as HDF5 stores it."""
    shuffled = np.ascontiguousarray(chunk).view(np.uint8).reshape(-1, chunk.dtype.itemsize).T.tobytes()
    packed = zlib.compress(shuffled, level)
    return packed + fletcher32(packed).to_bytes(4, "little")


def _chunk_at(array: np.ndarray, lo: int, length: int) -> np.ndarray:
    """array[lo:lo + length], padded with zeros to `length` (HDF5's fill value) if it ends early."""
    part = array[lo:lo + length]
    return part if part.size == length else np.concatenate([part, np.zeros(length - part.size, array.dtype)])


def filtered_chunks(array: np.ndarray, length: int, level: int, pool: Executor | None = None) -> list[bytes]:
    """1-D `array` as the chunks of `length` elements a dataset with shuffle, gzip at `level` and
    Fletcher-32 (in that order) stores, each ready for `write_direct_chunk`; filtered in `pool`'s
    threads, or in the calling one (a rank that filters its share while the others do theirs)."""
    def one(lo):
        return filtered_chunk(_chunk_at(array, lo, length), level)

    starts = range(0, array.size, length)
    return list(pool.map(one, starts) if pool is not None else map(one, starts))


def write_chunks(dataset, chunks: Sequence[bytes]) -> None:
    """Store `filtered_chunks`' output in `dataset` (created empty with those filters and that
    chunk length), in order."""
    length = dataset.chunks[0]
    for i, data in enumerate(chunks):
        dataset.id.write_direct_chunk((i * length,), data, filter_mask=0)


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


def _counted(cores: int | None) -> int:
    """The cores a pool counts on: `cores`, or where None the process's affinity mask (`host`)."""
    return usable_cores() if cores is None else cores


def chunk_pool(level: int, cores: int | None = None) -> ThreadPoolExecutor | None:
    """Threads for the chunks: one per core the writer may count on (`cores`; None: its affinity
    mask, `host`), at most 4. None (HDF5 filters them itself) on one core, or where this zlib does
    not give HDF5's bytes (`same_as_hdf5`)."""
    cores = _counted(cores)
    if cores < 2 or not same_as_hdf5(level):
        return None
    return ThreadPoolExecutor(min(4, cores), thread_name_prefix="spdnn-chunks")


def read_pool(cores: int | None = None) -> ThreadPoolExecutor | None:
    """Threads for reading chunks (`read_filtered`; any zlib inflates any deflate stream to the
    same bytes, so only the cores decide): one of the reader's `cores` (as in `chunk_pool`) is left
    to the caller,
    whose stage mostly computes on one layer while its next is read (`read_ahead`), at most 4;
    None under 3 cores. Measured on 2 cores with 2 threads: `info` (reading only) 9.0 → 6.4 s at
    65536 × 120, but `volume` 9.7 → 11.5 s (the threads take the core its computation had),
    hypergraph, partition and infer unchanged. Threads start at the first read."""
    threads = min(4, _counted(cores) - 1)
    return ThreadPoolExecutor(threads, thread_name_prefix="spdnn-unchunk") if threads >= 2 else None


_OURS = (h5z.FILTER_SHUFFLE, h5z.FILTER_DEFLATE, h5z.FILTER_FLETCHER32)


def _pipeline(dataset) -> tuple[int, ...]:
    plist = dataset.id.get_create_plist()
    return tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))


def _unfilter_into(out: np.ndarray, lo: int, length: int, filter_mask: int, stored: bytes) -> bool:
    """Chunk `stored` (shuffle → deflate → Fletcher-32, all applied) into out[lo:lo + length],
    cut where `out` ends. False, writing nothing, if it does not check out."""
    packed, checksum = stored[:-4], stored[-4:]
    if filter_mask or len(stored) < 4 or fletcher32(packed) != int.from_bytes(checksum, "little"):
        return False
    size = out.dtype.itemsize
    try:
        plain = zlib.decompress(packed, bufsize=length * size)
    except zlib.error:
        return False
    if len(plain) != length * size:
        return False
    planes = np.frombuffer(plain, np.uint8).reshape(size, length)
    n = min(length, out.size - lo)
    target = out[lo:lo + n].view(np.uint8).reshape(n, size)
    for j in range(size):  # byte plane by byte plane: a third of the time of one transposing copy
        target[:, j] = planes[j, :n]
    return True


def read_filtered(dataset, pool: Executor | None) -> np.ndarray:
    """`dataset[()]`, its chunks unfiltered in `pool` where the dataset is a 1-D chunked array
    stored through shuffle → deflate → Fletcher-32 (what `network._dataset` writes for the larger
    arrays); anything else, or any chunk that does not check out, is read by HDF5 itself."""
    if pool is None or dataset.ndim != 1 or dataset.chunks is None or _pipeline(dataset) != _OURS:
        return dataset[()]
    out = np.empty(dataset.shape, dataset.dtype)
    length = dataset.chunks[0]
    # Chunks are handed to the threads as HDF5 reads them (the only part left under its lock).
    done = [pool.submit(_unfilter_into, out, lo, length, *dataset.id.read_direct_chunk((lo,)))
            for lo in range(0, out.size, length)]
    if all(f.result() for f in done):
        return out
    return dataset[()]
