"""Structure recovery: the hypergraph method against partitions built by hand from a relabelled
RadiX-Net's known structure (`radixnet_reference.py`; the method sees only the layers)."""

from __future__ import annotations

import numpy as np
import pytest
from radixnet_reference import ROWS_PER_GROUP, best_bit_partition, neuron_partition, relabelled_radixnet

from spdnn.chains import chain_window
from spdnn.layers import Layers
from spdnn.partition import partition_network
from spdnn.volume import partition_metrics


@pytest.mark.parametrize("k, radices", [(2, None), (4, None), (8, None), (2, [4, 4]), (4, [2, 8]), (8, [4, 4])])
def test_bit_reference_is_balanced_exact_and_no_worse_than_fixed_bits(k, radices):
    """The reference's predicted words are spdnn's volume of its neuron-level partition; it is
    balanced exactly; and the DP is at least as good as the fixed choice (the top bits: contiguous
    arcs of groups in every layer), one of the sequences it ranges over."""
    neurons, n_layers = 256, 12
    layers, widths, groups = relabelled_radixnet(neurons, n_layers, seed=3, radices=radices)
    words, group_parts = best_bit_partition(neurons, n_layers, k, radices)
    metrics = partition_metrics(layers, widths, neuron_partition(group_parts, groups, layers, k), k, 0.0)
    assert metrics["balanced"] and metrics["volume_forward"] == words > 0
    n_groups = neurons // ROWS_PER_GROUP
    arcs = np.arange(n_groups) * k // n_groups  # the top log2(K) bits of the group index
    fixed = partition_metrics(layers, widths, neuron_partition([arcs] * n_layers, groups, layers, k), k, 0.0)
    assert fixed["balanced"]
    assert words < fixed["volume_forward"]  # switching bits pays on every K here


RECOVERY_CASES = [
    (1024, 2, None), (1024, 8, None), (1024, 32, None), (4096, 2, None), (4096, 8, None),
    (1024, 2, [4, 4, 4]), (1024, 8, [4, 4, 4]), (1024, 32, [4, 4, 4]),
    (1024, 2, [2, 4, 8]), (1024, 8, [2, 4, 8]), (1024, 32, [2, 4, 8]), (1024, 32, [8, 8]),
    (16384, 8, None),  # wide layers: chains of one period (10 layers), from every second layer
    (16384, 2, None), (65536, 2, None),  # and the layers between starts start lookahead stretches
]


@pytest.mark.parametrize("neurons, k, radices", RECOVERY_CASES,
                         ids=[f"{n}-K{k}-radix{'.'.join(map(str, r or [2]))}" for n, k, r in RECOVERY_CASES])
def test_hypergraph_recovers_radixnet_structure_within_10_percent(neurons, k, radices):
    """Every layer's neurons renamed at random: the method must find partitions within 10 % of the
    best bit partition built from the structure (measured: 0.93–1.09 of it; radix 2 at K = 32 was
    1.08–1.10 before carried chains (`test_carried.py`); with 3-layer chains
    4096×24 was at 1.42× for K = 2 and 1.34× for K = 8, and 16384×24 at K = 8 1.63× before its
    chains spanned the period, spaced; at K = 32 the mixed bases were at 1.14–1.20× before classes
    too heavy for a part were split by their readers; at K = 2 16384×24 and 65536×24 were at 1.23×
    and 1.42× before chains started with a lookahead stretch, from every layer)."""
    n_layers = 24
    layers, widths, _ = relabelled_radixnet(neurons, n_layers, seed=1, radices=radices)
    reference, _ = best_bit_partition(neurons, n_layers, k, radices)
    _, metrics = partition_network(layers, widths, k, "hypergraph", 0.03, 0, jobs=2)
    n_groups = neurons // ROWS_PER_GROUP
    assert metrics["balanced"] and metrics["window"] == (int(np.log2(n_groups)) if k * k <= n_groups else 3)
    assert metrics["chain_stride"] == {1024: 2, 4096: 4}.get(n_groups, 1)
    assert metrics["volume_forward"] <= 1.10 * reference, (metrics["volume_forward"], reference)


def test_classes_too_heavy_for_a_part_are_split_by_their_readers():
    """The top base layer of radices 2,4,8 has 8 classes of 128 identical rows: whole, none fits a
    part at K = 32 (cap ≈ 1.03 · 1024·128/32). Split by their readers in the next layer they are
    the 16-row groups, each in the same nets as before; at K = 2 every class fits and stays whole."""
    layers, widths, groups = relabelled_radixnet(1024, 4, seed=2, radices=[2, 4, 8])
    assert Layers(layers, widths).num_classes(3) == Layers(layers, widths, balance=(2, 0.03)).num_classes(3) == 8
    split = Layers(layers, widths, balance=(32, 0.03))
    classes = split.classes(3)
    assert split.num_classes(3) == 64
    assert all(np.unique(groups[3][classes == c]).size == 1 for c in range(64))  # one group per piece
    assert split.num_classes(2) == 64  # the other layers' classes fit: unchanged
    _, metrics = partition_network(layers, widths, 32, "sweep", 0.03, 0)
    assert metrics["balanced"]


def test_chain_window_follows_the_structure_and_wide_layers_space_their_chains():
    """(chain layers, layers between chain starts): the structure's period, from every layer where
    layers are small; on wide layers one period, started every d layers, d a divisor of the period
    near a third of it (about as many solves as 3-layer chains from every layer); a prime period
    or K² > G: the shortest, from every layer."""
    from spdnn.chains import chain_shares

    def window(net, k):
        return chain_window(Layers(*net[:2]), k)

    small, wide = relabelled_radixnet(256, 2, seed=0), relabelled_radixnet(1 << 14, 1, seed=0)
    assert window(small, 2) == window(small, 4) == (4, 1)  # 16 groups: a period of 4 layers
    assert window(small, 8) == (3, 1)  # 3 of the 4 bits in the part index: the shortest
    assert window(wide, 2) == window(wide, 32) == (10, 2)  # 1024 groups: a period of 10, every second layer
    assert window(wide, 64) == (3, 1)
    assert window(relabelled_radixnet(1 << 16, 1, seed=0), 8) == (12, 4)
    assert window(relabelled_radixnet(1 << 15, 1, seed=0), 8) == (3, 1)  # a period of 11
    # the starts of every worker together: every stride-th layer, once
    shares = chain_shares(100, 10, 3, stride=3)
    assert sorted(t for share in shares for t in share) == list(range(1, 101, 3))
    # and the work balanced to within a block of starts (16 layers' worth: 4 chains of 12 layers)
    shares = chain_shares(120, 12, 2, sweep_cost=1.2, stride=4)
    loads = [1.2 * 120 * (w == 0) + sum(min(12, 121 - t) for t in share) for w, share in enumerate(shares)]
    assert abs(loads[0] - loads[1]) <= 4 * 12


def test_layers_keep_a_chain_window_meanwhile_and_the_default_after():
    """Chains every few layers come back to the layers the last one read: `keeping` holds them
    (each read once), then the cache shrinks back to its default."""
    layers, widths, _ = relabelled_radixnet(256, 8, seed=0)
    net = Layers(layers, widths)
    with net.keeping(6):
        for t in range(1, 7):
            net.classes(t)
        assert list(net._cache) == [1, 2, 3, 4, 5, 6]
    assert list(net._cache) == [3, 4, 5, 6] and net.keep == Layers.KEEP
