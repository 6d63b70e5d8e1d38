"""Run tilings around a partition: a dynamic program over layers whose parts hold runs of row classes.

Why: on the real Graph Challenge network every part of the hypergraph method's partition holds
R_t/K whole row classes that are consecutive along the layer's cycles (a run of g classes reads
g + 1 column classes, the fewest possible), so it reads the minimum and its volume is decided by
alignment alone. Within that family a layer is a *tiling* (where each cycle's runs start) and
two consecutive layers cost their reads minus the best matching of the previous layer's runs to
this layer's runs (the alignment of each pair: neurons of the one in column classes the other
reads; Hungarian method). A shortest path over per-layer tilings then gives the best partition of
the family with the part names matched along the chain, exactly over the tilings it is given.
Layers with few tilings (2^cycles ≤ --max-tilings at g = 2) get all of them; others get the
method's own, the uniform ones, and, for --rounds rounds, every tiling that moves one cycle's
runs from the best path found. The method's partition is in the family, so the result is never
worse; the partition is rebuilt and measured (`volume.partition_metrics`).

    python benchmarks/pair_tilings.py NET.h5 PART -k K [--rounds 6]

Layers whose parts do not hold whole classes, or whose runs do not tile the cycles, keep the
partition's own layer.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from spdnn.cycle_runs import class_incidence, cycles
from spdnn.hypergraph import identical_rows
from spdnn.layer_solve import place_inputs
from spdnn.layers import Layers
from spdnn.network import read_network
from spdnn.partition_io import read_partition
from spdnn.volume import partition_metrics, split_by_layer


def _key(unit, k):
    return tuple(sorted(tuple(np.flatnonzero(unit == q)) for q in range(k)))


class Layer:
    """One layer's candidate tilings (unit id per row class), their column reads and words read."""

    def __init__(self, w, row_class, col_class, own: np.ndarray, whole: bool, k: int):
        self.rc, self.cc, self.k = row_class, col_class, k
        a, c, self.n_r, self.n_c = class_incidence(row_class, col_class, w)
        self.reads = [c[a == g] for g in range(self.n_r)]
        self.z = np.bincount(col_class).astype(float)
        self.cyc = cycles(row_class, col_class, w)
        # g: run length when the partition holds whole classes and every cycle splits into runs of
        # g = R/K classes (one part each); None: the layer keeps the partition's own tiling
        g = self.n_r // k
        self.g = g if whole and self.cyc and g * k == self.n_r and not any(len(r) % g for r, _ in self.cyc) else None
        self.units, self.read_sets, self.read_words, self.keys = [], [], [], set()
        self.add(own)

    def add(self, unit) -> bool:
        key = _key(unit, self.k)
        if key in self.keys:
            return False
        self.keys.add(key)
        reads = np.zeros((self.k, self.n_c))
        for g in range(self.n_r):
            reads[unit[g], self.reads[g]] = 1
        self.units.append(unit)
        self.read_sets.append(reads)
        self.read_words.append(float((reads @ self.z).sum()))
        return True

    def tiling(self, offsets):
        g = self.g
        unit = np.empty(self.n_r, np.int64)
        u = 0
        for (rows, _), o in zip(self.cyc, offsets):
            ell = len(rows)
            for i in range(ell // g):
                unit[rows[(g * i + o + np.arange(g)) % ell]] = u
                u += 1
        return unit

    def offsets_of(self, unit):
        g = self.g
        out = []
        for rows, _ in self.cyc:
            ell = len(rows)
            o = next((o for o in range(g) if all(len({int(unit[x]) for x in rows[(g * i + o + np.arange(g)) % ell]}) == 1
                                                 for i in range(ell // g))), None)
            if o is None:
                return None
            out.append(o)
        return out


def build_layers(net, parts, k, max_tilings):
    out = []
    for t, w in enumerate(net.layers, start=1):
        w = sp.csr_matrix(w)
        rc, cc = identical_rows(w), identical_rows(w.T.tocsr())
        own = np.zeros(int(rc.max()) + 1, np.int64)
        own[rc] = parts[t]
        layer = Layer(w, rc, cc, own, bool((own[rc] == parts[t]).all()), k)
        g = layer.g
        if g:
            choices = itertools.product(range(g), repeat=len(layer.cyc))
            if g ** len(layer.cyc) > max_tilings:
                choices = [(o,) * len(layer.cyc) for o in range(g)]
            for offsets in choices:
                layer.add(layer.tiling(offsets))
        out.append(layer)
    return out


def class_counts(rows_prev, cols):
    m = np.zeros((int(rows_prev.max()) + 1, int(cols.max()) + 1))
    np.add.at(m, (rows_prev, cols), 1)
    return m


def matching(prev_unit, m, reads, k):
    """The alignment of every (previous unit, unit) pair, and the best matching of them."""
    own = np.zeros((k, m.shape[0]))
    own[prev_unit, np.arange(m.shape[0])] = 1
    a = (own @ m) @ reads.T
    r, c = linear_sum_assignment(-a)
    return a[r, c].sum(), r, c


def shortest_path(layers, k):
    """Best tiling per layer: max Σ (matched alignment − reads); returns the state per layer."""
    f = -np.array(layers[0].read_words)
    back = []
    for t in range(1, len(layers)):
        prev, cur = layers[t - 1], layers[t]
        m = class_counts(prev.rc, cur.cc)
        nf = np.full(len(cur.units), -np.inf)
        arg = np.zeros(len(cur.units), np.int64)
        for i, pu in enumerate(prev.units):
            for j, reads in enumerate(cur.read_sets):
                v = f[i] + matching(pu, m, reads, k)[0] - cur.read_words[j]
                if v > nf[j]:
                    nf[j], arg[j] = v, i
        f = nf
        back.append(arg)
    s = int(np.argmax(f))
    path = [s]
    for arg in reversed(back):
        s = int(arg[s])
        path.append(s)
    return path[::-1]


def neighbours(layer, unit):
    """Tilings that move one cycle's runs by one class from `unit`'s."""
    g = layer.g
    if not g:
        return []
    offsets = layer.offsets_of(unit)
    if offsets is None:
        return []
    out = []
    for c in range(len(offsets)):
        for step in (1, -1):
            o = list(offsets)
            o[c] = (o[c] + step) % g
            out.append(layer.tiling(o))
    return out


def partition_from(layers, path, net, k):
    parts = [None] * (len(layers) + 1)
    name = np.arange(k)
    parts[1] = name[layers[0].units[path[0]][layers[0].rc]]
    for t in range(1, len(layers)):
        prev, cur = layers[t - 1], layers[t]
        _, r, c = matching(prev.units[path[t - 1]], class_counts(prev.rc, cur.cc), cur.read_sets[path[t]], k)
        new = np.empty(k, np.int64)
        new[c] = name[r]
        name = new
        parts[t + 1] = name[cur.units[path[t]][cur.rc]]
    parts[0] = place_inputs(Layers(net.layers, net.widths), parts, k)
    return np.concatenate([p.astype(np.int64) for p in parts])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("network")
    p.add_argument("partition", help="spdnn partition's -o PART of the same network: seeds the family")
    p.add_argument("-k", type=int, required=True)
    p.add_argument("--rounds", type=int, default=6, help="rounds of one-cycle moves around the best path")
    p.add_argument("--max-tilings", type=int, default=256, help="enumerate a layer's tilings up to this many")
    a = p.parse_args()
    net = read_network(a.network)
    given = read_partition(a.partition).astype(np.int64)
    parts = split_by_layer(given, net.widths)
    t0 = time.perf_counter()
    layers = build_layers(net, parts, a.k, a.max_tilings)
    path = shortest_path(layers, a.k)
    for _ in range(a.rounds):
        added = sum(layer.add(n) for layer, s in zip(layers, path) for n in neighbours(layer, layer.units[s]))
        if not added:
            break
        path = shortest_path(layers, a.k)
    part = partition_from(layers, path, net, a.k)
    seconds = time.perf_counter() - t0
    m = partition_metrics(net.layers, net.widths, part, a.k, 0.03)
    c = partition_metrics(net.layers, net.widths, given, a.k, 0.03)
    print(f"| partition | K={a.k} volume | balanced | seconds |\n|---|---|---|---|")
    print(f"| {a.partition} | {c['volume_forward']:,} | {c['balanced']} | |")
    print(f"| best run tiling around it ({sum(len(x.units) for x in layers)} tilings over "
          f"{len(layers)} layers) | {m['volume_forward']:,} | {m['balanced']} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
