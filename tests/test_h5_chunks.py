"""Chunks filtered in threads (`h5_chunks`) must give the file HDF5's own filters give, byte for byte."""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import spdnn.h5_chunks as h5_chunks
from spdnn.h5_chunks import filtered_chunks, fletcher32, read_filtered, same_as_hdf5, write_chunks
from spdnn.network import NetworkWriter, stored_layer


def hdf5_fletcher32(data: bytes) -> int:
    """A line-by-line port of HDF5's H5_checksum_fletcher32 (blocks of 360 words, end-around carry)."""
    sum1 = sum2 = 0
    length = len(data) // 2
    pos = 0
    while length:
        block = min(length, 360)
        length -= block
        for _ in range(block):
            sum1 += (data[pos] << 8) | data[pos + 1]
            sum2 += sum1
            pos += 2
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[pos] << 8
        sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


def test_fletcher32_is_hdf5s():
    rng = np.random.default_rng(0)
    cases = [b"", b"\x00" * 9, b"\xff" * 2, b"\xff" * 1000, b"\xff" * 1001, b"\x01", bytes(range(256)) * 7]
    cases += [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 2, 3, 719, 720, 721, 5000, 5001)]
    # across the 4096-word blocks, and the largest sums a 1 MB chunk gives (exact integers throughout)
    cases += [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (8192, 8193, 3 * 8192 + 7)]
    cases += [b"\xff" * (1 << 20), b"\x00" * 8192 + b"\x01"]
    for data in cases:
        assert fletcher32(data) == hdf5_fletcher32(data), data[:8]


def _written_by(path, arrays, pool, ours: bool):
    with h5py.File(path, "w", track_order=False, libver=("earliest", "v110")) as f:
        g = f.create_group("layer")
        for name, array in arrays.items():
            kw = dict(chunks=(min(array.size, 1 << 12),), fletcher32=True, shuffle=True, compression="gzip",
                      compression_opts=1, track_times=False)
            if ours:
                chunks = filtered_chunks(array, kw["chunks"][0], 1, pool)
                write_chunks(g.create_dataset(name, shape=array.shape, dtype=array.dtype, **kw), chunks)
            else:
                g.create_dataset(name, data=array, **kw)
    return path.read_bytes()


@pytest.mark.skipif(not same_as_hdf5(1), reason="this Python's zlib deflates otherwise than HDF5's")
@pytest.mark.parametrize("threads", [0, 1, 3])
def test_the_file_is_the_one_hdf5_writes(tmp_path, threads):
    """Chunks filtered here (in the calling thread: 0, or a pool's) store the file HDF5 writes."""
    rng = np.random.default_rng(1)
    arrays = {  # whole chunks, a short last chunk (padded), one short chunk; compressible or not
        "indptr": np.cumsum(rng.integers(0, 40, 3 * 4096 + 1)).astype(np.int64),
        "indices": rng.integers(0, 1 << 20, 2 * 4096, dtype=np.int32),
        "data": rng.standard_normal(4096 * 5 + 17).astype(np.float32),
        "constant": np.full(3000, 0.0625, np.float32),
        "bias": rng.integers(0, 256, 4097).astype(np.uint8),
    }
    with ThreadPoolExecutor(threads) if threads else nullcontext() as pool:
        ours = _written_by(tmp_path / "ours.h5", arrays, pool, ours=True)
    assert ours == _written_by(tmp_path / "hdf5.h5", arrays, None, ours=False)
    with h5py.File(tmp_path / "ours.h5") as f:  # and HDF5 reads it back, checksums verified
        for name, array in arrays.items():
            assert np.array_equal(f["layer"][name][:], array)


def test_a_zlib_that_deflates_otherwise_leaves_the_filtering_to_hdf5(tmp_path, monkeypatch):
    """Another deflate (zlib-ng) gives valid but other bytes: the probe must see it, and the writer
    then lets HDF5 filter, so the file is still the one HDF5 writes."""
    def other_deflate(chunk, level):
        return b"\x00" + filtered(chunk, level)

    def write(path):
        with NetworkWriter(path, [100, 100]) as out:
            out.write_layer(1, w, np.zeros(100))
            return out._pool

    w = sp.random(100, 100, density=0.5, random_state=0, format="csr")  # 5,000 nonzeros: compressed
    filtered = h5_chunks.filtered_chunk
    same_as_hdf5.cache_clear()
    monkeypatch.setattr(h5_chunks, "filtered_chunk", other_deflate)
    try:
        assert not same_as_hdf5(1)
        assert write(tmp_path / "hdf5.h5") is None
        # nor does a rank that filters its share of a distributed write (`RowWiseModel.write_network`)
        assert all(a.chunks is None for _, a in stored_layer(w, np.zeros(100), None, filter_here=True).arrays)
    finally:
        same_as_hdf5.cache_clear()
    monkeypatch.undo()
    if same_as_hdf5(1):  # then this machine's writer filters in threads: the same file
        assert write(tmp_path / "threads.h5") is not None or len(os.sched_getaffinity(0)) < 2
        assert (tmp_path / "threads.h5").read_bytes() == (tmp_path / "hdf5.h5").read_bytes()


def _stored(path, arrays, **filters):
    with h5py.File(path, "w") as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array, chunks=(min(array.size, 1 << 12),), **filters)


def _arrays():
    rng = np.random.default_rng(2)
    return {  # several chunks and a short last one, one chunk, every dtype the files hold
        "indptr": np.cumsum(rng.integers(0, 40, 3 * 4096 + 1)).astype(np.int64),
        "indices": rng.integers(0, 1 << 20, 2 * 4096 + 5, dtype=np.int32),
        "data": rng.standard_normal(4096 * 5 + 17).astype(np.float32),
        "bias": np.full(3000, -0.3, np.float32),
        "bytes": rng.integers(0, 256, 4097).astype(np.uint8),
    }


@pytest.mark.parametrize("filters", [
    dict(shuffle=True, compression="gzip", compression_opts=1, fletcher32=True),  # network._dataset's
    dict(shuffle=True, compression="gzip", compression_opts=6, fletcher32=True),
    dict(compression="gzip", fletcher32=True),  # other pipelines: read by HDF5 itself
    dict(fletcher32=True),
    {},
])
def test_read_filtered_gives_the_arrays_hdf5_reads(tmp_path, filters):
    arrays = _arrays()
    _stored(tmp_path / "a.h5", arrays, **filters)
    with ThreadPoolExecutor(2) as pool, h5py.File(tmp_path / "a.h5") as f:
        for name, array in arrays.items():
            got = read_filtered(f[name], pool)
            assert got.dtype == array.dtype and np.array_equal(got, array), name


def _rewrite_chunk(path, name, lo, change):
    with h5py.File(path, "a") as f:
        _, stored = f[name].id.read_direct_chunk((lo,))
        f[name].id.write_direct_chunk((lo,), *change(stored))


def test_a_chunk_that_does_not_check_out_goes_to_hdf5(tmp_path, monkeypatch):
    arrays = _arrays()
    filters = dict(shuffle=True, compression="gzip", compression_opts=1, fletcher32=True)
    _stored(tmp_path / "a.h5", arrays, **filters)
    # Fletcher-32 skipped for one chunk (filter mask bit 2): a valid file, read right by HDF5.
    _rewrite_chunk(tmp_path / "a.h5", "data", 4096, lambda stored: (stored[:-4], 0b100))
    # A damaged chunk: HDF5's own read then reports it.
    flip = lambda stored: (stored[:10] + bytes([stored[10] ^ 0xFF]) + stored[11:], 0)  # noqa: E731
    _rewrite_chunk(tmp_path / "a.h5", "indices", 4096, flip)
    with ThreadPoolExecutor(2) as pool, h5py.File(tmp_path / "a.h5") as f:
        assert np.array_equal(read_filtered(f["data"], pool), arrays["data"])
        with pytest.raises(OSError, match=r"(?i)checksum|filter"):
            read_filtered(f["indices"], pool)
        # Where this module and HDF5 disagree, HDF5 is right: never a good file refused.
        monkeypatch.setattr(h5_chunks, "fletcher32", lambda data: 7)
        assert np.array_equal(read_filtered(f["indptr"], pool), arrays["indptr"])
        monkeypatch.undo()
        monkeypatch.setattr(h5_chunks.zlib, "decompress", lambda data, bufsize: b"\x00" * 8)  # a length off
        assert np.array_equal(read_filtered(f["bias"], pool), arrays["bias"])


def test_network_layers_read_in_threads_are_the_ones_hdf5_reads(tmp_path, monkeypatch):
    """The readers with threads (3 cores or more) against HDF5's own read (under 3): the same
    layers, and a damaged chunk still one line naming the file."""
    import spdnn.network as network
    from spdnn.errors import UserError

    path = tmp_path / "n.h5"
    rng = np.random.default_rng(3)
    layers = [sp.random(700, 700, density=0.6, random_state=rng, format="csr", dtype=np.float32) for _ in range(3)]
    with NetworkWriter(path, [700] * 4) as out:  # 294,000 nonzeros a layer: two chunks each
        for k, w in enumerate(layers, start=1):
            out.write_layer(k, w, rng.standard_normal(700))
    by_hdf5 = list(network.iter_layers(path, cores=1))
    monkeypatch.setattr(h5_chunks, "usable_cores", lambda: 3)  # every reader below: 2 read threads
    unfiltered = []
    unfilter = h5_chunks._unfilter_into
    monkeypatch.setattr(h5_chunks, "_unfilter_into", lambda *a: unfiltered.append(unfilter(*a)) or unfiltered[-1])
    for (_, w, b), (_, v, c) in zip(network.iter_layers(path), by_hdf5, strict=True):
        assert (w != v).nnz == 0 and w.dtype == v.dtype and np.array_equal(b, c)
    assert len(unfiltered) == 3 * 4 and all(unfiltered)  # indices and data: 2 chunks; indptr and bias: stored plain
    assert network.LayerFile(path).pattern(1).nnz == by_hdf5[1][1].nnz
    assert len(unfiltered) == 3 * 4 + 2  # its indices' two chunks (a pattern reads no values)
    one_core = pickle.loads(pickle.dumps(network.LayerFile(path, cores=1)))  # as a partition worker gets it
    assert one_core.cores == 1 and one_core.pattern(2).nnz == by_hdf5[1][1].nnz
    assert len(unfiltered) == 3 * 4 + 2  # read by HDF5: the cores it was given, not the machine's
    with h5py.File(path) as f:
        info = f["layers/l00002/indices"].id.get_chunk_info(1)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(raw)
    with pytest.raises(UserError, match=r"n\.h5: corrupt network file"):
        network.describe(path, verify=True)
