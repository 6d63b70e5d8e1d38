"""benchmarks/pair_resplit.py: its re-split of two parts is the best one, against brute force; part_chains and
pair_resplit refuse networks without row-class structure in one line."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark_module
from test_bound import tiny_radix

from spdnn.errors import UserError
from spdnn.generate import random_sparse
from spdnn.network import write_network
from spdnn.partition_io import write_partition
from spdnn.volume import partition_metrics

pair_resplit = benchmark_module("pair_resplit")

K = 4


def _whole_class_partition(classes, widths, seed):
    """Each layer's 8 classes of 2 rows dealt to the 4 parts, 2 classes each, at random."""
    rng = np.random.default_rng(seed)
    cparts = [rng.permutation(np.repeat(np.arange(K), 2)) for _ in classes]
    return cparts, pair_resplit.neuron_parts(classes, cparts, *_layers_widths(seed), K, np.int8)


def _layers_widths(seed):
    return tiny_radix(8, 2, (1, 2, 3, 1), seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exchanges", [None, 1])
def test_resplit_finds_the_best_re_split_of_two_parts(seed, exchanges):
    """Every re-split of parts 0 and 1 (6 choices a layer, 6⁴ in all; with one exchange at most, the
    5 that keep one of p's two classes) measured by the volume itself: the dynamic program's gain is
    the best one, and its `now` is today's words."""
    layers, widths = _layers_widths(seed)
    classes = pair_resplit.layer_tables(layers)
    cparts, parts = _whole_class_partition(classes, widths, seed)
    start = partition_metrics(layers, widths, np.concatenate(parts), K)["volume_forward"]
    now, best, new = pair_resplit.resplit(classes, cparts, 0, 1, exchanges=exchanges)
    got = pair_resplit.neuron_parts(classes, new, layers, widths, K, np.int8)
    assert partition_metrics(layers, widths, np.concatenate(got), K)["volume_forward"] == start - (now - best)
    slots = [np.flatnonzero(cp < 2) for cp in cparts]
    allowed = [[pick for pick in itertools.combinations(range(4), 2)
                if exchanges is None or np.count_nonzero(cp[u[list(pick)]] == 0) >= 2 - exchanges]
               for cp, u in zip(cparts, slots)]
    assert [len(a) for a in allowed] == [6 if exchanges is None else 5] * len(classes)
    least = np.inf
    for picks in itertools.product(*allowed):
        trial = [cp.copy() for cp in cparts]
        for cp, u, pick in zip(trial, slots, picks):
            cp[u] = 1
            cp[u[list(pick)]] = 0
        full = pair_resplit.neuron_parts(classes, trial, layers, widths, K, np.int8)
        least = min(least, partition_metrics(layers, widths, np.concatenate(full), K)["volume_forward"])
    assert start - (now - best) == least, (start, now, best, least)


def test_a_split_class_is_refused():
    layers, widths = _layers_widths(0)
    classes = pair_resplit.layer_tables(layers)
    _, parts = _whole_class_partition(classes, widths, 0)
    parts[2] = parts[2].copy()
    i, j = np.flatnonzero(classes[1].rows == classes[1].rows[0])[:2]
    parts[2][j] = (parts[2][i] + 1) % K
    with pytest.raises(UserError, match="layer 2: the partition splits a class"):
        pair_resplit.class_parts(classes, parts)


def test_a_pair_whose_classes_differ_in_load_is_skipped():
    """A re-split could then unbalance the layer: the pair is left as it is (None)."""
    layers, widths = _layers_widths(0)
    classes = pair_resplit.layer_tables(layers)
    cparts, _ = _whole_class_partition(classes, widths, 0)
    assert pair_resplit.resplit(classes, cparts, 0, 1) is not None
    loads = classes[2].loads.copy()
    loads[np.flatnonzero(cparts[2] == 1)[0]] += 1
    classes[2] = classes[2]._replace(loads=loads)
    assert pair_resplit.resplit(classes, cparts, 0, 1) is None
    assert pair_resplit.resplit(classes, cparts, 2, 3) is not None


@pytest.mark.parametrize("script, args", [("pair_resplit", []), ("part_chains", ["-k", "4"])])
def test_a_network_without_row_class_structure_gets_one_line(tmp_path, script, args):
    """On a random network there is nothing to re-split or chain: the script says so in one line and
    fails, instead of a table of zeros (part_chains) or a sweep that changed nothing (pair_resplit)."""
    net = random_sparse([64, 64, 64, 64], 4, seed=0)
    write_network(net, tmp_path / "net.h5")
    part = np.concatenate([np.arange(w) % K for w in net.widths]).astype(np.int8)
    write_partition(part, tmp_path / "net.part", k=K)
    run = subprocess.run([sys.executable, str(Path(pair_resplit.__file__).with_name(f"{script}.py")),
                          str(tmp_path / "net.h5"), str(tmp_path / "net.part"), *args],
                         capture_output=True, text=True, cwd=tmp_path, check=False)
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().startswith(f"{script}: ") and "RadiX-Net" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
