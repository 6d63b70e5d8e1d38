"""One layer against fixed neighbours: its exact subproblem, its volume, its balance repair.

Both Mt-KaHyPar-based methods (`partition.py`) solve one layer at a time as an exact subproblem:
the layer's rows are free vertices, its neighbours' parts are K fixed anchor vertices, so the
subproblem's connectivity−1 is exactly the volume of the nets that touch the layer, and its single
balance constraint is that layer's own balance (per-layer balance by construction, then verified
and repaired by `rebalance_layer` for indivisible rows). Identical rows of the layer (same inputs:
16 per group on RadiX-Net layers, none on a random or pruned layer) enter the subproblem as one
vertex: keeping them together never costs an incoming word, and the solver gets 16× fewer
vertices on Graph Challenge layers (1024×120, sweep at K=32: 10 s instead of 68 s). A subproblem
is built directly on the merged rows, with nets that cannot be cut dropped and identical nets
merged into one weighted net; a layer's volume and reader sets are computed through its row
classes. At N = 65536 (2·10⁶ nonzeros per layer, K = 8) a solve takes 0.35–0.4 s on 65536×120
and up to 0.9 s averaged over 65536×1920, most of it Mt-KaHyPar's own call."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .arrays import distinct, first_index
from .errors import UserError
from .hypergraph import merge_nets
from .layers import Layers
from .partition_io import id_dtype
from .volume import layer_capacity

FRESH_SOLVE_MAX_VERTICES = 2048  # refinement: larger layer subproblems are improved, not re-solved


def split_by_load(order: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Cut `order` into k consecutive chunks by cumulative weight: each load ≤ avg + w_max."""
    w = weights[order].astype(np.float64)
    if w.sum() == 0:  # weightless layer (inputs, or an empty pruned layer): split by count
        w = np.ones_like(w)
    before = np.cumsum(w) - w
    chunk = np.minimum(k - 1, np.floor(before * k / w.sum()).astype(np.int64))
    part = np.empty(order.size, id_dtype(k))
    part[order] = chunk
    return part


def _led_nets(lead, counts: np.ndarray, members: np.ndarray):
    """Nets given as runs of `members` (counts per net), each led by lead[net] unless lead is None:
    (sizes, pins)."""
    if lead is None:
        return counts.astype(np.int64), members
    sizes = counts.astype(np.int64) + 1
    starts = np.cumsum(sizes) - sizes
    pins = np.empty(int(sizes.sum()), np.int64)
    pins[starts] = lead
    is_member = np.ones(pins.size, bool)
    is_member[starts] = False
    pins[is_member] = members
    return sizes, pins


def layer_subproblem(net: Layers, t: int, parts, k: int):
    """Hypergraph whose (weighted) km1 is exactly the volume of the nets touching layer t's rows,
    for any layer partition that keeps each class of identical rows (`mergeable_rows`) together.

    Free vertices: one per row class of layer t (weight: its rows' nonzeros), then, for t = 1
    before layer 0 is placed, the inputs (weight 0). Fixed: K anchor vertices, one per part,
    weight 1. Incoming nets (t, j) hold the classes reading j, led by anchor[part_{t-1}[j]] (no
    leader when layer t−1 is unplaced: the layer's own spread of readers); outgoing nets
    (t+1, i), when layer t+1 is placed, are {class of i} plus the anchors of its readers' parts
    (readers of one part collapse into one pin: same km1). Identical rows read the same inputs,
    so keeping them together never costs an incoming word, and the solver sees 16× fewer vertices
    on RadiX-Net layers. Returns (num_vertices, net_indptr, pins, net_weights, vertex_weights, fixed).
    """
    n, n_in = net.widths[t], net.widths[t - 1]
    classes = net.classes(t)
    n_cls = net.num_classes(t)
    free_inputs = t == 1 and parts[0] is None
    n_free = n_cls + (n_in if free_inputs else 0)
    nv = n_free + k
    anchor = n_free
    w = net.class_rows(t)  # one row per class: the classes' reading pattern
    readers = sp.csr_matrix((np.ones(w.nnz, np.int8), w.indices, w.indptr), shape=(n_cls, n_in)).tocsc()
    if free_inputs:
        lead = n_cls + np.arange(n_in, dtype=np.int64)
    elif parts[t - 1] is not None:
        lead = anchor + parts[t - 1].astype(np.int64)
    else:
        lead = None
    sizes, pins = [None, None], [None, None]
    sizes[0], pins[0] = _led_nets(lead, np.diff(readers.indptr), readers.indices.astype(np.int64))
    if t < len(net) and parts[t + 1] is not None:
        nxt = net.w(t + 1)
        reader_part = np.repeat(parts[t + 1].astype(np.int64), np.diff(nxt.indptr))
        row, q = np.divmod(distinct(nxt.indices.astype(np.int64) * k + reader_part, limit=n * k), k)
        sizes[1], pins[1] = _led_nets(classes, np.bincount(row, minlength=n), anchor + q)
    sizes = np.concatenate([s for s in sizes if s is not None])
    indptr, pins, net_weights = merge_nets(sizes, np.concatenate([p for p in pins if p is not None]), nv)
    weights = np.concatenate([net.class_loads(t),
                              np.zeros(n_free - n_cls, np.int64), np.ones(k, np.int64)])
    fixed = np.concatenate([np.full(n_free, -1, np.int64), np.arange(k, dtype=np.int64)])
    return nv, indptr, pins, net_weights, weights, fixed


def merge_free_vertices(group: np.ndarray, subproblem):
    """A layer subproblem (`layer_subproblem`) with its class vertices merged into `group`s (a
    group id per class), the other vertices renumbered after them: fewer vertices, the same km1
    for every partition that keeps each group together."""
    nv, indptr, pins, net_weights, weights, fixed = subproblem
    n_cls, n_grp = group.size, int(group.max()) + 1
    n = nv - n_cls + n_grp
    vertex = np.concatenate([group.astype(np.int64), n_grp + np.arange(nv - n_cls, dtype=np.int64)])
    m = sp.csr_matrix((np.ones(pins.size, np.int8), vertex[pins], indptr.copy()), shape=(indptr.size - 1, n))
    m.sum_duplicates()  # a net's pins distinct again
    indptr, pins, net_weights = merge_nets(np.diff(m.indptr), m.indices.astype(np.int64), n, net_weights)
    weights = np.concatenate([np.bincount(group, weights=weights[:n_cls], minlength=n_grp).astype(np.int64),
                              weights[n_cls:]])
    fixed = np.concatenate([np.full(n_grp, -1, np.int64), fixed[n_cls:]])
    return n, indptr, pins, net_weights, weights, fixed


def solve_layer(net: Layers, t: int, parts, k, epsilon, seed, solver, threads, start=None, group=None):
    """Partition layer t (and layer 0 when t = 1 and it is unplaced) against its fixed neighbours;
    from scratch, or by V-cycles from `start` (a partition of layer t, layer 0 placed). With
    `group` (an id per row class) each group of classes stays together."""
    subproblem = layer_subproblem(net, t, parts, k)
    classes = net.classes(t)
    if group is not None:
        subproblem = merge_free_vertices(group, subproblem)
        classes = group[classes]
    nv, indptr, pins, net_weights, weights, fixed = subproblem
    n_cls = int(classes.max()) + 1 if classes.size else 0
    if indptr.size <= 1:  # nothing to cut (an empty layer): any balanced split is optimal
        block = split_by_load(np.arange(nv), weights, k)
    elif start is not None:  # a class starts where its first row is (rebalancing may have split it)
        initial = np.concatenate([start[first_index(classes, n_cls)].astype(np.int64), np.arange(k)])
        block = solver.improve(nv, indptr, pins, k, epsilon, seed, weights, initial, net_weights=net_weights,
                               fixed=fixed, threads=threads).partition
    else:
        block = solver.solve(nv, indptr, pins, k, epsilon, seed, weights, net_weights=net_weights,
                             fixed=fixed, threads=threads).partition
    dtype = id_dtype(k)
    new = block[classes].astype(dtype)
    inputs = block[n_cls:n_cls + net.widths[0]].astype(dtype) if t == 1 and parts[0] is None else None
    return new, inputs


def layer_volume(net: Layers, t: int, part_in: np.ndarray, part_out: np.ndarray, k: int) -> int:
    """Words layer t's inputs send: Σ_j |T_j| − [owner(j) ∈ T_j] (`volume.layer_traffic`'s count,
    through the row classes: 20× faster on Graph Challenge layers)."""
    held = layer_reader_parts(net, t, part_out, k)
    return int(held.sum() - held[np.arange(held.shape[0]), part_in].sum())


def local_volume(net: Layers, parts, t, k) -> int:
    """Words of the nets touching layer t: layer t's incoming and (if placed) outgoing nets."""
    total = layer_volume(net, t, parts[t - 1], parts[t], k)
    if t < len(net) and parts[t + 1] is not None:
        total += layer_volume(net, t + 1, parts[t], parts[t + 1], k)
    return total


def place_inputs(net: Layers, parts, k) -> np.ndarray:
    """Exact optimum for layer 0 given layer 1: each input goes to the part holding most of its readers."""
    w = net.w(1)
    key = w.indices.astype(np.int64) * k + np.repeat(parts[1].astype(np.int64), np.diff(w.indptr))
    counts = np.bincount(key, minlength=w.shape[1] * k).reshape(w.shape[1], k)
    return counts.argmax(axis=1).astype(id_dtype(k))


def reader_parts(w, part: np.ndarray, k: int) -> np.ndarray:
    """[input j, part q]: does part q hold a row reading j (the sets T_j of README, "Design reference")."""
    held = np.zeros((w.shape[1], k), bool)
    held[w.indices, np.repeat(part, np.diff(w.indptr))] = True
    return held


def layer_reader_parts(net: Layers, t: int, part: np.ndarray, k: int) -> np.ndarray:
    """`reader_parts` of layer t through its classes of identical rows: the parts holding some row
    of each class, spread over the class's inputs (16× fewer nonzeros on RadiX-Net layers)."""
    classes = net.classes(t)
    rows = net.class_rows(t)
    if rows.shape[0] == classes.size:
        return reader_parts(rows, part, k)
    in_class = np.zeros((rows.shape[0], k), np.float32)
    in_class[classes, part] = 1.0
    pattern = sp.csr_matrix((np.ones(rows.nnz, np.float32), rows.indices, rows.indptr), shape=rows.shape)
    return (pattern.T @ in_class) > 0  # counts, not weights: no cancellation


def sweep(net: Layers, k, epsilon, seed, solver, threads, progress):
    """Layer k partitioned with layer k−1 fixed, k = 1..L (layers 0 and 1 together)."""
    parts = [None] * len(net.widths)
    for t in range(1, len(net.widths)):
        parts[t], inputs = solve_layer(net, t, parts, k, epsilon, seed + t, solver, threads)
        if inputs is not None:
            parts[0] = inputs
        rebalance_layer(net, parts, t, k, epsilon)
        if progress:
            progress("sweep", t, len(net.widths) - 1)
    return parts


def improve_layer(net: Layers, parts, t, k, epsilon, seed, solver, threads):
    """Re-solve layer t with both neighbours fixed; the new layer partition, or None if no better.

    A small subproblem (at most FRESH_SOLVE_MAX_VERTICES merged rows) is solved from scratch,
    which explores other partitions for milliseconds; a larger one gets V-cycles from the current
    partition (`Solver.improve`): at N = 65536 (4,096 merged rows, 59,000 nets) a fresh solve
    costs 1.1 s, five times a V-cycle, and came out worse than the V-cycle's polish of the
    current partition (65536×24, K = 8: 786,694 against 786,391 words in all)."""
    before = local_volume(net, parts, t, k)
    trial = list(parts)
    wide = net.num_classes(t) > FRESH_SOLVE_MAX_VERTICES and solver.improves
    trial[t], _ = solve_layer(net, t, trial, k, epsilon, seed, solver, threads, start=parts[t] if wide else None)
    rebalance_layer(net, trial, t, k, epsilon)
    return trial[t] if local_volume(net, trial, t, k) < before else None


def rebalance_layer(net: Layers, parts, t: int, k: int, epsilon: float) -> int:
    """Move rows of layer t out of overloaded parts, each move the cheapest in volume. Returns moves."""
    w = net.rw(t)
    bound = layer_capacity(w, k, epsilon)
    loads = np.bincount(parts[t], weights=w, minlength=k).astype(np.int64)
    if loads.max() <= bound:
        return 0
    W = net.w(t)
    part = parts[t].astype(np.int64)
    owner_in = parts[t - 1].astype(np.int64) if parts[t - 1] is not None else np.full(W.shape[1], -1, np.int64)
    pattern = sp.csr_matrix((np.ones(W.nnz), W.indices, W.indptr), shape=W.shape)
    cnt_in = np.bincount(W.indices.astype(np.int64) * k + np.repeat(part, np.diff(W.indptr)),
                         minlength=W.shape[1] * k).reshape(W.shape[1], k)  # readers of input j in part q
    has_out = t < len(net) and parts[t + 1] is not None  # next layer may not be partitioned yet
    if has_out:
        Wn = net.w(t + 1)
        cnt_out = np.bincount(Wn.indices.astype(np.int64) * k + np.repeat(parts[t + 1].astype(np.int64),
                                                                          np.diff(Wn.indptr)),
                              minlength=W.shape[0] * k).reshape(W.shape[0], k)  # readers of neuron i in part q
    moves = 0
    not_owner = owner_in[:, None] != np.arange(k)[None, :]
    while loads.max() > bound:
        p = int(np.argmax(loads))
        cand = np.flatnonzero(part == p)
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
        part[i] = q
        loads[p] -= w[i]
        loads[q] += w[i]
        moves += 1
    parts[t] = part.astype(id_dtype(k))
    return moves
