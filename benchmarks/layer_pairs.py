"""K = 2: a bound that charges a split row class all at once, layer pair by layer pair — how high can it go?

Why: every semidefinite bound here relaxes each row's label on its own, and on the Graph Challenge
networks the relaxation splits row classes a little everywhere (`pair_ceiling.py`: no bound of
that form exceeds 41,862 words on the real 1024×120 network, the method's 54,483 is 1.30× that).
A labelling splits a class all or nothing: once one row of a class leaves, every column the class
reads has readers on both sides.

The relaxed model. Give every row class of layer t ≥ 1 one of three states: whole on side 0, whole
on side 1, or split; a split class's rows count in no part's load, and as owners they may sit on
whichever side suits each column (inputs: always free). A column then costs 0 exactly when all its
reader classes are whole on one side σ and its owner's class is split or whole on σ, else 1. Every
balanced partition maps to states (its split classes, and each whole class's side) whose cost is
at most its volume (a split class's columns cost 1 either way, a free owner costs 0 ≤ 1, whole
classes are counted exactly) and whose whole classes fit each side's capacity; so the relaxed
model's optimum is a lower bound. On 15 tiny chains (brute force; benchmarks/README.md) it equals
the exact optimum on 14, including those whose best partition splits a class.

The decomposition. Layer t's cost depends on the states of layers t − 1 (owners) and t (readers)
only. With a price μ per row of a split class (μ = 0 on the inputs and the last layer), the prices
telescope, so for every partition

    V ≥ Σ_t [cost_t(s_{t−1}, s_t) + μ·rows split in s_{t−1} − μ·rows split in s_t]
      ≥ Σ_t min over (s_{t−1}, s_t), both within capacity, of the same                    (*)

— each layer pair minimised on its own. `pair_bound_brute` computes (*) exactly on tiny chains.

How high (*) can go: keeping every class whole in both layers is one choice in every pair's
minimum, so (*) is at most Σ_t NS_t for *any* whole-class choice per layer pair (its cost NS_t), and
no choice of μ proves more. `no_split_pair_minimum` looks for a cheap one: the columns' reader
classes link the classes of layer t into units that must share a side for every column to be
coherent; the units' sides are enumerated when there are at most MAX_CHOICES balanced ones (a single
cycle: two arcs, cut at two column classes), else found by swap descent from random starts; the
owners' classes then take the side most of their rows want, within capacity (the best choice when
the classes weigh the same). Sides that cut a unit are not searched, so Σ NS_t is a ceiling, not the
least such sum. A bound of this kind reaching its ceiling needs each pair's minimum *with* splits
(at a well-chosen μ) to stay near NS_t: measured on tiny chains only (`pair_bound_brute`).

    python benchmarks/layer_pairs.py NET.h5 [--epsilon 0.03] [--compare PART]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time

import numpy as np
import scipy.sparse as sp
from part_chains import class_units, layer_classes

from spdnn.hypergraph import identical_rows
from spdnn.network import read_network
from spdnn.partition_io import read_partition
from spdnn.volume import layer_capacity, partition_metrics

SIDE0, SIDE1, SPLIT = 0, 1, 2
MAX_CHOICES = 20_000  # unit side choices enumerated per layer (a stride-16 Graph Challenge layer: 12,870)
DESCENT_STARTS = 20


def class_readers(w):
    """(row class of each row, rows per class, row weights per class, reader classes of each column)."""
    w = sp.csr_matrix(w)
    cls = identical_rows(w)
    rw = np.diff(w.indptr)
    wc = w.tocsc()
    readers = [np.unique(cls[wc.indices[wc.indptr[j]:wc.indptr[j + 1]]]) for j in range(w.shape[1])]
    return cls, np.bincount(cls), np.bincount(cls, weights=rw).astype(np.int64), readers


def _layer_cost(states, readers, owner_states):
    """Relaxed cost of one layer: states [b, classes] of its readers, owner_states [a, columns]
    (SPLIT: a free owner) → [b, a]."""
    cost = np.zeros((len(states), len(owner_states)))
    for j, rc in enumerate(readers):
        if rc.size == 0:
            continue
        st = states[:, rc]
        coherent = (st == st[:, :1]).all(axis=1) & (st[:, 0] != SPLIT)
        own = owner_states[:, j][None, :]
        cost += 1 - (coherent[:, None] & ((own == SPLIT) | (own == st[:, 0][:, None])))
    return cost


def _all_states(n_classes, weights, cap, allow_split=True):
    states = np.array(list(itertools.product((SIDE0, SIDE1, SPLIT) if allow_split else (SIDE0, SIDE1),
                                             repeat=n_classes)))
    fits = (((states == SIDE0) * weights).sum(1) <= cap) & (((states == SIDE1) * weights).sum(1) <= cap)
    return states[fits]


def relaxed_optimum_brute(layers, widths, epsilon):
    """The relaxed model's optimum over the whole chain (tiny networks only: 3^classes states a layer)."""
    best, owners = np.zeros(1), np.full((1, widths[0]), SPLIT)
    for w in layers:
        cls, _, cw, readers = class_readers(w)
        states = _all_states(cls.max() + 1, cw, layer_capacity(np.diff(sp.csr_matrix(w).indptr), 2, epsilon))
        best = (_layer_cost(states, readers, owners) + best[None, :]).min(axis=1)
        owners = states[:, cls]
    return float(best.min())


def pair_bound_brute(layers, widths, epsilon, mu, allow_split=True):
    """(*) of the module doc, each layer pair minimised exactly (tiny networks only)."""
    total, owners, price = 0.0, np.full((1, widths[0]), SPLIT), np.zeros(1)
    for t, w in enumerate(layers):
        cls, size, cw, readers = class_readers(w)
        states = _all_states(cls.max() + 1, cw, layer_capacity(np.diff(sp.csr_matrix(w).indptr), 2, epsilon),
                             allow_split)
        if len(states) == 0:  # no choice fits (whole classes only, of sizes that cannot balance)
            return math.inf
        mu_t = 0.0 if t == len(layers) - 1 else mu
        split_rows = ((states == SPLIT) * size).sum(1)
        total += float((_layer_cost(states, readers, owners) - mu_t * split_rows[:, None] + price[None, :]).min())
        owners, price = states[:, cls], mu_t * split_rows
    return total


def _units(layer):
    """(unit of each row class, `part_chains.class_units`; the layer's cycles as `cycle_runs.cycles`
    finds them, or None)."""
    lc = layer_classes([layer])[0]
    return class_units(lc), lc.cycles


def _swap_descent(cost, n, rng):
    """A local minimum of `cost` over 0/1 vectors with n // 2 ones, from a random one: swap a 1 and
    a 0 while that lowers it."""
    s = (rng.permutation(n) < n // 2).astype(int)
    cur = cost(s)
    while True:
        trials = ((a, b) for a in rng.permutation(np.flatnonzero(s == 1))
                  for b in rng.permutation(np.flatnonzero(s == 0)))
        for a, b in trials:
            trial = s.copy()
            trial[a], trial[b] = 0, 1
            v = cost(trial)
            if v < cur:
                cur, s = v, trial
                break
        else:
            return cur


def _owner_cost(side_of_column, coherent, owner_cls, owner_weight, cap):
    """Least owner cost of a layer: the owners' classes whole, each side within `cap`, rows of
    incoherent columns free. Classes go to the side most of their rows want, most eager first, while it
    fits (exact when the classes weigh the same, the Graph Challenge case)."""
    n = owner_weight.size
    want = [np.bincount(owner_cls, weights=coherent & (side_of_column == s), minlength=n) for s in (0, 1)]
    load, cost = [0, 0], 0.0
    for c in np.argsort(-np.abs(want[1] - want[0]), kind="stable"):
        s = int(want[1][c] > want[0][c])
        if load[s] + owner_weight[c] > cap:
            s = 1 - s
            if load[s] + owner_weight[c] > cap:
                return math.inf
        load[s] += owner_weight[c]
        cost += want[1 - s][c]
    return cost


def no_split_pair_minimum(prev_layer, layer, epsilon, rng=None):
    """(NS_t, enumerated?) for layer t: the relaxed cost of a cheap choice with every class of layers
    t − 1 and t whole (prev_layer None: the inputs, free owners); enumerated: the best over every
    balanced choice of unit sides (module doc), else the best swap descent found."""
    rng = rng or np.random.default_rng(0)
    cls, _, cw, readers = class_readers(layer)
    n_classes = cls.max() + 1
    cap = layer_capacity(np.diff(sp.csr_matrix(layer).indptr), 2, epsilon)
    if prev_layer is not None:
        prev_rows = np.diff(sp.csr_matrix(prev_layer).indptr)  # the owners need classes and weights only
        owner_cls = identical_rows(prev_layer)
        owner_w = np.bincount(owner_cls, weights=prev_rows).astype(np.int64)
        owner_cap = layer_capacity(prev_rows, 2, epsilon)
    read = np.array([rc.size > 0 for rc in readers])
    width = max(1, max(rc.size for rc in readers))
    padded = np.array([np.resize(rc, width) if rc.size else np.zeros(width, int) for rc in readers])

    def value(side):  # side per class of layer t → relaxed cost with whole classes
        if ((side == 0) * cw).sum() > cap or ((side == 1) * cw).sum() > cap:
            return math.inf
        by_column = side[padded]
        coherent = read & (by_column == by_column[:, :1]).all(axis=1)
        incoherent = float(np.count_nonzero(read & ~coherent))
        if prev_layer is None:
            return incoherent
        return incoherent + _owner_cost(by_column[:, 0], coherent, owner_cls, owner_w, owner_cap)

    unit, cyc = _units(layer)
    n_units = int(unit.max()) + 1  # a Python int: 2 ** (n_units − 1) below must not wrap
    if n_units == 1:
        if not cyc:  # one unit that is not a cycle: any balanced split is a feasible choice
            side = np.zeros(n_classes, int)
            side[rng.permutation(n_classes)[:n_classes // 2]] = 1
            return value(side), False
        order = cyc[0][0]
        best = math.inf  # an arc of every length from every start on side 1, cut at two column classes
        for half in range(1, n_classes):
            for start in range(n_classes):
                side = np.zeros(n_classes, int)
                side[order[(start + np.arange(half)) % n_classes]] = 1
                best = min(best, value(side))
        return best, True
    unit_w = np.bincount(unit, weights=cw)
    if 2 ** (n_units - 1) <= 16 * MAX_CHOICES:
        choices = (np.arange(2 ** (n_units - 1))[:, None] >> np.arange(n_units - 1)) & 1
        choices = np.hstack([np.zeros((len(choices), 1), int), choices])  # unit 0 on side 0: the flip costs the same
        fits = ((choices * unit_w).sum(1) <= cap) & (((1 - choices) * unit_w).sum(1) <= cap)
        if np.count_nonzero(fits) <= MAX_CHOICES:
            return min((value(c[unit]) for c in choices[fits]), default=math.inf), True
    return min(_swap_descent(lambda s_u: value(s_u[unit]), n_units, rng) for _ in range(DESCENT_STARTS)), False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network")
    ap.add_argument("--epsilon", type=float, default=0.03)
    ap.add_argument("--compare", default=None, help="a partition file: its volume beside the ceiling")
    args = ap.parse_args(argv)
    net = read_network(args.network)
    start, total, enumerated_layers = time.perf_counter(), 0.0, 0
    for t, w in enumerate(net.layers):
        ns, enumerated = no_split_pair_minimum(net.layers[t - 1] if t else None, w, args.epsilon)
        total += ns
        enumerated_layers += enumerated
        print(f"layer {t + 1}: NS = {ns:g}{'' if enumerated else ' (swap descent)'}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    L = len(net.layers)
    print(f"{args.network}: no layer-pair bound (*) exceeds Σ NS_t = {total:,.0f} words at K = 2, ε = {args.epsilon} "
          f"({enumerated_layers} of {L} layers' unit sides enumerated, the rest by swap descent)")
    if args.compare:
        volume = partition_metrics(net.layers, net.widths, read_partition(args.compare), 2, args.epsilon)["volume_forward"]
        print(f"{args.compare}: {volume:,} words, {volume / total:.3f}× the ceiling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
