"""Partitions built by hand from a RadiX-Net's known structure: the yardstick of structure recovery.

A radix-2 RadiX-Net layer of N neurons has G = N/16 groups of 16 identical neurons (g(n) = n mod G);
layer t (stride s = 2^((t−1) mod log2 G)) lets group g read groups g and g + s of the layer below.
Renaming every layer's neurons at random hides that structure from the neuron ids, not from the
partitioner: the relabelled network is the same problem. These references see the structure (the
renaming), the method under test never does.

At the level of groups, a partition of layer t is π_t: [G] → [K], and (a group's 16 neurons owned
by one part, each reader group in one part) the words layer t sends are exactly

    16 · Σ_c (|{π_t(c), π_t(c − s), π_{t−1}(c)}| − 1),

column group c being read by row groups c and c − s. For K = 2^m a *bit partition* names a group's
part by m chosen bits of its index, in order: π(c) = Σ_i bit(c, b_i)·2^i. Every layer balanced
exactly. `best_bit_partition` is the cheapest sequence of bit choices over all layers (dynamic
programming over the ordered m-tuples of bits, each layer's choice free): it includes the fixed
choice (the same bits everywhere, e.g. contiguous arcs of groups = the top bits) and the
look-ahead construction that, when a layer needs a bit the partition uses, gives up the bit needed
again latest (Belady's rule on bits), since both are sequences the DP ranges over.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from spdnn.generate import radixnet_base_layer

ROWS_PER_GROUP = 16


def relabelled_radixnet(neurons: int, n_layers: int, seed: int, rename_inputs: bool = True):
    """(layers, widths, groups): base layers of strides 1, 2, 4, … repeated, every layer's neurons
    (layer 0 too, unless not `rename_inputs`) renamed by a random permutation; groups[t][n] = the
    group of neuron n of layer t (what a hand-built reference may use; the partitioner gets only
    the layers)."""
    rng = np.random.default_rng(seed)
    n_groups = neurons // ROWS_PER_GROUP
    n_strides = int(np.log2(n_groups))
    names = [rng.permutation(neurons) if rename_inputs else np.arange(neurons)]  # names[t][original] = new id
    names += [rng.permutation(neurons) for _ in range(n_layers)]
    layers = []
    for t in range(1, n_layers + 1):
        w = radixnet_base_layer(neurons, 2 ** ((t - 1) % n_strides)).tocoo()
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


def best_bit_partition(neurons: int, n_layers: int, k: int):
    """(forward words per sample, π_1..π_L as group → part arrays) of the cheapest bit-partition
    sequence; layer 0 (the inputs, weightless) is placed with layer 1's readers, at no cost."""
    n_groups = neurons // ROWS_PER_GROUP
    n_strides = int(np.log2(n_groups))
    if k == 1:
        return 0, [np.zeros(n_groups, np.int64)] * n_layers
    states, parts = _labels(n_groups, k)
    c = np.arange(n_groups)
    own, cross = {}, {}
    for a in range(n_strides):
        s = 2 ** a
        other = parts[:, (c - s) % n_groups]  # the part of the second reader group of every column group
        own[a] = (parts != other).sum(axis=1)  # |{π(c), π(c−s)}| − 1, summed
        # + [π_{t−1}(c) ∉ {π_t(c), π_t(c−s)}], for every (previous, current) pair of states
        cross[a] = np.stack([((p[None, :] != parts) & (p[None, :] != other)).sum(axis=1) for p in parts])
    cost = own[0].astype(np.int64)  # layer 1: the inputs are free to sit with a reader
    back = []
    for t in range(2, n_layers + 1):
        a = (t - 1) % n_strides
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
