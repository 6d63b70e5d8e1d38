"""Is the partition a local optimum for moves of two whole parts across every layer at once?

Why: volume splits exactly over the parts (a part pays the columns its rows read less those among
them it owns), so re-splitting the rows of two parts p and q between them, every other part
fixed, changes only p's and q's words. Over the partitions that keep identical-row classes whole
and leave each layer's class counts of p and q as they are (so every load stays the same: classes
of one layer have one size here), the best such re-split over *all layers jointly* is a shortest
path over the layers: C(n, n_p) choices a layer (n classes in p ∪ q, n_p of them p's), each
boundary's cost exact for every pair of choices (p's reads plus q's reads, less what each owns of
them; the inputs' boundary as `place_inputs` leaves it, each part paying its reads). This is the
multi-layer move the local refinements here cannot make: any number of class exchanges between
p and q in any number of consecutive layers, found exactly.

    python benchmarks/pair_resplit.py NET.h5 PART [--sweeps S] [--exchanges D] [--max-choices C] [-o OUT]

Takes every pair of parts in turn (a sweep), keeps each re-split that lowers the volume, prints
each pair's gain and the volume after each sweep, checked against `volume.partition_metrics`.
A pair whose layers have more than --max-choices choices (K = 2 and 4 on Graph Challenge
networks: C(64, 32), C(32, 16)) is skipped and counted; `--exchanges D` limits each layer to the
splits that exchange at most D classes between p and q (D = 1 at K = 2: 1,025 a layer), still
chosen jointly over all layers.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from typing import NamedTuple

import numpy as np
from part_chains import class_owned, class_reads, layer_classes  # the same class tables
from whole_class_bound import class_part

from spdnn.errors import UserError
from spdnn.layer_solve import place_inputs
from spdnn.layers import Layers
from spdnn.network import read_network
from spdnn.partition_io import read_partition
from spdnn.volume import partition_metrics, split_by_layer

MAX_CHOICES = 20_000  # choices per layer (C(16, 8) = 12,870: two parts of 8 classes)
BLOCK = 1024  # choices of layer t per block of the transition matrix


class LayerTables(NamedTuple):
    rows: np.ndarray  # each neuron of the layer: its row class
    reads: np.ndarray  # [row class, column class]: 1 where the class's rows read that column class
    sizes: np.ndarray  # neurons per column class
    owned: np.ndarray | None  # [row class of the layer before, column class]: neurons in both (None: layer 1)
    loads: np.ndarray  # per row class: its rows' weights (nonzeros), what balance counts


def layer_tables(layers) -> list[LayerTables]:
    """The class tables of `part_chains`, found once for every pair."""
    classes = layer_classes(layers)
    return [LayerTables(lc.rc, class_reads(lc), np.bincount(lc.cc).astype(np.float64),
                        class_owned(classes[t - 1].rc, lc) if t else None,
                        np.bincount(lc.rc, weights=np.diff(lc.w.indptr))) for t, lc in enumerate(classes)]


def class_parts(classes: list[LayerTables], parts) -> list[np.ndarray]:
    """Per layer (1..L), each row class's part; UserError if a class is split."""
    out = []
    for t, (lc, p) in enumerate(zip(classes, parts[1:]), start=1):
        part_of = class_part(lc.rows, p)
        if part_of is None:
            raise UserError(f"layer {t}: the partition splits a class of identical rows (this benchmark needs them whole)")
        out.append(part_of.astype(np.int64))
    return out


def choices(mine: np.ndarray, exchanges: int | None = None) -> np.ndarray:
    """[choice, slot]: 1 where the slot's class goes to p, for every split of the slots that gives p
    as many as `mine` (p's slots now) and exchanges at most `exchanges` of them (None: any number)."""
    ins, outs = np.flatnonzero(mine), np.flatnonzero(~mine)
    out = []
    for e in range(most_exchanges(ins.size, outs.size, exchanges) + 1):
        for leave, join in itertools.product(itertools.combinations(ins, e), itertools.combinations(outs, e)):
            x = mine.astype(np.float32)
            x[list(leave)], x[list(join)] = 0.0, 1.0
            out.append(x)
    return np.array(out)


def most_exchanges(n_p: int, n_q: int, exchanges: int | None) -> int:
    return min(n_p, n_q) if exchanges is None else min(exchanges, n_p, n_q)


def choice_count(n: int, n_p: int, exchanges: int | None) -> int:
    """len(choices(...)) without listing them: Σ_e C(n_p, e)·C(n − n_p, e)."""
    return sum(math.comb(n_p, e) * math.comb(n - n_p, e) for e in range(most_exchanges(n_p, n - n_p, exchanges) + 1))


def resplit(classes: list[LayerTables], cparts: list[np.ndarray], p: int, q: int, max_choices: int = MAX_CHOICES,
            exchanges: int | None = None):
    """(p's and q's words now, their least words over every re-split that exchanges at most
    `exchanges` classes a layer (None: any), the new class parts), or None when a layer has more than
    max_choices choices or classes of different loads in p ∪ q (then a re-split could unbalance
    the layer)."""
    slots, table = [], []
    for lc, cp in zip(classes, cparts):
        u = np.flatnonzero((cp == p) | (cp == q))
        n_p = int(np.count_nonzero(cp[u] == p))
        if choice_count(u.size, n_p, exchanges) > max_choices or np.unique(lc.loads[u]).size > 1:
            return None
        slots.append(u)
        table.append(choices(cp[u] == p, exchanges))
    current = [0] * len(slots)  # no exchange: the first choice
    f, now, back = None, 0.0, []
    for t, (lc, u, x) in enumerate(zip(classes, slots, table)):
        rd = lc.reads[u].astype(np.float32)
        read_p, read_q = (x @ rd > 0).astype(np.float64), ((1 - x) @ rd > 0).astype(np.float64)
        reads = (read_p + read_q) @ lc.sizes  # p's reads plus q's, every choice
        if t == 0:  # the inputs: each owned where one of its readers is, so p and q pay their reads
            f = reads
            now = reads[current[0]]
            back.append(None)
            continue
        own = lc.owned[slots[t - 1]].T  # column class × previous slot
        owned_p, owned_q = read_p @ own, read_q @ own  # [choice, previous slot]: neurons read that p / q owns
        # words(prev, cur) = reads(cur) − x_prev·owned_p(cur) − (1 − x_prev)·owned_q(cur)
        base = reads - owned_q.sum(1)
        gain = (owned_p - owned_q).astype(np.float32)
        prev = table[t - 1]
        now += base[current[t]] - float(prev[current[t - 1]] @ gain[current[t]])
        # A previous choice more than the widest gain above the cheapest can be no choice's best
        # predecessor (its gain differs from the cheapest's by at most Σ|gain|): exact, and it
        # leaves a few hundred of the 12,870 at K = 8.
        keep = np.flatnonzero(f <= f.min() + np.abs(gain).sum(1).max())
        g, arg = np.empty(x.shape[0]), np.empty(x.shape[0], np.int64)
        for lo in range(0, x.shape[0], BLOCK):
            total = f[keep, None] - prev[keep] @ gain[lo:lo + BLOCK].T
            best_prev = total.argmin(0)
            arg[lo:lo + BLOCK] = keep[best_prev]
            g[lo:lo + BLOCK] = total[best_prev, np.arange(total.shape[1])] + base[lo:lo + BLOCK]
        f = g
        back.append(arg)
    j = int(f.argmin())
    best = float(f[j])
    new = [cp.copy() for cp in cparts]
    for t in range(len(classes) - 1, -1, -1):
        mine = table[t][j] > 0.5
        new[t][slots[t][mine]], new[t][slots[t][~mine]] = p, q
        if back[t] is not None:
            j = int(back[t][j])
    return now, best, new


def neuron_parts(classes, cparts, layers, widths, k: int, dtype) -> list[np.ndarray]:
    parts = [None] + [cp[lc.rows].astype(dtype) for lc, cp in zip(classes, cparts)]
    parts[0] = place_inputs(Layers(layers, widths), parts, k)
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network")
    ap.add_argument("partition", help="spdnn partition's -o PART of the same network")
    ap.add_argument("--sweeps", type=int, default=1)
    ap.add_argument("--max-choices", type=int, default=MAX_CHOICES)
    ap.add_argument("--exchanges", type=int, default=None,
                    help="at most this many classes exchanged a layer (default any: K = 2 and 4 need a few)")
    ap.add_argument("--epsilon", type=float, default=0.03)
    ap.add_argument("-o", "--output", default=None, help="write the final partition here (.npy)")
    a = ap.parse_args()
    net = read_network(a.network)
    part = read_partition(a.partition)
    k = int(part.max()) + 1
    parts = split_by_layer(part, net.widths)
    classes = layer_tables(net.layers)
    cparts = class_parts(classes, parts)
    start = partition_metrics(net.layers, net.widths, part, k, a.epsilon)["volume_forward"]
    volume, final, t0 = start, part, time.perf_counter()
    print(f"start: {start:,} words, K = {k}")
    for sweep in range(1, a.sweeps + 1):
        skipped = 0
        for p, q in itertools.combinations(range(k), 2):
            found = resplit(classes, cparts, p, q, a.max_choices, a.exchanges)
            if found is None:
                skipped += 1
                continue
            now, best, new = found
            if best < now - 0.5:
                cparts, volume = new, volume - round(now - best)
            print(f"  pair {p},{q}: {now:,.0f} → {best:,.0f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if k > 1 and skipped == k * (k - 1) // 2:
            sys.exit(f"pair_resplit: every pair of parts skipped: a layer has more than {a.max_choices:,} splits "
                     "(--max-choices, --exchanges) or row classes of different loads (not a RadiX-Net-style network)")
        final = np.concatenate(neuron_parts(classes, cparts, net.layers, net.widths, k, part.dtype))
        metrics = partition_metrics(net.layers, net.widths, final, k, a.epsilon)
        assert metrics["volume_forward"] == volume and metrics["balanced"], (metrics["volume_forward"], volume)
        print(f"sweep {sweep}: {volume:,} words ({volume - start:+,}), {skipped} pairs skipped, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    if a.output:
        np.save(a.output, final)


if __name__ == "__main__":
    main()
