"""Row-wise partitions balanced in every layer: `hypergraph`, `sweep`, `random`, `block`.

A partition gives every neuron of every layer 0..L an owner in [0, K) (vertex numbering of
`hypergraph.py`). Every method guarantees, for every layer k ≥ 1,
max_p load_k(p) ≤ max((1+ε)·avg_k, avg_k + w_k) and verifies it on its output.

Both Mt-KaHyPar-based methods solve one layer at a time as an exact subproblem: the layer's
rows are free vertices, its neighbours' parts are K fixed anchor vertices, so the subproblem's
connectivity−1 is exactly the volume of the nets that touch the layer, and its single balance
constraint is that layer's own balance (per-layer balance by construction, then verified and
repaired by `rebalance_layer` for indivisible rows). Identical rows of the layer (same inputs:
16 per group on RadiX-Net layers, none on a random or pruned layer) enter the subproblem as one
vertex: keeping them together never costs an incoming word, and the solver gets 16× fewer
vertices on Graph Challenge layers (1024×120, sweep at K=32: 10 s instead of 68 s).

- `sweep`: layer k with layer k−1 fixed, k = 1..L (the layer sweep of README, "Design reference").
- `hypergraph`: the sweep; then more candidates per layer (every layer partitioned on its own,
  then swept WINDOW−1 layers on) and the cheapest sequence of candidates by dynamic programming
  over the layers, each candidate's part names matched to the previous layer's by the Hungarian
  method (exact for a pair of layers; the sweep itself is a candidate, so never worse); then
  block-coordinate descent passes that re-solve each layer with *both* neighbours fixed
  (outgoing nets included), keeping a new layer partition only when it lowers the exact local
  volume; inputs are finally placed optimally (each with the part holding most of its readers).
  The candidates are what lets it follow a network whose structure changes every few layers
  (RadiX-Net blocks, even with every layer's neurons renamed): 1.5× less than the sweep at K=8
  on such a network, where the sweep alone stays with the structure it started from.

A tried alternative, contracting consecutive layers through a reader matching (a multilevel
step over layers), was 1.4–3× worse than the sweep on the Graph Challenge network and was dropped.
"""

from __future__ import annotations

import signal
import sys
import time

import numpy as np
import scipy.sparse as sp

from .errors import UserError, WorkerError
from .hypergraph import identical_rows, row_weights
from .partitioner import partition_hypergraph
from .volume import layer_capacity, layer_traffic, partition_metrics

METHODS = ("hypergraph", "sweep", "random", "block")
WINDOW = 3  # hypergraph: each layer alone, then swept this many layers on, as extra candidates


# ---------------------------------------------------------------- simple balanced splits
def split_by_load(order: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Cut `order` into k consecutive chunks by cumulative weight: each load ≤ avg + w_max."""
    w = weights[order].astype(np.float64)
    if w.sum() == 0:  # weightless layer (inputs, or an empty pruned layer): split by count
        w = np.ones_like(w)
    before = np.cumsum(w) - w
    chunk = np.minimum(k - 1, np.floor(before * k / w.sum()).astype(np.int64))
    part = np.empty(order.size, np.int64)
    part[order] = chunk
    return part


def block_partition(widths, rws, k: int, seed: int) -> list[np.ndarray]:
    return [split_by_load(np.arange(n), _weights(rws, t, n), k) for t, n in enumerate(widths)]


def random_partition(widths, rws, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [split_by_load(rng.permutation(n), _weights(rws, t, n), k) for t, n in enumerate(widths)]


def _weights(rws, t: int, n: int) -> np.ndarray:
    return np.zeros(n, np.int64) if t == 0 else rws[t - 1]


# ---------------------------------------------------------------- one layer against fixed neighbours
def layer_subproblem(layers, rws, widths, t: int, parts, k: int):
    """Hypergraph whose km1 is exactly the volume of the nets touching layer t's rows.

    Free vertices: the rows of layer t (and, for t = 1 before layer 0 is placed, the inputs with
    weight 0). Fixed: K anchor vertices, one per part, weight 1. Incoming nets (t, j) lead with
    anchor[part_{t-1}[j]] (no source pin when layer t−1 is unplaced: the layer's own spread of
    readers); outgoing nets (t+1, i), when layer t+1 is placed, are {v_i^t} plus the anchors of
    its readers' parts (readers of one part collapse into one pin: same km1).
    Returns (num_vertices, net_indptr, pins, weights, fixed).
    """
    n = widths[t]
    free_inputs = t == 1 and parts[0] is None
    n_free = n + (widths[0] if free_inputs else 0)
    nv = n_free + k
    anchor = n_free
    w = layers[t - 1]
    csc = sp.csc_matrix(w)
    n_in = csc.shape[1]
    readers_net = np.repeat(np.arange(n_in, dtype=np.int64), np.diff(csc.indptr))
    net_ids, pin_ids = [readers_net], [csc.indices.astype(np.int64)]
    if free_inputs or parts[t - 1] is not None:  # else: the layer on its own, nets of readers only
        src = n + np.arange(n_in, dtype=np.int64) if free_inputs else anchor + parts[t - 1].astype(np.int64)
        net_ids.append(np.arange(n_in, dtype=np.int64))
        pin_ids.append(src)
    n_nets = n_in
    if t < len(layers) and parts[t + 1] is not None:
        nxt = layers[t]
        reader_part = np.repeat(parts[t + 1].astype(np.int64), np.diff(nxt.indptr))
        net_ids += [n_nets + np.arange(n, dtype=np.int64), n_nets + nxt.indices.astype(np.int64)]
        pin_ids += [np.arange(n, dtype=np.int64), anchor + reader_part]
        n_nets += n
    indptr, pins = compact_nets(np.concatenate(net_ids), np.concatenate(pin_ids), nv, n_nets)
    weights = np.concatenate([rws[t - 1], np.zeros(n_free - n, np.int64), np.ones(k, np.int64)])
    fixed = np.concatenate([np.full(n_free, -1, np.int64), np.arange(k, dtype=np.int64)])
    return nv, indptr, pins, weights, fixed


def compact_nets(net_ids: np.ndarray, pin_ids: np.ndarray, nv: int, n_nets: int):
    """(indptr, pins) from (net, pin) pairs: each pin once per net (collapsed anchors and merged
    rows repeat), nets with fewer than two pins dropped (they cost nothing)."""
    net_of, pin_of = np.divmod(np.unique(net_ids * nv + pin_ids), nv)
    sizes = np.bincount(net_of, minlength=n_nets)
    indptr = np.concatenate([[0], np.cumsum(sizes[sizes >= 2])]).astype(np.int64)
    return indptr, pin_of[sizes[net_of] >= 2]


def mergeable_rows(w) -> np.ndarray:
    """Rows that move as one vertex: identical non-empty rows. Empty rows (dead neurons of a pruned
    layer) read nothing, so merging them gains nothing and would tie all their readers together."""
    classes = identical_rows(w)
    empty = np.flatnonzero(np.diff(w.indptr) == 0)
    if empty.size:
        classes = classes.copy()
        classes[empty] = classes.max() + 1 + np.arange(empty.size)
        classes = np.unique(classes, return_inverse=True)[1].reshape(-1)
    return classes


def merge_identical_rows(n: int, classes: np.ndarray, nv: int, indptr, pins, weights, fixed):
    """The subproblem with layer t's identical rows (vertices < n) merged into one vertex per class.

    Identical rows read the same inputs, so keeping them together never costs incoming words, and
    the solver sees 16× fewer vertices on RadiX-Net layers. Returns the merged problem and the map
    old vertex → new vertex."""
    n_cls = int(classes.max()) + 1 if n else 0
    new_id = np.concatenate([classes, n_cls + np.arange(nv - n, dtype=np.int64)])
    nv_new = n_cls + nv - n
    net_of = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    indptr_new, pins_new = compact_nets(net_of, new_id[pins], nv_new, indptr.size - 1)
    weights_new = np.bincount(new_id, weights=weights, minlength=nv_new).astype(np.int64)
    fixed_new = np.full(nv_new, -1, np.int64)
    fixed_new[new_id] = fixed
    return (nv_new, indptr_new, pins_new, weights_new, fixed_new), new_id


def solve_layer(layers, rws, widths, t, parts, k, epsilon, seed, preset, threads, classes=None):
    """Partition layer t (and layer 0 when t = 1 and it is unplaced) against its fixed neighbours.

    `classes` (identical rows of layer t, see `identical_rows`) lets the solver move them as one."""
    nv, indptr, pins, weights, fixed = layer_subproblem(layers, rws, widths, t, parts, k)
    n = widths[t]
    new_id = None
    if classes is not None and classes.size and classes.max() + 1 < n:
        (nv, indptr, pins, weights, fixed), new_id = merge_identical_rows(n, classes, nv, indptr, pins, weights, fixed)
    if indptr.size > 1:
        block = partition_hypergraph(nv, indptr, pins, k, epsilon, seed, weights, fixed=fixed,
                                     preset=preset, threads=threads).partition
    else:  # nothing to cut (an empty layer): any balanced split is optimal
        block = split_by_load(np.arange(nv), weights, k)
    if new_id is not None:
        block = block[new_id]
    new = block[:n].copy()
    inputs = block[n:n + widths[0]].copy() if t == 1 and parts[0] is None else None
    return new, inputs


def local_volume(layers, widths, parts, t, k) -> int:
    """Words of the nets touching layer t: layer t's incoming and (if placed) outgoing nets."""
    total = layer_traffic(layers[t - 1], parts[t - 1], parts[t], k)[0].size
    if t < len(layers) and parts[t + 1] is not None:
        total += layer_traffic(layers[t], parts[t], parts[t + 1], k)[0].size
    return int(total)


def place_inputs(layers, parts, k) -> np.ndarray:
    """Exact optimum for layer 0 given layer 1: each input goes to the part holding most of its readers."""
    w = layers[0]
    counts = np.zeros((w.shape[1], k), np.int64)
    np.add.at(counts, (w.indices, np.repeat(parts[1], np.diff(w.indptr))), 1)
    return counts.argmax(axis=1).astype(np.int64)


def sweep(layers, rws, widths, k, epsilon, seed, preset, threads, progress, classes):
    """Layer k partitioned with layer k−1 fixed, k = 1..L (layers 0 and 1 together)."""
    parts = [None] * len(widths)
    for t in range(1, len(widths)):
        parts[t], inputs = solve_layer(layers, rws, widths, t, parts, k, epsilon, seed + t, preset, threads, classes[t])
        if inputs is not None:
            parts[0] = inputs
        rebalance_layer(layers, rws, parts, t, k, epsilon)
        if progress:
            progress("sweep", t, len(widths) - 1)
    return parts


# ---------------------------------------------------------------- choosing among candidate layer partitions
def reader_parts(w, part: np.ndarray, k: int) -> np.ndarray:
    """[input j, part q]: does part q hold a row reading j (the sets T_j of README, "Design reference")."""
    csc = sp.csc_matrix(w)
    held = np.zeros((w.shape[1], k), bool)
    held[np.repeat(np.arange(w.shape[1]), np.diff(csc.indptr)), part[csc.indices]] = True
    return held


def best_relabel(w, part_in: np.ndarray, part_out: np.ndarray, k: int, held=None):
    """(volume, label map) for layer `w` when part_out's labels are renamed to suit part_in.

    V = Σ_j |T_j| − Σ_j [owner(j) ∈ T_j]; the first term does not depend on the names, the second
    is an assignment problem between owner parts and reader parts (Hungarian, exact)."""
    from scipy.optimize import linear_sum_assignment

    held = reader_parts(w, part_out, k) if held is None else held
    together = np.zeros((k, k))
    np.add.at(together, part_in, held.astype(np.float64))  # [owner part, reader part]: columns in common
    owner, reader = linear_sum_assignment(-together)
    rename = np.empty(k, np.int64)
    rename[reader] = owner
    return int(held.sum() - together[owner, reader].sum()), rename


def chains_from(layers, rws, widths, k, epsilon, seed, preset, threads, classes, window, starts, progress=None):
    """For each start layer t0: t0 partitioned on its own (no neighbours), then the next window−1
    layers swept from it. Returns [(t, layer partition), ...] in order."""
    L = len(layers)
    out = []
    for t0 in starts:
        chain = [None] * (L + 1)
        for t in range(t0, min(L, t0 + window - 1) + 1):
            chain[t], _ = solve_layer(layers, rws, widths, t, chain, k, epsilon, seed + 7 * L * t0 + t, preset,
                                      threads, classes[t])
            rebalance_layer(layers, rws, chain, t, k, epsilon)
            out.append((t, chain[t]))
        if progress:
            progress("candidates", t0, L)
    return out


def _chain_share(network, k, epsilon, seed, preset, window, starts):
    layers, rws, widths, classes = network
    return chains_from(layers, rws, widths, k, epsilon, seed, preset, 1, classes, window, starts)


def in_processes(task, common: tuple, shares: list) -> list:
    """task(*common, share) for each share, each in its own spawned process; results in share order.

    A fresh process per share: Mt-KaHyPar's result for a seed depends on the calls its process
    made before (measured), so a fixed share in a fresh process gives the same result every run.
    Spawn, not fork: Mt-KaHyPar's thread pool does not survive a fork. A worker that raises or
    dies fails the command within a second, in one line; when this process stops (an exception,
    SIGTERM or SIGINT turned into one by the CLI) its workers are terminated, and a worker whose
    parent died (even by SIGKILL) is killed by the kernel (PR_SET_PDEATHSIG)."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_run_share, args=(task, common, share, i, results), daemon=True)
             for i, share in enumerate(shares)]
    got = {}
    stop = {signal.SIGTERM, signal.SIGINT}
    try:
        # Signals wait until every worker has its whole task (a worker cut off while reading it would
        # print an unpickling traceback); workers unblock them first thing (`_run_share`).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        try:
            for p in procs:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        while len(got) < len(procs):
            try:
                index, ok, value = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for i, p in enumerate(procs) if i not in got and p.exitcode is not None]
                if dead:
                    raise WorkerError(f"partition worker {dead[0].pid} died (exit code {dead[0].exitcode})")
                continue
            if not ok:
                raise WorkerError(f"partition worker {index} failed: {value}")
            got[index] = value
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            if p.pid is not None:
                p.join()
    return [got[i] for i in range(len(shares))]


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, however it died."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _run_share(task, common, share, index, results):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    _die_with_parent()
    try:
        results.put((index, True, task(*common, share)))
    except Exception as e:  # reported by the parent in one line
        results.put((index, False, f"{e.__class__.__name__}: {e}"))


def candidate_chains(layers, rws, widths, k, epsilon, seed, preset, threads, classes, window, progress=None, jobs=1):
    """Extra candidate partitions per layer (`chains_from` every layer). They carry each layer's own
    structure, which a sweep started elsewhere can lose for good (a RadiX-Net block changes
    structure every few layers). `jobs` processes share the start layers, each a fixed share."""
    L = len(layers)
    starts = list(range(1, L + 1))
    if jobs > 1:
        shares = [starts[w::jobs] for w in range(jobs)]
        done = in_processes(_chain_share, ((layers, rws, widths, classes), k, epsilon, seed, preset, window), shares)
        pairs = [pair for share in done for pair in share]
        if progress:
            progress(f"candidates ({jobs} processes)", L, L)
    else:
        pairs = chains_from(layers, rws, widths, k, epsilon, seed, preset, threads, classes, window, starts, progress)
    cands = [[] for _ in range(L + 1)]
    for t, part in pairs:  # fixed order: by share, then start layer — the same for the same jobs
        cands[t].append(part)
    return cands


def choose_candidates(layers, widths, cands, k):
    """The sequence of candidates (one per layer) with the least volume, by dynamic programming
    over the layers, each candidate renamed to suit the one before (`best_relabel`). Returns the
    layer partitions (inputs placed optimally) and their volume."""
    L = len(layers)
    cost = np.array([reader_parts(layers[0], c, k).sum() - widths[0] for c in cands[1]], np.float64)
    back = [None, None]
    for t in range(2, L + 1):
        held = [reader_parts(layers[t - 1], c, k) for c in cands[t]]
        step = np.array([[best_relabel(layers[t - 1], prev, c, k, h)[0] for c, h in zip(cands[t], held)]
                         for prev in cands[t - 1]], np.float64)
        total = cost[:, None] + step
        back.append(total.argmin(axis=0))
        cost = total.min(axis=0)
    pick = [0] * (L + 1)
    pick[L] = int(np.argmin(cost))
    for t in range(L, 1, -1):
        pick[t - 1] = int(back[t][pick[t]])
    parts = [None] * (L + 1)
    parts[1] = cands[1][pick[1]].copy()
    for t in range(2, L + 1):
        _, rename = best_relabel(layers[t - 1], parts[t - 1], cands[t][pick[t]], k)
        parts[t] = rename[cands[t][pick[t]]]
    parts[0] = place_inputs(layers, parts, k)
    return parts, int(cost.min())


def improve_layer(layers, rws, widths, parts, t, k, epsilon, seed, preset, threads, classes):
    """Re-solve layer t with both neighbours fixed; the new layer partition, or None if no better."""
    before = local_volume(layers, widths, parts, t, k)
    trial = list(parts)
    trial[t], _ = solve_layer(layers, rws, widths, t, trial, k, epsilon, seed, preset, threads, classes[t])
    rebalance_layer(layers, rws, trial, t, k, epsilon)
    return trial[t] if local_volume(layers, widths, trial, t, k) < before else None


def _refine_share(network, k, epsilon, preset, batch):
    """Re-solve a fixed batch of layers (in order): [(t, new layer partition or None), ...]."""
    layers, rws, widths, classes = network
    out = []
    for t, neighbours, seed in batch:
        parts = [None] * len(widths)
        for offset, p in zip((-1, 0, 1), neighbours):
            if p is not None:
                parts[t + offset] = p
        out.append((t, improve_layer(layers, rws, widths, parts, t, k, epsilon, seed, preset, 1, classes)))
    return out


def refine(layers, rws, widths, parts, k, epsilon, seed, preset, threads, passes, progress, classes, jobs=1):
    """Block-coordinate descent, red-black: every odd layer is re-solved with both (even) neighbours
    fixed, then every even layer; a new layer partition is kept only if it lowers the exact local
    volume. Layers of one colour are independent, so `jobs` processes solve them in parallel, each
    a fixed share (same seed and jobs → same result)."""
    L = len(layers)
    for n in range(passes):
        for colour in (1, 0):
            work = [(t, (parts[t - 1], parts[t], parts[t + 1] if t < L else None), seed + 7919 * (n + 1) + t)
                    for t in range(1, L + 1) if t % 2 == colour]
            if jobs > 1:
                done = in_processes(_refine_share, ((layers, rws, widths, classes), k, epsilon, preset),
                                    [work[w::jobs] for w in range(jobs)])
                got = dict(item for share in done for item in share)
                results = [got[t] for t, _, _ in work]
            else:
                results = [improve_layer(layers, rws, widths, parts, t, k, epsilon, sd, preset, threads, classes)
                           for t, _, sd in work]
            for (t, _, _), new in zip(work, results):
                if new is not None:
                    parts[t] = new
        parts[0] = place_inputs(layers, parts, k)
        if progress:
            progress(f"refinement pass {n + 1}/{passes}", L, L)
    return parts


# ---------------------------------------------------------------- balance repair
def rebalance_layer(layers, rws, parts, t: int, k: int, epsilon: float) -> int:
    """Move rows of layer t out of overloaded parts, each move the cheapest in volume. Returns moves."""
    w = rws[t - 1]
    bound = layer_capacity(w, k, epsilon)
    loads = np.bincount(parts[t], weights=w, minlength=k).astype(np.int64)
    if loads.max() <= bound:
        return 0
    W = layers[t - 1]
    owner_in = parts[t - 1] if parts[t - 1] is not None else np.full(W.shape[1], -1, np.int64)
    pattern = sp.csr_matrix((np.ones(W.nnz), W.indices, W.indptr), shape=W.shape)
    cnt_in = np.zeros((W.shape[1], k), np.int64)  # readers of input j in part q
    np.add.at(cnt_in, (W.indices, np.repeat(parts[t], np.diff(W.indptr))), 1)
    has_out = t < len(layers) and parts[t + 1] is not None  # next layer may not be partitioned yet
    if has_out:
        Wn = layers[t]
        cnt_out = np.zeros((W.shape[0], k), np.int64)  # readers (in layer t+1) of neuron i in part q
        np.add.at(cnt_out, (Wn.indices, np.repeat(parts[t + 1], np.diff(Wn.indptr))), 1)
    moves = 0
    not_owner = owner_in[:, None] != np.arange(k)[None, :]
    while loads.max() > bound:
        p = int(np.argmax(loads))
        cand = np.flatnonzero(parts[t] == p)
        fits = (loads[None, :] + w[cand, None] <= bound) & (np.arange(k)[None, :] != p)
        if not fits.any():
            raise UserError(f"layer {t}: cannot balance within ε={epsilon} (rows too heavy for K={k})")
        A = pattern[cand]
        gain_new = A @ ((cnt_in == 0) & not_owner).astype(np.float64)  # inputs that would newly need sending to q
        lost = A @ ((cnt_in[:, p] == 1) & (owner_in != p)).astype(np.float64)  # inputs p no longer needs
        delta = gain_new - lost[:, None]
        if has_out:
            delta = delta + (cnt_out[cand] == 0) - (cnt_out[cand, p] == 0)[:, None]
        delta = np.where(fits, delta, np.inf)
        i_c, q = np.unravel_index(int(np.argmin(delta)), delta.shape)
        i = cand[i_c]
        cols = W.indices[W.indptr[i]:W.indptr[i + 1]]
        cnt_in[cols, p] -= 1
        cnt_in[cols, q] += 1
        parts[t][i] = q
        loads[p] -= w[i]
        loads[q] += w[i]
        moves += 1
    return moves


# ---------------------------------------------------------------- entry point
def check_k(widths, k: int) -> None:
    if k < 1:
        raise UserError(f"K must be >= 1 (got {k})")
    for t, n in enumerate(widths[1:], start=1):
        if k > n:
            raise UserError(f"K={k} is larger than layer {t}'s {n} rows: some rank would own no row of it")


def partition_network(layers, widths, k: int, method: str, epsilon: float = 0.03, seed: int = 0,
                      passes: int = 1, preset: str = "quality", threads: int = 1, verbose: bool = False,
                      jobs: int = 1):
    """Return (part over all vertices, metrics dict incl. seconds). Balance verified per layer."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if not 0 <= epsilon < 1:
        raise UserError(f"--epsilon must be in [0, 1) (got {epsilon})")
    check_k(widths, k)
    rws = row_weights(layers)
    t0 = time.perf_counter()
    progress = _progress(method, k) if verbose else None
    L = len(layers)
    if k == 1:
        parts = [np.zeros(n, np.int64) for n in widths]
    elif method == "block":
        parts = block_partition(widths, rws, k, seed)
    elif method == "random":
        parts = random_partition(widths, rws, k, seed)
    else:
        classes = [None] + [mergeable_rows(w) for w in layers]
        parts = sweep(layers, rws, widths, k, epsilon, seed, preset, threads, progress, classes)
        if method == "hypergraph":
            cands = candidate_chains(layers, rws, widths, k, epsilon, seed, preset, threads, classes, WINDOW, progress,
                                     jobs)
            for t in range(1, L + 1):
                cands[t].insert(0, parts[t])  # the sweep itself stays a candidate: never worse than it
            parts, _ = choose_candidates(layers, widths, cands, k)
            parts = refine(layers, rws, widths, parts, k, epsilon, seed, preset, threads, passes, progress, classes,
                           jobs)
    for t in range(1, L + 1):
        rebalance_layer(layers, rws, parts, t, k, epsilon)
    part = np.concatenate(parts).astype(np.int64)
    seconds = time.perf_counter() - t0
    metrics = partition_metrics(layers, widths, part, k, epsilon)
    if not metrics["balanced"]:  # a bug, not a user error: every method must meet the bound
        raise RuntimeError(f"{method}: layers {metrics['unbalanced_layers'][:5]} exceed the balance bound")
    metrics.update({"method": method, "seed": seed, "seconds": seconds,
                    "passes": passes if method == "hypergraph" else None,
                    "preset": preset if method in ("hypergraph", "sweep") else None})
    return part, metrics


def _progress(method: str, k: int):
    """progress(stage, done, total): a line per ~10 % of each stage, naming the stage."""
    state = {"stage": None, "next": 0.0, "t0": time.perf_counter()}

    def report(stage: str, done: int, total: int):
        if stage != state["stage"]:
            state.update(stage=stage, next=0.0)
        frac = done / max(total, 1)
        if frac >= state["next"] or done == total:
            print(f"  {method} K={k}, {stage}: layer {done}/{total} ({time.perf_counter() - state['t0']:.1f} s)",
                  file=sys.stderr, flush=True)
            state["next"] = frac + 0.1

    return report
