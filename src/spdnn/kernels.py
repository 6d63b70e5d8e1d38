"""Compiled compute kernels (numba) for a sparse layer: inference, forward, SDDMM and Wᵀδ.

`SparseLayer(w)` prepares a CSR weight matrix once (`layer_kernels(w)` caches it on the matrix):
rows with the same column list (16 per group on Graph Challenge layers) form a group, every other
row is a group of its own. Each kernel works group by group and tile of samples by tile: the
activations of the group's inputs are read once per tile and used for all its rows, instead of
once per row's nonzero (16× less activation traffic on Graph Challenge layers). Values are read
from the matrix itself at every call, so SGD's in-place updates of `w.data` need no re-preparation.

- `gc(bias, x, ymax)`: z = clip(W x + b on the nonzeros of W x, 0, ymax) and which samples are
  alive, in one pass (the Graph Challenge layer; `reference.gc_layer` is its definition).
- `forward(bias, x, ymax, hidden)`: z = W x + b and h = clip(z, 0, ymax) (or h = z), one pass.
- `pattern_grad(delta, x)`: ∂L/∂W on W's pattern, g_e = Σ_b δ[row_e, b] x[col_e, b] (an SDDMM).
- `transpose_times(delta)`: Wᵀ δ.
The backward kernels accumulate float32 products in float64 (exact products, nearly exact sums), as
the runtimes require (`reference.backpropagate`). Forward sums run over each row's entries in
stored order in float32, as SciPy's CSR product does: the same bits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from .arrays import ranges
from .hypergraph import identical_rows

TILE = 256  # samples per tile: a group's accumulators (16 × 256 float32 = 16 KB) stay in L1


# ---------------------------------------------------------------- kernels (compiled on first use)
def _gc_kernel(class_ptr, rows, indptr, indices, data, bias, x, ymax, z, alive, acc):
    n_samples = x.shape[1]
    for g in range(class_ptr.size - 1):
        r0, nr = class_ptr[g], class_ptr[g + 1] - class_ptr[g]
        lead = indptr[rows[r0]]
        nc = indptr[rows[r0] + 1] - lead
        for b0 in range(0, n_samples, TILE):
            bt = min(TILE, n_samples - b0)
            acc[:nr, :bt] = 0.0
            for c in range(nc):
                xj = x[indices[lead + c], b0:b0 + bt]
                for r in range(nr):
                    a = data[indptr[rows[r0 + r]] + c]
                    for b in range(bt):
                        acc[r, b] += a * xj[b]
            for r in range(nr):
                i = rows[r0 + r]
                bi = bias[i]
                for b in range(bt):
                    s = acc[r, b]
                    if s != 0.0:
                        s = min(max(s + bi, np.float32(0.0)), ymax)
                        if s > 0.0:
                            alive[b0 + b] = True
                    z[i, b0 + b] = s


def _forward_kernel(class_ptr, rows, indptr, indices, data, bias, x, ymax, hidden, z, h, acc):
    n_samples = x.shape[1]
    for g in range(class_ptr.size - 1):
        r0, nr = class_ptr[g], class_ptr[g + 1] - class_ptr[g]
        lead = indptr[rows[r0]]
        nc = indptr[rows[r0] + 1] - lead
        for b0 in range(0, n_samples, TILE):
            bt = min(TILE, n_samples - b0)
            acc[:nr, :bt] = 0.0
            for c in range(nc):
                xj = x[indices[lead + c], b0:b0 + bt]
                for r in range(nr):
                    a = data[indptr[rows[r0 + r]] + c]
                    for b in range(bt):
                        acc[r, b] += a * xj[b]
            for r in range(nr):
                i = rows[r0 + r]
                bi = bias[i]
                for b in range(bt):
                    s = acc[r, b] + bi
                    z[i, b0 + b] = s
                    h[i, b0 + b] = min(max(s, np.float32(0.0)), ymax) if hidden else s


def _pattern_grad_kernel(class_ptr, rows, indptr, indices, delta, x, out):
    n_samples = x.shape[1]
    for g in range(class_ptr.size - 1):
        r0, nr = class_ptr[g], class_ptr[g + 1] - class_ptr[g]
        lead = indptr[rows[r0]]
        nc = indptr[rows[r0] + 1] - lead
        for c in range(nc):
            xj = x[indices[lead + c]]
            for r in range(nr):
                i = rows[r0 + r]
                d = delta[i]
                s = 0.0
                for b in range(n_samples):
                    s += np.float64(d[b]) * np.float64(xj[b])
                out[indptr[i] + c] = s


def _transpose_times_kernel(class_ptr, rows, indptr, indices, data, delta, out):
    n_samples = delta.shape[1]
    for g in range(class_ptr.size - 1):
        r0, nr = class_ptr[g], class_ptr[g + 1] - class_ptr[g]
        lead = indptr[rows[r0]]
        nc = indptr[rows[r0] + 1] - lead
        for c in range(nc):
            o = out[indices[lead + c]]
            for r in range(nr):
                i = rows[r0 + r]
                a = np.float64(data[indptr[i] + c])
                d = delta[i]
                for b in range(n_samples):
                    o[b] += a * np.float64(d[b])


# pattern_grad's sum over the batch may be reordered (vectorised): its float64 sums of exact
# float32 products differ from any other order by far less than the final rounding to float32.
# The forward kernels get no fast-math at all: their float32 sums must be SciPy's, bit for bit.
_SOURCES = {"gc": (_gc_kernel, False), "forward": (_forward_kernel, False),
            "pattern_grad": (_pattern_grad_kernel, {"reassoc", "contract"}),
            "transpose_times": (_transpose_times_kernel, False)}


@lru_cache(maxsize=None)
def _kernel(name: str):
    """The compiled kernel (numba; compiled on first use in a process, cached on disk)."""
    from numba import njit

    source, fastmath = _SOURCES[name]
    return njit(cache=True, nogil=True, boundscheck=False, fastmath=fastmath)(source)


# ---------------------------------------------------------------- the prepared layer
class SparseLayer:
    """A CSR weight matrix prepared for the kernels (see the module docstring)."""

    def __init__(self, w):
        if not (sp.issparse(w) and w.format == "csr" and w.dtype == np.float32):
            w = sp.csr_matrix(w, dtype=np.float32)
        self.w = w  # values are read from here at every call (SGD updates them in place)
        self.shape = w.shape
        n = w.shape[0]
        classes = identical_rows(w) if n else np.zeros(0, np.int64)
        n_cls = int(classes.max()) + 1 if n else 0
        rows = np.argsort(classes, kind="stable")  # rows of class 0, then class 1, ...
        sizes = np.bincount(classes, minlength=n_cls)
        first = rows[np.concatenate([[0], np.cumsum(sizes)[:-1]])] if n_cls else rows
        if n_cls == n or not _same_order(w, first[classes]):  # groups need one column list each
            rows, sizes = np.arange(n), np.ones(n, np.int64)
        self.groups = len(sizes)
        self.rows = rows.astype(np.int64)
        self.class_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.largest_group = int(sizes.max()) if sizes.size else 1
        self.indptr = w.indptr.astype(np.int64)
        self.indices = w.indices.astype(np.int64)

    def matches(self, w) -> bool:
        """Is this still w's preparation (same matrix object, same pattern arrays)?"""
        return self.w is w and self.w.indices.size == self.indices.size

    def gc(self, bias, x, ymax):
        """(z as rows × samples float32, alive: bool per sample) for activations x (inputs × samples)."""
        x = _block(x)
        z = np.empty((self.shape[0], x.shape[1]), np.float32)
        alive = np.zeros(x.shape[1], bool)
        _kernel("gc")(self.class_ptr, self.rows, self.indptr, self.indices, self.w.data,
                      np.asarray(bias, np.float32), x, _cap(ymax), z, alive, self._accumulators())
        return z, alive

    def forward(self, bias, x, ymax, hidden: bool = True):
        """(z = W x + b, h = clip(z, 0, ymax) if hidden else z), float32."""
        x = _block(x)
        z = np.empty((self.shape[0], x.shape[1]), np.float32)
        h = np.empty_like(z) if hidden else z
        _kernel("forward")(self.class_ptr, self.rows, self.indptr, self.indices, self.w.data,
                           np.asarray(bias, np.float32), x, _cap(ymax), hidden, z, h, self._accumulators())
        return z, h

    def _accumulators(self) -> np.ndarray:
        return np.empty((self.largest_group, TILE), np.float32)

    def pattern_grad(self, delta, x):
        """g_e = Σ_b δ[row_e, b] · x[col_e, b] for every stored entry e (CSR order), float64."""
        out = np.empty(self.indices.size, np.float64)
        _kernel("pattern_grad")(self.class_ptr, self.rows, self.indptr, self.indices, _block(delta), _block(x), out)
        return out

    def transpose_times(self, delta):
        """Wᵀ δ in float64 (inputs × samples)."""
        delta = _block(delta)
        out = np.zeros((self.shape[1], delta.shape[1]), np.float64)
        _kernel("transpose_times")(self.class_ptr, self.rows, self.indptr, self.indices, self.w.data, delta, out)
        return out


def layer_kernels(w) -> SparseLayer:
    """w's `SparseLayer`, prepared on first use and kept on the matrix object itself (a layer is
    prepared once per run, not once per step; a new matrix gets a new preparation)."""
    prepared = getattr(w, "_spdnn_kernels", None)
    if prepared is None or not prepared.matches(w):
        prepared = SparseLayer(w)
        if prepared.w is w:
            w._spdnn_kernels = prepared
    return prepared


def _block(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _cap(ymax) -> np.float32:
    return np.float32(min(float(ymax), float(np.finfo(np.float32).max)))


def _same_order(w, rep: np.ndarray) -> bool:
    """Does every row list its columns in the same order as its class's representative row rep[i]?
    (identical_rows compares sets; a group shares one column list, so it needs the same order.)"""
    gather = ranges(w.indptr[rep], np.diff(w.indptr))
    return bool(np.array_equal(w.indices, w.indices[gather]))
