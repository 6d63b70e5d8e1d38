"""benchmarks/part_chains.py: its set families, its chain against brute force, its per-part costs."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from conftest import benchmark_module
from radixnet_reference import relabelled_radixnet

from spdnn.cycle_runs import class_incidence, cycles
from spdnn.generate import radixnet
from spdnn.hypergraph import identical_rows
from spdnn.volume import layer_traffic

part_chains = benchmark_module("part_chains")


def _classes(w):
    w = sp.csr_matrix(w)
    return w, identical_rows(w), identical_rows(w.T.tocsr())


def _runs_along(cycle_rows, chosen):
    """Lengths of the runs `chosen` makes along one cycle (cyclically)."""
    mask = np.isin(cycle_rows, list(chosen))
    if mask.all():
        return [mask.size]
    start = int(np.flatnonzero(~mask)[0])
    mask = np.roll(mask, -start)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return (edges[1::2] - edges[::2]).tolist()


def test_families_are_exactly_the_runs():
    w, rc, cc = _classes(radixnet(256, 1, seed=3).layers[0])  # 16 row classes on one 16-cycle
    cyc = cycles(rc, cc, w)
    assert len(cyc) == 1 and cyc[0][0].size == 16
    n_r, u = 16, 4
    want = {"one": set(), "two": set(), "mixed": set()}
    for chosen in itertools.combinations(range(n_r), u):
        lengths = sorted(_runs_along(cyc[0][0], chosen))
        if len(lengths) == 1:
            want["one"].add(frozenset(chosen))
            want["mixed"].add(frozenset(chosen))
        if len(lengths) == 2:
            want["mixed"].add(frozenset(chosen))
            if lengths == [2, 2]:
                want["two"].add(frozenset(chosen))
    for name, sets in want.items():
        got = part_chains.family(cyc, n_r, u, name)
        assert {frozenset(np.flatnonzero(row).tolist()) for row in got} == sets, name


def test_chain_is_the_cheapest_sequence_of_sets():
    # with two-run sets one set per layer costs more than each boundary's own best here, so the
    # test tells the chain from a sum of per-boundary minima
    layers, widths, _ = relabelled_radixnet(256, 4, seed=2)  # strides 1, 2, 4, 8
    k = 4
    parts = [np.arange(n) % k for n in widths]
    layer_classes = part_chains.layer_classes(layers)
    counted, per_table, chain, _, path = part_chains.chains(layer_classes, parts, k, "mixed")
    assert counted == 3
    classes = [_classes(w) for w in layers]
    options = []
    for w, rc, cc in classes:
        a, _, n_r, n_c = class_incidence(rc, cc, w)
        options.append(part_chains.family(cycles(rc, cc, w), n_r, n_r // k, "mixed",
                                          matching=a.size == n_r == n_c))
    assert [len(x) for x in options][2:] == [4, 28]  # whole 4-cycles; any 2 of 8 classes

    def reads(t, cur_set):  # neuron level: the columns the set's rows read
        w, rc, _ = classes[t]
        return np.bincount(w[np.flatnonzero(cur_set[rc] > 0)].indices, minlength=w.shape[1]) > 0

    def words(t, prev_set, cur_set):  # the columns read, less those the previous layer's set owns
        cols = np.flatnonzero(reads(t, cur_set))
        return cols.size - np.count_nonzero(prev_set[classes[t - 1][1][cols]] > 0)

    def cost_table(t):  # words(t, a, b) for every pair, as one product (tens of thousands of pairs)
        read = np.array([reads(t, b) for b in options[t]], np.int64)
        owned = np.array([a[classes[t - 1][1]] > 0 for a in options[t - 1]], np.int64)
        return read.sum(axis=1)[None, :] - owned @ read.T

    cost = [cost_table(t) for t in (1, 2, 3)]
    assert all(cost[t - 1][a, b] == words(t, options[t - 1][a], options[t][b])
               for t in (1, 2, 3) for a, b in [(0, 0), (-1, -1), (len(options[t - 1]) // 2, len(options[t]) // 3)])
    brute = (cost[0][:, :, None, None] + cost[1][None, :, :, None] + cost[2][None, None, :, :]).min()
    assert chain == brute
    assert per_table == sum(x.min() for x in cost) < chain
    chosen = [np.isin(np.arange(len(x[0])), s).astype(float) for x, s in zip(options, path)]
    assert sum(words(t, chosen[t - 1], chosen[t]) for t in (1, 2, 3)) == chain  # the backtracked sets

    # from the one-run chain (80 words) exchanges reach the two-run sets' 64, a family it never saw
    one = part_chains.chains(layer_classes, parts, k, "one")
    start, best, sets = part_chains.anneal(layer_classes, one[4], 3000, seed=1)
    assert start == one[2] > best == chain
    assert np.array_equal(sets[0], one[4][0])  # the first layer's set is kept
    chosen = [np.isin(np.arange(len(x[0])), s).astype(float) for x, s in zip(options, sets)]
    assert [int(c.sum()) for c in chosen] == [len(s) for s in one[4]]  # sizes kept
    assert sum(words(t, chosen[t - 1], chosen[t]) for t in (1, 2, 3)) == best  # words recounted per neuron


def test_method_part_costs_add_up_to_the_volume():
    net = radixnet(256, 2, seed=1)
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        parts = [rng.permutation(np.arange(n) % k) for n in net.widths]
        w = sp.csr_matrix(net.layers[1])
        per_part = part_chains.method_part_costs(w, parts[1], parts[2], k)
        assert per_part.sum() == layer_traffic(w, parts[1], parts[2], k)[0].size
        for p in range(k):  # by its definition: columns part p reads, less those it owns
            cols = np.unique(w[parts[2] == p].indices)
            assert per_part[p] == cols.size - np.count_nonzero(parts[1][cols] == p)


def test_random_start_keeps_the_sizes_and_the_first_set():
    layers, widths, _ = relabelled_radixnet(256, 4, seed=2)
    k = 4
    layer_classes = part_chains.layer_classes(layers)
    path = part_chains.chains(layer_classes, [np.arange(n) % k for n in widths], k, "one")[4]
    drawn = [part_chains.random_start(layer_classes, path, seed) for seed in (0, 1)]
    for sets in drawn:
        assert np.array_equal(sets[0], path[0])
        assert [len(s) for s in sets] == [len(s) for s in path]
        assert all(np.unique(s).size == s.size and s.max() < c.incidence[2] for s, c in zip(sets, layer_classes))
    assert any(not np.array_equal(a, b) for a, b in zip(*drawn))  # the seed draws other sets
    start, best, _ = part_chains.anneal(layer_classes, drawn[0], 3000, seed=0)
    assert best <= start
