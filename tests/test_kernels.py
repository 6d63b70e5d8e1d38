"""Compiled kernels (kernels.py) against the NumPy/SciPy definitions they replace: same bits."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spdnn.generate import radixnet, random_sparse
from spdnn.kernels import GcLayer
from spdnn.reference import gc_layer


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
def test_fused_layer_equals_the_definition_bit_for_bit(make, grouped, batch):
    net = make()
    rng = np.random.default_rng(batch)
    for w, bias in zip(net.layers, net.biases):
        kernel = GcLayer(w)
        assert kernel.grouped == grouped
        x = _activations(rng, w.shape[1], batch)
        bias = bias - rng.random(bias.size).astype(np.float32)  # mixed: some outputs clip to 0
        for ymax in (net.ymax, 0.5):
            want = gc_layer(w, bias, x, ymax)
            got, alive = kernel(bias, x, ymax)
            assert got.dtype == np.float32 and np.array_equal(got, want)
            assert np.array_equal(alive, want.any(axis=0))


def test_fused_layer_edge_shapes():
    """No rows, no samples, empty rows, unsorted indices and stored zeros give the definition's answer."""
    rng = np.random.default_rng(0)
    w = sp.random(40, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    w = w.tolil()
    w[[3, 7], :] = 0  # dead neurons
    w = w.tocsr()
    w.data[::5] = 0  # explicit zeros stay stored
    w.indices = w.indices.copy()
    for i in range(w.shape[0]):  # reverse each row's index order
        lo, hi = w.indptr[i], w.indptr[i + 1]
        w.indices[lo:hi], w.data[lo:hi] = w.indices[lo:hi][::-1].copy(), w.data[lo:hi][::-1].copy()
    w.has_sorted_indices = False
    bias = np.full(40, -0.1, np.float32)
    x = _activations(rng, 30, 20)
    got, alive = GcLayer(w)(bias, x, np.inf)
    assert np.array_equal(got, gc_layer(w, bias, x, np.inf))  # each row summed in its stored order
    g = radixnet(64, 1, seed=0).layers[0].copy()  # 16 identical rows per group …
    g.indices[:g.indptr[1]] = g.indices[:g.indptr[1]][::-1].copy()  # … but row 0 lists its columns backwards
    g.data[:g.indptr[1]] = g.data[:g.indptr[1]][::-1].copy()
    kernel, x = GcLayer(g), _activations(rng, 64, 9)
    assert not kernel.grouped and np.array_equal(kernel(bias[:1].repeat(64), x, 32.0)[0],
                                                 gc_layer(g, bias[:1].repeat(64), x, 32.0))
    for shape, b in (((0, 30), 20), ((40, 30), 0)):
        empty = sp.csr_matrix(shape, dtype=np.float32)
        z, alive = GcLayer(empty)(np.zeros(shape[0], np.float32), np.zeros((30, b), np.float32), 32.0)
        assert z.shape == (shape[0], b) and not z.any() and alive.shape == (b,) and not alive.any()
