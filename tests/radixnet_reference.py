"""Partitions built by hand from a RadiX-Net's known structure: the yardstick of structure recovery.

A RadiX-Net layer of N neurons has G = N/16 groups of 16 identical neurons (g(n) = n mod G); with
butterfly bases b_1..b_m (product G; all 2 in the Graph Challenge), layer t uses base i = (t−1) mod m
and lets group g read groups g + j·s, j = 0..b_i − 1, s = b_1·…·b_(i−1), of the layer below.
Renaming every layer's neurons at random hides that structure from the neuron ids, not from the
partitioner: the relabelled network is the same problem. These references see the structure (the
renaming), the method under test never does.

At the level of groups, a partition of layer t is π_t: [G] → [K], and (a group's 16 neurons owned
by one part, each reader group in one part) the words layer t sends are exactly

    16 · Σ_c (|{π_t(c − j·s) : j < b} ∪ {π_{t−1}(c)}| − 1),

column group c being read by row groups c − j·s. For K = 2^m a *bit partition* names a group's
part by m chosen bits of its index, in order: π(c) = Σ_i bit(c, b_i)·2^i. Every layer balanced
exactly. `best_bit_partition` is the cheapest sequence of bit choices over all layers (dynamic
programming over the ordered m-tuples of bits, each layer's choice free): it includes the fixed
choice (the same bits everywhere, e.g. contiguous arcs of groups = the top bits) and the
look-ahead construction that, when a layer needs a bit the partition uses, gives up the bit needed
again latest (Belady's rule on bits), since both are sequences the DP ranges over. The bases
multiply to G = 2^m, so every base is a power of 2 and group indices stay made of bits: a layer of
base 2^q and stride s reads across the q bits above log2 s (and carries past them).
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from spdnn.generate import radix_strides, radixnet_base_layer

ROWS_PER_GROUP = 16


def relabelled_radixnet(neurons: int, n_layers: int, seed: int, rename_inputs: bool = True, radices=None):
    """(layers, widths, groups): base layers (`radices`, default all 2) repeated, every layer's neurons
    (layer 0 too, unless not `rename_inputs`) renamed by a random permutation; groups[t][n] = the
    group of neuron n of layer t (what a hand-built reference may use; the partitioner gets only
    the layers)."""
    rng = np.random.default_rng(seed)
    n_groups = neurons // ROWS_PER_GROUP
    bases = radix_strides(neurons, radices)
    names = [rng.permutation(neurons) if rename_inputs else np.arange(neurons)]  # names[t][original] = new id
    names += [rng.permutation(neurons) for _ in range(n_layers)]
    layers = []
    for t in range(1, n_layers + 1):
        radix, stride = bases[(t - 1) % len(bases)]
        w = radixnet_base_layer(neurons, stride, radix).tocoo()
        layers.append(sp.csr_matrix((w.data, (names[t][w.row], names[t - 1][w.col])), shape=w.shape))
    groups = []
    for name in names:
        g = np.empty(neurons, np.int64)
        g[name] = np.arange(neurons) % n_groups
        groups.append(g)
    return layers, [neurons] * (n_layers + 1), groups


def _labels(n_groups: int, k: int):
    """Every ordered tuple of m = log2 K distinct bits of a group index, and each one's part of every group."""
    m, n_bits = int(np.log2(k)), int(np.log2(n_groups))
    states = list(itertools.permutations(range(n_bits), m))
    c = np.arange(n_groups)
    parts = np.array([sum(((c >> b) & 1) << i for i, b in enumerate(st)) for st in states], np.int64).reshape(len(states), n_groups)
    return states, parts


def best_bit_partition(neurons: int, n_layers: int, k: int, radices=None):
    """(forward words per sample, π_1..π_L as group → part arrays) of the cheapest bit-partition
    sequence; layer 0 (the inputs, weightless) is placed with layer 1's readers, at no cost."""
    n_groups = neurons // ROWS_PER_GROUP
    bases = radix_strides(neurons, radices)
    if k == 1:
        return 0, [np.zeros(n_groups, np.int64)] * n_layers
    states, parts = _labels(n_groups, k)
    c = np.arange(n_groups)
    own, cross = {}, {}
    for a, (radix, s) in enumerate(bases):
        # readers[j]: the part of column group c's reader group c − j·s, for every state
        readers = [parts[:, (c - j * s) % n_groups] for j in range(radix)]
        distinct = np.ones(parts.shape, np.int64)  # |{π(c − j·s) : j < b}|, one position at a time
        for j in range(1, radix):
            distinct += np.all([readers[j] != readers[i] for i in range(j)], axis=0)
        own[a] = (distinct - 1).sum(axis=1)
        # + [π_{t−1}(c) ∉ {π_t(c − j·s)}], for every (previous, current) pair of states
        cross[a] = np.stack([np.all([p[None, :] != r for r in readers], axis=0).sum(axis=1) for p in parts])
    cost = own[0].astype(np.int64)  # layer 1: the inputs are free to sit with a reader
    back = []
    for t in range(2, n_layers + 1):
        a = (t - 1) % len(bases)
        total = cost[:, None] + cross[a]  # [previous, current]
        back.append(total.argmin(axis=0))
        cost = total[back[-1], np.arange(len(states))] + own[a]
    state = int(cost.argmin())
    words = int(cost[state]) * ROWS_PER_GROUP
    chosen = [state]
    for b in reversed(back):
        state = int(b[state])
        chosen.append(state)
    chosen.reverse()
    return words, [parts[s_] for s_ in chosen]


def neuron_partition(group_parts, groups, layers, k):
    """The neuron-level partition (all layers, inputs first) of group-level maps π_1..π_L; layer 0
    takes the part of its first reader group, as in the cost above."""
    parts = [None] + [np.asarray(p)[g] for p, g in zip(group_parts, groups[1:])]
    w = layers[0].tocsc()
    first_reader = w.indices[w.indptr[:-1]]
    parts[0] = parts[1][first_reader]
    dtype = np.uint8 if k <= 256 else np.int32
    return np.concatenate(parts).astype(dtype)
