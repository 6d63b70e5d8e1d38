"""Serial reference: challenge inference and SGD against independent dense NumPy computations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GC_CATEGORIES, spdnn

from spdnn.datasets import digits_images, upsample_square
from spdnn.generate import radixnet, random_sparse
from spdnn.graphchallenge import read_categories
from spdnn.reference import forward, forward_layers, gc_infer, predict, sgd_step


def dense_gc(net, images):
    """The challenge algorithm on dense arrays in its own orientation: Y ← clip(YW + b on Z≠0)."""
    y = images.toarray().astype(np.float64)
    for w, b in zip(net.layers, net.biases):
        z = y @ w.toarray().T.astype(np.float64)
        z = np.where(z != 0, z + b, 0.0)
        y = np.clip(z, 0, net.ymax)
    return y


@pytest.mark.parametrize("make", [lambda: radixnet(64, 12, 5), lambda: random_sparse([64, 80, 80, 64], 6, 2, bias=-0.7, ymax=4.0)])
def test_serial_inference_equals_dense(make):
    net = make()
    images = digits_images(64, 0.5)
    cats, act = gc_infer(net, images, batch=500)
    ref = dense_gc(net, images)
    np.testing.assert_allclose(act, ref, rtol=1e-4, atol=1e-4)  # float32 vs float64 over 12 layers
    np.testing.assert_array_equal(cats, np.flatnonzero(ref.any(axis=1)))
    assert 0 < cats.size < images.shape[0]  # a real fraction dies


def test_default_images_let_a_real_fraction_die(tmp_path):
    spdnn("generate", "radixnet", "--neurons", 256, "--layers", 12, "--seed", 1, "-o", tmp_path / "n.h5")
    spdnn("images", "--neurons", 256, "-o", tmp_path / "im.tsv")
    spdnn("infer", tmp_path / "n.h5", tmp_path / "im.tsv", "-o", tmp_path / "c.tsv")
    survivors = read_categories(tmp_path / "c.tsv").size
    assert 0.05 * 1797 < survivors < 0.8 * 1797


def test_real_network_categories_format(gc_archive, tmp_path):
    """The truth file of the real network parses (1,812 ids); our categories use the same format."""
    truth = read_categories(GC_CATEGORIES)
    assert truth.size == 1812 and truth.min() >= 0


def numeric_grad(net, x, y, k, e, eps=1e-3):
    from spdnn.reference import forward, loss_and_delta

    def loss():
        _, zs = forward(net, x)
        return loss_and_delta(zs[-1].astype(np.float64), y, "cross-entropy")[0]

    w = net.layers[k]
    old = w.data[e]
    w.data[e] = old + eps
    up = loss()
    w.data[e] = old - eps
    down = loss()
    w.data[e] = old
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_sgd_step_matches_dense_backprop(loss):
    net = random_sparse([16, 12, 10, 5], 4, seed=3, bias=0.1, ymax=6.0)
    rng = np.random.default_rng(0)
    x = rng.random((16, 7)).astype(np.float32)
    y = rng.integers(0, 5, 7)
    ws = [w.toarray().astype(np.float64) for w in net.layers]
    bs = [b.astype(np.float64) for b in net.biases]
    masks = [w != 0 for w in ws]
    # Dense backprop written out independently.
    xs, zs = [x.astype(np.float64)], []
    for k, (w, b) in enumerate(zip(ws, bs)):
        z = w @ xs[-1] + b[:, None]
        zs.append(z)
        xs.append(np.clip(z, 0, 6.0) if k < 2 else z)
    if loss == "cross-entropy":
        p = np.exp(zs[-1] - zs[-1].max(0))
        p /= p.sum(0)
        d = p.copy()
        d[y, np.arange(7)] -= 1
    else:
        t = np.zeros_like(zs[-1])
        t[y, np.arange(7)] = 1
        d = zs[-1] - t
    d /= 7
    new_ws, new_bs = [], []
    for k in range(2, -1, -1):
        gw = (d @ xs[k].T) * masks[k]
        gb = d.sum(1)
        if k > 0:
            d = (ws[k].T @ d) * ((zs[k - 1] > 0) & (zs[k - 1] < 6.0))
        new_ws.insert(0, ws[k] - 0.1 * gw)
        new_bs.insert(0, bs[k] - 0.1 * gb)
    sgd_step(net, x, y, 0.1, loss)
    for k in range(3):
        np.testing.assert_allclose(net.layers[k].toarray(), new_ws[k] * masks[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net.biases[k], new_bs[k], rtol=1e-5, atol=1e-6)


def test_predict_keeps_one_layer_and_equals_the_training_forward():
    """Evaluation (`predict`, and the row-wise `class_logits`) runs forward_layers with keep=False:
    the same logits as the training forward pass, bit for bit, and nothing of the earlier layers."""
    net = radixnet(64, 6, seed=1)
    rng = np.random.default_rng(4)
    x = rng.random((9, 64)).astype(np.float32)
    _, zs = forward(net, np.ascontiguousarray(x.T))
    np.testing.assert_array_equal(predict(net, x), zs[-1])
    xs, kept = forward_layers(net.layers, net.biases, np.ascontiguousarray(x.T), net.ymax, keep=False)
    assert xs == [] and len(kept) == 1


def test_generated_radixnet_layers_own_their_values():
    """RadiX-Net layers of one structure come from one base layer; an SGD step on the in-memory
    network must update each layer once (regression: layers shared the base's value array, so a
    step updated every layer of a structure once per such layer)."""
    import scipy.sparse as sp

    from spdnn.network import Network

    net = radixnet(64, 5, seed=1)
    assert not any(np.shares_memory(a.data, b.data) for i, a in enumerate(net.layers) for b in net.layers[i + 1:])
    rebuilt = Network([sp.csr_matrix(w.toarray()) for w in net.layers], [b.copy() for b in net.biases], ymax=net.ymax)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8)).astype(np.float32), rng.integers(0, 10, 8)
    sgd_step(net, x, y, 0.1)
    sgd_step(rebuilt, x, y, 0.1)  # the same step on arrays built apart
    for a, b in zip(net.layers, rebuilt.layers):
        np.testing.assert_array_equal(a.toarray(), b.toarray())


def test_gradient_against_finite_differences():
    from spdnn.reference import forward, loss_and_delta, pattern_grad

    net = random_sparse([9, 8, 6], 3, seed=1, bias=0.05)
    rng = np.random.default_rng(1)
    x = rng.random((9, 4)).astype(np.float32)
    y = rng.integers(0, 6, 4)
    xs, zs = forward(net, x)
    _, delta = loss_and_delta(zs[-1], y, "cross-entropy")
    g = pattern_grad(net.layers[1], delta, xs[1])
    for e in range(0, net.layers[1].nnz, 5):
        assert abs(g[e] - numeric_grad(net, x, y, 1, e)) < 2e-3


def test_upsample_nearest_neighbour():
    img = np.arange(64, dtype=np.float32).reshape(1, 64)
    up = upsample_square(img, 256).reshape(16, 16)
    assert up[0, 0] == 0 and up[1, 1] == 0 and up[2, 2] == 9 and up[15, 15] == 63


def test_digits_read_from_scikit_learns_file_equal_load_digits():
    """digits_raw reads the CSV scikit-learn ships instead of importing sklearn.datasets (seconds
    of every run); what it returns must be load_digits' data, and must not import sklearn."""
    import subprocess
    import sys

    probe = "import sys; from spdnn.datasets import digits_raw; digits_raw(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"
    from sklearn.datasets import load_digits

    from spdnn.datasets import digits_raw

    x, y = digits_raw()
    d = load_digits()
    assert x.dtype == np.float32 and x.shape == (1797, 64) and y.dtype == np.int64
    np.testing.assert_array_equal(x, d.data.astype(np.float32) / 16.0)
    np.testing.assert_array_equal(y, d.target)
