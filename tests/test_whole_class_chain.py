"""benchmarks/whole_class_chain.py: the chain's dynamic programme finds the least volume over its
family exactly (brute force over every combination of the listed choices — a free layer's too, where the
programme uses its closed form — each layer's volume by `volume.layer_traffic` on the rows'
parts), the partition it returns has the volume it claims, and the family never beats the best
whole-class partition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import benchmark_module
from test_bound import exact_optimum, tiny_radix

from spdnn.errors import UserError
from spdnn.generate import radixnet, random_sparse
from spdnn.network import write_network
from spdnn.partition_io import read_partition
from spdnn.volume import layer_traffic, partition_metrics

chain = benchmark_module("whole_class_chain")
part_chains = benchmark_module("part_chains")

# (strides, groups, rows per group, a max_choices that leaves the free layers to the closed form,
# whether there is one): stride 0 — every group reads its own columns only, a free layer (in the
# middle, or last); stride 4 of 8 groups — groups g and g + 4 read alike, four free classes; the
# last chain: four cycles of four groups, two of them cut into arcs
CHAINS = [((1, 2, 1, 2), 4, 2, 5, False), ((2, 1, 0, 1), 4, 2, 5, True), ((1, 2, 0), 4, 2, 5, True),
          ((1, 0, 2, 1), 8, 1, 5, True), ((1, 2, 4, 1), 8, 1, 5, True), ((1, 4, 1), 16, 1, 6, False)]


def brute_force(layers, widths, epsilon, max_choices, cut_units):
    """min over every combination of each layer's listed choices (a free layer: all its balanced
    choices): each layer's volume for every pair of choices from `volume.layer_traffic` on the
    row partitions themselves, then a shortest path over the chain."""
    info = [chain.Layer(lc, epsilon) for lc in part_chains.layer_classes(layers)]
    rows = []
    for x in info:
        c = chain.candidates(x, max_choices, cut_units)
        if c is None:  # every balanced choice of a free layer
            c = np.array(list(itertools.product((0, 1), repeat=x.n)), np.int8)
            c = c[x.fits(c)]
        rows.append([s[x.lc.rc].astype(np.int64) for s in c])
    w1 = sp.csc_matrix(layers[0])
    best = []
    for r in rows[0]:  # layer 1: each input on the side most of its readers are
        inputs = np.array([int(r[w1.indices[w1.indptr[j]:w1.indptr[j + 1]]].mean() > 0.5) if w1.indptr[j + 1] > w1.indptr[j]
                           else 0 for j in range(widths[0])], np.int64)
        best.append(layer_traffic(layers[0], inputs, r, 2)[2].size)
    for t in range(1, len(layers)):
        best = [min(b + layer_traffic(layers[t], p, r, 2)[2].size for b, p in zip(best, rows[t - 1])) for r in rows[t]]
    return min(best)


@pytest.mark.parametrize("strides,groups,per_group,small,free", CHAINS)
def test_chain_programme_is_exact_over_its_family(strides, groups, per_group, small, free):
    for seed in range(2):
        layers, widths = tiny_radix(groups, per_group, strides, seed)
        for max_choices in (small, 10_000):
            value, part, sizes = chain.chain_optimum(layers, 0.03, max_choices=max_choices, cut_units=(2, 4))
            assert (None in sizes) == (max_choices == small and free)
            m = partition_metrics(layers, widths, part, 2, 0.03)
            assert m["volume_forward"] == value and not m["unbalanced_layers"], (strides, seed)
            assert value == brute_force(layers, widths, 0.03, 10_000, (2, 4)), (strides, seed, max_choices)
            if groups * per_group <= 8:  # exact_optimum lists 2^rows assignments per layer
                assert value >= exact_optimum(layers, widths, 2, 0.03, whole_classes=True)


def test_a_layer_outside_the_family_is_a_clear_error():
    rng = np.random.default_rng(0)
    dense = (rng.random((12, 12)) < 0.5).astype(np.float32)  # one unit, not a cycle: no balanced whole choice
    with pytest.raises(UserError, match="layer 1: no balanced choice"):
        chain.chain_optimum([sp.csr_matrix(dense)], 0.03)
    layers, _ = tiny_radix(64, 1, (1, 2), 0)  # stride 2: two cycles of 32, 31 · 32² = 31,744 cut choices
    with pytest.raises(UserError, match="layer 2: --cut 2: 31,744 choices"):
        chain.chain_optimum(layers, 0.03, cut_units=(2,), max_cut_choices=10_000)


def test_candidates_are_the_family():
    """Four cycles of four classes: the six balanced whole-unit choices keep every column on one side;
    with cuts, every choice of two cycles cut into complementary arcs (6 pairs × 2 × 3 lengths × 4²
    starts) reads exactly four column classes on both sides; a single cycle: its balanced arcs."""
    layers, _ = tiny_radix(16, 1, (1, 4), 0)
    cycle, four = (chain.Layer(lc, 0.03) for lc in part_chains.layer_classes(layers))
    assert (four.n, four.n_units) == (16, 4)
    for cut, expect in (((), {0: 6}), ((4,), {0: 6, 4: 576})):
        c = chain.candidates(four, cut_units=cut)
        assert four.fits(c).all()
        bad = (~four.column_sides(c)[0]).sum(axis=1)
        assert dict(zip(*np.unique(bad, return_counts=True))) == expect
        assert (c[bad > 0].sum(axis=1) == 8).all()  # complementary arcs: the cut choices hold 8 of 16 classes a side
    arcs = chain.candidates(cycle)
    assert cycle.fits(arcs).all() and ((~cycle.column_sides(arcs)[0]).sum(axis=1) == 2).all()
    assert len(arcs) == 16 * len({int(s.sum()) for s in arcs})  # every start of every balanced length


def test_command_writes_the_refined_partition_and_refuses_a_network_outside_the_family(tmp_path, capsys):
    """The command on a generated RadiX-Net: the family's optimum, the method's refinement from it
    (never more words), the partition file; on a random network, one line and exit status 2."""
    write_network(radixnet(256, 12, 0), tmp_path / "r.h5")
    assert chain.main([str(tmp_path / "r.h5"), "--refine", "1", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    family = int(out.split("on one side (cuts as listed): ")[1].split(" words")[0].replace(",", ""))
    refined = int(out.split("passes): ")[1].split(" words")[0].replace(",", ""))
    assert 0 < refined <= family
    net = chain.read_network(tmp_path / "r.h5")
    assert partition_metrics(net.layers, net.widths, read_partition(tmp_path / "p"), 2, 0.03)["volume_forward"] == refined
    write_network(random_sparse([64, 64, 64], 8, seed=0), tmp_path / "x.h5")
    assert chain.main([str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: layer 1")
