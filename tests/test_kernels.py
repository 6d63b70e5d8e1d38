"""Layer kernels (kernels.py) against the NumPy/SciPy definitions they replace.

Dense-block layers (RadiX-Net, Graph Challenge) sum each row in its stored order, as the CSR path
(SciPy) does: the forward values are the same bits either way. The backward products are float64
through BLAS: equal within a tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spdnn.generate import radixnet, random_sparse
from spdnn.kernels import SparseLayer, add_rows, layer_kernels, masked_delta, transposed_pattern
from spdnn.reference import gc_layer


def _same(got, want, exact) -> bool:
    return np.array_equal(got, want) if exact else np.allclose(got, want, rtol=1e-6, atol=1e-6)


def _activations(rng, n, b, dead_fraction=0.3):
    x = rng.random((n, b), dtype=np.float32) * 4
    x[rng.random((n, b)) < 0.5] = 0  # sparse-ish, as after a ReLU
    x[:, rng.random(b) < dead_fraction] = 0  # some samples dead on arrival
    return x


@pytest.mark.parametrize("make, grouped", [
    (lambda: radixnet(256, 3, seed=1), True),  # 16 identical rows per group: the grouped kernel
    (lambda: random_sparse([200, 150, 120, 90], 7, seed=3, bias=-0.2, ymax=3.0), False),  # the row kernel
])
@pytest.mark.parametrize("batch", [1, 37, 300, 513])  # tiles of 256 samples: one, partial, several
def test_fused_layer_equals_the_definition(make, grouped, batch):
    net = make()
    rng = np.random.default_rng(batch)
    for w, bias in zip(net.layers, net.biases):
        kernel = SparseLayer(w)
        assert kernel.dense_blocks == grouped
        x = _activations(rng, w.shape[1], batch)
        bias = bias - rng.random(bias.size).astype(np.float32)  # mixed: some outputs clip to 0
        for ymax in (net.ymax, 0.5):
            want = gc_layer(w, bias, x, ymax)
            got, alive = kernel.gc(bias, x, ymax)
            assert got.dtype == np.float32 and _same(got, want, exact=True)  # blocks sum in CSR order too
            assert np.array_equal(alive, got.any(axis=0)) and np.array_equal(alive, want.any(axis=0))
            ext = np.full((w.shape[0] + 5, batch), np.nan, np.float32)  # the head of the next layer's block
            z, alive_there = kernel.gc(bias, x, ymax, out=ext[: w.shape[0]])
            assert np.shares_memory(z, ext) and np.array_equal(ext[: w.shape[0]], want)
            assert np.array_equal(alive_there, alive) and np.isnan(ext[w.shape[0]:]).all()
        with pytest.raises(ValueError, match="C-contiguous float32"):
            kernel.gc(bias, x, ymax, out=ext[: w.shape[0] - 1])


def test_fused_layer_edge_shapes():
    """No rows, no samples, empty rows, unsorted indices and stored zeros give the definition's answer."""
    rng = np.random.default_rng(0)
    w = sp.random(40, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    w = w.tolil()
    w[[3, 7, 39], :] = 0  # dead neurons, the last row among them
    w = w.tocsr()
    w.data[::5] = 0  # explicit zeros stay stored
    w.indices = w.indices.copy()
    for i in range(w.shape[0]):  # reverse each row's index order
        lo, hi = w.indptr[i], w.indptr[i + 1]
        w.indices[lo:hi], w.data[lo:hi] = w.indices[lo:hi][::-1].copy(), w.data[lo:hi][::-1].copy()
    w.has_sorted_indices = False
    bias = np.full(40, -0.1, np.float32)
    x = _activations(rng, 30, 20)
    got, alive = SparseLayer(w).gc(bias, x, np.inf)
    assert np.array_equal(got, gc_layer(w, bias, x, np.inf))  # each row summed in its stored order
    g = radixnet(64, 1, seed=0).layers[0].copy()  # 16 identical rows per group …
    g.indices[:g.indptr[1]] = g.indices[:g.indptr[1]][::-1].copy()  # … but row 0 lists its columns backwards
    g.data[:g.indptr[1]] = g.data[:g.indptr[1]][::-1].copy()
    kernel, x = SparseLayer(g), _activations(rng, 64, 9)
    assert kernel.dense_blocks and kernel.rest.size == 16 and 0 in kernel.rest  # row 0's group: CSR rows
    got = kernel.gc(bias[:1].repeat(64), x, 32.0)[0]
    want = gc_layer(g, bias[:1].repeat(64), x, 32.0)
    assert np.array_equal(got[kernel.rest], want[kernel.rest]) and _same(got, want, exact=False)
    blocks = SparseLayer(radixnet(64, 1, seed=0).layers[0])  # no samples left (all died): empty outputs
    z, alive = blocks.gc(np.zeros(64, np.float32), np.zeros((64, 0), np.float32), 32.0)
    assert z.shape == (64, 0) and alive.shape == (0,)
    assert blocks.forward(np.zeros(64, np.float32), np.zeros((64, 0), np.float32), 32.0)[1].shape == (64, 0)
    grad, back = blocks.backward(np.zeros((64, 0), np.float32), np.zeros((64, 0), np.float32))
    assert not grad.any() and back.shape == (64, 0)
    for shape, b in (((0, 30), 20), ((40, 30), 0)):
        empty = sp.csr_matrix(shape, dtype=np.float32)
        z, alive = SparseLayer(empty).gc(np.zeros(shape[0], np.float32), np.zeros((30, b), np.float32), 32.0)
        assert z.shape == (shape[0], b) and not z.any() and alive.shape == (b,) and not alive.any()


@pytest.mark.parametrize("make", [lambda: radixnet(256, 2, seed=1),
                                  lambda: random_sparse([200, 150, 120], 7, seed=3, bias=-0.2, ymax=3.0)])
@pytest.mark.parametrize("batch", [1, 37, 300])
def test_training_kernels_equal_their_definitions(make, batch):
    """forward: z = W x + b and clip(z), SciPy's bits; the weight gradient on the pattern and Wᵀ δ:
    float64 sums of the float32 products (what `reference.backpropagate` relies on)."""
    net = make()
    rng = np.random.default_rng(batch)
    for w, bias in zip(net.layers, net.biases):
        kernel = SparseLayer(w)
        x = _activations(rng, w.shape[1], batch, dead_fraction=0.0)
        for hidden in (True, False):
            z, h = kernel.forward(bias, x, 2.0, hidden)
            want = w @ x + bias[:, None]
            exact = not kernel.dense_blocks
            assert _same(z, want, exact) and _same(h, np.clip(want, 0, 2.0) if hidden else want, exact)
        delta = rng.standard_normal((w.shape[0], batch)).astype(np.float32)
        rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
        grad = np.einsum("eb,eb->e", delta.astype(np.float64)[rows], x.astype(np.float64)[w.indices])
        np.testing.assert_allclose(kernel.pattern_grad(delta, x), grad, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(kernel.transpose_times(delta), w.T.astype(np.float64) @ delta.astype(np.float64),
                                   rtol=1e-12, atol=1e-12)
        if not kernel.dense_blocks:  # the compiled CSR loop adds in SciPy's order: its bits
            assert np.array_equal(kernel.transpose_times(delta), w.T @ delta.astype(np.float64))


def test_prepared_layer_follows_in_place_updates_and_new_matrices():
    """SGD updates w.data in place: the cached preparation reads the new values; a new matrix gets
    its own preparation."""
    w = radixnet(64, 1, seed=0).layers[0]
    x = np.ones((64, 3), np.float32)
    kernel = layer_kernels(w)
    assert layer_kernels(w) is kernel
    w.data *= 2
    np.testing.assert_allclose(kernel.forward(np.zeros(64, np.float32), x, 10.0)[0], w @ x, rtol=1e-6)
    other = w.copy()
    assert layer_kernels(other) is not kernel


def test_backward_pieces_agree_and_masked_delta_is_the_derivative():
    w = radixnet(128, 1, seed=0).layers[0]
    rng = np.random.default_rng(5)
    x = _activations(rng, 128, 40, dead_fraction=0.0)
    delta = rng.standard_normal((128, 40)).astype(np.float32)
    kernel = SparseLayer(w)
    grad, back = kernel.backward(delta, x)
    assert np.array_equal(grad, kernel.pattern_grad(delta, x)) and np.array_equal(back, kernel.transpose_times(delta))
    assert kernel.backward(delta, x, transpose=False)[1] is None
    z = rng.standard_normal((128, 40)).astype(np.float32) * 3
    z[0, :4] = [0.0, 2.0, 2.5, -0.0]  # the ends of (0, ymax) are outside: f' = 0 there
    for ymax in (2.0, np.inf):
        want = (back * ((z > 0) & (z < ymax))).astype(np.float32)
        got = masked_delta(back, z, ymax)
        assert got.dtype == np.float32 and np.array_equal(got, want)


def test_add_rows_adds_every_row_in_turn_repeated_targets_too():
    """The fold's add (`add_rows`): out[target[p]] += sums[p] for each p in turn, so a target that
    comes twice (an owned entry sent to two ranks, in the neighbour transport's one call) gets both."""
    rng = np.random.default_rng(5)
    out = rng.standard_normal((6, 3))
    target = np.array([4, 0, 4, 2, 4], np.int64)
    sums = rng.standard_normal((5, 3))
    want = out.copy()
    for t, row in zip(target, sums):
        want[t] = want[t] + row
    add_rows(out, target, sums)
    np.testing.assert_array_equal(out, want)


def test_results_do_not_depend_on_the_batching_of_blocks(monkeypatch):
    """Blocks are processed in batches of ≈ CHUNK_BYTES (memory O(activations)): any batching, same numbers."""
    import spdnn.kernels as kernels

    w = radixnet(256, 1, seed=0).layers[0]
    rng = np.random.default_rng(2)
    x = _activations(rng, 256, 70, dead_fraction=0.0)
    delta = rng.standard_normal((256, 70)).astype(np.float32)
    bias = np.full(256, -0.1, np.float32)
    whole = SparseLayer(w)
    want = (whole.forward(bias, x, 4.0), whole.gc(bias, x, 4.0), whole.backward(delta, x))
    monkeypatch.setattr(kernels, "CHUNK_BYTES", 1)  # one block per batch
    small = SparseLayer(w)
    assert len(small._chunks(70, 8)) == small.rows.shape[0] > 1
    got = (small.forward(bias, x, 4.0), small.gc(bias, x, 4.0), small.backward(delta, x))
    for pw, pg in zip(want, got):
        for a, b in zip(pw, pg):
            np.testing.assert_array_equal(a, b)


def test_a_sample_rounds_alike_in_every_batch():
    """A sample's forward values are bitwise the same whatever batch it is in, and equal the CSR
    product's: with BLAS's sgemm (np.matmul) for the blocks, a rank's share of the samples rounded
    differently from the whole batch on some machines (AMD EPYC, OpenBLAS 0.3.31: the default
    workflow's data-parallel inference at K = 4 had one survivor more than the serial run)."""
    w = radixnet(1024, 1, seed=0).layers[0]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1024, 1797)).astype(np.float32)
    bias = np.zeros(1024, np.float32)
    kernel = SparseLayer(w)
    assert kernel.dense_blocks
    whole = kernel.forward(bias, x, np.inf, hidden=False)[0]
    np.testing.assert_array_equal(whole, w @ x)
    for share in np.array_split(np.arange(1797), 4) + [np.arange(1), np.arange(3, 10)]:
        part = kernel.forward(bias, np.ascontiguousarray(x[:, share]), np.inf, hidden=False)[0]
        np.testing.assert_array_equal(part, whole[:, share])


@pytest.mark.parametrize("width", [3, 8, 13, 16, 21])
def test_blocks_of_any_width_sum_in_stored_order(width):
    """The block product takes eight inputs at a time and the rest one by one: blocks whose rows
    read fewer, exactly, or not a multiple of eight inputs equal the CSR product bit for bit."""
    rng = np.random.default_rng(width)
    n_in, groups, rows = 60, 5, 4
    cols = [np.sort(rng.choice(n_in, width, replace=False)) for _ in range(groups)]
    indices = np.concatenate([c for c in cols for _ in range(rows)])
    data = rng.standard_normal(indices.size).astype(np.float32)
    w = sp.csr_matrix((data, indices, np.arange(0, indices.size + 1, width)), shape=(groups * rows, n_in))
    kernel = SparseLayer(w)
    assert kernel.dense_blocks and kernel.row_length == width
    x = rng.standard_normal((n_in, 37)).astype(np.float32)
    got = kernel.forward(np.zeros(w.shape[0], np.float32), x, np.inf, hidden=False)[0]
    np.testing.assert_array_equal(got, w @ x)


def test_a_share_that_splits_groups_mixes_blocks_and_csr_rows():
    """A rank's rows of a RadiX-Net layer (a partition that splits some groups): whole groups are
    blocks, the rest are CSR rows; every kernel still equals its definition."""
    w = radixnet(256, 1, seed=0).layers[0]
    share = np.sort(np.random.default_rng(0).choice(256, 150, replace=False))
    share = np.union1d(share, np.flatnonzero(np.arange(256) % 16 == 3))  # one whole group at least
    local = w[share]
    kernel = SparseLayer(local)
    assert kernel.dense_blocks and kernel.rest.size > 0 and kernel.order.size + kernel.rest.size == local.shape[0]
    rng = np.random.default_rng(1)
    x = _activations(rng, 256, 33, dead_fraction=0.0)
    bias = rng.standard_normal(local.shape[0]).astype(np.float32) * 0.1
    z, h = kernel.forward(bias, x, 1.5)
    want = local @ x + bias[:, None]
    assert _same(z, want, False) and _same(h, np.clip(want, 0, 1.5), False)
    assert np.array_equal(z[kernel.rest], want[kernel.rest])
    got, alive = kernel.gc(bias, x, 1.5)
    assert _same(got, gc_layer(local, bias, x, 1.5), False) and np.array_equal(alive, got.any(axis=0))
    delta = rng.standard_normal((local.shape[0], 33)).astype(np.float32)
    rows = np.repeat(np.arange(local.shape[0]), np.diff(local.indptr))
    grad_w, back = kernel.backward(delta, x)
    np.testing.assert_allclose(grad_w, np.einsum("eb,eb->e", delta.astype(np.float64)[rows],
                                                 x.astype(np.float64)[local.indices]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back, local.T.astype(np.float64) @ delta.astype(np.float64), rtol=1e-12, atol=1e-12)
    local.data *= 3  # in-place update (SGD): both parts read the new values, backward too
    np.testing.assert_allclose(kernel.forward(bias, x, 1.5)[0], local @ x + bias[:, None], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernel.backward(delta, x)[1], local.T.astype(np.float64) @ delta.astype(np.float64),
                               rtol=1e-12, atol=1e-12)


def test_blocks_with_dead_rows_at_the_end():
    """A pruned RadiX-Net layer: groups stay blocks, dead (empty) rows anywhere stay CSR rows."""
    w = radixnet(64, 1, seed=0).layers[0].tolil()
    w[[5, 63], :] = 0
    w = w.tocsr()
    w.eliminate_zeros()
    kernel = SparseLayer(w)
    assert kernel.dense_blocks and {5, 63} <= set(kernel.rest)
    x = _activations(np.random.default_rng(0), 64, 5)
    bias = np.full(64, -0.05, np.float32)
    assert _same(kernel.gc(bias, x, 32.0)[0], gc_layer(w, bias, x, 32.0), exact=False)


def test_inputs_no_block_reads_get_zero_in_the_transpose_product():
    """Wᵀδ is scattered without a zeroing pass (each input's first block row assigns): the inputs no
    row reads (a share of two groups reads 64 of 256) must still come out as exact zeros."""
    w = radixnet(256, 1, seed=0).layers[0]
    local = w[np.flatnonzero(np.arange(256) % 16 < 2)]  # rows of two whole groups
    kernel = SparseLayer(local)
    assert kernel.dense_blocks and kernel.rest.size == 0 and kernel.unread.size > 0
    delta = np.random.default_rng(3).standard_normal((local.shape[0], 9)).astype(np.float32)
    for _ in range(2):  # the second call reuses freed memory that held the first's sums
        back = kernel.transpose_times(delta)
        np.testing.assert_allclose(back, local.T.astype(np.float64) @ delta.astype(np.float64), rtol=1e-12, atol=1e-12)
        assert not back[kernel.unread].any()


def test_bias_gradient_row_sums_are_float64_sums():
    from spdnn.kernels import row_sums

    a = np.random.default_rng(4).standard_normal((37, 301)).astype(np.float32)
    got = row_sums(a)
    assert got.dtype == np.float64 and got.shape == (37,)
    np.testing.assert_allclose(got, a.astype(np.float64).sum(axis=1), rtol=1e-13, atol=1e-12)
    assert row_sums(np.zeros((3, 0), np.float32)).tolist() == [0.0, 0.0, 0.0]


def test_a_prepared_layer_is_freed_with_its_matrix():
    """The preparation kept on a matrix must not keep the matrix alive: streamed inference reads
    one layer at a time, and a reference cycle (freed only by the cyclic collector, which runs
    rarely when few Python objects are made) held every layer read so far (0.7 GB over 50 layers
    at N = 65536)."""
    import gc
    import weakref

    w = radixnet(256, 1, seed=0).layers[0]
    prepared = layer_kernels(w)
    assert prepared.dense_blocks and layer_kernels(w) is prepared  # kept on the matrix, reused
    gone = weakref.ref(w)
    gc.disable()
    try:
        del w
        assert gone() is None, "the matrix outlived its last reference (a cycle through its preparation)"
    finally:
        gc.enable()


def test_transposed_pattern_of_unsorted_rows_with_empty_rows_and_columns():
    """Wᵀ's pattern (the backward's Wᵀδ gathers by it): W's rows ascending in each column, each
    entry's position in W's data; a rank's local column ids come unsorted, and rows or columns
    may be empty. Wᵀδ through it has SciPy's bits, and follows in-place value updates."""
    rng = np.random.default_rng(3)
    w = sp.random(40, 30, density=0.15, format="lil", random_state=4, dtype=np.float32)
    w[7, :] = 0
    w[:, 11] = 0
    w = w.tocsr()
    for i in range(w.shape[0]):  # unsorted column ids within each row
        seg = slice(w.indptr[i], w.indptr[i + 1])
        order = rng.permutation(w.indptr[i + 1] - w.indptr[i])
        w.indices[seg], w.data[seg] = w.indices[seg][order], w.data[seg][order]
    w.has_sorted_indices = False
    w.indptr = w.indptr.astype(np.int64)
    t_indptr, t_rows, t_pos = transposed_pattern(w)
    want = w.T.tocsr()
    want.sort_indices()
    assert np.array_equal(t_indptr, want.indptr) and np.array_equal(t_rows, want.indices)
    rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    assert np.array_equal(rows[t_pos], t_rows) and np.array_equal(w.indices[t_pos], np.repeat(np.arange(30), np.diff(t_indptr)))
    kernel = SparseLayer(w)
    assert not kernel.dense_blocks
    delta = rng.standard_normal((40, 9)).astype(np.float32)
    assert np.array_equal(kernel.transpose_times(delta), w.T @ delta.astype(np.float64))
    w.data *= -2
    assert np.array_equal(kernel.backward(delta, np.ones((30, 9), np.float32))[1], w.T @ delta.astype(np.float64))


# Run in a fresh process: another test may have compiled the passes already in this one.
_SIGNATURES = """
import numpy as np
from spdnn.kernels import _PASSES, _compiled, layer_kernels
def signatures():
    return {name: len(_compiled(name).signatures) for name in _PASSES}
"""


def _in_a_fresh_process(script: str, cwd) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _SIGNATURES + script], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_gc_passes_load_before_a_timed_batch(tmp_path):
    """`load_gc_passes` compiles (or loads) every pass `gc` runs with a file layer's types: the
    first layer of a timed batch then compiles nothing (it took 0.43 s of a 1.3 s pass)."""
    _in_a_fresh_process("""
from spdnn.generate import radixnet, random_sparse
from spdnn.kernels import load_gc_passes
from spdnn.network import iter_layers, write_network
load_gc_passes()
loaded = signatures()
assert loaded["gc"] and loaded["block_products"] and loaded["csr_products"], loaded
for i, net in enumerate((radixnet(64, 2, seed=0), random_sparse([64, 64, 64], 5, seed=0))):
    write_network(net, f"n{i}.h5")
    for _, w, b in iter_layers(f"n{i}.h5"):
        layer_kernels(w).gc(b, np.ones((w.shape[1], 3), np.float32), net.ymax)
assert signatures() == loaded, (signatures(), loaded)
""", tmp_path)


def test_the_training_passes_load_before_the_first_step(tmp_path):
    """`load_training_passes` compiles (or loads) every pass of a training step with a file layer's
    types: SGD steps on a RadiX-Net (dense blocks), a random network (CSR rows) and a share of a
    RadiX-Net layer that splits a row group (a block and CSR rows) then compile nothing (the first
    step took 0.5 s of numba's load, the next 10 ms)."""
    _in_a_fresh_process("""
from spdnn.datasets import load_dataset
from spdnn.generate import radixnet, random_sparse
from spdnn.kernels import load_training_passes
from spdnn.network import read_network, write_network
from spdnn.reference import sgd_step
load_training_passes()
loaded = signatures()
assert all(loaded[name] for name in _PASSES if name != "gc"), loaded
data = load_dataset("digits", None, 64, 0)
for i, net in enumerate((radixnet(64, 2, seed=0), random_sparse([64, 64, 10], 5, seed=0))):
    write_network(net, f"n{i}.h5")
    net = read_network(f"n{i}.h5")
    sgd_step(net, np.ascontiguousarray(data.x_train[:8].T), data.y_train[:8], 0.01)
w = read_network("n0.h5").layers[0]
group = np.arange(64) % 4  # RadiX-Net 64: row i in group i mod 4
share = w[np.sort(np.concatenate([np.flatnonzero(group == 0), np.flatnonzero(group == 1)[:8]]))]  # 16 + 8 rows
prepared = layer_kernels(share)
assert prepared.dense_blocks and prepared.rest.size == 8
x = np.ones((64, 3), np.float32)
prepared.forward(np.zeros(24, np.float32), x, 32.0)
prepared.backward(np.ones((24, 3), np.float32), x)
assert signatures() == loaded, (signatures(), loaded)
""", tmp_path)


def test_prepare_training_builds_what_the_first_step_would(tmp_path):
    """`prepare_training` (a training run's set-up) prepares every layer and Wᵀ's pattern of every
    layer above the first (a CSR layer's, a split block layer's rest rows'), so the first SGD step
    builds nothing; layer 1, whose Wᵀδ no step computes, gets none (its memory)."""
    from spdnn.datasets import load_dataset
    from spdnn.kernels import prepare_training
    from spdnn.reference import sgd_step

    group = np.arange(64) % 4  # RadiX-Net 64: row i in group i mod 4; a share that splits a group
    share = np.sort(np.concatenate([np.flatnonzero(group == 0), np.flatnonzero(group == 1)[:8]]))
    data = load_dataset("digits", None, 64, 0)
    for net in (random_sparse([64, 48, 40, 10], 5, seed=0), radixnet(64, 3, seed=0)):
        if net.widths[-1] == 64:  # the RadiX-Net: layers 2 and 3 cut to a share's rows and columns
            net.layers[1] = net.layers[1][share]
            net.layers[2] = net.layers[2][:, share].tocsr()
            net.biases[1] = net.biases[1][share]
        prepare_training(net.layers)
        prepared = [layer_kernels(w) for w in net.layers]
        built = [dict(p._transposed) for p in prepared]
        assert built[0] == {}
        assert all(built[1:]), built
        if net.widths[-1] == 64:
            assert prepared[1].dense_blocks and prepared[1].rest.size == 8 and list(built[1]) == [True]
        sgd_step(net, np.ascontiguousarray(data.x_train[:8].T), data.y_train[:8], 0.01)
        assert [layer_kernels(w) for w in net.layers] == prepared  # no layer prepared again
        assert [p._transposed.keys() == b.keys() and all(p._transposed[r] is b[r] for r in b)
                for p, b in zip(prepared, built)] == [True] * len(prepared)
