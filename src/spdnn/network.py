"""The network file: one HDF5 file per sparse network (schema below, versioned).

Orientation is the paper's: layer k (1..L) holds W^k of shape (n_k, n_{k-1}) in CSR,
row i = output neuron i, column j = input neuron j. Layer 0 is the input vector.

Schema (format "spdnn-network", version 1.0)::

    /                       attrs: format, format_version, widths (int64[L+1]),
                                   ymax (float64, inf = no cap), activation (str),
                                   provenance (JSON str), spdnn_version (str)
    /layers/l{k:05d}/       k = 1..L
        indptr   int64[n_k + 1]
        indices  int32[nnz_k]     (column = input neuron, < n_{k-1} < 2^31)
        data     float32[nnz_k]
        bias     float32[n_k]

Readers refuse another major version. Global totals (Σ nnz) are int64: N=65536, L=1920
has 4.0e9 nonzeros. Files are byte-identical for identical content (no timestamps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from . import __version__
from .atomic import atomic_path
from .errors import UserError

FORMAT = "spdnn-network"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1

# Graph Challenge bias per neuron count (DESIGN.md §2); ymax = 32 for all.
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


def write_network(net: Network, path) -> None:
    """Write atomically; identical content gives identical bytes."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=False, libver=("earliest", "v110")) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["widths"] = np.asarray(net.widths, dtype=np.int64)
            f.attrs["ymax"] = np.float64(net.ymax)
            f.attrs["activation"] = net.activation
            f.attrs["provenance"] = json.dumps(net.provenance, sort_keys=True)
            f.attrs["spdnn_version"] = __version__
            for k, (w, b) in enumerate(zip(net.layers, net.biases), start=1):
                g = f.create_group(_layer_name(k))
                _dataset(g, "indptr", w.indptr.astype(np.int64))
                _dataset(g, "indices", w.indices.astype(np.int32))
                _dataset(g, "data", w.data.astype(np.float32))
                _dataset(g, "bias", b.astype(np.float32))


def _dataset(group, name, array):
    # Chunked + shuffled gzip: the constant weights and sorted indices compress ~5x.
    kw = {}
    if array.size >= 4096:
        kw = dict(chunks=(min(array.size, 1 << 18),), compression="gzip", compression_opts=1, shuffle=True)
    group.create_dataset(name, data=array, track_times=False, **kw)


@dataclass
class NetworkHeader:
    widths: list[int]
    ymax: float
    activation: str
    provenance: dict

    @property
    def num_layers(self) -> int:
        return len(self.widths) - 1


def _open(path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such network file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not an HDF5 network file ({e})") from None
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        f.close()
        raise UserError(f"{path}: not a spdnn network file (format attribute {fmt!r})")
    version = str(f.attrs.get("format_version", "?"))
    major = version.split(".")[0]
    if not major.isdigit() or int(major) != SUPPORTED_MAJOR:
        f.close()
        raise UserError(f"{path}: network format version {version} is not supported (this spdnn reads {SUPPORTED_MAJOR}.x)")
    return f


def _header(f) -> NetworkHeader:
    return NetworkHeader(
        widths=[int(x) for x in f.attrs["widths"]],
        ymax=float(f.attrs["ymax"]),
        activation=str(f.attrs["activation"]),
        provenance=json.loads(f.attrs["provenance"]),
    )


def read_header(path) -> NetworkHeader:
    with _open(path) as f:
        return _header(f)


def read_network(path) -> Network:
    with _open(path) as f:
        h = _header(f)
        layers, biases = [], []
        for k in range(1, h.num_layers + 1):
            g = f[_layer_name(k)]
            shape = (h.widths[k], h.widths[k - 1])
            layers.append(sp.csr_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=shape))
            biases.append(g["bias"][:])
    return Network(layers, biases, ymax=h.ymax, activation=h.activation, provenance=h.provenance)


def iter_layer_rows(path, rows_per_layer):
    """Yield (k, W^k[rows], b^k[rows]) layer by layer, holding one layer at a time.

    Memory: the selected rows plus one layer's index arrays, never the whole network.
    """
    with _open(path) as f:
        h = _header(f)
        for k in range(1, h.num_layers + 1):
            g = f[_layer_name(k)]
            rows = np.asarray(rows_per_layer[k - 1], dtype=np.int64)
            indptr = g["indptr"][:]
            indices, data = g["indices"], g["data"]
            lo, hi = indptr[rows], indptr[rows + 1]
            counts = hi - lo
            sub_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            if rows.size and counts.sum():
                # Read the whole layer once: scattered rows would cost one HDF5 read each.
                all_idx, all_val = indices[:], data[:]
                take = _ranges(lo, counts)
                sub = sp.csr_matrix((all_val[take], all_idx[take], sub_indptr), shape=(rows.size, h.widths[k - 1]))
            else:
                sub = sp.csr_matrix((rows.size, h.widths[k - 1]), dtype=np.float32)
            yield k, sub, g["bias"][:][rows]


def read_layer_pattern(path, k: int) -> sp.csr_matrix:
    """The sparsity pattern of one layer (values included), for model-level computations."""
    with _open(path) as f:
        h = _header(f)
        g = f[_layer_name(k)]
        return sp.csr_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=(h.widths[k], h.widths[k - 1]))


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate arange(s, s+c) for each (s, c), vectorised."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts.astype(np.int64) - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(total, dtype=np.int64) + offsets


def describe(path) -> dict:
    """What `spdnn info` prints."""
    with _open(path) as f:
        h = _header(f)
        nnz = [int(f[_layer_name(k)]["indices"].shape[0]) for k in range(1, h.num_layers + 1)]
        version = str(f.attrs["format_version"])
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
        "provenance": h.provenance,
    }
