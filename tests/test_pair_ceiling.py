"""benchmarks/pair_ceiling.py: its objective is the volume at ±1 labels, its gradient is the
objective's, and the ceiling it finds is above the semidefinite bound it caps and balanced."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import benchmark_module
from test_bound import exact_optimum, tiny_radix, tiny_uneven

from spdnn.semidefinite_bound import AgreementForm, semidefinite_certificate
from spdnn.volume import partition_metrics

pair_ceiling = benchmark_module("pair_ceiling")


@pytest.mark.parametrize("make", [lambda s: tiny_radix(4, 2, (1, 2, 1, 2), s),
                                  lambda s: tiny_uneven((6, 8, 7, 8), 3, s)], ids=["radix", "uneven readers"])
def test_max_pair_words_at_spins_is_the_volume(make):
    """Unequal reader counts (padded by repeating a reader) included; 20 random partitions each."""
    for seed in range(2):
        layers, widths = make(seed)
        pairs = pair_ceiling.ColumnPairs(layers, widths)
        rng = np.random.default_rng(seed)
        for _ in range(10):
            part = rng.integers(0, 2, sum(widths))
            spins = np.zeros((part.size, 3))
            spins[:, 0] = 1 - 2 * part
            volume = partition_metrics(layers, widths, part, 2)["volume_forward"]
            assert pair_ceiling.max_pair_words(pairs, spins) == pytest.approx(volume), (seed, part)
            assert pair_ceiling.triangle_shortfall(pairs, spins) == 0  # valid inequalities for labels


@pytest.mark.parametrize("triangles", [0.0, 5.0])
def test_smoothed_gradient_matches_finite_differences(triangles):
    layers, widths = tiny_uneven((6, 8, 7), 3, 0)
    pairs = pair_ceiling.ColumnPairs(layers, widths)
    slack = np.zeros(len(widths))  # every layer's balance term active
    f = pair_ceiling.smoothed_objective(pairs, slack, 0.3, 2.0, 4, triangles)
    if triangles:  # random vectors violate some triangle inequalities: the penalty's gradient is tested
        x = np.random.default_rng(0).standard_normal((sum(widths), 4))
        assert pair_ceiling.triangle_shortfall(pairs, x / np.linalg.norm(x, axis=1, keepdims=True)) > 0
    w = np.random.default_rng(0).standard_normal(sum(widths) * 4)
    _, grad = f(w)
    step = np.random.default_rng(1).standard_normal(w.size) * 1e-3
    expected = (f(w + step)[0] - f(w - step)[0]) / 2
    assert float(grad @ step) == pytest.approx(expected, rel=2e-3)  # float32 inside


def test_ceiling_is_balanced_above_the_semidefinite_bound_and_below_the_optimum():
    """Measured on these chains (ε = 0.3): ceilings 12.8 and 13.0 against semidefinite bounds of
    9.6 and 9.2 and optima of 14; the ceiling is a relaxation's value found by local search, so below the
    optimum on these small chains, not in general."""
    for seed in range(2):
        layers, widths = tiny_radix(4, 2, (1, 2, 1, 2), seed)
        words, ratio, _, x = pair_ceiling.pair_ceiling(layers, widths, 0.3, rank=8, steps=200)
        assert ratio <= 1
        assert np.allclose(np.linalg.norm(x, axis=1), 1)
        sdp = semidefinite_certificate(layers, widths, 0.3).value(2)
        assert sdp <= words + 1e-6, (seed, sdp, words)
        assert words <= exact_optimum(layers, widths, 2, 0.3) + 1e-6, (seed, words)
        form = AgreementForm(None, 0.0, np.cumsum([0] + widths), [w.getnnz(axis=1) for w in layers])
        slack = form.slack_squared(2, 0.3)
        sums = np.add.reduceat(x, np.cumsum([0] + widths)[:-1], axis=0)
        assert np.all(np.sum(sums[1:] ** 2, axis=1) <= slack[1:] + 1e-9)
