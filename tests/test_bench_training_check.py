"""benchmarks/run.py's training check: a row's first update against spdnn's, from the same start."""

from __future__ import annotations

import copy

import numpy as np
from conftest import benchmark_module

from spdnn.generate import random_sparse

run = benchmark_module("run")


def _row(net, lr, steps=2, batch=8):
    rng = np.random.default_rng(0)
    x = rng.random((64, net.widths[0]), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    trained = copy.deepcopy(net)
    start = [w.data.copy() for w in trained.layers]
    times, first, last = run.train_spdnn(trained, x, y, batch, steps, lr)
    return len(times), {"start": start, "first": first, "last": last}


def test_a_row_is_checked_by_its_first_update_and_fails_when_that_differs():
    net = random_sparse([32] * 7, 8, seed=3, init="he")
    n_timed, ref = _row(net, 0.01)
    assert n_timed == 2  # the first step is the untimed warm-up
    assert not all(np.array_equal(a, b) for a, b in zip(ref["first"], ref["start"]))
    assert not all(np.array_equal(a, b) for a, b in zip(ref["first"], ref["last"]))
    _, same = _row(net, 0.01)
    assert run.weights_check(same, ref, 3) == "first update <0.01 % off, after 3 steps <0.01 % apart"
    _, off = _row(net, 0.0102)  # a learning rate 2 % off: the update 2 % off
    verdict = run.weights_check(off, ref, 3)
    assert verdict.startswith("DIFFERENT: first update 2 % off"), verdict
    _, close = _row(net, 0.01005)  # 0.5 %: within the 1 % a correct float32 row may differ by
    assert run.weights_check(close, ref, 3).startswith("first update 0.5 % off"), run.weights_check(close, ref, 3)
