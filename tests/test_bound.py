"""The volume lower bound: never above the exact optimum (brute force on tiny chains), never above
any partition we can build, and its parts (expansion, submatrix sums) checked on their own."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_user_error, spdnn

from spdnn.alignment_prices import cell_prices, single_class_blocks
from spdnn.bound import expansion, second_singular_value_bound, submatrix_bound, volume_lower_bound
from spdnn.cycle_runs import class_incidence, cycles, joint_arc_bound, placed_sets, set_runs
from spdnn.generate import radixnet, random_sparse
from spdnn.hypergraph import _class_ids, identical_rows
from spdnn.joint_runs import best_reads, two_sided_alignment
from spdnn.partition import METHODS, partition_network
from spdnn.semidefinite_bound import semidefinite_certificate
from spdnn.volume import layer_capacity


def tiny_radix(groups, per_group, strides, seed):
    """A miniature Graph Challenge network: circulant group structure, inputs permuted after layer 1."""
    rng = np.random.default_rng(seed)
    n = groups * per_group
    g = np.arange(n) % groups
    layers = []
    for t, s in enumerate(strides):
        plays = g[rng.permutation(n)] if t else g  # the group neuron j plays as an input of layer t
        w = (g[:, None] == plays[None, :]) | (g[:, None] == (plays[None, :] - s) % groups)
        layers.append(sp.csr_matrix(w.astype(np.float32)))
    return layers, [n] * (len(strides) + 1)


def tiny_random(widths, per_row, seed):
    net = random_sparse(widths, per_row, seed=seed)
    return net.layers, net.widths


def tiny_uneven(widths, per_row, seed):
    """Each layer's rows drawn from a few patterns with unequal repeats, so that one column's
    readers fall into row classes of different sizes (the averages' weights must follow them)."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in itertools.pairwise(widths):
        patterns = np.zeros((3, n_in), dtype=np.float32)
        for p in patterns:
            p[rng.choice(n_in, per_row, replace=False)] = 1
        layers.append(sp.csr_matrix(patterns[rng.choice(3, n_out, p=[0.6, 0.3, 0.1])]))
    return layers, list(widths)


def exact_optimum(layers, widths, k, epsilon, whole_classes=False):
    """min over every balanced partition of Σ_t V_t: dynamic programme over the chain of layers,
    each state one complete assignment of a layer (K^n states: tiny networks only). With
    `whole_classes`, over the partitions that give identical rows one part only."""
    f = None
    for w in layers:
        d = (w.toarray() != 0).astype(np.int64)  # [i, j]
        prev = np.array(list(itertools.product(range(k), repeat=d.shape[1])))
        cur = np.array(list(itertools.product(range(k), repeat=d.shape[0])))
        if f is None:
            f = np.zeros(len(prev))
        readers = np.stack([(cur == p).astype(np.int64) @ d > 0 for p in range(k)], axis=2)  # [b, j, p]
        spread = readers.sum(axis=2)
        owner_reads = readers[:, np.arange(d.shape[1])[None, :], prev]  # [b, a, j]
        volume = (spread[:, None, :] - owner_reads).sum(axis=2)  # λ − 1 summed over j, [b, a]
        rw = d.sum(axis=1)
        loads = np.stack([((cur == p) * rw).sum(axis=1) for p in range(k)], axis=1)
        balanced = loads.max(axis=1) <= layer_capacity(rw, k, epsilon)
        if whole_classes:
            cls = identical_rows(w)
            balanced &= (cur == cur[:, np.unique(cls, return_index=True)[1][cls]]).all(axis=1)
        f = np.where(balanced, (f[None, :] + volume).min(axis=1), np.inf)
    return float(f.min())


CASES = [
    ("radix 4x2 K=2", lambda s: tiny_radix(4, 2, (1, 2, 1, 2), s), 2),
    ("radix 3x2 K=3", lambda s: tiny_radix(3, 2, (1, 1, 1), s), 3),
    ("radix 2x4 K=2", lambda s: tiny_radix(2, 4, (1, 1, 1), s), 2),
    ("radix 8x1 K=2", lambda s: tiny_radix(8, 1, (1, 2, 4, 1), s), 2),  # cycles of 8, 4 and 2 classes
    ("radix 6x1 K=3", lambda s: tiny_radix(6, 1, (1, 3, 2, 1), s), 3),
    ("random K=2", lambda s: tiny_random([6, 8, 7, 8], 2, s), 2),
    ("random K=3", lambda s: tiny_random([5, 6, 6, 5], 3, s), 3),
    ("uneven classes K=2", lambda s: tiny_uneven([6, 8, 7, 8], 3, s), 2),
]


@pytest.mark.parametrize("name, make, k", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("epsilon", [0.0, 0.3])
@pytest.mark.parametrize("enumerate_subsets", [True, False])
def test_bound_never_exceeds_the_exact_optimum(name, make, k, epsilon, enumerate_subsets, monkeypatch):
    # without enumeration the run and spectral relaxations carry the bound: they must stay valid too
    if not enumerate_subsets:
        monkeypatch.setattr("spdnn.bound.EXACT_SUBSETS", 0)
    tight = 0
    for seed in range(3):
        layers, widths = make(seed)
        opt = exact_optimum(layers, widths, k, epsilon)
        lb = volume_lower_bound(layers, widths, k, epsilon)["lower_bound_forward"]
        assert 0 <= lb <= opt, (seed, lb, opt)
        assert lb > 0 or not name.startswith("radix")  # not vacuous where rows repeat
        tight += lb == opt
    if name == "radix 4x2 K=2" and epsilon == 0.0 and enumerate_subsets:
        assert tight >= 1  # and there it meets the optimum


def test_alignment_prices_reach_the_optimum_where_the_plain_bound_does_not():
    """On the 2-group chains (4 rows per group) the parts compete for the same cells: without prices
    every part is granted the densest ones and the bound stays at 20; with them it is the optimum."""
    for seed in range(3):
        layers, widths = tiny_radix(2, 4, (1, 1, 1), seed)
        result = volume_lower_bound(layers, widths, 2, 0.0, semidefinite=False)
        opt = exact_optimum(layers, widths, 2, 0.0)
        assert result["lower_bound_unpriced"] < result["lower_bound_priced"] == result["lower_bound_forward"] == opt
        plain = volume_lower_bound(layers, widths, 2, 0.0, semidefinite=False, prices=False)
        assert "lower_bound_priced" not in plain and plain["lower_bound_forward"] == result["lower_bound_unpriced"]


def test_cell_prices_lower_the_packing_bound_and_stay_in_range():
    """F(π) = K·max_B Σ_B (1 − π)M + ⟨π, M⟩ bounds what K blocks can align together; the prices
    found never raise it above F(0), stay in [0, 1], and the same matrix gives the same bytes."""
    rng = np.random.default_rng(4)
    m = rng.poisson(0.4, size=(12, 12)).astype(float)
    reads = [np.array([g, (g + 3) % 12]) for g in range(12)]
    blocks = single_class_blocks(m.shape, reads)
    assert sorted(map(tuple, np.sort(blocks, axis=1).tolist())) == sorted(
        tuple(sorted(a * 12 + c for c in cols)) for a in range(12) for cols in reads)  # every row × reader
    pi = cell_prices(m, 6, blocks)
    assert ((0 <= pi) & (pi <= 1)).all() and np.array_equal(pi, cell_prices(m, 6, blocks))

    def packing(p):
        return 6 * ((1 - p) * m).ravel()[blocks].sum(axis=1).max() + (p * m).sum()

    assert packing(pi) < packing(np.zeros_like(m))
    # no K blocks, disjoint or not, align more than the priced bound (here: cells taken once each)
    best = max(m.ravel()[list(choice)].sum() for choice in itertools.combinations(blocks[::7], 6)
               if len({c for b in choice for c in b}) == 12)
    assert best <= packing(pi) + 1e-9
    assert single_class_blocks((300, 300), [np.array([0])] * 300) is None  # singleton classes: no prices
    # a network of singleton classes everywhere: the priced pass would be the same bound, so it is skipped
    layers, widths = tiny_random([300, 300, 300], 4, 0)
    result = volume_lower_bound(layers, widths, 2, semidefinite=False)
    assert result["lower_bound_priced"] is None and "few enough classes" in result["prices_skipped"]


def test_joint_arc_bound_is_the_best_run_times_arc():
    rng = np.random.default_rng(5)
    m = rng.poisson(0.7, size=(8, 6)).astype(float)
    rows = np.array([[3, 0, 5, 1], [2, 7, 4, 6]])  # two row cycles of 4
    cols = np.array([[4, 1, 0, 5, 2, 3]])  # one column cycle of 6
    best = joint_arc_bound(m, rows, cols, range(1, 5), range(1, 7))
    for a in range(1, 5):
        for b in range(1, 7):
            brute = max(m[np.ix_(r[(s + np.arange(a)) % 4], c[(q + np.arange(b)) % 6])].sum()
                        for r in rows for c in cols for s in range(4) for q in range(6))
            assert best[a, b] == pytest.approx(brute)
    assert set(joint_arc_bound(m, rows, cols, [2], [3, 5])) == {(2, 3), (2, 5)}  # only the lengths asked for


def test_arc_bound_up_to_a_length_is_the_whole_table_there():
    """Arcs longer than `up_to` are left out (−inf: no runs table of at most up_to classes reads
    them); the lengths computed equal the whole table's."""
    from spdnn.cycle_runs import arc_bound

    rng = np.random.default_rng(3)
    m = rng.poisson(0.8, size=(7, 12)).astype(float)
    cyc = [(None, np.array([5, 0, 9, 2, 7, 1])), (None, np.array([3, 11, 4, 8, 10, 6]))]
    whole = arc_bound(m, cyc, 6)
    part = arc_bound(m, cyc, 6, up_to=4)
    assert np.array_equal(part[:5], whole[:5]) and np.isneginf(part[5:]).all()
    assert np.array_equal(arc_bound(m, cyc, 6, up_to=6), whole)


def _arc_table_by_brute_force(m, cyc, lengths):
    best = np.full((lengths + 1, m.shape[0] + 1), -np.inf)
    best[0] = 0.0
    for _, cols in cyc:
        ell = cols.size
        for length in range(1, min(lengths, ell) + 1):
            for start in range(ell if length < ell else 1):
                sums = m[:, cols[(start + np.arange(length)) % ell]].sum(axis=1)
                tops = np.concatenate([[0.0], np.cumsum(np.sort(sums)[::-1])])
                best[length] = np.maximum(best[length], tops)
    return best


@pytest.mark.parametrize("kind", ["counts", "one heavy row", "large counts", "fractions"])
def test_arc_bound_is_the_best_rows_of_every_arc(kind):
    """Counts (the unpriced M_t) take the sliding-histogram pass, fractions (priced) the sorted one:
    both are the brute-force table, cycles of several lengths, arcs that wrap and whole cycles.
    A heavy row: pieces of one slope too far apart in value for a counting sort (they are sorted by
    comparison); large counts: windows of many distinct sums (their pieces fill the array, which is
    written out and filled again)."""
    from spdnn.cycle_runs import _count_range, arc_bound

    counts = kind != "fractions"
    rng = np.random.default_rng(11)
    for _trial in range(20):
        ells = [int(x) for x in rng.integers(1, 9, size=rng.integers(1, 4))]
        m = rng.poisson(rng.uniform(0.3, 2.0), size=(int(rng.integers(1, 12)), sum(ells))).astype(float)
        if kind == "one heavy row":  # the other rows' pieces (slopes 1, 2, ...) far apart in value
            m[0] = rng.integers(0, 5000, sum(ells))
        if kind == "large counts":  # a window's rows sum to many values: more pieces than one array holds
            m = rng.integers(0, 5000, m.shape).astype(float)
        if not counts:
            m *= rng.uniform(0.1, 1.0, m.shape)
        perm, cyc = rng.permutation(sum(ells)), []
        for ell in ells:
            cyc.append((None, perm[:ell]))
            perm = perm[ell:]
        assert (_count_range(sp.csc_matrix(m)) is not None) == (counts or not m.any())
        want = _arc_table_by_brute_force(m, cyc, max(ells))
        got = arc_bound(m, cyc, max(ells), threads=2)
        assert np.array_equal(np.isneginf(got), np.isneginf(want))
        assert np.allclose(got[~np.isneginf(want)], want[~np.isneginf(want)], rtol=1e-12, atol=1e-12)
        if counts:
            assert np.array_equal(got, want)  # integers: exactly


def test_arc_bound_writes_out_its_pieces_in_batches():
    """Rows whose window sums all differ (row i reads columns c with c mod 12 < i): a window has
    ≈ 13 pieces, more than the pass's array holds for a cycle's 48 starts, so they are written out
    to the table in batches; the table is the brute-force one."""
    from spdnn.cycle_runs import arc_bound

    cols = np.arange(48)
    m = (cols[None, :] % 12 < np.arange(12)[:, None]).astype(float)
    cyc = [(None, np.random.default_rng(3).permutation(48))]
    assert np.array_equal(arc_bound(m, [(None, cols)], 48), _arc_table_by_brute_force(m, [(None, cols)], 48))
    assert np.array_equal(arc_bound(m, cyc, 20, threads=2), _arc_table_by_brute_force(m, cyc, 20))


def test_the_rows_runs_table_reaches_only_the_runs_states():
    """The previous layer's runs table is built up to the largest row count of its runs states, not
    of every state (the generic ones reach all classes: at N = 65536 a 4,096-long table, most of a
    layer's time); what the runs states read from it is the whole table's."""
    from spdnn.bound import RUNS, TableCache, _row_runs_alignment
    from spdnn.cycle_runs import arc_bound, runs_bound

    rng = np.random.default_rng(5)
    m = rng.poisson(0.8, size=(12, 9)).astype(float)  # previous layer's 12 row classes, in two cycles
    prev_cyc = [(np.array([5, 0, 9, 2, 7, 1]), None), (np.array([3, 11, 4, 8, 10, 6]), None)]
    prev_u = np.array([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 2, 3, 4, 2, 3, 4])  # generic to 12, runs to 4
    prev_r = np.array([RUNS + 1] * 11 + [1, 1, 1, 2, 2, 2])
    cache = TableCache()
    rows, got = _row_runs_alignment(m, prev_cyc, prev_u, prev_r, cache)
    (key, table), = cache.items()
    assert key[-1] == 4 and table.shape[1] == 5
    whole = runs_bound(arc_bound(m.T, [(c, r) for r, c in prev_cyc], 6, 12), 1, 5, 6, 12, RUNS)
    assert np.array_equal(rows, np.flatnonzero(prev_r <= RUNS))  # the runs states' rows only
    assert np.array_equal(got, whole[prev_r[rows], prev_u[rows]])


def test_a_runs_table_built_for_its_read_cells_has_their_values():
    """`runs_bound` with the cells a caller reads (`wanted`): past half the runs counts only those
    totals and the ones whole cycles reach them from, as the best first half plus the rest; the
    same values there as the table built total by total, +inf (no bound) where it left cells out,
    and the whole table where splitting is no less work (short cycles: every total is reached)."""
    from spdnn.cycle_runs import _split_totals, runs_bound

    rng = np.random.default_rng(3)
    modes = set()
    for ell, first, threads in ((40, 20, 1), (40, 20, 3), (8, 15, 2), (12, 20, 2)):
        piece = rng.integers(0, 10**6, size=(ell + 1, 5)).astype(float)  # any lengths may win
        piece[0] = 0.0
        wanted = np.zeros((7, 31), bool)
        for r in range(7):
            wanted[r, first + r:24 + r] = True  # the runs states' few totals (x = u + r)
            wanted[r, r] = True  # r runs of one class each: the split's extreme totals
        split = _split_totals(wanted, 1, min(ell - 1, 30), ell, 3) is not None
        modes.add(split)
        whole = runs_bound(piece, 1, ell - 1, ell, 30, 6)
        read = runs_bound(piece, 1, ell - 1, ell, 30, 6, threads=threads, wanted=wanted)
        assert np.array_equal(read[wanted], whole[wanted]) and np.isfinite(whole[wanted]).any()
        left_out = read != whole
        assert np.isposinf(read[left_out]).all() and left_out.any() == split and not left_out[:4].any()
    assert modes == {True, False}  # a cycle of 8 and many totals: every total is reached, less work whole
    fractions = rng.random((41, 4)).cumsum(axis=0)  # priced tables: the same up to the additions' order
    fractions[0] = 0.0
    wanted = np.zeros((7, 31), bool)
    wanted[:, 25:] = True
    assert np.allclose(runs_bound(fractions, 2, 40, 40, 30, 6, wanted=wanted)[wanted],
                       runs_bound(fractions, 2, 40, 40, 30, 6)[wanted], rtol=1e-13, atol=0)


def test_cycle_tables_are_numpys_and_the_same_on_any_number_of_threads():
    """The arc table is the best u rows over every arc, in NumPy's sort-and-cumsum order bit for bit
    (non-integer cells: another order of the sums would show in the last bits); it, the runs tables
    and the joint blocks are the same tables on 1 and 3 threads."""
    from spdnn.cycle_runs import arc_bound, runs_bound

    rng = np.random.default_rng(11)
    m = rng.random((9, 12)) * rng.poisson(1.0, size=(9, 12))
    cyc = [(None, np.array([5, 0, 9, 2, 7, 1])), (None, np.array([3, 11, 4, 8, 10, 6]))]
    best = arc_bound(m, cyc, 6)
    assert np.array_equal(best[0], np.zeros(10))
    prefix = [np.concatenate([np.zeros((9, 1)), np.cumsum(m[:, np.concatenate([c, c])], axis=1)], axis=1)
              for _, c in cyc]
    for length in range(1, 7):
        starts = np.arange(6 if length < 6 else 1)
        sums = np.concatenate([(pre[:, starts + length] - pre[:, starts]).T for pre in prefix])  # [arc, row]
        assert np.array_equal(best[length, 1:], np.cumsum(-np.sort(-sums, axis=1), axis=1).max(axis=0))
        for u in range(10):  # and the definition: the u heaviest rows of the best arc
            brute = max(np.sort(m[:, c[(s + np.arange(length)) % 6]].sum(axis=1))[::-1][:u].sum()
                        for _, c in cyc for s in starts)
            assert best[length, u] == pytest.approx(brute)
    assert np.array_equal(arc_bound(m, cyc, 6, up_to=4, threads=3), arc_bound(m, cyc, 6, up_to=4))
    assert np.array_equal(arc_bound(m, cyc, 6, threads=3), best)
    assert np.array_equal(runs_bound(best, 2, 6, 6, 14, 3, threads=4), runs_bound(best, 2, 6, 6, 14, 3))
    rows, cols = np.array([[3, 0, 5, 1, 8, 2], [4, 7, 6, 2, 1, 0]]), np.array([c for _, c in cyc])
    assert (joint_arc_bound(m, rows, cols, range(0, 6), range(1, 7), threads=3)
            == joint_arc_bound(m, rows, cols, range(0, 6), range(1, 7)))
    # `check` before each arc length / run length, from every thread; what it raises stops the build
    calls = []
    arc_bound(m, cyc, 6, up_to=4, threads=2, check=lambda: calls.append("arc"))
    joint_arc_bound(m, rows, cols, range(0, 6), [2, 3], threads=2, check=lambda: calls.append("joint"))
    runs = runs_bound(best, 2, 6, 6, 14, 3, threads=2, check=lambda: calls.append("runs"))  # before each level
    assert sorted(calls) == ["arc"] * 4 + ["joint"] * 6 + ["runs"] * 3
    assert np.array_equal(runs, runs_bound(best, 2, 6, 6, 14, 3))

    def budget():
        calls.append("stop")
        if calls.count("stop") > 2:
            raise TimeoutError("past the budget")

    regular = sum(np.eye(12)[np.random.default_rng(2).permutation(12)] for _ in range(3))  # σ₂ and enumeration
    for build in (lambda: arc_bound(m, cyc, 6, threads=2, check=budget),
                  lambda: joint_arc_bound(m, rows, cols, range(0, 6), range(1, 7), threads=2, check=budget),
                  lambda: runs_bound(best, 2, 6, 6, 14, 4, threads=2, check=budget),
                  lambda: submatrix_bound(regular, 12, check=budget)):
        calls.clear()
        with pytest.raises(TimeoutError, match="past the budget"):
            build()


def test_the_bound_is_the_same_on_any_number_of_threads():
    """The whole bound, with prices and placed sets, on a RadiX-Net whose layers form cycles."""
    net = radixnet(256, 8, seed=3)
    for k in (2, 8):
        one, three = (volume_lower_bound(net.layers, net.widths, k, semidefinite=False, threads=t) for t in (1, 3))
        assert one.pop("seconds") > 0 and three.pop("seconds") > 0
        assert one == three and one["lower_bound_forward"] > 0


def test_the_tables_hold_only_states_a_balanced_part_can_be_in():
    """A part holds at least `fewest` rows, so it touches at least ⌈fewest / largest class⌉ row
    classes: the states start there (fewer were +inf columns, 45 % of the states at N = 16384)."""
    from spdnn.bound import layer_costs
    from spdnn.volume import rows_per_part

    net = radixnet(256, 8, seed=3)
    for k in (2, 8):
        tables = layer_costs(net.layers, k, 0.03, prices=False)
        for w, h, u in zip(net.layers, tables.costs, tables.u_states):
            _, fewest = rows_per_part(np.diff(sp.csr_matrix(w).indptr), k, 0.03)
            largest = np.bincount(identical_rows(sp.csr_matrix(w))).max()
            assert u.min() * largest >= fewest > (u.min() - 1) * largest, (k, u.min(), fewest, largest)
            assert h.shape[1] == u.size


def test_generic_states_of_many_classes_share_coarse_states(monkeypatch):
    """Above u_lo + GENERIC_EXACT classes the generic states share one state per range of u (the
    dynamic programme's tables are states², 15 GB over 120 layers at N = 65536): each shared state
    costs the least of its members on both sides and carries their largest u and load, so the bound
    stays below the exact optimum; layers with few generic states are left as they were."""
    from spdnn import bound

    monkeypatch.setattr(bound, "GENERIC_EXACT", 1)
    monkeypatch.setattr(bound, "BUCKETS_PER_DOUBLING", 1)
    u = np.array([3, 4, 5, 6, 7, 8, 9, 10, 3, 4, 5])
    r = np.array([bound.RUNS + 1] * 8 + [1, 1, bound.RUNS + 1])  # after the runs states: its own
    starts = bound.state_groups(u, r, u_lo=3)
    assert starts.tolist() == [0, 1, 2, 5, 8, 9, 10]  # 5..7 and 8..10 (u/4 below 2, then below 4)
    rng = np.random.default_rng(0)
    h = rng.random((7, 11))
    h[2, 3] = np.inf
    prev_starts = np.array([0, 3, 4])
    got = bound._coarse(h, prev_starts, starts)
    rows, cols = np.split(np.arange(7), prev_starts[1:]), np.split(np.arange(11), starts[1:])
    assert np.array_equal(got, [[h[np.ix_(a, b)].min() for b in cols] for a in rows])

    monkeypatch.setattr(bound, "GENERIC_EXACT", 0)
    shrunk = 0
    for name, make, k in CASES:
        for seed in range(2):
            layers, widths = make(seed)
            coarse = bound.layer_costs(layers, k, 0.3, prices=False)
            with monkeypatch.context() as m:
                m.setattr(bound, "GENERIC_EXACT", 1 << 30)
                fine = bound.layer_costs(layers, k, 0.3, prices=False)
            shrunk += sum(c.shape[1] < f.shape[1] for c, f in zip(coarse.costs, fine.costs))
            for c, f, uc, uf in zip(coarse.costs, fine.costs, coarse.u_states, fine.u_states):
                assert c.shape == (c.shape[0], uc.size) and uc.max() == uf.max() and np.min(c) == np.min(f)
            assert all(lc.max() == lf.max() for lc, lf in zip(coarse.load_states, fine.load_states))
            lb = volume_lower_bound(layers, widths, k, 0.3, semidefinite=False)["lower_bound_forward"]
            assert 0 <= lb <= exact_optimum(layers, widths, k, 0.3), (name, seed)
    assert shrunk > 10


def test_the_chain_minimum_is_the_shortest_path_over_the_states():
    """The compiled min-plus steps give NumPy's values and its first minimising states (ties,
    impossible transitions at +inf)."""
    from spdnn.bound import _chain_minimum

    rng = np.random.default_rng(8)
    sizes = [3, 5, 4, 1, 6, 2]
    costs = [rng.integers(0, 4, size=(1 if t == 0 else sizes[t - 1], n)).astype(float) for t, n in enumerate(sizes)]
    for h in costs[1:]:
        h[rng.random(h.shape) < 0.2] = np.inf
    rewards = [rng.integers(0, 3, size=n).astype(float) for n in sizes]

    def reference():
        f, choices = None, []
        for h, reward in zip(costs, rewards):
            total = h - reward[None, :] if f is None else f[:, None] + (h - reward[None, :])
            choices.append(total.argmin(axis=0))
            f = total[choices[-1], np.arange(total.shape[1])]
        path = [int(np.argmin(f))]
        for choice in reversed(choices[1:]):
            path.append(int(choice[path[-1]]))
        return float(f.min()), path[::-1]

    value, path = _chain_minimum(costs, rewards)
    assert (value, path.tolist()) == reference()
    brute = min(sum(costs[t][s_prev, s] - rewards[t][s] for t, (s_prev, s) in enumerate(zip((0,) + p, p)))
                for p in itertools.product(*map(range, sizes)))
    assert value == brute


def test_placed_sets_are_every_run_and_every_union_of_whole_cycles():
    layers, _ = tiny_radix(8, 2, (2,), 0)  # stride 2 over 8 groups: two cycles of 4 row classes
    w = layers[0]
    rc, cc = identical_rows(w), identical_rows(w.T.tocsr())
    cyc = cycles(rc, cc, w)
    a, c, n_r, n_c = class_incidence(rc, cc, w)
    reads = np.zeros((n_r, n_c), np.int64)
    reads[a, c] = 1
    placed = placed_sets(cyc, reads, [2, 3, 4], 256)
    runs, whole = placed.r == 1, placed.r == 0
    assert sorted(placed.u[runs].tolist()) == [2] * 8 + [3] * 8  # every start of both cycles
    assert placed.u[whole].tolist() == [4, 4]  # u = 4: either whole cycle
    assert (placed.rows.sum(axis=1) == placed.u).all()
    assert (placed.cols.sum(axis=1) == placed.u + placed.r).all()  # a run of u reads u + 1, a cycle u
    for rows, cols in zip(placed.rows, placed.cols):  # the columns are exactly those the rows read
        assert (cols == (reads[rows].sum(axis=0) > 0)).all()
    assert placed_sets(cyc, reads, [2, 3, 4], 15).u.tolist() == [4, 4]  # runs would exceed the limit
    assert placed_sets(cyc, reads, [5], 256) is None  # 5 classes are neither one run nor whole cycles


def test_set_runs_is_the_best_sum_over_runs_of_a_cycle():
    rng = np.random.default_rng(4)
    weights = rng.poisson(1.0, size=(3, 6)).astype(float)
    orders = [np.array([4, 0, 2]), np.array([1, 5, 3])]  # two cycles of 3
    table = set_runs(weights, orders, 1, 2, 6, 4)  # [r, x, set]; up to 4 runs
    segments = [(o, s, n) for o in orders for s in range(3) for n in (1, 2)]  # partial runs
    for i, wt in enumerate(weights):
        one = max(wt[o[(s + np.arange(n)) % 3]].sum() for o, s, n in segments if n == 2)
        assert table[1, 2, i] >= one and table[1, 2, i] == pytest.approx(one)
        whole = max(wt[o].sum() for o in orders)
        assert table[0, 3, i] == pytest.approx(whole)
        # two runs of 1 and 2 classes: at least every pair of pieces
        pairs = max(wt[o1[(s1 + np.arange(1)) % 3]].sum() + wt[o2[(s2 + np.arange(2)) % 3]].sum()
                       for o1, s1, _ in segments[::2] for o2, s2, _ in segments[1::2])
        assert table[2, 3, i] >= pairs - 1e-9
    assert np.isneginf(table[1, 0]).all()


def test_placed_runs_lift_the_bound_and_stay_below_every_method(monkeypatch):
    """Where a part's best run for its readers is not its best run as an owner, tracking the run's
    place makes both tables see the same run."""
    layers, widths = tiny_radix(16, 4, (1, 2, 4, 8, 1, 2), 1)
    lb = volume_lower_bound(layers, widths, 8, 0.03, semidefinite=False)["lower_bound_forward"]
    monkeypatch.setattr("spdnn.bound.PLACED_LIMIT", 0)
    unplaced = volume_lower_bound(layers, widths, 8, 0.03, semidefinite=False)["lower_bound_forward"]
    vols = [partition_network(layers, widths, 8, m)[1]["volume_forward"] for m in METHODS]
    assert unplaced < lb <= min(vols), (unplaced, lb, vols)


def _runs_of(members, order):
    """(u, r) of a set of row classes along one cycle `order`: classes held, partial runs (0: whole)."""
    inside = np.isin(order, members)
    if inside.all():
        return order.size, 0
    return int(inside.sum()), int((inside & ~np.roll(inside, 1)).sum())


def _every_set(cyc):
    """Every set of row classes along the cycles, with its (u, r) and the column classes it reads."""
    classes = np.concatenate([rows for rows, _ in cyc])
    for bits in itertools.product([False, True], repeat=classes.size):
        members = classes[np.array(bits, bool)]
        u = r = 0
        reads = []
        for rows, cols in cyc:
            du, dr = _runs_of(members, rows)
            u, r = u + du, r + dr
            held = np.flatnonzero(np.isin(rows, members))
            reads += cols[held].tolist() + cols[(held + 1) % rows.size].tolist()  # row i reads i and i + 1
        yield members, u, r, sorted(set(reads))


def test_best_reads_is_the_heaviest_read_set_of_every_shape():
    rng = np.random.default_rng(7)
    cyc = [(np.array([0, 3, 5, 1]), np.array([2, 6, 0, 4])), (np.array([2, 4, 6]), np.array([1, 5, 3]))]
    weights = rng.poisson(2.0, size=(3, 7)).astype(float)
    table = best_reads(weights, cyc, 7, 3)
    brute = np.full(table.shape, -np.inf)
    for _, u, r, reads in _every_set(cyc):
        if r <= 3:
            brute[:, u, r] = np.maximum(brute[:, u, r], weights[:, reads].sum(axis=1))
    assert np.array_equal(np.isneginf(table), np.isneginf(brute))  # e.g. 3 runs need 6 classes on cycles of 4 and 3
    assert np.allclose(table[np.isfinite(table)], brute[np.isfinite(brute)])


def test_two_sided_alignment_bounds_every_pair_of_run_sets_and_is_exact_for_one_run():
    rng = np.random.default_rng(3)
    prev_cyc = [(np.array([4, 0, 2, 6]), np.array([0, 1, 2, 3])), (np.array([1, 5, 3]), np.array([4, 5, 6]))]
    cyc = [(np.array([0, 1, 2, 3, 4]), np.array([3, 0, 4, 1, 5])), (np.array([5, 6]), np.array([2, 6]))]
    m = rng.poisson(1.0, size=(7, 7)).astype(float)  # [previous row class, column class]
    table = two_sided_alignment(m, prev_cyc, cyc, 7, 3)
    reads = [(u, r, cols) for _, u, r, cols in _every_set(cyc) if r <= 3]
    brute = np.full(table.shape, -np.inf)
    for members, u_prev, r_prev, _ in _every_set(prev_cyc):
        if r_prev <= 3:
            for u, r, cols in reads:
                brute[u_prev, r_prev, u, r] = max(brute[u_prev, r_prev, u, r], m[np.ix_(members, cols)].sum())
    seen = np.isfinite(brute)
    assert (table[seen] >= brute[seen] - 1e-9).all()  # never below a pair of sets that exists
    one_run = np.zeros(table.shape, bool)
    one_run[1:3, 1] = True  # one partial run shorter than either cycle: no whole cycle beside it
    assert np.allclose(table[one_run & seen], brute[one_run & seen])
    assert table[4, 0, 5, 1] == brute[4, 0, 5, 1]  # the one whole cycle of 4 classes, exactly
    assert table[3, 2, 5, 1] > brute[3, 2, 5, 1]  # two runs: each piece its own columns, above the truth


def test_joint_runs_lift_the_bound_and_stay_below_the_optimum(monkeypatch):
    """Row classes of one neuron on cycles of 12: the parts' rows are runs in consecutive layers, and
    the tables that restrict one side at a time grant them more alignment than both sides allow."""
    layers, widths = tiny_radix(12, 1, (1, 2, 5, 1, 2), 2)
    lb = volume_lower_bound(layers, widths, 2, 0.0, semidefinite=False)["lower_bound_forward"]
    monkeypatch.setattr("spdnn.bound.JOINT_MAX", -1)
    one_side = volume_lower_bound(layers, widths, 2, 0.0, semidefinite=False)["lower_bound_forward"]
    assert one_side < lb <= exact_optimum(layers, widths, 2, 0.0), (one_side, lb)


def test_load_coverage_lifts_the_bound_where_a_part_may_hold_less_than_its_share(monkeypatch):
    """K = 8 parts of 8 rows over 2-row classes, capacity 9 rows: a part may touch a single class, and
    with class coverage alone the bound mixes such parts with wide ones though their rows fall short
    of the layer's. The load coverage rules that out; the bound stays below every method."""
    for seed in range(2):
        layers, widths = tiny_radix(16, 2, (1, 2, 4, 8, 1, 2), seed)
        lb = volume_lower_bound(layers, widths, 8, 0.03, semidefinite=False)["lower_bound_forward"]
        with monkeypatch.context() as patch:  # loads counted as classes: the class coverage again
            patch.setattr("spdnn.bound.load_reach", lambda weights, row_class, u, capacity: u.astype(float))
            classes_only = volume_lower_bound(layers, widths, 8, 0.03, semidefinite=False)["lower_bound_forward"]
        vols = [partition_network(layers, widths, 8, m)[1]["volume_forward"] for m in METHODS]
        assert classes_only < lb <= min(vols), (seed, classes_only, lb, vols)


def test_bound_below_every_method_on_a_radixnet():
    net = radixnet(256, 8, seed=3)
    certificate = semidefinite_certificate(net.layers, net.widths)  # one serves every K
    for k in (2, 4, 8, 16):
        lb = volume_lower_bound(net.layers, net.widths, k, semidefinite=certificate)["lower_bound_forward"]
        vols = {m: partition_network(net.layers, net.widths, k, m)[1]["volume_forward"] for m in METHODS}
        assert 0 < lb <= min(vols.values()), (k, lb, vols)


def test_expansion_on_cycles_and_generic_layers():
    # RadiX-Net stride-1 layer over 8 groups: one cycle of 8 row classes; u < 8 classes read u + 1
    layers, _ = tiny_radix(8, 3, (1,), 0)
    w = layers[0]
    rc, cc = identical_rows(w), identical_rows(w.T.tocsr())
    e = expansion(rc, cc, w)
    assert list(e) == [0, 2, 3, 4, 5, 6, 7, 8, 8]
    # brute force on a random layer (every row its own class): e[u] ≤ true minimum
    net = random_sparse([9, 7], 3, seed=4)
    w = net.layers[0]
    rc, cc = identical_rows(w), identical_rows(w.T.tocsr())
    e = expansion(rc, cc, w)
    reps = [int(np.flatnonzero(rc == a)[0]) for a in range(rc.max() + 1)]  # one row per row class
    for u in range(1, len(reps) + 1):
        true = min(len(set(cc[w[list(rows)].indices])) for rows in itertools.combinations(reps, u))
        assert e[u] <= true


def test_identical_rows_matches_a_dictionary_of_patterns(monkeypatch):
    import spdnn.hypergraph as hypergraph

    rng = np.random.default_rng(0)
    for seed in range(20):
        m = sp.random(30, 6, density=0.3, random_state=seed, format="csr")
        m = sp.vstack([m, m[:5], sp.csr_matrix((3, 6))]).tocsr()  # duplicates and empty rows, last ones empty
        if seed % 2:  # every row as long (the 2-D path): 3 of the 6 columns, from a few patterns
            patterns = np.sort(np.array([rng.choice(6, 3, replace=False) for _ in range(6)]), axis=1)
            cols = patterns[rng.integers(0, 6, 40)]
            m = sp.csr_matrix((np.ones(cols.size), cols.ravel(), np.arange(0, cols.size + 1, 3)), shape=(40, 6))
        seen = {}
        expected = [seen.setdefault(tuple(sorted(m[i].indices)), len(seen)) for i in range(m.shape[0])]
        assert identical_rows(m).tolist() == expected
        for salt in (np.zeros(7, np.uint64), np.tile(np.uint64([1, 2]), 4)[:7]):  # keys that collide
            assert _class_ids(m, salt).tolist() == expected  # (all rows of a length; columns 0, 2, 4 alike)
        shuffled = m.copy()  # ordered: the same columns in another order make another class
        for i in rng.choice(m.shape[0], 8, replace=False):
            lo, hi = shuffled.indptr[i], shuffled.indptr[i + 1]
            shuffled.indices[lo:hi] = rng.permutation(shuffled.indices[lo:hi])
        seen = {}
        in_order = [seen.setdefault(tuple(shuffled[i].indices), len(seen)) for i in range(m.shape[0])]
        with monkeypatch.context() as patch:  # random salts: the hashes alone, no fallback to exact keys
            patch.setattr(hypergraph, "_first_rows_by_bytes", None)
            assert identical_rows(shuffled, ordered=True).tolist() == in_order
            assert identical_rows(shuffled).tolist() == expected
        for salt in (np.zeros(7, np.uint64), np.tile(np.uint64([1, 2]), 4)[:7]):
            assert _class_ids(shuffled, salt, ordered=True).tolist() == in_order
    unsorted = sp.csr_matrix((np.ones(4), [2, 0, 0, 2], [0, 2, 4]), shape=(2, 3))
    assert not unsorted.has_sorted_indices and identical_rows(unsorted).tolist() == [0, 0]
    assert identical_rows(unsorted, ordered=True).tolist() == [0, 1]
    swapped = sp.csr_matrix((np.ones(6), [0, 1, 2, 1, 0, 2], [0, 3, 6]), shape=(2, 3))  # equal-length path
    assert identical_rows(swapped, ordered=True).tolist() == [0, 1] and identical_rows(swapped).tolist() == [0, 0]
    assert identical_rows(sp.csr_matrix((0, 4))).size == 0


def test_submatrix_bound_is_an_upper_bound_and_exact_where_enumerated():
    rng = np.random.default_rng(0)
    m = rng.poisson(0.6, size=(9, 7)).astype(float)
    s = submatrix_bound(m, 9)
    for u in range(1, 10):
        for v in range(1, 8):
            true = max(np.sort(m[list(rows)].sum(axis=0))[::-1][:v].sum()
                       for rows in itertools.combinations(range(9), u))
            assert s[u, v] >= true - 1e-9
            assert s[u, v] == pytest.approx(true)  # 9 rows: every size is enumerated


def test_submatrix_bound_spectral_branch_on_regular_matrices():
    """Sums of permutation matrices (all row and column sums equal) take the mixing-lemma branch:
    with exact enumeration switched off it must still bound every submatrix from above."""
    import spdnn.bound as bound

    rng = np.random.default_rng(1)
    for _trial in range(5):
        m = sum(np.eye(10)[rng.permutation(10)] for _ in range(3))
        old, bound.EXACT_SUBSETS = bound.EXACT_SUBSETS, 0
        try:
            s = submatrix_bound(m, 10)
        finally:
            bound.EXACT_SUBSETS = old
        for u in range(1, 11):
            true = [max(np.sort(m[list(rows)].sum(axis=0))[::-1][:v].sum()
                        for rows in itertools.combinations(range(10), u)) for v in range(1, 11)]
            assert (s[u, 1:] >= np.array(true) - 1e-9).all()


def test_a_tables_cache_key_is_its_inputs():
    """The alignment tables' cache key digests the non-zero entries and their positions: equal
    arrays (in any memory order) share a key, and a moved or changed entry, another shape or dtype,
    or arrays cut at another place do not."""
    from spdnn.bound import TableCache, _digest

    m = np.zeros((4, 6))
    m[1, 2], m[3, 5] = 2.0, 1.0
    cyc = np.array([0, 3, 1, 2])
    assert _digest(m, cyc) == _digest(np.asfortranarray(m), cyc.copy())
    moved, changed = m.copy(), m.copy()
    moved[3, 5], moved[3, 4] = 0.0, 1.0
    changed[1, 2] = 3.0
    others = [_digest(moved, cyc), _digest(changed, cyc), _digest(m.reshape(6, 4), cyc),
              _digest(m.astype(np.float32), cyc), _digest(m, cyc[:3], cyc[3:]), _digest(m, cyc[::-1]), _digest(m)]
    assert len({_digest(m, cyc), *others}) == 1 + len(others)
    # M_t's digest is taken once a matrix (three tables a layer), so a key is still its inputs
    cache = TableCache()
    key = cache.key("rows", m, cyc)
    assert cache.key("rows", m, cyc) == key == cache.key("rows", m.copy(), cyc) != cache.key("cols", m, cyc)
    assert len({key, cache.key("rows", moved, cyc), cache.key("rows", m, cyc[::-1]), cache.key("rows", changed, cyc),
                cache.key("rows", m)}) == 5


def test_the_table_cache_drops_the_least_recently_used():
    """A table read every layer (a block's generic table) stays while newer ones come and go."""
    from spdnn.bound import TableCache

    cache = TableCache(keep=2)
    cache["generic"] = 1
    for layer in range(5):
        assert cache["generic"] == 1  # read by every layer
        cache[f"rows {layer}"] = layer
    assert list(cache) == ["generic", "rows 4"]


def test_the_table_cache_keeps_to_its_byte_budget():
    """Past `budget` bytes the least recently used tables go (but never the two most recent, however
    large), counting a dict table's arrays (`joint_arc_bound`)."""
    from spdnn.bound import TableCache

    cache = TableCache(keep=16, budget=3000)
    cache["generic"] = np.zeros(125)  # 1,000 bytes, read every layer
    for layer in range(4):
        assert cache["generic"].nbytes == 1000
        cache[f"rows {layer}"] = np.zeros(100)  # 800 bytes
        cache[f"joint {layer}"] = {(1, 2): np.zeros(25), (2, 3): 1.0}  # 208 bytes
    # each layer's second table brought 3,016 bytes: the least recently used went, not the generic
    assert list(cache) == ["joint 2", "generic", "rows 3", "joint 3"]
    cache["huge"] = np.zeros(1000)
    cache["huger"] = np.zeros(2000)
    assert list(cache) == ["huge", "huger"]


def test_the_enumerated_row_counts_are_those_with_few_subsets():
    """`submatrix_bound` enumerates the u with C(n, u) ≤ EXACT_SUBSETS; they are found from both
    ends without the huge binomials of the middle, and must be exactly those u."""
    import math

    from spdnn.bound import EXACT_SUBSETS, _few_subsets

    for n in [*range(1, 40), 64, 257, 1024, 4096]:
        for u_max in sorted({1, n // 2 or 1, n - 1 or 1, n}):
            assert _few_subsets(n, u_max) == [u for u in range(1, u_max + 1) if math.comb(n, u) <= EXACT_SUBSETS]


def test_second_singular_value_bound_is_sigma2_from_above():
    """The mixing lemma's σ₂ comes from the smaller Gram matrix's eigenvalues, not an SVD: it must
    never fall below the SVD's σ₂ (a bound resting on it would then be unsound) and stay within
    rounding of it, on counts and priced (fractional) matrices, wide and tall, with σ₂ = σ₁ (two
    disconnected blocks) and σ₂ = 0 (rank one)."""
    rng = np.random.default_rng(3)
    counts = sum(np.eye(64)[rng.permutation(64)] for _ in range(4))
    wide = rng.poisson(2.0, size=(12, 40)).astype(float)
    cases = [counts, counts * rng.uniform(0.2, 1.0, counts.shape), wide, wide.T,
             np.kron(np.eye(2), np.ones((5, 5))), np.ones((6, 9))]
    for m in cases:
        svd = np.linalg.svd(m, compute_uv=False)
        bound = second_singular_value_bound(m)
        assert svd[1] <= bound <= svd[1] + 1e-6 * svd[0]


def test_bound_cli(tmp_path):
    spdnn("generate", "radixnet", "--neurons", 64, "--layers", 6, "--seed", 0, "-o", tmp_path / "n.h5")
    out = spdnn("bound", tmp_path / "n.h5", "-k", "2,4").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["k"] for r in rows] == [2, 4] and all(r["lower_bound_forward"] > 0 for r in rows)
    assert all(r["lower_bound_forward"] == max(r["lower_bound_unpriced"], r["lower_bound_priced"]) for r in rows)
    plain = json.loads(spdnn("bound", tmp_path / "n.h5", "-k", "4", "--no-prices").stdout)
    assert "lower_bound_priced" not in plain and plain["lower_bound_classes"] == rows[1]["lower_bound_unpriced"]
    assert_user_error(spdnn("bound", tmp_path / "n.h5", "-k", "65", check=False), "K=65", "layer 1")
    threads = json.loads(spdnn("bound", tmp_path / "n.h5", "-k", "4", "--no-prices", "--threads", 2).stdout)
    for row in (threads, plain):  # all but the times
        row.pop("seconds"), row["semidefinite"].pop("seconds")
    assert threads == plain
    assert_user_error(spdnn("bound", tmp_path / "n.h5", "-k", "4", "--threads", 0, check=False), "--threads", "'0'")


def test_past_its_budget_the_bound_reports_null_and_why(tmp_path):
    """`spdnn bound` with a budget it cannot meet: one JSON line with a null bound and the reason,
    exit 0 (the workflow goes on); the aggregated table then has no bound for that K."""
    import json

    from conftest import spdnn

    from spdnn.results import partition_table

    spdnn("generate", "radixnet", "--neurons", 256, "--layers", 6, "-o", tmp_path / "n.h5")
    for args, why in ((["--max-memory", 1e-9], "--max-memory"), (["--max-seconds", 0], "--max-seconds")):
        proc = spdnn("bound", tmp_path / "n.h5", "-k", 2, *args)
        line = json.loads(proc.stdout)
        assert line["lower_bound_forward"] is None and why in line["reason"], line
    # 50 MB: far more than this network's tables, less than the interpreter itself: the process's
    # resident memory, checked after each layer, is what stops it (the per-layer work of wide
    # layers is not in the tables)
    line = json.loads(spdnn("bound", tmp_path / "n.h5", "-k", 2, "--max-memory", 0.05).stdout)
    assert line["lower_bound_forward"] is None and "memory reached" in line["reason"], line
    ok = json.loads(spdnn("bound", tmp_path / "n.h5", "-k", 2, "--max-seconds", 600).stdout)
    assert ok["lower_bound_forward"] > 0 and "stopped" not in ok
    r = tmp_path / "results" / "n"
    (r / "bounds").mkdir(parents=True)
    (r / "partitions").mkdir()
    (r / "bounds" / "k2.json").write_text(proc.stdout)
    (r / "partitions" / "random-k2.part.json").write_text(json.dumps({"volume_forward": 5}))
    table = partition_table([r / "partitions" / "random-k2.part.json"], [r / "bounds" / "k2.json"])
    assert table["lower_bound_forward"].isna().all()
