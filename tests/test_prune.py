"""Pruning stage: the magnitude rule, accuracy after fine-tuning, bring-your-own models, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from conftest import assert_user_error, mpirun, spdnn

from spdnn.graphchallenge import export_gc, import_gc
from spdnn.network import read_network
from spdnn.prune import magnitude_masks


def test_per_layer_rule_keeps_exactly_the_largest():
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(30, 20)), rng.normal(size=(10, 30))]
    ws[0][0, :5] = 7.0  # ties: the lower flat index wins
    masks = magnitude_masks(ws, 0.1, "layer")
    for w, m in zip(ws, masks):
        n_keep = max(1, round(0.1 * w.size))
        assert m.sum() == n_keep
        assert np.abs(w[m]).min() >= np.abs(w[~m]).max()
    m = magnitude_masks([ws[0]], 2 / 600, "layer")[0]
    assert m[0, 0] and m[0, 1] and not m[0, 2:5].any()


def test_global_rule():
    ws = [np.full((4, 4), 0.01), np.arange(1, 17, dtype=float).reshape(4, 4)]
    masks = magnitude_masks(ws, 0.25, "global")  # 8 of 32 weights: all from layer 2 by magnitude...
    assert masks[1].sum() == 8 and masks[1].ravel()[-8:].all()
    assert masks[0].sum() == 1  # ...but every layer keeps at least one weight


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    d = tmp_path_factory.mktemp("prune")
    spdnn("train-dense", "--widths", "64,96,10", "--epochs", 6, "--seed", 1, "-o", d / "dense.h5")
    return d


def test_prune_finetune_accuracy_and_round_trip(dense):
    d = dense
    spdnn("prune", d / "dense.h5", "--density", 0.2, "--finetune-epochs", 2, "--steps", 2, "-o", d / "p.h5")
    net = read_network(d / "p.h5")
    assert net.nnz == round(0.2 * 64 * 96) + round(0.2 * 96 * 10)
    acc = json.loads(spdnn("evaluate", d / "p.h5").stdout)["test_accuracy"]
    assert acc > 0.8  # chance is 0.1
    assert net.provenance["density"] == 0.2 and "dense.h5" in net.provenance["dense_source"]
    export_gc(net, d / "gc")
    back = import_gc(d / "gc")
    for a, b in zip(net.layers, back.layers):
        assert (a != b).nnz == 0
    for a, b in zip(net.biases, back.biases):
        np.testing.assert_array_equal(a, b)


def test_pruned_network_partitions_and_trains_under_mpi(dense):
    d = dense
    spdnn("prune", d / "dense.h5", "--density", 0.1, "--schedule", "oneshot", "--finetune-epochs", 1, "-o", d / "q.h5")
    spdnn("partition", d / "q.h5", "-k", 3, "-o", d / "q.part")
    held_out = ("--test-fraction", 0.3)  # evaluate must take the training run's test set, not 0.2's
    mpirun(3, "train", d / "q.h5", "--partition", d / "q.part", "--epochs", 1, "--batch-size", 64, *held_out,
           "--metrics", d / "qt.json", "-o", d / "qt.h5")
    serial = json.loads(spdnn("evaluate", d / "qt.h5", *held_out).stdout)
    dist = json.loads(mpirun(3, "evaluate", d / "qt.h5", "--partition", d / "q.part", *held_out).stdout)
    trained = json.loads((d / "qt.json").read_text())
    assert serial["test_samples"] == dist["test_samples"] == round(0.3 * 1797)
    assert serial["test_accuracy"] == dist["test_accuracy"] == trained["test_accuracy"] and serial["test_accuracy"] > 0.5
    bad = spdnn("evaluate", d / "qt.h5", "--test-fraction", 1.5, check=False)
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr and "Traceback" not in bad.stderr


def test_import_npz_and_mtx_with_empty_rows_and_layer(tmp_path):
    w1 = np.zeros((40, 64), np.float32)
    w1[::2, ::3] = 0.5  # every other row empty
    w2 = np.zeros((30, 40), np.float32)  # an empty layer
    w3 = np.random.default_rng(0).normal(size=(10, 30)).astype(np.float32)
    np.savez(tmp_path / "m.npz", W1=w1.T, W2=w2.T, W3=w3.T, b3=np.ones(10, np.float32))
    spdnn("import-npz", tmp_path / "m.npz", "--transpose", "-o", tmp_path / "m.h5")
    net = read_network(tmp_path / "m.h5")
    assert net.widths == [64, 40, 30, 10] and net.layers[1].nnz == 0
    np.testing.assert_array_equal(net.layers[0].toarray(), w1)
    for i, w in enumerate((w1, w2, w3), start=1):
        scipy.io.mmwrite(tmp_path / f"l{i}.mtx", sp.coo_matrix(w))
    spdnn("import-mtx", *[tmp_path / f"l{i}.mtx" for i in (1, 2, 3)], "-o", tmp_path / "x.h5")
    assert read_network(tmp_path / "x.h5").nnz == net.nnz
    for method in ("hypergraph", "sweep", "random", "block"):
        spdnn("partition", tmp_path / "m.h5", "-k", 4, "--method", method, "-o", tmp_path / f"{method}.part")
    spdnn("hypergraph", tmp_path / "m.h5", "-o", tmp_path / "m.hgr")
    mpirun(4, "train", tmp_path / "m.h5", "--partition", tmp_path / "hypergraph.part", "--epochs", 1,
           "--batch-size", 128, "-o", tmp_path / "t.h5")
    spdnn("images", "--neurons", 64, "-o", tmp_path / "im.tsv")
    mpirun(4, "infer", tmp_path / "m.h5", tmp_path / "im.tsv", "--partition", tmp_path / "block.part", "-o", tmp_path / "c.tsv")


def test_bad_pruning_input(dense, tmp_path):
    d = dense
    for density in (0, 1.5):
        proc = spdnn("prune", d / "dense.h5", "--density", density, "-o", tmp_path / "x.h5", check=False)
        assert_user_error(proc, "--density")
    np.savez(tmp_path / "bad.npz", X=np.zeros((5, 10)), y=np.zeros(5, int))
    proc = spdnn("prune", d / "dense.h5", "--density", 0.5, "--data", tmp_path / "bad.npz", "-o", tmp_path / "x.h5", check=False)
    assert_user_error(proc, "bad.npz", "width 64")
    (tmp_path / "notnet.h5").write_bytes(b"\x89HDF\r\n\x1a\nnope")
    assert_user_error(spdnn("prune", tmp_path / "notnet.h5", "--density", 0.5, "-o", tmp_path / "x.h5", check=False), "notnet.h5")
    np.savez(tmp_path / "chain.npz", W1=np.ones((40, 64)), W2=np.ones((10, 41)))
    assert_user_error(spdnn("import-npz", tmp_path / "chain.npz", "-o", tmp_path / "x.h5", check=False),
                      "layer 2 expects 41 inputs")
    assert not (tmp_path / "x.h5").exists()
