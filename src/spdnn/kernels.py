"""Compute kernels of a sparse layer: inference, forward, weight gradient (SDDMM) and Wᵀδ.

`SparseLayer(w)` prepares a CSR weight matrix once (`layer_kernels(w)` keeps the preparation on
the matrix object). Values are read from `w.data` at every call, so SGD's in-place updates need
no re-preparation.

Graph Challenge and RadiX-Net layers are made of dense blocks: rows with the same column list
come in groups (16 rows reading the same 32 inputs on the challenge's layers). When every row of
a layer is in such a group and all groups have one shape (R rows × C columns), the layer is G
dense R×C blocks: the forward product is a compiled loop over the blocks that reads each of a
group's C input rows once for its R rows (summing every entry in stored order, as the CSR path does,
so that a sample's value does not depend on its batch: `_block_products`), and the float64
backward products are batches of G small dense products (BLAS, `np.matmul`). Any other layer
(random, pruned, a rank's share that splits groups) takes the CSR path: compiled loops that sum
each row in stored order forward (`_csr_products`, SciPy's bits), widen one row of δ once for all
its entries for the weight gradient (`_csr_pattern_grad`), and gather Wᵀδ input by input along
Wᵀ's pattern, built on the first backward pass (`_csr_add_transpose_times`, SciPy's bits).

- `gc(bias, x, ymax)`: z = clip(W x + b on the nonzeros of W x, 0, ymax) and which samples are
  still alive (the Graph Challenge layer; `reference.gc_layer` is its definition), the bias, clip
  and alive flags fused into one compiled pass (numba) that also puts rows back in order.
- `forward(bias, x, ymax, hidden)`: z = W x + b and h = clip(z, 0, ymax) (or h = z).
- `pattern_grad(delta, x)`: ∂L/∂W on W's pattern, g_e = Σ_b δ[row_e, b] x[col_e, b], float64.
- `transpose_times(delta)`: Wᵀ δ in float64.
The backward products are float64 (exact products of float32 values, nearly exact sums: what
`reference.backpropagate` relies on to make every runtime's sums round alike).
"""

from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp

from .arrays import compiled, first_index, ranges
from .hypergraph import identical_rows

# Gathered activations per batch of dense blocks (`SparseLayer._chunks`): about one core's L2, so
# the backward pass's float64 gathers are still in cache when the products read them (16 MiB
# before: the backward pass of a 16384-row layer 1.5–2× slower; the forward pass no faster).
CHUNK_BYTES = 1 << 20


# ---------------------------------------------------------------- compiled element-wise passes
def _gc_finish(zb, order, bias, ymax, z, alive):
    """z[order[q]] = clip(zb[q] + bias on nonzeros, 0, ymax); alive[b] |= any entry > 0."""
    for q in range(zb.shape[0]):
        i = order[q]
        bi = bias[i]
        src = zb[q]
        dst = z[i]
        for b in range(src.size):
            s = src[b]
            if s != 0.0:
                s = min(max(s + bi, np.float32(0.0)), ymax)
                if s > 0.0:
                    alive[b] = True
            dst[b] = s


def _forward_finish(zb, order, bias, ymax, hidden, z, h):
    """z[order[q]] = zb[q] + bias; h = clip(z, 0, ymax) if hidden (else h is z)."""
    for q in range(zb.shape[0]):
        i = order[q]
        bi = bias[i]
        src = zb[q]
        zi = z[i]
        hi = h[i]
        for b in range(src.size):
            s = src[b] + bi
            zi[b] = s
            if hidden:
                hi[b] = min(max(s, np.float32(0.0)), ymax)


def _block_products(values, cols, x, out):
    """out[g, r, b] = Σ_c values[g, r, c]·x[cols[g, c], b], float32, each sum from 0 in stored
    order c = 0, 1, …: the CSR path's order (SciPy), for every batch size. BLAS's sgemm picks its
    kernels, and so its roundings, by the matrix sizes: a rank's share of the samples then rounds
    differently from the whole batch and a sample near a neuron's threshold changes category
    (measured: data-parallel inference at K = 4 one survivor off the serial run). The loop over
    samples is the inner one, so it vectorises without reordering any sum; eight inputs at a time
    (the partial sum t stays in a register, its adds in order), so the output row is read and
    written once per eight inputs rather than once per input: 1.4–2.4× faster than one at a time,
    as fast as sgemm or faster on a 1024-row GC layer at B = 16 … 1797."""
    for g in range(values.shape[0]):
        dst = out[g]
        for r in range(dst.shape[0]):
            for b in range(dst.shape[1]):
                dst[r, b] = np.float32(0.0)
        c = 0
        while c + 8 <= values.shape[2]:
            s0, s1, s2, s3 = x[cols[g, c]], x[cols[g, c + 1]], x[cols[g, c + 2]], x[cols[g, c + 3]]
            s4, s5, s6, s7 = x[cols[g, c + 4]], x[cols[g, c + 5]], x[cols[g, c + 6]], x[cols[g, c + 7]]
            for r in range(dst.shape[0]):
                w = values[g, r]
                w0, w1, w2, w3 = w[c], w[c + 1], w[c + 2], w[c + 3]
                w4, w5, w6, w7 = w[c + 4], w[c + 5], w[c + 6], w[c + 7]
                d = dst[r]
                for b in range(d.size):
                    t = d[b]
                    t += w0 * s0[b]
                    t += w1 * s1[b]
                    t += w2 * s2[b]
                    t += w3 * s3[b]
                    t += w4 * s4[b]
                    t += w5 * s5[b]
                    t += w6 * s6[b]
                    t += w7 * s7[b]
                    d[b] = t
            c += 8
        while c < values.shape[2]:  # the last C mod 8 inputs, one at a time
            src = x[cols[g, c]]
            for r in range(dst.shape[0]):
                w0 = values[g, r, c]
                d = dst[r]
                for b in range(d.size):
                    d[b] += w0 * src[b]
            c += 1


def _masked_delta(back, z, ymax, out):
    """out = back where 0 < z < ymax (f' = 1), else 0, rounded to float32 once."""
    for i in range(z.shape[0]):
        bi = back[i]
        zi = z[i]
        oi = out[i]
        for b in range(zi.size):
            oi[b] = np.float32(bi[b]) if 0.0 < zi[b] < ymax else np.float32(0.0)


def _gather_rows(src, index, out):
    """out[q] = src[index[q]], converted to out's type (float32 → float64 is exact): a gather and
    a conversion in one pass, where np.take then astype would write and read the block twice (and
    np.take alone, float32 for the forward pass, measured ≈ 1.2× slower than this loop)."""
    for q in range(index.size):
        s = src[index[q]]
        d = out[q]
        for b in range(s.size):
            d[b] = s[b]


def _add_rows_to(sums, target, first, out):
    """out[target[p]] += sums[p] for p = 0, 1, … (a block row's partial sums to its input neuron);
    where first[p] (the target's first row) it is = instead, so out needs no zeroing pass."""
    for p in range(sums.shape[0]):
        s = sums[p]
        d = out[target[p]]
        if first[p]:
            for b in range(s.size):
                d[b] = s[b]
        else:
            for b in range(s.size):
                d[b] += s[b]


def _row_sums(a, out):
    """out[i] = Σ_b a[i, b] in float64 (the bias gradient). Reassociated so that it vectorises:
    the order of summation is the compiled loop's, one order for every runtime on a machine."""
    for i in range(a.shape[0]):
        ai = a[i]
        s = 0.0
        for b in range(ai.size):
            s += np.float64(ai[b])
        out[i] = s


def _csr_products(indptr, indices, data, x, out):
    """out[i, b] = Σ_e data[e]·x[indices[e], b] over row i's entries, float32, each sum from 0 in
    stored order: SciPy's CSR product, bitwise (its loop adds one entry at a time in the same
    order), four entries at a time with the partial sum in a register, as `_block_products`: 1.1×
    SciPy at B = 8, 2× at B = 64 and 256 on a random 8192 × 16384 layer of 32 a row."""
    for i in range(out.shape[0]):
        dst = out[i]
        for b in range(dst.size):
            dst[b] = np.float32(0.0)
        e, end = indptr[i], indptr[i + 1]
        while e + 4 <= end:
            s0, s1, s2, s3 = x[indices[e]], x[indices[e + 1]], x[indices[e + 2]], x[indices[e + 3]]
            w0, w1, w2, w3 = data[e], data[e + 1], data[e + 2], data[e + 3]
            for b in range(dst.size):
                t = dst[b]
                t += w0 * s0[b]
                t += w1 * s1[b]
                t += w2 * s2[b]
                t += w3 * s3[b]
                dst[b] = t
            e += 4
        while e < end:
            src, w0 = x[indices[e]], data[e]
            for b in range(dst.size):
                dst[b] += w0 * src[b]
            e += 1


def _csr_pattern_grad(indptr, indices, delta, x, out):
    """out[e] = Σ_b δ[i, b]·x[indices[e], b] for every entry e of row i (the SDDMM on a CSR
    pattern), float64 products of float32 values (exact) summed in the compiled loop's order: one
    order for every runtime (a rank's rows keep their entries, so their groups of four), as
    `_row_sums`. One row of δ widened once for all its entries, four entries at a time so that each
    δ value loaded serves four sums: 1.2–1.6× one at a time (8192 × 16384 layer of 32 a row: 7.1 →
    4.8 ms at B = 64, 29.2 → 18.0 at B = 256), and one at a time was 5.8× NumPy's gathered einsum."""
    n_samples = delta.shape[1]
    d = np.empty(n_samples, np.float64)
    for i in range(delta.shape[0]):
        for b in range(n_samples):
            d[b] = delta[i, b]
        e, end = indptr[i], indptr[i + 1]
        while e + 4 <= end:
            x0, x1, x2, x3 = x[indices[e]], x[indices[e + 1]], x[indices[e + 2]], x[indices[e + 3]]
            s0 = s1 = s2 = s3 = 0.0
            for b in range(n_samples):
                db = d[b]
                s0 += db * np.float64(x0[b])
                s1 += db * np.float64(x1[b])
                s2 += db * np.float64(x2[b])
                s3 += db * np.float64(x3[b])
            out[e], out[e + 1], out[e + 2], out[e + 3] = s0, s1, s2, s3
            e += 4
        while e < end:
            src = x[indices[e]]
            s = 0.0
            for b in range(n_samples):
                s += d[b] * np.float64(src[b])
            out[e] = s
            e += 1


def _csr_transposed_pattern(indptr, indices, t_indptr, t_rows, t_pos):
    """Wᵀ's pattern from W's CSR by a counting sort on the column, O(nnz): Wᵀ's row j (W's column j)
    holds t_rows[p], W's row, and t_pos[p], the entry's position in W's data, for p in
    t_indptr[j]..t_indptr[j + 1], W's rows ascending (t_indptr: zeros on entry)."""
    n_cols = t_indptr.size - 1
    for e in range(indices.size):
        t_indptr[indices[e] + 1] += 1
    for j in range(n_cols):
        t_indptr[j + 1] += t_indptr[j]
    fill = t_indptr[:n_cols].copy()
    for i in range(indptr.size - 1):
        for e in range(indptr[i], indptr[i + 1]):
            p = fill[indices[e]]
            t_rows[p] = i
            t_pos[p] = e
            fill[indices[e]] = p + 1


def _csr_add_transpose_times(t_indptr, t_rows, t_pos, data, delta, out):
    """out += Wᵀ δ in float64 from Wᵀ's pattern (`_csr_transposed_pattern`): each input's row of
    out gathers the rows of δ that read it, W's rows ascending, four at a time with the partial sum
    in a register, so each row of out is read and written once. The adds come in the order of a
    scatter of W's rows in turn (SciPy's W.T @ δ): the same bits. The scatter, before, wrote
    every input's row once per entry: 59.6 → 20.7 ms at B = 256 on a random 8192 × 16384 layer of 32
    a row, 8.6 → 5.1 at B = 64, 0.20 → 0.14 ms at B = 16 on a 1024-row one."""
    n_samples = delta.shape[1]
    for j in range(out.shape[0]):
        dst = out[j]
        e, end = t_indptr[j], t_indptr[j + 1]
        while e + 4 <= end:
            s0, s1, s2, s3 = delta[t_rows[e]], delta[t_rows[e + 1]], delta[t_rows[e + 2]], delta[t_rows[e + 3]]
            v0, v1 = np.float64(data[t_pos[e]]), np.float64(data[t_pos[e + 1]])
            v2, v3 = np.float64(data[t_pos[e + 2]]), np.float64(data[t_pos[e + 3]])
            for b in range(n_samples):
                t = dst[b]
                t += v0 * np.float64(s0[b])
                t += v1 * np.float64(s1[b])
                t += v2 * np.float64(s2[b])
                t += v3 * np.float64(s3[b])
                dst[b] = t
            e += 4
        while e < end:
            src, v = delta[t_rows[e]], np.float64(data[t_pos[e]])
            for b in range(n_samples):
                dst[b] += v * np.float64(src[b])
            e += 1


# name → (pass, numba fastmath flags): only a pure float64 sum may be reassociated (vectorised)
_PASSES = {"gc": (_gc_finish, False), "forward": (_forward_finish, False), "masked_delta": (_masked_delta, False),
           "block_products": (_block_products, False),
           "gather_rows": (_gather_rows, False), "add_rows_to": (_add_rows_to, False),
           "row_sums": (_row_sums, frozenset({"reassoc"})),
           "csr_products": (_csr_products, False),
           "csr_pattern_grad": (_csr_pattern_grad, frozenset({"reassoc"})),
           "csr_add_transpose_times": (_csr_add_transpose_times, False),
           "csr_transposed_pattern": (_csr_transposed_pattern, False)}


def _compiled(name: str):
    """The compiled pass (`arrays.compiled`)."""
    return compiled(*_PASSES[name])


def row_sums(a) -> np.ndarray:
    """Σ_b a[i, b] per row, float64 (∂L/∂b from δ): one compiled pass, where NumPy's sum with a
    dtype converts through a buffer (measured 0.2 ms per 1024 × 256 layer, 8 % of a step)."""
    a = _block(a)
    out = np.empty(a.shape[0], np.float64)
    _compiled("row_sums")(a, out)
    return out


def add_rows(out, target, sums) -> None:
    """out[target[p]] += sums[p] for p = 0, 1, … in turn (a fold's received partial sums to their
    owned rows): one compiled pass, where NumPy's fancy `+=` gathers, adds and scatters (0.6 against
    0.17 ms on 8192 × 64 float64 rows)."""
    _compiled("add_rows_to")(sums, target, np.zeros(len(target), bool), out)


def masked_delta(back, z, ymax) -> np.ndarray:
    """δ^{k−1} = (Wᵀδ^k) ⊙ f'(z^{k−1}) in float32, f'(z) = 1 strictly inside (0, ymax): one pass."""
    back = np.ascontiguousarray(back, dtype=np.float64)
    z = _block(z)
    out = np.empty(z.shape, np.float32)
    _compiled("masked_delta")(back, z, _cap(ymax) if np.isfinite(ymax) else np.float32(np.inf), out)
    return out


# ---------------------------------------------------------------- the prepared layer
class SparseLayer:
    """A CSR weight matrix prepared for the kernels (see the module docstring)."""

    def __init__(self, w):
        if not (sp.issparse(w) and w.format == "csr" and w.dtype == np.float32):
            w = sp.csr_matrix(w, dtype=np.float32)
        self._w = w  # values are read from here at every call (SGD updates them in place)
        self.shape = w.shape
        self._transposed = {}  # rest? → Wᵀ's pattern of the layer / of its rest rows, on first backward
        self.rows = None  # G × R row ids of the dense blocks, if any
        blocks = _dense_blocks(w)
        if blocks is not None:
            rows, cols = blocks
            c = cols.shape[1]
            lengths = np.diff(w.indptr)
            self.rows = rows  # G × R row ids
            self.order = rows.reshape(-1)  # block order → row id
            self.cols = cols
            self.row_length = c
            # For the Wᵀδ scatter: which block entry reads its input first, and inputs none reads.
            read, first = np.unique(cols.reshape(-1), return_index=True)
            self.first_read = np.zeros(cols.size, bool)
            self.first_read[first] = True
            self.first_read = self.first_read.reshape(cols.shape)
            self.unread = np.setdiff1d(np.arange(w.shape[1]), read, assume_unique=True)
            in_block = np.zeros(w.shape[0], bool)
            in_block[self.order] = True
            self.rest = np.flatnonzero(~in_block)  # rows outside the blocks (a group split by a partition)
            # Every row of C entries: w.data is an n × C array and a block row is one of its rows;
            # else the blocks' entries are gathered by position.
            self.block_pos = None
            if self.rest.size or not (lengths == c).all():
                self.block_pos = ranges(w.indptr[self.order], np.full(self.order.size, c))
            if self.rest.size:
                self.rest_pos = ranges(w.indptr[self.rest], lengths[self.rest])
                self.rest_matrix = sp.csr_matrix(
                    (w.data[self.rest_pos], w.indices[self.rest_pos],
                     np.concatenate([[0], np.cumsum(lengths[self.rest])])), shape=(self.rest.size, w.shape[1]))

    @property
    def w(self):
        """The weight matrix (held weakly once the preparation is kept on it: `layer_kernels`)."""
        return self._w() if isinstance(self._w, weakref.ref) else self._w

    @property
    def dense_blocks(self) -> bool:
        return self.rows is not None

    def _values(self, dtype=np.float32) -> np.ndarray:
        """The blocks' weights, G × R × C, read from w.data now."""
        if self.block_pos is None:  # each block row is one row of the n × C data
            values = np.take(self.w.data.reshape(-1, self.row_length), self.rows, axis=0)
        else:
            values = np.take(self.w.data, self.block_pos).reshape(self.rows.shape + (self.row_length,))
        return values.astype(dtype, copy=False)

    def _rest(self):
        """The rows outside the blocks as a CSR matrix, with w's current values."""
        self.rest_matrix.data[:] = self.w.data[self.rest_pos]
        return self.rest_matrix

    def _transposed_pattern(self, rest: bool = False):
        """`transposed_pattern` of the layer (or of its rest rows), built on first use: the backward
        pass needs it, inference never. A pattern: `_rest()`'s values change, its structure not."""
        if rest not in self._transposed:
            self._transposed[rest] = transposed_pattern(self.rest_matrix if rest else self.w)
        return self._transposed[rest]

    def prepare_backward(self) -> None:
        """Build Wᵀ's pattern now (of the layer, or of its rows outside the blocks) rather than in
        the first training step's backward pass (`prepare_training`)."""
        if not self.dense_blocks:
            self._transposed_pattern()
        elif self.rest.size:
            self._transposed_pattern(rest=True)

    def _csr_transpose_times(self, delta) -> np.ndarray:
        """Wᵀ δ of a CSR layer (no dense blocks), float64."""
        out = np.zeros((self.shape[1], delta.shape[1]), np.float64)
        return _add_transpose_times_csr(self.w, self._transposed_pattern(), delta, out)

    def _chunks(self, n_samples: int, itemsize: int) -> list[slice]:
        """Batches of blocks whose gathered inputs and outputs take ≈ CHUNK_BYTES: memory stays
        O(activations) at any width (a RadiX-Net input feeds two blocks: gathering all at once
        would double the activation block) and a batch's gather stays in cache for its products."""
        g, r = self.rows.shape
        per_block = (self.cols.shape[1] + r) * max(n_samples, 1) * itemsize
        step = max(1, CHUNK_BYTES // per_block)
        return [slice(lo, min(g, lo + step)) for lo in range(0, g, step)]

    def _products(self, x):
        """W x in block order, a batch of blocks at a time (`_chunks`): yields (rows × B float32
        products, those rows' ids), every entry summed in its row's stored order
        (`_block_products`), so a sample's value does not depend on the batch it is in. A batch at
        a time, the products never take a whole layer's activations beside the input and the
        output (measured 2.6 → 2.2 GB at N = 65536, 1,797 samples)."""
        values, products = self._values(), _compiled("block_products")
        for part in self._chunks(x.shape[1], 4):
            rows = self.rows[part]
            zb = np.empty(rows.shape + (x.shape[1],), np.float32)
            products(values[part], self.cols[part], x, zb)
            yield zb.reshape(rows.size, x.shape[1]), rows.reshape(-1)

    def gc(self, bias, x, ymax, out=None):
        """(z as rows × samples float32, alive: bool per sample) for activations x (inputs × samples);
        z written into `out` (rows × samples float32, C-contiguous) where given."""
        x = _block(x)
        bias = np.asarray(bias, np.float32)
        if out is not None and (out.shape != (self.shape[0], x.shape[1]) or out.dtype != np.float32
                                or not out.flags.c_contiguous):  # the compiled pass checks no bounds
            raise ValueError(f"out must be a C-contiguous float32 {self.shape[0]} × {x.shape[1]} block")
        if not self.dense_blocks:
            z = _csr_gc(self.w, bias, x, ymax, out)
            return z, z.any(axis=0)
        z = np.empty((self.shape[0], x.shape[1]), np.float32) if out is None else out
        alive = np.zeros(x.shape[1], bool)
        finish = _compiled("gc")
        for zb, rows in self._products(x):
            finish(zb, rows, bias, _cap(ymax), z, alive)
        if self.rest.size:
            zr = _csr_gc(self._rest(), bias[self.rest], x, ymax)
            z[self.rest] = zr
            alive |= zr.any(axis=0)
        return z, alive

    def forward(self, bias, x, ymax, hidden: bool = True):
        """(z = W x + b, h = clip(z, 0, ymax) if hidden else z), float32."""
        x = _block(x)
        bias = np.asarray(bias, np.float32)
        if not self.dense_blocks:
            z = _csr_affine(self.w, bias, x)
            return z, (np.clip(z, 0.0, ymax) if hidden else z)
        z = np.empty((self.shape[0], x.shape[1]), np.float32)
        h = np.empty_like(z) if hidden else z
        finish = _compiled("forward")
        for zb, rows in self._products(x):
            finish(zb, rows, bias, _cap(ymax), hidden, z, h)
        if self.rest.size:
            zr = _csr_affine(self._rest(), bias[self.rest], x)
            z[self.rest] = zr
            if hidden:
                h[self.rest] = np.clip(zr, 0.0, ymax)
        return z, h

    def backward(self, delta, x, transpose: bool = True):
        """(∂L/∂W on the pattern: g_e = Σ_b δ[row_e, b] · x[col_e, b] in CSR order, and Wᵀ δ when
        `transpose`, else None), both float64; δ is gathered and widened once for both."""
        delta, x = np.asarray(delta), np.asarray(x)
        if not self.dense_blocks:
            return _pattern_grad_csr(self.w, delta, x), (self._csr_transpose_times(delta) if transpose else None)
        n_samples, c = delta.shape[1], self.row_length
        r = self.rows.shape[1]
        blocks = np.empty(self.rows.shape + (c,), np.float64)  # the gradient, block by block
        values = self._values(np.float64).transpose(0, 2, 1) if transpose else None  # G × C × R
        back = np.empty((self.shape[1], n_samples), np.float64) if transpose else None
        if transpose and self.unread.size:
            back[self.unread] = 0.0  # inputs no block reads (the scatter below writes the others)
        delta, x = _block(delta), _block(x)
        gather, add_rows = _compiled("gather_rows"), _compiled("add_rows_to")
        for part in self._chunks(n_samples, 8):
            g = part.stop - part.start
            d = np.empty((g * r, n_samples), np.float64)
            gather(delta, self.rows[part].reshape(-1), d)
            d = d.reshape(g, r, n_samples)  # g × R × B
            xt = np.empty((g * c, n_samples), np.float64)
            gather(x, self.cols[part].reshape(-1), xt)
            np.matmul(d, xt.reshape(g, c, n_samples).transpose(0, 2, 1), out=blocks[part])  # δ_R X_Cᵀ
            if transpose:  # each block's V_gᵀ δ_R, its rows added to the inputs they belong to
                add_rows(np.matmul(values[part], d).reshape(g * c, n_samples), self.cols[part].reshape(-1),
                         self.first_read[part].reshape(-1), back)
        if self.block_pos is None:
            grad = np.empty((self.shape[0], c), np.float64)
            grad[self.order] = blocks.reshape(-1, c)
            return grad.reshape(-1), back
        grad = np.empty(self.w.nnz, np.float64)
        grad[self.block_pos] = blocks.reshape(-1)
        if self.rest.size:
            rest, d_rest = self._rest(), np.take(delta, self.rest, axis=0)
            grad[self.rest_pos] = _pattern_grad_csr(rest, d_rest, x)
            if transpose:
                _add_transpose_times_csr(rest, self._transposed_pattern(rest=True), d_rest, back)
        return grad, back

    def pattern_grad(self, delta, x):
        """g_e = Σ_b δ[row_e, b] · x[col_e, b] for every stored entry e (CSR order), float64."""
        return self.backward(delta, x, transpose=False)[0]

    def transpose_times(self, delta):
        """Wᵀ δ in float64 (inputs × samples)."""
        delta = np.asarray(delta)
        if not self.dense_blocks:
            return self._csr_transpose_times(delta)
        return self.backward(delta, np.zeros((self.shape[1], delta.shape[1]), np.float32))[1]


def layer_kernels(w) -> SparseLayer:
    """w's `SparseLayer`, prepared on first use and kept on the matrix object itself (a layer is
    prepared once per run, not once per step; a new matrix gets a new preparation). The preparation
    holds w weakly: a strong reference back would make a cycle that only Python's cyclic collector
    frees, and a streamed network (one layer read at a time) would keep every layer it had read
    until it ran (measured: +14 MB a layer at N = 65536, 0.7 GB over 50 layers)."""
    prepared = getattr(w, "_spdnn_kernels", None)
    if prepared is None or prepared.w is not w or prepared.w.indices.size != w.indices.size:
        prepared = SparseLayer(w)
        if prepared.w is w:
            prepared._w = weakref.ref(w)
            w._spdnn_kernels = prepared
    return prepared


def _warm_up_layer():
    """A 3-row layer with the dtypes of a layer read from a network file (int32 indices and
    offsets, float32 values): a block of two identical rows and one other row, so that it runs
    both the dense-block passes and the CSR ones (CSR-only layers and a block's rest rows share
    their compiled signatures: tested)."""
    return sp.csr_matrix((np.ones(5, np.float32), np.array([0, 1, 0, 1, 0], np.int32),
                          np.array([0, 2, 4, 5], np.int32)), shape=(3, 2))


def load_gc_passes() -> None:
    """Load the compiled passes `SparseLayer.gc` runs, dense blocks and CSR rows alike, now, so
    that a run's clock does not include numba's import and cache load (the first CSR layer of a
    timed batch took 0.43 s of a 1.29 s pass, the others 7 ms: measured)."""
    SparseLayer(_warm_up_layer()).gc(np.zeros(3, np.float32), np.ones((2, 1), np.float32), 32.0)


def prepare_inference(layers) -> None:
    """Prepare every layer's kernels (`layer_kernels`) and load the passes `gc` runs
    (`load_gc_passes`): an inference run's set-up, so that its clock starts at the products."""
    for w in layers:
        layer_kernels(w)
    load_gc_passes()


def load_training_passes() -> None:
    """Load the compiled passes of a training step now (forward and backward of dense blocks and of
    CSR rows, the masked δ, the bias sums; a fold's adds are the blocks' Wᵀδ adds), so that the
    first step does not pay numba's load: 0.50–0.58 s, against 10–13 ms for the next steps of a
    1024-wide, 24-layer network at B = 16 (measured), which a short run's mean step and samples per
    second carried."""
    layer, x, delta = SparseLayer(_warm_up_layer()), np.ones((2, 1), np.float32), np.ones((3, 1), np.float32)
    layer.forward(np.zeros(3, np.float32), x, 32.0)
    masked_delta(layer.backward(delta, x)[1], x, 32.0)
    row_sums(delta)


def prepare_training(layers) -> None:
    """Prepare every layer's kernels (`layer_kernels`) and, above layer 1 (whose Wᵀδ no step
    needs), Wᵀ's pattern, then load the compiled passes (`load_training_passes`): a run's set-up,
    so that its first step costs what the others do (it took 25–29 ms against 11–12 ms after, a
    1024-wide 24-layer network at B = 16, K = 2: measured)."""
    for k, w in enumerate(layers, start=1):
        prepared = layer_kernels(w)
        if k > 1:
            prepared.prepare_backward()
    load_training_passes()


def _dense_blocks(w):
    """(rows G × R, cols G × C): the dense blocks of w (`block_rows`); None when there is none."""
    if w.shape[0] == 0 or w.nnz == 0:
        return None
    lengths = np.diff(w.indptr)
    # A block row is its class's column list, in order.
    rows = block_rows(identical_rows(w, ordered=True), lengths)
    if rows is None:
        return None
    c = int(lengths[rows[0, 0]])
    cols = w.indices[w.indptr[rows[:, 0]][:, None] + np.arange(c)[None, :]].astype(np.int64)
    return rows, cols


def block_rows(classes: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """The rows the dense-block kernel computes, G × R (one block a row, in class order), from
    each row's class of identical ordered column lists (`hypergraph.identical_rows`, ids 0..G'−1)
    and its length: groups of R ≥ 2 rows, R the largest group size and C the commonest length among
    groups of that size; None when there is none. Rows of other groups (a group a partition split,
    rows of another length) and empty rows (dead neurons) stay CSR rows. The cost model counts a
    rank's block entries with it (`block_entries`), so model and kernels cannot disagree."""
    if classes.size == 0:
        return None
    sizes = np.bincount(classes)
    first = first_index(classes, sizes.size)
    row_ok = lengths > 0
    class_ok = np.bincount(classes, weights=~row_ok, minlength=sizes.size) == 0
    size = int(sizes[class_ok].max()) if class_ok.any() else 0
    if size < 2:
        return None
    full = class_ok & (sizes == size)
    c = int(np.bincount(lengths[first[full]]).argmax())
    chosen = full & (lengths[first] == c)
    rows = np.argsort(classes, kind="stable")
    return rows[chosen[classes[rows]]].reshape(-1, size).astype(np.int64)  # each chosen class's rows


def block_entries(classes: np.ndarray, lengths: np.ndarray) -> int:
    """Nonzeros of the rows `block_rows` puts in dense blocks (any class ids: compacted here)."""
    if classes.size == 0:
        return 0
    _, compact = np.unique(classes, return_inverse=True)
    rows = block_rows(compact.reshape(-1), lengths)
    return 0 if rows is None else int(lengths[rows].sum())


def _csr_times(w, x, out=None) -> np.ndarray:
    """W x for a float32 CSR w (a prepared layer's, or its rest rows) and C-contiguous float32 x
    (`_csr_products`), into `out` (checked by the caller) or a new block."""
    if out is None:
        out = np.empty((w.shape[0], x.shape[1]), np.float32)
    _compiled("csr_products")(w.indptr, w.indices, w.data, x, out)
    return out


def _csr_gc(w, bias, x, ymax, out=None) -> np.ndarray:
    """A Graph Challenge layer of CSR rows: W x, plus the bias where W x ≠ 0, clipped to [0, ymax]
    (into `out` where given)."""
    z = _csr_times(w, x, out)
    np.add(z, bias[:, None], out=z, where=z != 0)
    return np.clip(z, 0.0, ymax, out=z)


def _csr_affine(w, bias, x) -> np.ndarray:
    """W x + b of CSR rows, float32 (the training forward's pre-activation)."""
    z = _csr_times(w, x)
    z += bias[:, None]
    return z


def _pattern_grad_csr(w, delta, x) -> np.ndarray:
    """The SDDMM on any CSR pattern (`_csr_pattern_grad`), float64."""
    out = np.empty(w.nnz, np.float64)
    if w.nnz:
        _compiled("csr_pattern_grad")(w.indptr, w.indices, _block(delta), _block(x), out)
    return out


def transposed_pattern(w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t_indptr, t_rows, t_pos) of `_csr_transposed_pattern`: 8 bytes an entry (int32 row ids and
    positions) beside W's 8; built once per prepared layer, and only by a backward pass."""
    index = np.int32 if w.nnz < 2**31 else np.int64
    pattern = (np.zeros(w.shape[1] + 1, np.int64), np.empty(w.nnz, index), np.empty(w.nnz, index))
    if w.nnz:
        _compiled("csr_transposed_pattern")(w.indptr, w.indices, *pattern)
    return pattern


def _add_transpose_times_csr(w, pattern, delta, out) -> np.ndarray:
    """out += Wᵀ δ (`_csr_add_transpose_times`) for a CSR w and its `transposed_pattern`; out:
    inputs × samples, float64."""
    if w.nnz:
        _compiled("csr_add_transpose_times")(*pattern, w.data, _block(delta), out)
    return out


def _block(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _cap(ymax) -> np.float32:
    return np.float32(min(float(ymax), float(np.finfo(np.float32).max)))
