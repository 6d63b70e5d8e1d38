"""K = 2: the best partition that keeps every row class whole and every column's readers on one side.

Why: at K = 2 the method keeps row classes whole and reads each column on one side only, and pays
for owners placed away from their readers (`volume_forward_owner_away`: 96.6 % of its words on the
real network). Is that the best such a partition can do, or does the search miss better ones? This
script answers it exactly for a family of partitions, by dynamic programming over the whole chain.

The family, per layer (row classes `identical_rows`; units: the classes linked through columns they
read in common, so a column's readers share a side exactly when its unit does):
- units whose balanced side choices number at most --max-choices: every such choice;
- a layer that is one cycle of classes (`cycle_runs.cycles`): every balanced arc, its two boundary
  column classes read on both sides (no choice keeps every column on one side there);
- layers of --cut units (a list; default 2), all cycles of one length: also every choice with two
  of them cut into arcs (the rest whole), its four boundary column classes read on both sides;
- a layer whose every class is its own unit (each reads columns no other class reads) and whose
  classes weigh the same, with too many choices to list: not listed; given its neighbours' choices
  its cost is linear in its sides, so the best is the cheapest classes on side 1, in closed form.
Every layer's volume then depends on its own choice and the one before only (the owners), and the
chain's least volume over the family is a shortest path: exact, not a heuristic. The partition it
builds is checked against `partition_metrics` (the volume it claims is the volume it has).

With --refine P the method's refinement (`partition.refine`, P passes) starts from that partition,
free to leave the family.

    python benchmarks/whole_class_chain.py NET.h5 [--epsilon 0.03] [--cut 2] [--refine P] [--compare PART] [--out PART]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time

import numpy as np
from part_chains import (
    LayerClasses,
    class_owned,
    class_reads,
    class_units,
    layer_classes,
)

from spdnn.errors import UserError
from spdnn.layer_solve import place_inputs
from spdnn.layers import Layers
from spdnn.network import read_network
from spdnn.partition import network_metrics, refine
from spdnn.partition_io import read_partition, write_partition
from spdnn.partitioner import Solver
from spdnn.volume import layer_capacity, partition_metrics, split_by_layer

MAX_CHOICES = 20_000  # a stride-16 Graph Challenge layer: C(16, 8) = 12,870
CUT_UNITS = (2,)  # two-arc cuts on the layers of this many cycles (benchmarks/README.md: what 4 buys)
MAX_CUT_CHOICES = 100_000  # cut choices of one layer (Graph Challenge: 31,744 with two cycles, 46,080 with four)
CHUNK = 512  # candidates of a layer per block of the transition matrix
FREE_CHUNK = 4  # next layer's candidates per block of a free layer's costs ([P, 4, n])


class Layer:
    """One layer's classes, weights, units and the column classes' reader counts."""

    def __init__(self, lc: LayerClasses, epsilon: float):
        self.lc = lc
        rows = np.diff(lc.w.indptr)
        self.n = int(lc.rc.max()) + 1
        self.weight = np.bincount(lc.rc, weights=rows).astype(np.int64)
        self.cap = layer_capacity(rows, 2, epsilon)
        self.reads = class_reads(lc)  # [row class, column class] 0/1
        self.readers = self.reads.sum(axis=0)
        self.columns = np.bincount(lc.cc, minlength=self.reads.shape[1]) * (self.readers > 0)
        self.unit = class_units(lc)
        self.n_units = int(self.unit.max()) + 1

    def fits(self, sides: np.ndarray) -> np.ndarray:
        ones = sides @ self.weight
        return (ones <= self.cap) & (self.weight.sum() - ones <= self.cap)

    def column_sides(self, sides: np.ndarray):
        """(coherent, side) per column class for class sides [Q, n]: coherent when every reader
        class is on one side (columns nobody reads count as coherent and never cost)."""
        ones = sides.astype(np.float64) @ self.reads
        return (ones == 0) | (ones == self.readers), ones > 0

    def incoherent(self, coherent):
        return (~coherent).astype(np.float64) @ self.columns

    def side1_counts(self) -> list[int]:
        """Class counts on side 1 within capacity (classes of equal weight)."""
        return [m for m in range(self.n + 1) if self.fits(np.r_[np.ones(m), np.zeros(self.n - m)][None, :])[0]]

    def is_free(self) -> bool:
        return self.n_units == self.n and bool((self.weight == self.weight[0]).all())


def _arcs(order: np.ndarray, length: int, n: int) -> np.ndarray:
    """[start, class] 1 on the arc of `length` classes of the cycle `order` from every start."""
    m = order.size
    on = ((np.arange(m)[None, :] - np.arange(m)[:, None]) % m) < length
    out = np.zeros((m, n), np.int8)
    out[:, order] = on
    return out


def candidates(layer: Layer, max_choices: int = MAX_CHOICES, cut_units: tuple[int, ...] = CUT_UNITS,
               max_cut_choices: int = MAX_CUT_CHOICES):
    """Class sides [Q, n] of the family (module doc), or None: a free layer, left to closed form."""
    cyc = layer.lc.cycles
    if layer.n_units == 1 and cyc:
        order = cyc[0][0]
        out = np.vstack([_arcs(order, a, layer.n) for a in range(1, layer.n)])
        return out[layer.fits(out)]
    out = []
    if layer.n_units <= 30:  # 2 ** n_units choices before the balance
        choice = ((np.arange(2 ** layer.n_units)[:, None] >> np.arange(layer.n_units)) & 1).astype(np.int8)
        whole = choice[:, layer.unit]
        out.append(whole[layer.fits(whole)])
    if not out or len(out[0]) > max_choices:
        if layer.is_free():
            return None
        raise UserError(f"{layer.n_units} units: more than {max_choices:,} choices and not free "
                        f"(this family is for RadiX-Net-like layers)")
    lengths = {len(r) for r, _ in cyc} if cyc else set()
    if cyc and layer.n_units in cut_units and len(lengths) == 1:
        m = lengths.pop()
        n_cut = math.comb(layer.n_units, 2) * math.comb(layer.n_units - 2, (layer.n_units - 2) // 2) * (m - 1) * m * m
        if n_cut > max_cut_choices:
            raise UserError(f"--cut {layer.n_units}: {n_cut:,} choices with two cycles cut (at most "
                            f"{max_cut_choices:,}); leave {layer.n_units} out of --cut")
        orders = {int(layer.unit[r[0]]): r for r, _ in cyc}
        for a_unit, b_unit in itertools.combinations(range(layer.n_units), 2):
            rest = [u for u in range(layer.n_units) if u not in (a_unit, b_unit)]
            for ones in itertools.combinations(rest, len(rest) // 2):
                base = np.isin(layer.unit, ones).astype(np.int8)
                for a in range(1, m):
                    arc_a = _arcs(orders[a_unit], a, layer.n)
                    arc_b = _arcs(orders[b_unit], m - a, layer.n)
                    out.append((base[None, None, :] + arc_a[:, None, :] + arc_b[None, :, :]).reshape(-1, layer.n))
    out = np.vstack(out)
    return np.unique(out[layer.fits(out)], axis=0)


def owners(prev: Layer | None, layer: Layer) -> np.ndarray:
    """[row class of layer t − 1, column class of layer t]: read columns in both (inputs: none — an
    input goes to the side of its readers, at no cost)."""
    if prev is None:
        return np.zeros((1, layer.reads.shape[1]))
    return class_owned(prev.lc.rc, layer.lc) * (layer.readers > 0)


def transition(prev_sides, own, layer: Layer, sides):
    """Volume of layer t [P, Q] for layer t − 1's class sides [P, ·] and layer t's [Q, n]."""
    coherent, side = layer.column_sides(sides)
    coh = coherent.astype(np.float64)
    away_if_1 = own @ (coh * ~side).T  # owners on side 1, readers on 0
    away_if_0 = own @ (coh * side).T
    a = prev_sides.astype(np.float64)
    return layer.incoherent(coherent)[None, :] + a @ away_if_1 + (1 - a) @ away_if_0


def _free_in(prev_sides, own_in, layer: Layer):
    """A free layer's words from its owners: (each class on side 0 [P, n], on side 1 [P, n]) for
    layer t − 1's sides [P, ·]."""
    reader = layer.reads.argmax(axis=0)  # each read column class has one reader class
    into = np.zeros((own_in.shape[0], layer.n))
    np.add.at(into.T, reader, own_in.T)  # [owner class, reader class]: words if they sit apart
    a = prev_sides.astype(np.float64)
    return a @ into, (1 - a) @ into


def _free_out(layer: Layer, nxt: Layer | None, own_out, next_sides):
    """A free layer's words as owners of layer t + 1's columns: (each class on side 0 [R, n], on side
    1 [R, n]) for layer t + 1's sides [R, ·] (None: the last layer, nothing)."""
    if nxt is None:
        return np.zeros((1, layer.n)), np.zeros((1, layer.n))
    coherent, side = nxt.column_sides(next_sides)
    coh = coherent.astype(np.float64)
    return (own_out @ (coh * side).T).T, (own_out @ (coh * ~side).T).T


def free_best(c0, c1, allowed):
    """Least cost [...] of a free layer: the classes with the most to gain on side 1 go there (as many
    as the balance allows, the best count). Counts are integers: float32 holds them exactly."""
    gain = np.sort((c1 - c0).astype(np.float32), axis=-1)
    csum = np.concatenate([np.zeros(gain.shape[:-1] + (1,), np.float32), np.cumsum(gain, axis=-1)], axis=-1)
    return c0.sum(-1) + csum[..., allowed].min(axis=-1)


def free_sides(c0, c1, allowed):
    """The sides [n] reaching `free_best` for one (layer t − 1, layer t + 1) choice."""
    gain = c1 - c0
    order = np.argsort(gain, kind="stable")
    csum = np.r_[0.0, np.cumsum(gain[order])]
    m = allowed[int(np.argmin(csum[allowed]))]
    sides = np.zeros(gain.size, np.int8)
    sides[order[:m]] = 1
    return sides


def free_step(cost, prev_sides, prev: Layer, layer: Layer, nxt: Layer | None, nxt_sides):
    """The chain's step over a free layer: (least volume up to layer t + 1 for each of its choices,
    the best choice of layer t − 1 for each, the free layer's sides for each); nxt None: the last layer."""
    in0, in1 = _free_in(prev_sides, owners(prev, layer), layer)  # once: the same for every next choice
    out0, out1 = _free_out(layer, nxt, None if nxt is None else owners(layer, nxt), nxt_sides)
    allowed = layer.side1_counts()
    n_next = len(out0)
    arg, new = np.empty(n_next, np.int64), np.empty(n_next)
    for r in range(0, n_next, FREE_CHUNK):  # [P, a block of R, n] at a time
        block = slice(r, r + FREE_CHUNK)
        c0, c1 = in0[:, None, :] + out0[None, block, :], in1[:, None, :] + out1[None, block, :]
        total = cost[:, None] + free_best(c0, c1, allowed)
        if nxt is not None:
            total += nxt.incoherent(nxt.column_sides(nxt_sides[block])[0])[None, :]
        arg[block], new[block] = total.argmin(axis=0), total.min(axis=0)
    freed = [free_sides(in0[arg[r]] + out0[r], in1[arg[r]] + out1[r], allowed) for r in range(n_next)]
    return new, arg, freed


def chain_optimum(layers, epsilon, max_choices=MAX_CHOICES, cut_units=CUT_UNITS, progress=None,
                  max_cut_choices=MAX_CUT_CHOICES):
    """(least volume over the family, the partition vector reaching it, candidates per layer)."""
    info = [Layer(lc, epsilon) for lc in layer_classes(layers)]
    L = len(info)
    cand = []
    for t, x in enumerate(info):
        try:
            cand.append(candidates(x, max_choices, cut_units, max_cut_choices))
        except UserError as e:
            raise UserError(f"layer {t + 1}: {e}") from None
    for t in range(L):
        if cand[t] is not None and len(cand[t]) == 0:
            raise UserError(f"layer {t + 1}: no balanced choice of the family ({info[t].n_units} units of "
                            f"{info[t].n} row classes; not a RadiX-Net-like layer, or ε too small for its classes)")
        if cand[t] is None and ((t + 1 < L and cand[t + 1] is None) or (t > 0 and cand[t - 1] is None) or t == 0):
            raise UserError(f"layer {t + 1}: a free layer needs listed neighbours (and not to be the first)")
    cost = np.zeros(1)  # least volume of layers 1..t for each of layer t's candidates
    prev_sides = np.zeros((1, 1), np.int8)  # the inputs: one pseudo-choice, no owner cost
    back = []  # per listed layer t: (t, best previous candidate, freed layer's sides or None)
    t = 0
    while t < L:
        if cand[t] is None:  # free layer t between t − 1 and t + 1 (or the last)
            nxt = info[t + 1] if t + 1 < L else None
            nxt_sides = cand[t + 1] if nxt is not None else None
            cost, arg, freed = free_step(cost, prev_sides, info[t - 1], info[t], nxt, nxt_sides)
            back.append((t + 1 if nxt is not None else t, arg, freed))
            prev_sides = nxt_sides if nxt is not None else None
            t += 2
        else:
            own = owners(info[t - 1] if t else None, info[t])
            arg = np.empty(len(cand[t]), np.int64)
            new = np.empty(len(cand[t]))
            for q in range(0, len(cand[t]), CHUNK):
                total = cost[:, None] + transition(prev_sides, own, info[t], cand[t][q:q + CHUNK])
                arg[q:q + CHUNK] = total.argmin(axis=0)
                new[q:q + CHUNK] = total.min(axis=0)
            back.append((t, arg, None))
            cost, prev_sides = new, cand[t]
            t += 1
        if progress:
            progress(min(t, L), L, float(cost.min()))
    # walk back: the chosen candidate of each listed layer, the closed-form sides of each free one
    class_sides = [None] * L
    q = int(np.argmin(cost))
    for t, arg, freed in reversed(back):
        if freed is None:
            class_sides[t] = cand[t][q]
        elif cand[t] is None:  # the last layer, free
            class_sides[t] = freed[q]
        else:
            class_sides[t], class_sides[t - 1] = cand[t][q], freed[q]
        q = int(arg[q])
    rows = [s[x.lc.rc].astype(np.int64) for s, x in zip(class_sides, info)]
    widths = [layers[0].shape[1]] + [r.size for r in rows]
    inputs = place_inputs(Layers(layers, widths), [None, rows[0]], 2).astype(np.int64)  # its readers' side
    return float(cost.min()), np.concatenate([inputs] + rows), [None if c is None else len(c) for c in cand]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network")
    ap.add_argument("--epsilon", type=float, default=0.03)
    ap.add_argument("--max-choices", type=int, default=MAX_CHOICES)
    ap.add_argument("--cut", default=",".join(map(str, CUT_UNITS)),
                    help="unit counts of the layers whose choices include two cycles cut into arcs ('' for none)")
    ap.add_argument("--compare", default=None, help="a partition file: its volume beside the family's optimum")
    ap.add_argument("--refine", type=int, default=0, metavar="PASSES",
                    help="then the method's refinement passes from it (it may leave the family)")
    ap.add_argument("--out", default=None, help="write the partition here (refined, with --refine)")
    args = ap.parse_args(argv)
    try:
        cut_units = tuple(int(u) for u in args.cut.split(",") if u.strip())
        net = read_network(args.network)
        start = time.perf_counter()

        def progress(t, L, best):
            print(f"layer {t}/{L}: {best:,.0f} words so far, {time.perf_counter() - start:.0f} s", flush=True)

        best, part, sizes = chain_optimum(net.layers, args.epsilon, args.max_choices, cut_units, progress)
        seconds = time.perf_counter() - start
        m = partition_metrics(net.layers, net.widths, part, 2, args.epsilon)
        if m["volume_forward"] != round(best) or m["unbalanced_layers"]:
            raise AssertionError(f"the partition built has {m['volume_forward']} words, "
                                 f"{len(m['unbalanced_layers'])} unbalanced layers; the programme claims {best:g}")
        listed = [s for s in sizes if s is not None]
        print(f"{args.network}: least volume keeping classes whole and columns on one side (cuts as listed): "
              f"{best:,.0f} words at K = 2, ε = {args.epsilon}, {seconds:.0f} s "
              f"({len(listed)} layers listed, {max(listed):,} choices at most; {len(sizes) - len(listed)} in closed form)")
        sidecar = {"volume_forward": int(best), "family_optimum": int(best), "seconds": round(seconds, 1)}
        if args.refine:
            net_k = Layers(net.layers, net.widths, balance=(2, args.epsilon))
            parts = refine(net_k, [p.astype(np.uint8) for p in split_by_layer(part, net.widths)], 2, args.epsilon, 0,
                           Solver("mtkahypar", "quality"), 1, args.refine, None, 1)
            part = np.concatenate(parts)
            refined = network_metrics(net_k, parts, 2, args.epsilon)["volume_forward"]
            sidecar.update(volume_forward=refined, refine_passes=args.refine,
                           seconds=round(time.perf_counter() - start, 1))
            print(f"the method's refinement from it ({args.refine} passes): {refined:,} words, "
                  f"{time.perf_counter() - start:.0f} s in all")
        if args.out:
            write_partition(part, args.out, sidecar, k=2)
        if args.compare:
            volume = partition_metrics(net.layers, net.widths, read_partition(args.compare), 2,
                                       args.epsilon)["volume_forward"]
            print(f"{args.compare}: {volume:,} words, {volume / best:.3f}× the family's optimum")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
