"""Compiled compute kernels (numba): the Graph Challenge layer, fused, and on row classes.

`GcLayer(w)` prepares a weight matrix once; `layer(bias, x, ymax)` returns
z = clip(W x + b on the nonzeros of W x, 0, ymax) and which samples (columns of x) are still alive,
in one pass over the output instead of scipy's SpMM followed by a bias pass, a clip pass and an
`any` pass.

Rows with the same column pattern (16 per group on Graph Challenge layers) are computed together:
for each group, the activations of its 32 inputs are read once per tile of samples and each is
used for all 16 rows, instead of being read again for every row. That cuts the activation traffic
16×: a layer of the 1024-neuron network reads its 1024 × B activation block once per group rather
than once per row's nonzero. Every output sums its row's products in CSR order, in float32, as
scipy's SpMM does, so the results are the same bits.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .arrays import ranges
from .hypergraph import identical_rows

TILE = 256  # samples per tile: a group's accumulators (16 × 256 float32 = 16 KB) stay in L1


def _jit(fn):
    from numba import njit

    return njit(cache=True, nogil=True, boundscheck=False)(fn)


def _grouped_kernel(class_ptr, rows, col_ptr, cols, val_ptr, vals, bias, x, ymax, z, alive):
    n_samples = x.shape[1]
    max_rows = 0
    for g in range(class_ptr.size - 1):
        max_rows = max(max_rows, class_ptr[g + 1] - class_ptr[g])
    acc = np.empty((max(max_rows, 1), TILE), np.float32)
    for g in range(class_ptr.size - 1):
        r0, nr = class_ptr[g], class_ptr[g + 1] - class_ptr[g]
        c0, nc = col_ptr[g], col_ptr[g + 1] - col_ptr[g]
        v0 = val_ptr[g]
        for b0 in range(0, n_samples, TILE):
            bt = min(TILE, n_samples - b0)
            for r in range(nr):
                for b in range(bt):
                    acc[r, b] = 0.0
            for c in range(nc):
                xj = x[cols[c0 + c], b0:b0 + bt]
                for r in range(nr):
                    a = vals[v0 + r * nc + c]
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


def _rows_kernel(indptr, indices, data, bias, x, ymax, z, alive):
    n_samples = x.shape[1]
    acc = np.empty(TILE, np.float32)
    for i in range(indptr.size - 1):
        bi = bias[i]
        for b0 in range(0, n_samples, TILE):
            bt = min(TILE, n_samples - b0)
            for b in range(bt):
                acc[b] = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                a = data[p]
                xj = x[indices[p], b0:b0 + bt]
                for b in range(bt):
                    acc[b] += a * xj[b]
            for b in range(bt):
                s = acc[b]
                if s != 0.0:
                    s = min(max(s + bi, np.float32(0.0)), ymax)
                    if s > 0.0:
                        alive[b0 + b] = True
                z[i, b0 + b] = s


def _same_order(w, rep: np.ndarray) -> bool:
    """Does every row list its columns in the same order as its class's representative row rep[i]?
    (identical_rows compares sets; a group shares one column list, so it needs the same order.)"""
    lengths = np.diff(w.indptr)
    gather = ranges(w.indptr[rep], lengths)
    return bool(np.array_equal(w.indices, w.indices[gather]))


_compiled: dict = {}


def _kernel(name):
    if name not in _compiled:
        _compiled[name] = _jit({"grouped": _grouped_kernel, "rows": _rows_kernel}[name])
    return _compiled[name]


class GcLayer:
    """One weight matrix prepared for the fused Graph Challenge layer (see the module docstring)."""

    def __init__(self, w):
        w = sp.csr_matrix(w, dtype=np.float32)  # entries in their stored order: each sum keeps its order
        self.shape = w.shape
        self.nnz = w.nnz
        classes = identical_rows(w) if w.shape[0] else np.zeros(0, np.int64)
        n_cls = int(classes.max()) + 1 if classes.size else 0
        rows = np.argsort(classes, kind="stable")  # rows of class 0, then class 1, ...
        sizes = np.bincount(classes, minlength=n_cls)
        first = rows[np.concatenate([[0], np.cumsum(sizes)[:-1]])] if n_cls else rows
        lengths = np.diff(w.indptr)[first]
        self.grouped = 0 < n_cls <= w.shape[0] // 2 and _same_order(w, first[classes])
        if self.grouped:
            self.class_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            self.rows = rows.astype(np.int64)
            self.col_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            self.cols = w.indices[ranges(w.indptr[first], lengths)].astype(np.int64)
            self.val_ptr = np.concatenate([[0], np.cumsum(sizes * lengths)]).astype(np.int64)
            self.vals = w.data[ranges(w.indptr[rows], np.diff(w.indptr)[rows])]
        else:
            self.indptr = w.indptr.astype(np.int64)
            self.indices = w.indices.astype(np.int64)
            self.data = w.data

    def __call__(self, bias, x, ymax):
        """(z as (rows × samples) float32, alive: bool per sample) for activations x (inputs × samples)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        bias = np.asarray(bias, np.float32)
        z = np.empty((self.shape[0], x.shape[1]), np.float32)
        alive = np.zeros(x.shape[1], bool)
        ymax = np.float32(min(float(ymax), float(np.finfo(np.float32).max)))
        if self.grouped:
            _kernel("grouped")(self.class_ptr, self.rows, self.col_ptr, self.cols, self.val_ptr, self.vals,
                               bias, x, ymax, z, alive)
        else:
            _kernel("rows")(self.indptr, self.indices, self.data, bias, x, ymax, z, alive)
        return z, alive
