"""Candidate layer partitions beside the sweep: chains, lookahead stretches, carried chains.

A chain is a layer partitioned on its own, then swept window−1 layers on, the window spanning the
period of RadiX-Net structure (`chain_window`); chains start from every layer where layers are
small and from every few on wider ones. A chain starts with the layers that can send nothing
among them, where there are two or more, and every layer between chain starts offers those alone
(`lookahead.py`). Where chains are shorter than that period, a start that reads each input from
one part is also carried on through the period with each layer's rows grouped by the parts they
read (`carried_chain`). The candidates are what lets the method follow a network whose structure
changes every few layers (RadiX-Net blocks, even with every layer's neurons renamed), where the
sweep alone stays with the structure it started from; `candidate_sequence.py` picks among them.
With `jobs` > 1 the sweep and the chains run side by side (`sweep_and_candidates`)."""

from __future__ import annotations

import hashlib

import numpy as np

from .arrays import first_of_groups, number_by_first
from .candidate_store import CandidateStore
from .layer_solve import layer_reader_parts, layer_volume, rebalance_layer, solve_layer, sweep
from .layers import Layers
from .lookahead import lookahead_chain, read_set_groups
from .volume import layer_capacity, layer_loads
from .workers import in_processes

WINDOW = 3  # hypergraph: each layer alone, then swept on: a candidate chain's fewest layers
MAX_WINDOW = 8  # and its most
LONG_WINDOW_MAX_CLASSES = 512  # chains longer than WINDOW from every layer only where a layer has at most this many merged rows
STRIDED_WINDOW_MAX = 16  # wider layers: chains of one period (at most this many layers), spaced (`chain_window`)


def chain_window(net: Layers, k: int) -> tuple[int, int]:
    """(layers per candidate chain, layers from one chain's start to the next). A RadiX-Net's
    structure repeats every log2(G) layers (G row classes, radix 2; fewer for larger radices): a
    part-index bit given up at one layer is needed again within that period, so a chain that spans
    it can carry the structure through. Measured on relabelled RadiX-Nets (README, "Structure
    recovery"): 4096×24 at K = 2 went from 1.42× the hand-built reference with 3-layer chains to
    1.01× with 8. A chain from every layer costs window/3 times the 3-layer ones, paid where layers
    are small (at most LONG_WINDOW_MAX_CLASSES merged rows: Graph Challenge N ≤ 8192). Wider layers
    take chains of one period started every `stride` layers, a divisor of the period near a third
    of it (chains at the same phases in every period: 16384×24 at K = 8, period 10, was 1.03× the
    reference with stride 2, 1.09× with 5 and 1.40× with 3), so they cost about as many solves as
    3-layer chains from every layer: 65536×24 at K = 8 went from 2.09× the reference to 1.10× in
    the same time. A period with no such divisor (a prime), or K² > G: 3-layer chains from every
    layer (a part index that takes more than half of a group index's bits must change at most
    layers anyway: at K = 32 on 1024-wide networks 6-layer chains bought 0.04 % for 1.8× the
    time; what they miss, carried chains recover: `carry_length`). Layer 1 decides: no extra pass
    over the file."""
    g = net.num_classes(1)
    period = structure_period(net)
    if k * k > g:
        return WINDOW, 1
    if g <= LONG_WINDOW_MAX_CLASSES:
        return min(MAX_WINDOW, max(WINDOW, period)), 1
    divisors = [d for d in range(2, period // 2 + 1) if period % d == 0]
    if not divisors or period > STRIDED_WINDOW_MAX:
        return WINDOW, 1
    return period, min(divisors, key=lambda d: (abs(3 * d - period), d))


def structure_period(net: Layers) -> int:
    """⌈log2 G⌉, G the row classes of layer 1: the layers a RadiX-Net's structure repeats in."""
    return (net.num_classes(1) - 1).bit_length()


def carry_length(net: Layers, k: int) -> int:
    """Layers a chain start that reads every input from one part is carried on by its read sets
    (`carried_chain`): the structure's period where chains are the shortest (`chain_window`: K² > G
    or no spaced period), else 0. There a chain ends before the structure comes round again: on a
    relabelled radix-2 RadiX-Net at K = 32, 1024 wide, the layer of stride 32 is free when both it
    and the layer before pair the groups c and c + 32, and no 3-layer chain or solve sees why the
    layer before should (every pairing costs it the same); carried from the last layer of stride 32,
    the pairs come round (112,128 → 102,400 words over 120 layers, the bit-partition reference)."""
    window, _ = chain_window(net, k)
    period = structure_period(net)
    return period if window == WINDOW < period else 0


def chain_from(net: Layers, s, last, k, epsilon, seed, solver, threads, at_start: bool, min_stretch: int = 2):
    """One candidate chain from layer s: its lookahead stretch (`lookahead_chain`, at least
    `min_stretch` layers), then, at a chain start, the layers up to `last` swept on from its end
    (from s partitioned on its own where there is no stretch). Between starts the stretch alone:
    no layer solved, its cut a V-cycle from the dealt components (fresh solves' floor cost a
    quarter of the time at N = 65536). Returns [(t, layer partition), ...]."""
    L = len(net)
    ahead = lookahead_chain(net, s, last, k, epsilon, solver, seed + 7 * L * s, fresh_cut=at_start,
                            min_layers=min_stretch)
    chain = [None] * (L + 1)
    chain[s:s + len(ahead)] = ahead
    end = last if at_start else s + len(ahead) - 1
    for t in range(s + len(ahead), end + 1):
        chain[t], _ = solve_layer(net, t, chain, k, epsilon, seed + 7 * L * s + t, solver, threads)
        rebalance_layer(net, chain, t, k, epsilon)
    return [(t, chain[t]) for t in range(s, end + 1)]


def chains_from(net: Layers, k, epsilon, seed, solver, threads, window, starts, progress=None, stride=1, carry=0):
    """A chain of `window` layers from each start layer t0, and a lookahead stretch from each
    layer between t0 and the next start (`stride`; `chain_from`). With `carry` (`carry_length`),
    a chain whose first layers read every input from one part is also carried `carry` layers on
    from the last of them (`carried_chain`), unless an earlier carried chain reaches past it (so
    at most one grouped solve a layer). Yields (chain's first layer, t, layer partition) in order,
    each as it is made (a worker writes it out at once: `candidate_store.py`). Progress: the layers
    up to the next start's."""
    L = len(net)
    carried_to = 0
    # The next chain starts on a layer this one read: keep a window of layers (12-layer chains
    # every 4th layer read each layer three times with the default few, a fifth of the
    # partitioner's time at 65536×120).
    with net.keeping(max(window, carry) + 1):
        for t0, after in zip(starts, [*starts[1:], L + 1]):
            for s in range(t0, min(L, t0 + stride - 1) + 1):
                last = min(L, s + window - 1)
                chain = chain_from(net, s, last, k, epsilon, seed, solver, threads, s == t0, 1 if carry else 2)
                yield from ((s, t, part) for t, part in chain)
                carried = carry_on(net, chain, carried_to, carry, k, epsilon, seed + 7 * L * s + 3 * L, solver,
                                   threads) if carry and s == t0 else []
                if carried:
                    carried_to = carried[-1][0]
                    yield from ((s, t, part) for t, part in carried)
            if progress:
                progress("candidates", after - 1, L)


def carry_on(net: Layers, chain, carried_to: int, carry: int, k, epsilon, seed, solver, threads):
    """A chain's [(t, partition), ...] carried `carry` layers on from the end of its free run
    (`free_run_end`, `carried_chain`); empty where it has no free run, or where the chain or its run
    ends before `carried_to`, the last layer an earlier carried chain reached (so that a layer gets
    at most one grouped solve, and a chain inside a carried one's span never starts another)."""
    if chain[-1][0] < carried_to:
        return []
    base = free_run_end(net, chain, k)
    if base is None or not carried_to <= base < len(net):
        return []
    return carried_chain(net, chain[base - chain[0][0]][1], base, min(len(net), base + carry), k, epsilon, seed,
                         solver, threads)


def free_run_end(net: Layers, chain, k) -> int | None:
    """The last layer of a chain's [(t, partition), ...] leading run whose layers read each of their
    inputs from one part (the first layer's readers alone; the next ones sending nothing), or None
    where the first layer reads some input from two parts."""
    (s, first), rest = chain[0], chain[1:]
    if layer_reader_parts(net, s, first, k).sum(axis=1).max(initial=0) > 1:
        return None
    end, before = s, first
    for t, part in rest:
        if layer_volume(net, t, before, part, k):
            break
        end, before = t, part
    return end


def carried_chain(net: Layers, start: np.ndarray, t0: int, last: int, k, epsilon, seed, solver, threads):
    """Layers t0 + 1..last after layer t0's partition `start`, each solved with its row classes
    merged by the parts they read in the layer before (`read_set_groups`): the structure of
    `start` carried on as far as the layers let it, where a solve of the classes alone picks any of
    many equally cheap partitions (`carry_length`). Returns [(t, layer partition), ...], empty
    where layer t0 + 1's read sets merge no two classes: `start` then says nothing about the next
    layer, and carrying would repeat the chain's own sweep (the real network at K = 32: every free
    start's next layer, 64 read sets for 64 classes, +17 % time for nothing)."""
    parts = [None] * (len(net) + 1)
    parts[t0] = start
    for t in range(t0 + 1, last + 1):
        capacity = layer_capacity(net.rw(t), k, epsilon)
        group = read_set_groups(net, t, parts[t - 1], k, capacity)
        if t == t0 + 1 and group.max(initial=-1) + 1 == net.num_classes(t):
            return []
        parts[t], _ = solve_layer(net, t, parts, k, epsilon, seed + t, solver, threads, group=group)
        if layer_loads(net.w(t), parts[t], k).max() > capacity and solver.improves:
            # Groups near a part's load may not pack into K parts (65536 wide, K = 128: a thousand
            # rows over, moved one by one by the repair, 7 s a layer): V-cycles with the classes
            # free balance it and keep most of the groups together.
            parts[t], _ = solve_layer(net, t, parts, k, epsilon, seed + t, solver, threads, start=parts[t])
        rebalance_layer(net, parts, t, k, epsilon)
    return [(t, parts[t]) for t in range(t0 + 1, last + 1)]


def sweep_and_candidates(net: Layers, k, epsilon, seed, solver, threads, window, store: CandidateStore, progress=None,
                         jobs=1, stride=1, carry=0):
    """The sweep, and extra candidate partitions per layer (`chains_from`): they carry
    each layer's own structure, which a sweep started elsewhere can lose for good (a RadiX-Net
    block changes structure every few layers); a chain of `window` layers from every `stride`-th
    layer (`chain_window`), carried on `carry` layers from free starts (`carry_length`). The
    partitions go to `store` as they are made; returns the references of each layer's candidates,
    the sweep's first, each distinct up to the parts' names.

    With `jobs` > 1 the chains, which do not depend on the sweep, run beside it: worker 0 sweeps
    and takes fewer chains (`chain_shares`), each worker a fixed share in a fresh process."""
    L = len(net)
    if jobs > 1:
        shares = chain_shares(L, window, jobs, sweep_cost=sweep_solve_cost(max(net.widths[1:])), stride=stride)
        stage = f"sweep and candidates ({jobs} processes)"
        units = L + sum(map(len, shares))  # a unit: a layer swept or a chain
        done = in_processes(_sweep_and_chains, (net, k, epsilon, seed, solver, window, stride, carry, store),
                            [(w, w == 0, starts) for w, starts in enumerate(shares)],
                            progress and (lambda n: progress(stage, n, units)))
        made = sorted((m for share in done for m in share), key=lambda x: (x[0], x[1]))
    else:
        made = _sweep_and_chains(net, k, epsilon, seed, solver, window, stride, carry, store,
                                 (0, True, chain_starts(L, stride)), None, threads, progress)
    cands = [[] for _ in range(L + 1)]
    seen = [set() for _ in range(L + 1)]
    # by start layer, the sweep's (start 0) first: never worse than it; the same order whatever the split
    for _, t, key, ref in made:
        if key not in seen[t]:  # neighbouring lookahead stretches often give one partition
            seen[t].add(key)
            cands[t].append(ref)
    return cands


def _sweep_and_chains(net, k, epsilon, seed, solver, window, stride, carry, store, share, tick, threads=1,
                      progress=None):
    """One worker's share: the sweep if `share` asks for it, then its chain start layers, every
    partition written to `store` as soon as it is made. Returns [(start, t, key, ref), ...], the
    sweep's layers with start 0: `same_up_to_names` keys, so that the candidates are told apart
    without reading them back."""
    worker, with_sweep, starts = share
    report = (lambda *_: tick()) if tick else progress  # a worker ticks; the serial run reports itself
    with store.writer(f"candidates-{worker}") as out:
        def kept(s, t, part):
            return s, t, same_up_to_names(part), out.put(part)

        swept = sweep(net, k, epsilon, seed, solver, threads, report) if with_sweep else []
        made = [kept(0, t, part) for t, part in enumerate(swept) if t]
        del swept  # written: not held through the chains
        return made + [kept(*chained) for chained in chains_from(net, k, epsilon, seed, solver, threads, window,
                                                                 starts, report, stride, carry)]


def sweep_solve_cost(width: int) -> float:
    """A sweep solve in chain-layer units (`chain_shares`): a sweep layer costs a little more than a
    layer of a chain, whose first layers are often a lookahead stretch, not a solve. Timed per worker
    (generated 65536×120 and 16384×120, K = 8): a sweep layer 0.39 / 0.20 s, a chain layer 0.34 /
    0.16 s counted as `window` layers a start (the stretches between spaced starts, 0.01 s each, do
    not count), so about 1.2 from 16384 wide; at N = 1024 equal weights balanced best. (The 1.7 at
    65536 this replaces left the sweep's worker idle 31 % of the chains' time at 65536×120, 19 % at
    65536×1920.)"""
    return 1.0 + 0.2 * min(1.0, width / 16384)


def chain_starts(n_layers: int, stride: int) -> list[int]:
    """The layers candidate chains start from: 1, 1 + stride, ... (`chain_window`)."""
    return list(range(1, n_layers + 1, stride))


def chain_shares(n_layers: int, window: int, jobs: int, block: int = 16, sweep_cost: float = 1.0,
                 stride: int = 1) -> list[list[int]]:
    """Start layers (1, 1 + stride, ...) per worker when worker 0 also runs the sweep (n_layers
    solves of `sweep_cost` chain solves each): blocks of the starts within `block` consecutive
    layers (consecutive chains share layers, which a worker then reads once) go one by one to the
    worker with the least work so far, so all finish together."""
    load = [sweep_cost * n_layers] + [0.0] * (jobs - 1)
    shares = [[] for _ in range(jobs)]
    starts = chain_starts(n_layers, stride)
    per_block = max(1, block // stride)  # 16 starts of 12-layer chains gave one worker every chain
    for b in range(0, len(starts), per_block):
        these = starts[b:b + per_block]
        w = int(np.argmin(load))  # ties: the lowest worker, so the split is fixed for fixed (L, jobs)
        shares[w] += these
        load[w] += sum(min(window, n_layers - t0 + 1) for t0 in these)
    return shares


def same_up_to_names(part: np.ndarray) -> bytes:
    """A key equal for two layer partitions exactly when they differ only in the parts' names:
    the parts renamed in order of their first row."""
    return hashlib.sha1(number_by_first(first_of_groups(part)).astype(np.int32).tobytes()).digest()
