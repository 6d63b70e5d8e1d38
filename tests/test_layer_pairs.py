"""benchmarks/layer_pairs.py: the three-state model and its layer-pair decomposition stay below the
exact optimum of tiny chains (brute force), the model reaches it where the best partition splits a
class, and the whole-class ceiling is above the decomposition at every price."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import benchmark_module
from test_bound import exact_optimum, tiny_radix, tiny_uneven

from spdnn.semidefinite_bound import semidefinite_certificate

layer_pairs = benchmark_module("layer_pairs")

CHAINS = [("radix 4x2 (1,2,1,2)", lambda s: tiny_radix(4, 2, (1, 2, 1, 2), s), 3),
          ("radix 4x2 (2,1,1,2)", lambda s: tiny_radix(4, 2, (2, 1, 1, 2), s), 3),
          ("radix 8x1 (1,2,4,1)", lambda s: tiny_radix(8, 1, (1, 2, 4, 1), s), 1),  # 3^8 states a layer: 9 s
          ("uneven", lambda s: tiny_uneven([6, 7, 7, 6], 2, s), 3)]
PRICES = (0.0, 0.25, 0.5, 1.0)


@pytest.mark.parametrize("name,make,seeds", CHAINS)
def test_three_state_model_and_pair_bound_never_exceed_the_optimum(name, make, seeds):
    for seed in range(seeds):
        layers, widths = make(seed)
        best = exact_optimum(layers, widths, 2, 0.03)
        relaxed = layer_pairs.relaxed_optimum_brute(layers, widths, 0.03)
        pairs = {mu: layer_pairs.pair_bound_brute(layers, widths, 0.03, mu) for mu in PRICES}
        assert max(pairs.values()) <= relaxed <= best, (name, seed, pairs, relaxed, best)
        ceiling = sum(layer_pairs.no_split_pair_minimum(layers[t - 1] if t else None, w, 0.03)[0]
                      for t, w in enumerate(layers))
        whole = layer_pairs.pair_bound_brute(layers, widths, 0.03, 0.0, allow_split=False)
        assert max(pairs.values()) <= whole <= ceiling, (name, seed, pairs, whole, ceiling)


def test_three_state_model_reaches_optima_that_split_a_class():
    """Measured: on these chains the best partition splits a class (13 and 14 words against 15 and
    16 keeping classes whole); the model finds 13 and 14, and the pair bound at μ = ½ a row proves
    12 and 14 — where the released semidefinite bound proves 10 on both."""
    for strides, seed, best, best_whole, pair_half in (((2, 1, 1, 2), 1, 13, 15, 12), ((1, 2, 1, 2), 1, 14, 16, 14)):
        layers, widths = tiny_radix(4, 2, strides, seed)
        assert exact_optimum(layers, widths, 2, 0.03) == best
        assert exact_optimum(layers, widths, 2, 0.03, whole_classes=True) == best_whole
        assert layer_pairs.relaxed_optimum_brute(layers, widths, 0.03) == best
        assert layer_pairs.pair_bound_brute(layers, widths, 0.03, 0.5) == pair_half
        assert semidefinite_certificate(layers, widths, 0.03).bound(2) < pair_half


def test_a_split_readers_columns_cost_one_and_a_free_owner_nothing():
    """The relaxed cost of one column, case by case: readers whole on one side with the owner there
    (0) or away (1), readers split or on both sides (1), a free (split) owner (0 when readers agree)."""
    S0, S1, SP = layer_pairs.SIDE0, layer_pairs.SIDE1, layer_pairs.SPLIT
    readers = [np.array([0, 1])]
    states = np.array([[S0, S0], [S0, S1], [SP, S0], [SP, SP], [S1, S1]])
    owners = np.array([[S0], [S1], [SP]])
    got = layer_pairs._layer_cost(states, readers, owners)
    np.testing.assert_array_equal(got, [[0, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 0]])


def test_a_layer_of_many_units_is_searched_not_enumerated():
    """70 row classes each reading its own column (70 units): 2^69 side choices, past what any
    integer type of numpy holds, so the search must count them in Python integers and fall back to
    swap descent; with free owners every balanced choice costs nothing."""
    layer = sp.identity(70, dtype=np.float32, format="csr")
    assert layer_pairs.no_split_pair_minimum(None, layer, 0.03) == (0.0, False)
