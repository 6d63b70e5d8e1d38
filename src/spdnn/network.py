"""The network file: one HDF5 file per sparse network (schema below, versioned).

Orientation is the paper's: layer k (1..L) holds W^k of shape (n_k, n_{k-1}) in CSR,
row i = output neuron i, column j = input neuron j. Layer 0 is the input vector.

Schema (format "spdnn-network", version 1.1)::

    /                       attrs: format, format_version, widths (int64[L+1]),
                                   ymax (float64, inf = no cap), activation (str),
                                   provenance (JSON str), spdnn_version (str)
    /layers/l{k:05d}/       k = 1..L
        indptr   int64[n_k + 1]
        indices  int32[nnz_k]     (column = input neuron, < n_{k-1} < 2^31)
        data     float32[nnz_k]
        bias     float32[n_k]

Every non-empty dataset is chunked and carries HDF5's Fletcher-32 checksum (1.1; 1.0 files have
none and still read): a flipped byte inside the weights is reported, not read as a weight.
Readers also check each layer's CSR arrays (indptr monotone from 0 to nnz, column indices below
the input width) and refuse another major version. Every problem reading a file is one line
naming the file (`UserError`). Global totals (Σ nnz) are int64: N=65536, L=1920 has 4.0e9
nonzeros. Files are byte-identical for identical content (no timestamps).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Executor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from . import __version__
from .atomic import atomic_path
from .errors import UserError
from .h5_chunks import chunk_pool, filtered_chunks, read_filtered, read_pool, same_as_hdf5, write_chunks
from .host import release_free_memory

FORMAT = "spdnn-network"
FORMAT_VERSION = "1.1"
SUPPORTED_MAJOR = 1
GZIP_LEVEL = 1  # arrays of 4,096 elements or more: shuffled, then gzip at this level (`_dataset`)
FILTERED_FROM = 4096  # elements: smaller arrays are stored unfiltered
CHUNK_WORDS = 1 << 18  # elements a chunk, at most

# Graph Challenge bias per neuron count (README, "Design reference"); ymax = 32 for all.
GC_BIAS = {1024: -0.3, 4096: -0.35, 16384: -0.4, 65536: -0.45}
GC_YMAX = 32.0
DEFAULT_BIAS = -0.3


@dataclass
class Network:
    layers: list[sp.csr_matrix]  # W^k, k = 1..L, float32, shape (n_k, n_{k-1})
    biases: list[np.ndarray]  # b^k, float32, length n_k
    ymax: float = np.inf  # activation cap (inf: plain ReLU)
    activation: str = "relu"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.layers = [_as_csr32(w) for w in self.layers]
        self.biases = [np.asarray(b, dtype=np.float32).reshape(-1) for b in self.biases]
        check_chain([w.shape for w in self.layers], "network")
        for k, (w, b) in enumerate(zip(self.layers, self.biases), start=1):
            if b.shape[0] != w.shape[0]:
                raise UserError(f"network: layer {k} has {w.shape[0]} rows but {b.shape[0]} biases")

    @property
    def widths(self) -> list[int]:
        return [self.layers[0].shape[1]] + [w.shape[0] for w in self.layers]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def nnz(self) -> int:
        return int(sum(np.int64(w.nnz) for w in self.layers))


def _as_csr32(w) -> sp.csr_matrix:
    w = sp.csr_matrix(w, dtype=np.float32)
    w.sum_duplicates()
    w.sort_indices()
    return w


def check_chain(shapes, where: str) -> None:
    """Layer k's input width must equal layer k-1's output width."""
    if not shapes:
        raise UserError(f"{where}: no layers")
    for k in range(1, len(shapes)):
        if shapes[k][1] != shapes[k - 1][0]:
            raise UserError(
                f"{where}: layer {k + 1} expects {shapes[k][1]} inputs but layer {k} has {shapes[k - 1][0]} outputs"
            )


def gc_bias(neurons: int, bias: float | None) -> float:
    """The Graph Challenge bias for N, or the user's value (required for other N)."""
    if bias is not None:
        return float(bias)
    if neurons in GC_BIAS:
        return GC_BIAS[neurons]
    return DEFAULT_BIAS


def _layer_name(k: int) -> str:
    return f"layers/l{k:05d}"


class NetworkWriter:
    """Write a network file layer by layer (memory: one layer), atomically: the file appears under
    its name only when `close()` ran after the last layer.

        with NetworkWriter(path, widths, ymax, activation, provenance) as out:
            for k, (w, b) in enumerate(layers, start=1):
                out.write_layer(k, w, b)

    `any_order=True` accepts layers in any order (an archive's members come in its own order);
    `widths=None` defers the widths, and `set_header` sets them and the other attributes before
    the end (an importer learns the depth and the provenance only after the last layer).
    `cores`: the cores its chunk threads may count on (as in `open_network`)."""

    def __init__(self, path, widths, ymax=np.inf, activation="relu", provenance=None, attrs=None,
                 any_order: bool = False, cores: int | None = None):
        self._atomic = atomic_path(path)
        tmp = self._atomic.__enter__()
        self.f = h5py.File(tmp, "w", track_order=False, libver=("earliest", "v110"))
        self.f.attrs["format"] = FORMAT
        self.f.attrs["format_version"] = FORMAT_VERSION
        self.widths = None
        self.set_header(widths, ymax, activation, provenance)
        self.f.attrs["spdnn_version"] = __version__
        for key, value in (attrs or {}).items():
            self.f.attrs[key] = value
        self.any_order = any_order
        self.done: set[int] = set()
        # compresses the chunks (`_dataset`); shut down in __exit__
        self._pool = chunk_pool(GZIP_LEVEL, cores)

    @property
    def written(self) -> int:
        return len(self.done)

    def set_header(self, widths=None, ymax=np.inf, activation="relu", provenance=None) -> None:
        if widths is not None:
            self.widths = [int(x) for x in widths]
            self.f.attrs["widths"] = np.asarray(self.widths, dtype=np.int64)
        self.f.attrs["ymax"] = np.float64(ymax)
        self.f.attrs["activation"] = activation
        self.f.attrs["provenance"] = json.dumps(provenance or {}, sort_keys=True)

    def write_layer(self, k: int, w: sp.csr_matrix, bias) -> None:
        self.write_stored(k, stored_layer(w, bias, self._pool))

    def write_stored(self, k: int, layer: StoredLayer) -> None:
        """Layer k as `stored_layer` prepared it, here or in another process (an MPI rank that
        compressed its chunks: `collective_write`)."""
        if k in self.done or (not self.any_order and k != self.written + 1):
            raise ValueError(f"layers must be written once each, in order (got {k} after {self.written})")
        if self.widths is not None and layer.shape != (self.widths[k], self.widths[k - 1]):
            raise UserError(f"layer {k} has shape {layer.shape}, the widths say {(self.widths[k], self.widths[k - 1])}")
        g = self.f.create_group(_layer_name(k))
        for name, stored in layer.arrays:
            _dataset(g, name, stored)
        self.done.add(k)
        if self._pool is not None:
            release_free_memory()

    def replace_bias(self, k: int, bias) -> None:
        """Overwrite layer k's bias (same length) in place."""
        self.f[_layer_name(k)]["bias"][...] = np.asarray(bias, dtype=np.float32)

    def read_layer(self, k: int) -> sp.csr_matrix:
        """Layer k as written (its shape from its own arrays: widths may not be set yet)."""
        g = self.f[_layer_name(k)]
        indptr, indices = g["indptr"][:], g["indices"][:]
        n_in = int(indices.max()) + 1 if indices.size else 0
        return sp.csr_matrix((g["data"][:], indices, indptr), shape=(indptr.size - 1, n_in))

    def rewrite_layer(self, k: int, w: sp.csr_matrix, bias) -> None:
        """Replace layer k (a new shape): the old datasets are unlinked, then written anew."""
        del self.f[_layer_name(k)]
        self.done.discard(k)
        self.write_layer(k, w, bias)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._pool is not None:
            self._pool.shutdown()
        self.f.close()
        expected = None if self.widths is None else len(self.widths) - 1
        incomplete = exc_type is None and self.done != set(range(1, (expected or 0) + 1))
        if incomplete:
            exc = RuntimeError(f"network file: wrote {self.written} of {expected} layers")
        if exc is None:
            self._atomic.__exit__(None, None, None)  # complete: rename into place
            return False
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)  # removes the temporary file
        except BaseException:  # noqa: BLE001 — the error being handled is the one to report
            pass
        if incomplete:
            raise exc
        return False


def write_network(net: Network, path, attrs: dict | None = None, cores: int | None = None) -> None:
    """Write atomically; identical content gives identical bytes. `attrs`: extra root attributes
    (a checkpoint's step and run key), written in the same atomic step."""
    with NetworkWriter(path, net.widths, net.ymax, net.activation, net.provenance, attrs, cores=cores) as out:
        for k, (w, b) in enumerate(zip(net.layers, net.biases), start=1):
            out.write_layer(k, w, b)


@dataclass(frozen=True)
class StoredArray:
    """One array of a layer as `_dataset` stores it: `array`, which HDF5 stores (and filters)
    itself, or, filtered beforehand, its `dtype`, `size` and chunks for `write_direct_chunk`."""
    dtype: np.dtype
    size: int
    array: np.ndarray | None = None
    chunks: list[bytes] | None = None


@dataclass(frozen=True)
class StoredLayer:
    """A layer ready to be stored (`stored_layer`); it pickles, so one process may prepare it
    and another store it."""
    shape: tuple[int, int]
    arrays: tuple[tuple[str, StoredArray], ...]  # (dataset name, array), in the order written


def stored_layer(w: sp.csr_matrix, bias, pool: Executor | None = None, filter_here: bool = False) -> StoredLayer:
    """Layer (w, bias) as the network file stores it. The chunks of its larger arrays are filtered
    here (the bytes HDF5 would write, `h5_chunks`) in `pool`'s threads, or with `filter_here` in
    this thread; otherwise, or where this zlib deflates otherwise than HDF5's, left to HDF5."""
    arrays = (("indptr", w.indptr.astype(np.int64)), ("indices", w.indices.astype(np.int32)),
              ("data", w.data.astype(np.float32)), ("bias", np.asarray(bias, dtype=np.float32)))
    here = pool is not None or (filter_here and same_as_hdf5(GZIP_LEVEL))
    stored = []
    for name, a in arrays:
        if here and a.size >= FILTERED_FROM:
            chunks = filtered_chunks(a, min(a.size, CHUNK_WORDS), GZIP_LEVEL, pool)
            stored.append((name, StoredArray(a.dtype, a.size, chunks=chunks)))
        else:
            stored.append((name, StoredArray(a.dtype, a.size, array=a)))
    return StoredLayer(tuple(int(x) for x in w.shape), tuple(stored))


def _dataset(group, name, stored: StoredArray):
    # Chunked with a Fletcher-32 checksum per chunk (corruption is detected on read); shuffled gzip
    # for larger arrays: the constant weights and sorted indices compress ~5x. Chunks filtered
    # beforehand (`stored_layer`) are stored as they are: the same bytes as HDF5's own filters.
    kw = {}
    if stored.size:
        kw = dict(chunks=(min(stored.size, CHUNK_WORDS),), fletcher32=True)
    if stored.size >= FILTERED_FROM:
        kw.update(compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
    if stored.chunks is None:
        group.create_dataset(name, data=stored.array, track_times=False, **kw)
    else:
        write_chunks(group.create_dataset(name, shape=(stored.size,), dtype=stored.dtype, track_times=False, **kw),
                     stored.chunks)


@dataclass
class NetworkHeader:
    widths: list[int]
    ymax: float
    activation: str
    provenance: dict

    @property
    def num_layers(self) -> int:
        return len(self.widths) - 1


@dataclass
class OpenNetworkFile:
    """A network file open for reading, with the threads its layers' chunks are unfiltered in."""
    h5: h5py.File
    pool: Executor | None


@contextmanager
def _reading(path, cores: int | None = None):
    """Open a network file (an `OpenNetworkFile`); any HDF5 error inside (a checksum mismatch, a
    damaged header or B-tree, a missing dataset) becomes one line naming the file instead of an
    h5py traceback."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such network file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not an HDF5 network file ({e})") from None
    with _reading_errors(path):
        _small_metadata_cache(f)
        with f, (read_pool(cores) or nullcontext()) as pool:  # the executor's own exit shuts it down
            fmt = f.attrs.get("format")
            if fmt != FORMAT:
                raise UserError(f"{path}: not a spdnn network file (format attribute {fmt!r})")
            version = str(f.attrs.get("format_version", "?"))
            major = version.split(".")[0]
            if not major.isdigit() or int(major) != SUPPORTED_MAJOR:
                raise UserError(f"{path}: network format version {version} is not supported "
                                f"(this spdnn reads {SUPPORTED_MAJOR}.x)")
            yield OpenNetworkFile(f, pool)


def _small_metadata_cache(f) -> None:
    """Readers visit each layer once: HDF5's adaptive metadata cache (up to 32 MB) would only grow
    with the number of layers read. 4 MB holds a layer's object headers and chunk indices."""
    try:
        config = f.id.get_mdc_config()
        config.max_size = 4 << 20
        config.initial_size = min(config.initial_size, 2 << 20)
        config.min_size = min(config.min_size, 1 << 20)
        f.id.set_mdc_config(config)
    except (AttributeError, ValueError, RuntimeError):
        pass


def _header(f: OpenNetworkFile) -> NetworkHeader:
    attrs = f.h5.attrs
    return NetworkHeader(
        widths=[int(x) for x in attrs["widths"]],
        ymax=float(attrs["ymax"]),
        activation=str(attrs["activation"]),
        provenance=json.loads(attrs["provenance"]),
    )


def read_header(path) -> NetworkHeader:
    with _reading(path) as f:
        return _header(f)


def _check_layer(path, k: int, indptr, indices, bias, shape) -> None:
    """The CSR arrays of layer k must describe a (n_k × n_{k−1}) matrix: a damaged file whose
    checksums still pass (or a 1.0 file without them) is refused here, not computed with."""
    n_out, n_in = shape
    bad = None
    if indptr.shape != (n_out + 1,) or bias.shape != (n_out,):
        bad = f"indptr has {indptr.size} entries and bias {bias.size}, expected {n_out + 1} and {n_out}"
    elif indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
        bad = "indptr is not a non-decreasing offset array from 0 to nnz"
    elif indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_in):
        bad = f"column index {int(indices.max() if indices.max() >= n_in else indices.min())} outside 0..{n_in - 1}"
    if bad:
        raise UserError(f"{path}: corrupt network file (layer {k}: {bad})")


def _read_layer(f: OpenNetworkFile, path, h: NetworkHeader, k: int, values: bool = True):
    """(W^k as CSR, b^k), checked. Without `values` the weights are not read (a third of the
    layer's bytes): W^k's stored entries all read 1, for callers that need the pattern only."""
    g = f.h5[_layer_name(k)]
    shape = (h.widths[k], h.widths[k - 1])
    indptr, indices, bias = (read_filtered(g[name], f.pool) for name in ("indptr", "indices", "bias"))
    _check_layer(path, k, indptr, indices, bias, shape)
    if values:
        data = read_filtered(g["data"], f.pool)
        if data.shape != indices.shape:
            raise UserError(f"{path}: corrupt network file (layer {k}: {data.size} values for {indices.size} indices)")
    else:
        data = np.ones(indices.size, np.int8)
    return sp.csr_matrix((data, indices, indptr), shape=shape), bias


@contextmanager
def open_network(path, cores: int | None = None):
    """(open file, header) for reading layers one by one with `read_layer`; errors as UserError.
    `cores`: the cores its read threads may count on (`host.core_share` for MPI ranks; None: the
    process's affinity)."""
    with _reading(path, cores) as f:
        yield f, _header(f)


def read_layer(f: OpenNetworkFile, path, h: NetworkHeader, k: int):
    """(W^k, b^k, bytes of the file read for it) from a file opened with `open_network`."""
    # Converted here, not only where the file closes: the MPI reader of a layer must tell the
    # other ranks (rowwise.scatter_layer_rows) before they wait for its rows.
    with _reading_errors(path):
        w, b = _read_layer(f, path, h, k)
        g = f.h5[_layer_name(k)]
        stored = sum(int(g[name].id.get_storage_size()) for name in ("indptr", "indices", "data", "bias"))
    return w, b, stored


@contextmanager
def _reading_errors(path):
    """Any HDF5 error inside (a checksum mismatch, a damaged header or B-tree, a missing dataset)
    becomes one line naming the file."""
    try:
        yield
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{path}: corrupt network file ({e.__class__.__name__}: {msg})") from None


def iter_layers(path, cores: int | None = None):
    """Yield (k, W^k, b^k) for k = 1..L, one layer in memory at a time (`cores` as in
    `open_network`)."""
    with _reading(path, cores) as f:
        h = _header(f)
        for k in range(1, h.num_layers + 1):
            w, b = _read_layer(f, path, h, k)
            yield k, w, b


def read_network(path, cores: int | None = None) -> Network:
    h = read_header(path)
    layers, biases = [], []
    for _, w, b in iter_layers(path, cores):
        layers.append(w)
        biases.append(b)
    return Network(layers, biases, ymax=h.ymax, activation=h.activation, provenance=h.provenance)


class LayerFile(Sequence):
    """W^1..W^L of a network file as a read-only sequence (`layers[k − 1]` = W^k), each layer read
    from the file when asked for: random access to the layers without the network in memory.
    Pickles as its path, so a worker process opens the file itself instead of receiving matrices
    (`cores` as in `open_network`, for each process that reads it)."""

    def __init__(self, path, header: NetworkHeader | None = None, cores: int | None = None):
        self.path = str(path)
        self.header = header if header is not None else read_header(path)
        self.cores = cores
        self._open = None

    @property
    def widths(self) -> list[int]:
        return self.header.widths

    def __len__(self) -> int:
        return self.header.num_layers

    def __getitem__(self, i):
        return self._read(i, values=True)

    def pattern(self, i):
        """`self[i]`'s pattern (every stored entry 1), without reading the weights: what the
        partitioner's solves need, a third fewer bytes to read and decompress."""
        return self._read(i, values=False)

    def _read(self, i, values: bool):
        if not isinstance(i, (int, np.integer)):
            raise TypeError("LayerFile indices are layer positions (int)")
        i = int(i) + (len(self) if i < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self._open is None:
            stack = ExitStack()
            self._open = (stack, stack.enter_context(_reading(self.path, self.cores)))
        with _reading_errors(self.path):
            return _read_layer(self._open[1], self.path, self.header, i + 1, values)[0]

    def close(self) -> None:
        if self._open is not None:
            self._open[0].close()
            self._open = None

    def __getstate__(self):
        return {"path": self.path, "header": self.header, "cores": self.cores}

    def __setstate__(self, state):
        self.__init__(state["path"], state["header"], state["cores"])


def iter_layer_rows(path, rows_per_layer):
    """Yield (k, W^k[rows], b^k[rows]) layer by layer, holding one layer at a time.

    Memory: the selected rows plus one layer's index arrays, never the whole network.
    """
    with _reading(path) as f:
        h = _header(f)
        for k in range(1, h.num_layers + 1):
            w, bias = _read_layer(f, path, h, k)
            rows = np.asarray(rows_per_layer[k - 1], dtype=np.int64)
            yield k, w[rows], bias[rows]


def read_layer_pattern(path, k: int) -> sp.csr_matrix:
    """One layer (pattern and values), for model-level computations."""
    with _reading(path) as f:
        return _read_layer(f, path, _header(f), k)[0]


def describe(path, verify: bool = False) -> dict:
    """What `spdnn info` prints. Shapes only, unless `verify`: then every layer is read once
    (one at a time), so checksums and CSR arrays are checked too."""
    with _reading(path) as f:
        h = _header(f)
        layers = [f.h5[_layer_name(k)] for k in range(1, h.num_layers + 1)]
        nnz = [int(g["indices"].shape[0]) for g in layers]
        version = str(f.h5.attrs["format_version"])
        checksums = all(g[name].fletcher32 or g[name].size == 0
                        for g in layers for name in ("indptr", "indices", "data", "bias"))
        if verify:
            for k in range(1, h.num_layers + 1):
                _read_layer(f, path, h, k)
    return {
        "file": str(path),
        "format_version": version,
        "layers": h.num_layers,
        "widths": h.widths if len(h.widths) <= 16 else h.widths[:8] + ["..."] + h.widths[-4:],
        "nnz_total": int(np.sum(nnz, dtype=np.int64)),
        "nnz_per_layer_min": min(nnz),
        "nnz_per_layer_max": max(nnz),
        "ymax": h.ymax,
        "activation": h.activation,
        "checksums": checksums,
        "verified": verify,
        "provenance": h.provenance,
    }
