"""Carried chains (`chains.carried_chain`): a free chain start's structure carried on by grouping
each next layer's rows by the parts they read, where chains are shorter than the structure's period
(`carry_length`). The relabelled RadiX-Nets' hidden groups say what the structure is."""

from __future__ import annotations

import numpy as np
import pytest
from radixnet_reference import best_bit_partition, relabelled_radixnet
from test_partition import _weighted_km1

from spdnn.chains import carry_length, free_run_end
from spdnn.layer_solve import layer_subproblem, local_volume, merge_free_vertices
from spdnn.layers import Layers
from spdnn.lookahead import read_set_groups
from spdnn.partition import partition_network
from spdnn.volume import layer_capacity

# 1024 neurons: 64 groups of 16; layer t has stride 2^((t−1) mod 6); K = 32 parts of two groups
N, K, EPS = 1024, 32, 0.03


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 6])
def test_read_sets_keep_the_pairs_of_a_bit_partition_at_every_stride(t):
    """Layer t − 1 pairs the groups c and c + 32 (part c mod 32). Row groups c and c + 32 of layer
    t read the columns c, c + s and c + 32, c + 32 + s: the same two parts, so they form one read
    set, two groups, a part's load. At stride 16 the sets {c, c + 16} take four groups, more than a
    part holds: those classes stay apart."""
    layers, widths, groups = relabelled_radixnet(N, 6, seed=1)
    net = Layers(layers, widths)
    before = (groups[t - 1] % 32).astype(np.uint8)
    group = read_set_groups(net, t, before, K, layer_capacity(net.rw(t), K, EPS))
    of_row = group[net.classes(t)]
    members = [np.unique(groups[t][of_row == g]) for g in range(group.max() + 1)]  # hidden groups
    if t == 5:  # stride 16: each class (one hidden group) alone
        assert all(m.size == 1 for m in members) and len(members) == 64
    else:  # at stride 32 the two groups are one class already (identical rows)
        assert all(m.size == 2 and m[1] == m[0] + 32 for m in members) and len(members) == 32


def test_merged_subproblem_costs_the_local_volume():
    """Merging a layer subproblem's classes into groups keeps its weighted connectivity − 1 equal
    to the exact volume of the nets touching the layer, for any partition keeping the groups."""
    layers, widths, _ = relabelled_radixnet(256, 6, seed=2)
    net = Layers(layers, widths)
    rng = np.random.default_rng(0)
    k, t = 4, 3
    classes = net.classes(t)
    n_cls = int(classes.max()) + 1
    for trial in range(5):
        parts = [rng.integers(0, k, size=n).astype(np.uint8) for n in widths]
        if trial == 0:
            parts[t + 1] = None
        group = rng.integers(0, 5, size=n_cls)
        group = np.unique(group, return_inverse=True)[1].ravel()
        nv, indptr, pins, net_weights, weights, fixed = merge_free_vertices(group, layer_subproblem(net, t, parts, k))
        n_grp = int(group.max()) + 1
        assert nv == n_grp + k and (fixed[n_grp:] == np.arange(k)).all() and (fixed[:n_grp] == -1).all()
        assert weights[:n_grp].sum() == layers[t - 1].nnz
        block = np.concatenate([rng.integers(0, k, size=n_grp), np.arange(k)])
        parts[t] = block[group][classes].astype(np.uint8)
        assert _weighted_km1(indptr, pins, net_weights, block) == local_volume(net, parts, t, k)


def test_free_starts_are_where_every_input_is_read_by_one_part():
    layers, widths, groups = relabelled_radixnet(N, 12, seed=1)
    net = Layers(layers, widths)
    pairs = [(groups[t] % 32).astype(np.uint8) for t in range(13)]  # bits 0..4: free at stride 32
    assert free_run_end(net, [(6, pairs[6]), (7, pairs[7])], K) == 6  # layer 7 (stride 1) sends
    assert free_run_end(net, [(5, pairs[5])], K) is None  # stride 16 reads c and c + 16 from two parts
    parity = [(groups[t] % 2).astype(np.uint8) for t in range(13)]  # K = 2 on bit 0: free from stride 2
    assert free_run_end(net, [(t, parity[t]) for t in range(2, 9)], 2) == 6  # to stride 32; stride 1 sends


def test_carried_chains_reach_the_bit_partition_reference_at_k32():
    """1024×24 relabelled, K = 32: 3-layer chains from every layer end before the structure comes
    round; carried from the stride-32 layers they give the reference's words (22,016 without)."""
    layers, widths, _ = relabelled_radixnet(N, 24, seed=1)
    reference, _ = best_bit_partition(N, 24, K)
    _, metrics = partition_network(layers, widths, K, "hypergraph", EPS, 0, jobs=2)
    assert metrics["balanced"] and metrics["window"] == 3 and metrics["chain_carry"] == 6
    assert metrics["volume_forward"] <= reference == 20_480


def test_carry_only_where_chains_are_shorter_than_the_period():
    small = Layers(*relabelled_radixnet(256, 2, seed=0)[:2])  # 16 groups: a period of 4
    assert carry_length(small, 2) == carry_length(small, 4) == 0  # 4-layer chains span it
    assert carry_length(small, 8) == 4  # K² > G: 3-layer chains
    wide = Layers(*relabelled_radixnet(1 << 14, 1, seed=0)[:2])  # 1024 groups, period 10
    assert carry_length(wide, 32) == 0 and carry_length(wide, 64) == 10
    assert carry_length(Layers(*relabelled_radixnet(1 << 15, 1, seed=0)[:2]), 8) == 11  # a prime period


def test_groups_that_do_not_pack_into_k_parts_are_balanced_by_v_cycles(monkeypatch):
    """Read-set groups near a part's load may not pack into K parts: the grouped solve's partition
    is then improved by V-cycles with the classes free, not left to the row-by-row repair (65536
    wide, K = 128: a thousand rows a layer, 7 s a layer). Forced here: groups of 9 of the 64
    classes, each 55 % of a part's load at K = 4, so two never fit in one part."""
    import spdnn.chains as chains
    from spdnn.partitioner import Solver

    k = 4
    layers, widths, groups = relabelled_radixnet(N, 4, seed=1)
    net = Layers(layers, widths, balance=(k, EPS))
    monkeypatch.setattr(chains, "read_set_groups", lambda net, t, before, k, capacity: np.arange(64) // 9)
    improved, moved = [], []
    solve, repair = chains.solve_layer, chains.rebalance_layer

    def watched_solve(*args, **kwargs):
        improved.append(kwargs.get("start") is not None)
        return solve(*args, **kwargs)

    def watched_repair(*args, **kwargs):
        moved.append(repair(*args, **kwargs))
        return moved[-1]

    monkeypatch.setattr(chains, "solve_layer", watched_solve)
    monkeypatch.setattr(chains, "rebalance_layer", watched_repair)
    carried = chains.carried_chain(net, (groups[1] % k).astype(np.uint8), 1, 3, k, EPS, 0, Solver(), 1)
    assert improved == [False, True, False, True] and [t for t, _ in carried] == [2, 3]
    assert max(moved) <= 16  # a class at most left to the repair
    for t, part in carried:
        assert np.bincount(part, weights=net.rw(t), minlength=k).max() <= layer_capacity(net.rw(t), k, EPS)


def test_a_start_that_says_nothing_about_the_next_layer_is_not_carried():
    """One group a part (K = 64): the next layer's rows c read parts {c, c + s}, each its own set,
    so grouping merges nothing and the carried chain would be the chain's own sweep again."""
    from spdnn.chains import carried_chain
    from spdnn.partitioner import Solver

    layers, widths, groups = relabelled_radixnet(N, 4, seed=1)
    net = Layers(layers, widths, balance=(64, EPS))
    assert carried_chain(net, groups[1].astype(np.uint8), 1, 3, 64, EPS, 0, Solver(), 1) == []
    pairs = (groups[1] % 32).astype(np.uint8)  # what the read sets of layer 2 do merge
    assert [t for t, _ in carried_chain(net, pairs, 1, 3, 32, EPS, 0, Solver(), 1)] == [2, 3]
