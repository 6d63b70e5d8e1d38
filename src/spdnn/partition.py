"""Row-wise partitions balanced in every layer: `hypergraph`, `sweep`, `random`, `block`.

A partition gives every neuron of every layer 0..L an owner in [0, K) (vertex numbering of
`hypergraph.py`). Every method guarantees, for every layer k ≥ 1,
max_p load_k(p) ≤ max((1+ε)·avg_k, avg_k + w_k) and verifies it on its output.

Both Mt-KaHyPar-based methods solve one layer at a time as an exact subproblem against its fixed
neighbours (`layer_solve.py`):

- `sweep`: layer k with layer k−1 fixed, k = 1..L (the layer sweep of README, "Design reference").
- `hypergraph`: the sweep; then more candidates per layer (`chains.py`: chains of layers each
  partitioned after the one before, lookahead stretches, carried chains) and the cheapest
  sequence of candidates (`candidate_sequence.py`); then block-coordinate descent passes that
  re-solve each layer with *both* neighbours fixed (outgoing nets included; wide layers by
  V-cycles from their current partition, see `layer_solve.improve_layer`), keeping a new layer
  partition only when it lowers the exact local volume; inputs are finally placed optimally (each
  with the part holding most of its readers). The candidates are what lets it follow a network
  whose structure changes every few layers (RadiX-Net blocks, even with every layer's neurons
  renamed): 1.5× less than the sweep at K=8 on such a network, where the sweep alone stays with
  the structure it started from.

Data flow: `layers` (the network read a few layers at a time) → `layer_solve` (one layer) →
`chains` (candidates, into `candidate_store`) → `candidate_sequence` (one candidate a layer) →
here (refinement, balance verified, metrics); `workers` runs fixed shares of any of them in fresh
processes.

Scale: the methods read layers' patterns (not their weights) through `Layers` (a few resident at a
time) and keep only the layer partitions, in the smallest integer type that holds K; the
candidates are written to a scratch folder under TMPDIR as they are made and read back two
layers at a time (`candidate_store.py`); a worker process gets the network file's path, not the
matrices. With `jobs` > 1 the sweep and the candidate chains run side by side, and the candidate
costs and the refinement are shared.

A tried alternative, contracting consecutive layers through a reader matching (a multilevel
step over layers), was 1.4–3× worse than the sweep on the Graph Challenge network and was dropped.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from .candidate_sequence import choose_candidates
from .candidate_store import CandidateStore
from .chains import carry_length, chain_window, sweep_and_candidates
from .errors import UserError
from .layer_solve import improve_layer, place_inputs, rebalance_layer, split_by_load, sweep
from .layers import Layers
from .partition_io import id_dtype
from .partitioner import Solver
from .progress import every_tenth
from .volume import combine_layer_stats, layer_stats
from .workers import block_shares, in_processes

METHODS = ("hypergraph", "sweep", "random", "block")
PARALLEL_METRICS_NEURONS = 1 << 20  # below this the metrics pass takes seconds: not worth two spawns


def block_partition(net: Layers, k: int, seed: int) -> list[np.ndarray]:
    return [split_by_load(np.arange(n), net.rw(t), k) for t, n in enumerate(net.widths)]


def random_partition(net: Layers, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [split_by_load(rng.permutation(n), net.rw(t), k) for t, n in enumerate(net.widths)]


def check_k(widths, k: int) -> None:
    if k < 1:
        raise UserError(f"K must be >= 1 (got {k})")
    for t, n in enumerate(widths[1:], start=1):
        if k > n:
            raise UserError(f"K={k} is larger than layer {t}'s {n} rows: some rank would own no row of it")


def partition_network(layers, widths, k: int, method: str, epsilon: float = 0.03, seed: int = 0,
                      passes: int = 1, preset: str = "quality", threads: int = 1, verbose: bool = False,
                      jobs: int = 1, backend: str = "mtkahypar"):
    """Return (part over all vertices, in the smallest integer type that holds K; metrics dict incl.
    seconds). Balance verified per layer. `layers`: a list of W^k, or a `network.LayerFile`, which
    keeps memory to a few layers plus the partition (workers read the file themselves)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if not 0 <= epsilon < 1:
        raise UserError(f"--epsilon must be in [0, 1) (got {epsilon})")
    check_k(widths, k)
    solver = Solver(backend, preset)  # checks both names before any work
    net = Layers(layers, widths, balance=(k, epsilon))
    t0 = time.perf_counter()
    progress = _progress(method, k) if verbose else None
    L = len(net)
    window = stride = carry = None
    if k == 1:
        parts = [np.zeros(n, id_dtype(k)) for n in widths]
    elif method == "block":
        parts = block_partition(net, k, seed)
    elif method == "random":
        parts = random_partition(net, k, seed)
    else:
        if method == "sweep":
            parts = sweep(net, k, epsilon, seed, solver, threads, progress)
        else:
            window, stride = chain_window(net, k)
            carry = carry_length(net, k)
            # The candidates live on disk until one per layer is chosen (`candidate_store.py`).
            with tempfile.TemporaryDirectory(prefix="spdnn-candidates-") as scratch:
                store = CandidateStore(scratch)
                cands = sweep_and_candidates(net, k, epsilon, seed, solver, threads, window, store, progress, jobs,
                                             stride, carry)
                parts, _ = choose_candidates(net, cands, k, store, progress, jobs)
            parts = refine(net, parts, k, epsilon, seed, solver, threads, passes, progress, jobs)
    if method in ("block", "random"):  # the Mt-KaHyPar methods rebalance every layer as they solve it
        for t in range(1, L + 1):
            rebalance_layer(net, parts, t, k, epsilon)
    seconds = time.perf_counter() - t0
    metrics = network_metrics(net, parts, k, epsilon, jobs, progress)
    part = np.concatenate(parts)
    del parts
    if not metrics["balanced"]:  # a bug, not a user error: every method must meet the bound
        raise RuntimeError(f"{method}: layers {metrics['unbalanced_layers'][:5]} exceed the balance bound")
    metrics.update({"method": method, "seed": seed, "seconds": seconds,
                    "passes": passes if method == "hypergraph" else None, "window": window, "chain_stride": stride,
                    "chain_carry": carry,
                    "preset": preset if method in ("hypergraph", "sweep") else None,
                    "backend": backend if method in ("hypergraph", "sweep") else None})
    return part, metrics


def refine(net: Layers, parts, k, epsilon, seed, solver, threads, passes, progress, jobs=1):
    """Block-coordinate descent, red-black: every odd layer is re-solved with both (even) neighbours
    fixed, then every even layer; a new layer partition is kept only if it lowers the exact local
    volume. Layers of one colour are independent, so `jobs` processes solve them in parallel, each
    a fixed share (same seed and jobs → same result)."""
    L = len(net)
    for n in range(passes):
        n_pass = n + 1
        for colour in (1, 0):
            work = [(t, (parts[t - 1], parts[t], parts[t + 1] if t < L else None), seed + 7919 * (n + 1) + t)
                    for t in range(1, L + 1) if t % 2 == colour]
            done_before = (L + 1) // 2 if colour == 0 else 0  # odd layers first, then even ones
            if jobs > 1:
                done = in_processes(_refine_share, (net, k, epsilon, solver), block_shares(work, jobs),
                                    progress and (lambda n, d=done_before, p=n_pass: progress(
                                        f"refinement pass {p}/{passes}", d + n, L)))
                got = dict(item for share in done for item in share)
                results = [got[t] for t, _, _ in work]
            else:
                results = []
                for i, (t, _, sd) in enumerate(work, start=1):
                    results.append(improve_layer(net, parts, t, k, epsilon, sd, solver, threads))
                    if progress:
                        progress(f"refinement pass {n_pass}/{passes}", done_before + i, L)
            for (t, _, _), new in zip(work, results):
                if new is not None:
                    parts[t] = new
        parts[0] = place_inputs(net, parts, k)
        if progress:
            progress(f"refinement pass {n + 1}/{passes}", L, L)
    return parts


def _refine_share(net, k, epsilon, solver, batch, tick=lambda: None):
    """Re-solve a fixed batch of layers (in order): [(t, new layer partition or None), ...]."""
    out = []
    for t, neighbours, seed in batch:
        parts = [None] * len(net.widths)
        for offset, p in zip((-1, 0, 1), neighbours):
            if p is not None:
                parts[t + offset] = p
        out.append((t, improve_layer(net, parts, t, k, epsilon, seed, solver, 1)))
        tick()
    return out



def network_metrics(net: Layers, parts, k, epsilon, jobs=1, progress=None) -> dict:
    """`volume.partition_metrics` of the layer partitions; with `jobs` > 1 the layers are shared
    by that many processes (each reads its own layers: at 65536×1920 this pass reads 4·10⁹ weights)."""
    L = len(net)
    if jobs > 1 and L > 1 and sum(net.widths) >= PARALLEL_METRICS_NEURONS:
        items = [(t, parts[t - 1], parts[t]) for t in range(1, L + 1)]
        shares = block_shares(items, jobs)
        done = in_processes(_layer_stats_share, (net, k, epsilon), shares,
                            progress and (lambda n: progress(f"metrics ({jobs} processes)", n, L)))
        by_layer = {item[0]: st for share, stats in zip(shares, done) for item, st in zip(share, stats)}
        stats = [by_layer[t] for t in range(1, L + 1)]
    else:
        stats = [layer_stats(net.checked(t), parts[t - 1], parts[t], k, epsilon) for t in range(1, L + 1)]
    return combine_layer_stats(stats, k, epsilon)


def _layer_stats_share(net, k, epsilon, items, tick):
    out = []
    for t, part_in, part_out in items:
        out.append(layer_stats(net.checked(t), part_in, part_out, k, epsilon))
        tick()
    return out


def _progress(method: str, k: int):
    """progress(stage, done, total): `progress.every_tenth`'s lines, a tenth of each stage."""
    report = every_tenth(f"{method} K={k}")
    return lambda stage, done, total: report(done, total, stage)
