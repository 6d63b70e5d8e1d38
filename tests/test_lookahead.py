"""Lookahead chain starts (`lookahead.py`): stretches of layers that send nothing, found from the
connectivity alone, on relabelled RadiX-Nets whose structure the test knows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from radixnet_reference import relabelled_radixnet

from spdnn.chains import chains_from, same_up_to_names
from spdnn.layer_solve import layer_volume
from spdnn.layers import Layers
from spdnn.lookahead import closed_components, deal, lookahead_chain
from spdnn.partitioner import Solver
from spdnn.volume import layer_capacity

# 1024 neurons: 64 groups of 16, layer t of stride 2^((t−1) mod 6): layer 1, 7, ... join neighbours
N, EPS = 1024, 0.03


def radixnet(n_layers=12, seed=1):
    layers, widths, groups = relabelled_radixnet(N, n_layers, seed=seed)
    return Layers(layers, widths), groups


def group_parts(part, group):
    """Layer partition as group → part; None if some group's rows are split."""
    out = np.full(group.max() + 1, -1)
    out[group] = part
    return out if np.array_equal(out[group], part) else None


@pytest.mark.parametrize("k, t0, length, residues", [(2, 2, 5, 2), (4, 3, 4, 4), (8, 4, 3, 8)])
def test_a_stretch_sends_nothing_inside_is_balanced_and_follows_the_groups(k, t0, length, residues):
    """From a layer of stride s the rows join by group index mod s until the next stride-1 layer:
    s components, dealt to K parts, zero words between the stretch's layers."""
    net, groups = radixnet()
    chain = lookahead_chain(net, t0, t0 + 5, k, EPS, Solver(), seed=0)
    assert len(chain) == length
    for i, part in enumerate(chain):
        t = t0 + i
        loads = np.bincount(part, weights=net.rw(t), minlength=k)
        assert loads.max() <= layer_capacity(net.rw(t), k, EPS)
        by_group = group_parts(part, groups[t])
        assert by_group is not None
        residue = np.arange(by_group.size) % residues  # the component of each group
        assert all(np.unique(by_group[residue == r]).size == 1 for r in range(residues))
        if i:
            assert layer_volume(net, t, chain[i - 1], part, k) == 0
    assert [len(w) for _, w in closed_components(net, t0, t0 + length - 1, k)] == [residues] * length


def test_the_layer_after_the_stretch_decides_which_components_go_together():
    """Layers 4..6 (strides 8, 16, 32) leave 8 components; layer 7 (stride 1) reads groups c and
    c + 1, joining them in a cycle. Cut by that layer's nets, K = 2 takes two arcs of the cycle
    (2 of its 8 joins cut, 16 of the 64 groups'); dealt without looking (heaviest first, ties by
    the components' first row, a random name here) more are cut."""
    net, groups = radixnet()
    k = 2

    def joins_cut(chain):
        by_group = group_parts(chain[-1], groups[6])
        g = np.arange(by_group.size)
        return int((by_group[g] != by_group[(g + 1) % g.size]).sum())

    looked = lookahead_chain(net, 4, 6, k, EPS, Solver(), seed=0)
    blind = lookahead_chain(net, 4, 6, k, EPS)
    assert len(looked) == len(blind) == 3
    assert joins_cut(looked) == 16 < joins_cut(blind)


def test_connected_layers_and_too_few_components_propose_nothing():
    rng = np.random.default_rng(0)
    layers = [sp.random(256, 256, density=0.05, format="csr", random_state=rng) for _ in range(4)]
    random_net = Layers(layers, [256] * 5)
    assert lookahead_chain(random_net, 1, 4, 2, EPS, Solver()) == []
    net, _ = radixnet()
    assert lookahead_chain(net, 1, 6, 2, EPS) == []  # stride 1: one component from the start
    assert lookahead_chain(net, 2, 6, 4, EPS) == []  # 2 components for 4 parts
    assert len(lookahead_chain(net, 6, 6, 2, EPS)) == 0  # a stretch needs two layers


def test_deal_keeps_every_layer_within_capacity_or_refuses():
    assert deal(np.array([[5.0], [5.0], [5.0]]), np.array([7.0]), 2) is None
    weights = np.array([[3.0, 1.0], [3.0, 1.0], [4.0, 2.0], [2.0, 2.0]])
    assert deal(weights, np.array([6.0, 3.0]), 2) is None  # no split of (12, 6) fits (6, 3)
    part = deal(weights, np.array([7.0, 4.0]), 2)
    loads = np.stack([np.bincount(part, weights=weights[:, i], minlength=2) for i in range(2)])
    assert (loads <= [[7.0], [4.0]]).all()


def test_chains_between_spaced_starts_are_lookahead_stretches_without_solves():
    """With chains every third layer, the layers between starts still start a lookahead stretch:
    exactly `lookahead_chain`'s layers, sending nothing among them (no layer solved; the cut of
    its components is a V-cycle from the dealt ones, whose result depends on the calls the
    process made before, so it is not compared here); a start's chain runs the window."""
    net, _ = radixnet()
    out = list(chains_from(net, 2, EPS, 0, Solver(), 1, 6, [1, 4, 7, 10], stride=3))
    by_start = {}
    for s, t, part in out:
        by_start.setdefault(s, []).append((t, part))
    assert [t for t, _ in by_start[1]] == [1, 2, 3, 4, 5, 6]  # stride 1 at layer 1: solved
    assert [t for t, _ in by_start[4]] == [4, 5, 6, 7, 8, 9]  # a stretch of 3, then solved
    for s in (2, 3, 5, 8, 9, 11):
        expected = lookahead_chain(net, s, min(12, s + 5), 2, EPS)
        assert [t for t, _ in by_start[s]] == list(range(s, s + len(expected))) and expected
        chain = [p for _, p in by_start[s]]
        assert all(layer_volume(net, s + i, chain[i - 1], chain[i], 2) == 0 for i in range(1, len(chain)))
    # layers 6 and 12 have one layer left before a stride-1 layer or the end: no stretch
    assert set(by_start) == {1, 2, 3, 4, 5, 7, 8, 9, 10, 11}


def test_partitions_that_differ_only_in_names_are_one_candidate():
    a = np.array([0, 0, 1, 2, 1], np.uint8)
    assert same_up_to_names(a) == same_up_to_names(np.array([2, 2, 0, 1, 0], np.uint8))
    assert same_up_to_names(a) != same_up_to_names(np.array([0, 1, 1, 2, 1], np.uint8))


def test_same_seed_same_bytes_with_stretches_between_spaced_starts(monkeypatch):
    """The stretches' cuts are Mt-KaHyPar calls in the chain workers, V-cycles between starts:
    each worker's share and order are fixed, so a seed still gives one partition. Chains every
    third layer forced on a small network so that there are stretches between starts."""
    import spdnn.partition as partition

    monkeypatch.setattr(partition, "chain_window", lambda net, k: (6, 3))
    layers, widths, _ = relabelled_radixnet(N, 12, seed=4)
    a, metrics = partition.partition_network(layers, widths, 2, "hypergraph", EPS, 3, jobs=2)
    b, _ = partition.partition_network(layers, widths, 2, "hypergraph", EPS, 3, jobs=2)
    np.testing.assert_array_equal(a, b)
    assert metrics["balanced"] and metrics["chain_stride"] == 3
