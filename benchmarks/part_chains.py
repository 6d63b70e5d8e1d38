"""How cheap can one part be? The best consistent chain of a single part, against the method's parts.

Why: volume splits exactly over the parts, V = Σ_p Σ_t (z·|columns p reads in layer t| − |those
columns p owns in layer t − 1|), so a part's cost is its reads minus its alignment. The lower
bound (`bound.py`) gives every part the best it could do alone, but lets each layer boundary
choose the part's rows on its own; here one part's rows are one explicit set per layer, the
same set as reader of layer t and as owner for layer t + 1, and a dynamic program over the
layers finds the cheapest such chain exactly, within a family of sets of R_t/K whole row classes:
`one`, one run along the layer's cycles (the method's parts are such runs); `two`, two disjoint,
non-adjacent runs of half that; `mixed`, one run or two runs of any lengths (minutes). Where a
layer's cycles are not longer than a run the sets are unions of whole cycles instead, and on a
layer whose row classes read one column class each (the stride-32 layers of Graph Challenge)
every choice of classes; a layer with none, or with more than MAX_SETS sets, breaks the chain
(its boundaries are left out of every column). Not a bound (the family is restricted, and all K
parts could not be at this chain at once); it says how far the method's parts are from the
cheapest part of the family, on the same boundaries.

    python benchmarks/part_chains.py NET.h5 PART -k K [--families one two mixed] [--layers L]
                                     [--anneal MOVES [--random-starts N]]

Prints, per family: the boundaries counted, the sum of per-boundary bests (each boundary its own
sets: what the bound's tables can grant), the consistent chain, and the method's parts (mean,
least, most) on the same boundaries; with --anneal, a row per family for the anneal from its chain
and one per random start.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from spdnn.cycle_runs import class_incidence, cycles
from spdnn.hypergraph import identical_rows
from spdnn.network import read_network
from spdnn.partition_io import read_partition
from spdnn.volume import layer_traffic, split_by_layer

MAX_SETS = 60_000  # sets per layer; more: the layer breaks the chain
CHUNK = 2048  # previous sets per block of the cost matrix


FAMILIES = ("one", "two", "mixed")


def _runs(cyc, ell: int, lengths):
    """(cycle, run as a frozenset of row classes) for every start and every length given."""
    return [(i, frozenset(rows[(s + np.arange(g)) % ell].tolist()))
            for g in lengths for i, (rows, _) in enumerate(cyc) for s in range(ell)]


def _apart(cyc, i: int, union) -> bool:
    """Two runs on cycle i with a gap on both sides (their union is not one run)."""
    mask = np.isin(cyc[i][0], list(union))
    return np.count_nonzero(mask != np.roll(mask, 1)) == 4


def _capped(iterable):
    out = list(itertools.islice(iterable, MAX_SETS + 1))
    return None if len(out) > MAX_SETS else out


def family(cyc, n_r: int, u: int, name: str, matching: bool = False) -> np.ndarray | None:
    """[set, row class] of the family's sets of u row classes, or None (too many, or no such sets).

    one: one run along the cycles; two: two disjoint, non-adjacent runs of u/2; mixed: one run or
    two runs of any lengths. Where the cycles are not longer than a run: unions of whole cycles;
    on a layer whose row classes each read one column class of their own (`matching`): every u."""
    if matching:
        members = _capped(itertools.combinations(range(n_r), u))
    elif not cyc or len({r.size for r, _ in cyc}) != 1:
        return None
    else:
        ell, longest = cyc[0][0].size, u // 2 if name == "two" else u
        if name == "two" and u % 2:
            return None
        if ell <= longest:  # a run would close its cycle
            members = (None if u % ell else
                       _capped(np.concatenate([cyc[i][0] for i in c])
                               for c in itertools.combinations(range(len(cyc)), u // ell)))
        else:
            sets = set() if name == "two" else {x for _, x in _runs(cyc, ell, [u])}
            splits = {"one": [], "two": [(u // 2, u // 2)], "mixed": [(a, u - a) for a in range(1, u // 2 + 1)]}
            for a, b in splits[name]:
                for (i, x), (j, y) in itertools.product(_runs(cyc, ell, [a]), _runs(cyc, ell, [b])):
                    union = x | y
                    if len(union) == u and (i != j or _apart(cyc, i, union)):
                        sets.add(union)
            members = _capped(sorted(x) for x in sets)
    if not members:
        return None
    out = np.zeros((len(members), n_r))
    for i, x in enumerate(members):
        out[i, list(x)] = 1.0
    return out


def method_part_costs(w, own: np.ndarray, read: np.ndarray, k: int) -> np.ndarray:
    """Per part: the columns its rows read minus those among them it owns (words of one boundary):
    the words it receives, `volume.layer_traffic`'s receivers."""
    return np.bincount(layer_traffic(w, own, read, k)[1], minlength=k).astype(float)


class LayerClasses(NamedTuple):
    """A layer's class structure, found once for every family: its matrix, row and column classes,
    class incidence, cycles (None: none) and whether each row class reads a column class of its own."""
    w: sp.csr_matrix
    rc: np.ndarray
    cc: np.ndarray
    incidence: tuple
    cycles: list | None
    matching: bool


def layer_classes(layers) -> list[LayerClasses]:
    out = []
    for w in layers:
        w = sp.csr_matrix(w)
        rc, cc = identical_rows(w), identical_rows(w.T.tocsr())
        incidence = class_incidence(rc, cc, w)
        a, c, n_r, n_c = incidence
        out.append(LayerClasses(w, rc, cc, incidence, cycles(rc, cc, w, incidence),
                                bool(a.size == n_r == n_c and np.unique(c).size == n_c)))
    return out


def class_reads(layer: LayerClasses) -> np.ndarray:
    """[row class, column class]: 1 where the row class reads the column class."""
    a, c, n_r, n_c = layer.incidence
    out = np.zeros((n_r, n_c))
    out[a, c] = 1.0
    return out


def class_units(layer: LayerClasses) -> np.ndarray:
    """The unit of each row class: the classes linked through the column classes they read in common
    (connected components), which must share a part for every column's readers to stay together.
    Sparse, so a layer of singleton classes costs O(nonzeros)."""
    a, c, n_r, n_c = layer.incidence
    link = sp.csr_matrix((np.ones(a.size), (a, c)), shape=(n_r, n_c))
    return connected_components(link @ link.T, directed=False)[1]


def class_owned(prev_rows: np.ndarray, layer: LayerClasses) -> np.ndarray:
    """[row class of the layer before, column class]: the neurons in both."""
    out = np.zeros((int(prev_rows.max()) + 1, layer.incidence[3]))
    np.add.at(out, (prev_rows, layer.cc), 1.0)
    return out


def chains(classes: list[LayerClasses], parts, k: int, name: str):
    """(boundaries counted, Σ per-boundary bests, consistent chain, the method's parts' words, the
    chain's row classes per layer or None where a layer broke it) over `classes`
    (`layer_classes`); parts[t]: the partition of layer t (0: the inputs)."""
    prev = None  # (row classes, sets) of the layer before
    per_table = chain = 0.0
    f = None  # best chain cost ending at each set of the layer before
    method = np.zeros(k)
    counted = 0
    steps = None  # (sets, best previous set of each) per layer, while one chain runs from layer 1
    for t, layer in enumerate(classes, start=1):
        n_r = layer.incidence[2]
        z = np.bincount(layer.cc)
        sets = None
        if n_r % k == 0 and (z == z[0]).all():
            sets = family(layer.cycles, n_r, n_r // k, name, layer.matching)
        if sets is not None and prev is not None:
            cols = ((sets @ class_reads(layer)) > 0).astype(float)  # [set, column class] read
            m = class_owned(prev[0], layer)
            reads_of = z[0] * cols.sum(1)
            best, g = np.inf, np.full(sets.shape[0], np.inf)
            arg = np.zeros(sets.shape[0], np.int64)
            for lo in range(0, prev[1].shape[0], CHUNK):  # [previous sets, set] a block at a time
                cost = reads_of[None, :] - prev[1][lo:lo + CHUNK] @ m @ cols.T
                best = min(best, cost.min())
                total = cost if f is None else f[lo:lo + CHUNK, None] + cost
                better = total.min(0) < g
                arg[better] = lo + total.argmin(0)[better]
                g = np.minimum(g, total.min(0))
            per_table += best
            f = g
            if steps is not None:
                steps.append((sets, arg))
            method += method_part_costs(layer.w, parts[t - 1], parts[t], k)
            counted += 1
        elif f is not None:
            chain += f.min()
            f = None
        if sets is None:
            steps = None  # the chain breaks here: no single path
        elif prev is None:  # a chain starts here; a path needs it to start at layer 1
            steps = [(sets, None)] if t == 1 else None
        prev = None if sets is None else (layer.rc, sets)
    if f is not None:
        chain += f.min()
    path = None
    if steps is not None and f is not None:
        path, j = [], int(np.argmin(f))
        for sets, arg in reversed(steps):
            path.append(np.flatnonzero(sets[j]))
            j = int(arg[j]) if arg is not None else j
        path.reverse()
    return counted, per_table, chain, method, path


def anneal(classes: list[LayerClasses], path: list[np.ndarray], moves: int, seed: int = 0,
           hot: float = 1.0, cold: float = 0.05):
    """Simulated annealing of one part's chain with *any* sets of row classes (the path's sizes
    kept per layer, its first layer's set kept): exchanges of one class in a layer, words per boundary exact at class level
    (z·|column classes read| − the neurons among them the previous set owns). Returns (the path's
    words, the least found, its sets). Not a bound either: it finds what the families miss."""
    rng = np.random.default_rng(seed)
    reads = [class_reads(layer) for layer in classes]
    owned = [None] + [class_owned(before.rc, layer) for before, layer in itertools.pairwise(classes)]
    z = [float(np.bincount(layer.cc)[0]) for layer in classes]  # one column class size a layer (`chains`)
    inside = [np.isin(np.arange(r.shape[0]), s) for r, s in zip(reads, path)]
    count = [ins @ r for ins, r in zip(inside, reads)]  # classes of the set reading each column class
    # The first layer's set stays: its reads from the inputs are not counted (as in `chains`), so
    # any set there would be free as a reader, and scattered ones own best for the next layer.
    movable = [t for t, x in enumerate(inside) if t and 0 < np.count_nonzero(x) < x.size]

    def words(t):  # the boundary into classes[t]'s layer: its set reads, the set of the layer before owns
        return z[t] * np.count_nonzero(count[t]) - (inside[t - 1] @ owned[t])[count[t] > 0].sum()

    cost = [0.0] + [words(t) for t in range(1, len(classes))] + [0.0]  # per boundary; 0 at both ends
    start = now = sum(cost)
    best, best_path = now, [np.flatnonzero(x) for x in inside]
    for i in range(moves if movable else 0):
        t = movable[int(rng.integers(len(movable)))]
        out_, in_ = rng.choice(np.flatnonzero(inside[t])), rng.choice(np.flatnonzero(~inside[t]))
        inside[t][[out_, in_]] = False, True
        count[t] += reads[t][in_] - reads[t][out_]
        here, after = words(t), (words(t + 1) if t + 1 < len(classes) else 0.0)  # t ≥ 1: the first layer stays
        delta = here + after - cost[t] - cost[t + 1]
        if delta <= 0 or rng.random() < np.exp(-delta / (hot * (cold / hot) ** (i / moves))):
            now += delta
            cost[t], cost[t + 1] = here, after
            if now < best:
                best, best_path = now, [np.flatnonzero(x) for x in inside]
        else:  # undo
            inside[t][[out_, in_]] = True, False
            count[t] -= reads[t][in_] - reads[t][out_]
    return start, best, best_path


def random_start(classes: list[LayerClasses], path: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Sets of row classes drawn at random with the path's sizes, its first set kept (as `anneal`
    keeps it): a start for the anneal that owes nothing to a family."""
    rng = np.random.default_rng(seed)
    return [path[0]] + [np.sort(rng.choice(layer.incidence[2], size=len(s), replace=False))
                        for layer, s in zip(classes[1:], path[1:])]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("network")
    p.add_argument("partition", help="spdnn partition's -o PART of the same network")
    p.add_argument("-k", type=int, required=True)
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=["one", "two"],
                   help="one run; two runs of R/2K; one run or two runs of any lengths (minutes)")
    p.add_argument("--layers", type=int, default=None, help="the first L layers only")
    p.add_argument("--anneal", type=int, default=0, metavar="MOVES",
                   help="anneal each unbroken chain with any sets of classes (this many exchanges)")
    p.add_argument("--random-starts", type=int, default=0, metavar="N",
                   help="also anneal from N random sets of the chain's sizes (seeds 0..N-1)")
    a = p.parse_args()
    if a.random_starts and not a.anneal:
        p.error("--random-starts N anneals from random sets: it needs --anneal MOVES")
    net = read_network(a.network)
    parts = split_by_layer(read_partition(a.partition).astype(np.int64), net.widths)
    classes = layer_classes(net.layers[:a.layers or len(net.layers)])
    print("| family | boundaries | per-boundary bests | consistent chain | method's parts: mean (least–most) "
          "| mean / chain | seconds |\n|---|---|---|---|---|---|---|")
    for name in a.families:
        t0 = time.perf_counter()
        counted, per_table, chain, method, path = chains(classes, parts, a.k, name)
        if not counted:
            sys.exit(f"part_chains: no layer boundary of {a.network} has sets of the family {name!r} at K = {a.k} "
                     "(row classes of equal size on cycles, R/K of them a part, as on RadiX-Net layers)")
        print(f"| {name} | {counted} | {per_table:,.0f} | {chain:,.0f} | "
              f"{method.mean():,.0f} ({method.min():,.0f}–{method.max():,.0f}) | "
              f"{method.mean() / chain:.3f} | {time.perf_counter() - t0:.0f} |", flush=True)
        if a.anneal and path is not None:
            t0 = time.perf_counter()
            start, best, _ = anneal(classes, path, a.anneal)
            assert abs(start - chain) < 0.5, (start, chain)  # the same words, counted another way
            print(f"| {name}, annealed (any sets) | {counted} | | {best:,.0f} | | {method.mean() / best:.3f} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
            for seed in range(a.random_starts):
                t0 = time.perf_counter()
                start, best, _ = anneal(classes, random_start(classes, path, seed), a.anneal, seed=seed)
                print(f"| random sets (seed {seed}, {start:,.0f} words), annealed | {counted} | | {best:,.0f} | | "
                      f"{method.mean() / best:.3f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
