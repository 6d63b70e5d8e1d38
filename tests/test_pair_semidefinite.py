"""benchmarks/pair_semidefinite.py: each layer pair's certified bound stays below that pair's exact
minimum in the three-state model (brute force), so their sum below the exact optimum; the
certificate holds when the solver stops early; the bound is tight where the relaxation is exact and
above the released semidefinite bound where the best partition splits a class."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import benchmark_module
from test_bound import exact_optimum, tiny_radix, tiny_uneven

from spdnn.generate import radixnet, random_sparse
from spdnn.network import write_network
from spdnn.partition import partition_network
from spdnn.semidefinite_bound import semidefinite_certificate
from spdnn.volume import layer_capacity, partition_metrics

pair_sdp = benchmark_module("pair_semidefinite")
layer_pairs = benchmark_module("layer_pairs")

CHAINS = [("radix 4x2 (1,2,1,2)", lambda s: tiny_radix(4, 2, (1, 2, 1, 2), s), 2),
          ("radix 4x2 (2,1,1,2)", lambda s: tiny_radix(4, 2, (2, 1, 1, 2), s), 2),
          ("radix 8x2 (1,2,4,1)", lambda s: tiny_radix(8, 2, (1, 2, 4, 1), s), 1),  # 3^8 × 3^8 pair states: 5 s
          ("uneven", lambda s: tiny_uneven([6, 7, 7, 6], 2, s), 2)]


def pair_minimum(prev_layer, layer, epsilon, mu_owner, mu_reader):
    """The exact minimum of one pair of the three-state model: every state of both layers (tiny
    layers only), as `layer_pairs.pair_bound_brute` prices them."""
    cls, size, cw, readers = layer_pairs.class_readers(layer)
    states = layer_pairs._all_states(cls.max() + 1, cw, layer_capacity(np.diff(layer.indptr), 2, epsilon))
    if prev_layer is None:  # the inputs: free owners, no price
        owners, owner_price = np.full((1, layer.shape[1]), layer_pairs.SPLIT), np.zeros(1)
    else:
        p_cls, p_size, p_cw, _ = layer_pairs.class_readers(prev_layer)
        p_states = layer_pairs._all_states(p_cls.max() + 1, p_cw, layer_capacity(np.diff(prev_layer.indptr), 2, epsilon))
        owners, owner_price = p_states[:, p_cls], mu_owner * ((p_states == layer_pairs.SPLIT) * p_size).sum(1)
    reader_credit = mu_reader * ((states == layer_pairs.SPLIT) * size).sum(1)
    return float((layer_pairs._layer_cost(states, readers, owners) - reader_credit[:, None] + owner_price[None, :]).min())


def prices(t, last, mu):
    """(owner price, reader credit) of pair t as `main` sets them: none on the inputs, no credit on
    the last layer (the decomposition's telescoping)."""
    return (mu if t else 0.0), (0.0 if t == last else mu)


def chain_bound(layers, epsilon, mu, **kw):
    """Σ over the pairs of the certified bound, with the prices `main` uses."""
    return sum(pair_sdp.pair_bound(layers[t - 1] if t else None, w, epsilon, *prices(t, len(layers) - 1, mu), **kw)[0]
               for t, w in enumerate(layers))


@pytest.mark.parametrize("name,make,seeds", CHAINS)
def test_each_pair_bound_stays_below_the_pair_minimum(name, make, seeds):
    for seed in range(seeds):
        layers, widths = make(seed)
        best = exact_optimum(layers, widths, 2, 0.03) if max(widths) <= 8 else np.inf  # K^n states a layer
        for mu in (0.0, 0.5):
            total = 0.0
            for t, w in enumerate(layers):
                prev = layers[t - 1] if t else None
                bound = pair_sdp.pair_bound(prev, w, 0.03, *prices(t, len(layers) - 1, mu))[0]
                exact = pair_minimum(prev, w, 0.03, *prices(t, len(layers) - 1, mu))
                assert bound <= exact + 1e-6, (name, seed, mu, t, bound, exact)
                total += bound
            assert total <= layer_pairs.pair_bound_brute(layers, widths, 0.03, mu) + 1e-6 <= best + 1e-6


def test_lifting_strengthens_the_bound_and_stays_below_the_pair_minimum():
    """Measured: the lifted relaxation proves the exact minimum (4) of the middle pair of this chain,
    where the plain one proves 3.43; on every pair it is between the plain bound and the minimum."""
    gains = []
    for strides in ((1, 2, 1, 2), (2, 1, 1, 2)):
        for seed in range(2):
            layers, _ = tiny_radix(4, 2, strides, seed)
            for t in range(1, len(layers)):
                args = (layers[t - 1], layers[t], 0.03, *prices(t, len(layers) - 1, 0.5))
                plain, lifted = pair_sdp.pair_bound(*args)[0], pair_sdp.pair_bound(*args, lift=True)[0]
                exact = pair_minimum(*args)
                assert plain - 1e-3 <= lifted <= exact + 1e-6, (strides, seed, t, plain, lifted, exact)
                gains.append(lifted - plain)
    layers, _ = tiny_radix(4, 2, (1, 2, 1, 2), 0)
    args = (layers[1], layers[2], 0.03, 0.5, 0.5)
    assert pair_sdp.pair_bound(*args)[0] == pytest.approx(3.4286, abs=1e-3)
    assert pair_sdp.pair_bound(*args, lift=True)[0] == pytest.approx(pair_minimum(*args), abs=1e-3) == 4.0
    assert max(gains) > 0.4


def test_the_certificate_holds_when_the_solver_stops_early():
    """After a few iterations SCS's own value may be anything; the certified bound is still below
    the exact minimum, and below the converged one."""
    layers, _ = tiny_radix(8, 2, (1, 2, 4, 1), 1)
    args = (layers[2], layers[3], 0.03, 0.5, 0.0)
    exact = pair_minimum(*args)
    converged = pair_sdp.pair_bound(*args, eps=1e-6)[0]
    for iters in (5, 50):
        early, _, done = pair_sdp.pair_bound(*args, max_iters=iters)
        assert done == iters and early <= converged + 1e-6 and early <= exact
    assert converged == pytest.approx(6.03, abs=0.01) and exact == 8.0


def test_above_the_released_bound_where_the_best_partition_splits_a_class():
    """The chains of `test_layer_pairs` whose best partition splits a class (13 and 14 words): the
    released semidefinite bound proves 10 on both, the exact pair minima 12 and 14."""
    for strides, seed, pair_half in (((2, 1, 1, 2), 1, 12), ((1, 2, 1, 2), 1, 14)):
        layers, widths = tiny_radix(4, 2, strides, seed)
        plain = chain_bound(layers, 0.03, 0.5)
        lifted = chain_bound(layers, 0.03, 0.5, lift=True)
        released = semidefinite_certificate(layers, widths, 0.03).bound(2)
        assert released < plain <= lifted <= pair_half + 1e-6, (strides, plain, lifted, released)


def test_command_sums_the_pairs_and_refuses_a_network_without_row_classes(tmp_path, capsys):
    write_network(radixnet(256, 6, 0), tmp_path / "r.h5")
    assert pair_sdp.main([str(tmp_path / "r.h5"), "--lift", "3:5", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("layer ")]
    assert len(lines) == 6 and sum("(lifted)" in line for line in lines) == 2
    total = float(re.search(r"bound at μ = 0.5: ([\d,.]+) words", out).group(1).replace(",", ""))
    assert total == pytest.approx(sum(float(line.split()[4]) for line in lines), abs=0.1)
    net = pair_sdp.read_network(tmp_path / "r.h5")
    part, _ = partition_network(net.layers, net.widths, 2, "hypergraph", 0.03, 0)
    assert total <= partition_metrics(net.layers, net.widths, part, 2, 0.03)["volume_forward"]
    write_network(random_sparse([64, 300, 300], 8, seed=0), tmp_path / "x.h5")
    assert pair_sdp.main([str(tmp_path / "x.h5")]) == 2
    assert "layer 1: its pair has 901 indicators" in capsys.readouterr().err
