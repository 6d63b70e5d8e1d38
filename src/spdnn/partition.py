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
- `hypergraph`: the sweep; then more candidates per layer (chains: a layer partitioned on its
  own, then swept window−1 layers on, the window spanning the period of RadiX-Net structure, a
  chain from every layer where layers are small and from every few on wider ones:
  `chain_window`; a chain starts with the layers that can send nothing among them, where there
  are two or more, and every layer between chain starts offers those alone: `lookahead.py`;
  where chains are shorter than that period, a start that reads each input from one part is
  also carried on through the period with each layer's rows grouped by the parts they read:
  `carried_chain`) and the cheapest sequence of candidates by dynamic programming over the
  layers, each candidate's part names matched to the previous layer's by the Hungarian method
  (exact for a pair of layers; the sweep itself is a candidate, so never worse); then
  block-coordinate descent passes that re-solve each layer with *both* neighbours fixed
  (outgoing nets included; wide layers by V-cycles from their current partition, see
  `improve_layer`), keeping a new layer partition only when it lowers the exact local
  volume; inputs are finally placed optimally (each with the part holding most of its readers).
  The candidates are what lets it follow a network whose structure changes every few layers
  (RadiX-Net blocks, even with every layer's neurons renamed): 1.5× less than the sweep at K=8
  on such a network, where the sweep alone stays with the structure it started from.

Scale: the methods read layers' patterns (not their weights) through `Layers` (a few resident at a
time) and keep only the layer
partitions, in the smallest integer type that holds K, plus the candidates; a worker process gets
the network file's path, not the matrices. A subproblem is built directly on the merged rows, with
nets that cannot be cut dropped and identical nets merged into one weighted net; a layer's volume
and reader sets are computed through its row classes. At N = 65536 (2·10⁶ nonzeros per layer) a
solve takes 0.6–0.9 s, of which Mt-KaHyPar's own call is 0.2–0.8 s. With `jobs` > 1 the sweep and
the candidate chains run side by side, and the candidate costs and the refinement are shared.

A tried alternative, contracting consecutive layers through a reader matching (a multilevel
step over layers), was 1.4–3× worse than the sweep on the Graph Challenge network and was dropped.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp

from .arrays import distinct, first_index, first_of_groups, number_by_first
from .errors import UserError, WorkerError
from .hypergraph import identical_rows, merge_nets
from .lookahead import lookahead_chain, read_set_groups
from .partition_io import id_dtype
from .partitioner import Solver
from .progress import every_tenth
from .volume import combine_layer_stats, layer_capacity, layer_stats

METHODS = ("hypergraph", "sweep", "random", "block")
WINDOW = 3  # hypergraph: each layer alone, then swept on: a candidate chain's fewest layers
MAX_WINDOW = 8  # and its most
LONG_WINDOW_MAX_CLASSES = 512  # chains longer than WINDOW from every layer only where a layer has at most this many merged rows
STRIDED_WINDOW_MAX = 16  # wider layers: chains of one period (at most this many layers), spaced (`chain_window`)
FRESH_SOLVE_MAX_VERTICES = 2048  # refinement: larger layer subproblems are improved, not re-solved


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


class Layers:
    """W^1..W^L as the partitioner reads them: layer t's matrix `w(t)`, row weights `rw(t)` and
    mergeable rows `classes(t)`, derived on demand and kept for the last KEEP layers only.

    The source is a list of CSR matrices or a `network.LayerFile`, and the source is what pickles:
    a worker process given a file reads the layers it needs itself, never a pickled network."""

    KEEP = 4  # a layer and its neighbours, with room for the one being re-solved

    def __init__(self, source, widths, balance: tuple[int, float] | None = None):
        """`balance` = (K, ε): classes of identical rows heavier than a part's capacity are split
        (`classes`); None keeps every class whole."""
        self.source = source
        self.widths = [int(n) for n in widths]
        self.balance = balance
        self.keep = self.KEEP
        self._cache: OrderedDict[int, dict] = OrderedDict()

    @contextmanager
    def keeping(self, n: int):
        """Keep the last n layers (at least KEEP) meanwhile: for passes that come back to layers."""
        before, self.keep = self.keep, max(self.keep, n)
        try:
            yield self
        finally:
            self.keep = before
            self._trim()

    def _trim(self) -> None:
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self.widths) - 1

    def __iter__(self):
        return (self.w(t) for t in range(1, len(self) + 1))

    def _entry(self, t: int) -> dict:
        entry = self._cache.get(t)
        if entry is None:
            # The pattern only, where the source can read it alone: no method here uses the weights.
            read = getattr(self.source, "pattern", self.source.__getitem__)
            entry = self._cache[t] = {"w": read(t - 1)}
            self._trim()
        else:
            self._cache.move_to_end(t)
        return entry

    def w(self, t: int):
        return self._entry(t)["w"]

    def checked(self, t: int):
        """W^t read whole, weights included, so that the file's checksums of every array of the
        layer are verified (the metrics pass does this once per layer: the solves read patterns
        only, and a corrupted file must still fail the command)."""
        return self.source[t - 1]

    def rw(self, t: int) -> np.ndarray:
        """Row weights of layer t (nnz of each row: the work of that neuron); zeros for the inputs."""
        if t == 0:
            return np.zeros(self.widths[0], np.int64)
        entry = self._entry(t)
        if "rw" not in entry:
            entry["rw"] = np.diff(entry["w"].indptr).astype(np.int64)
        return entry["rw"]

    def classes(self, t: int) -> np.ndarray:
        """Rows of layer t that move as one vertex (`mergeable_rows`). A class heavier than a part
        may carry cannot stay whole in any balanced partition; its rows are grouped further by the
        readers they have in layer t + 1 (identical columns of W^(t+1)), which keeps each piece in
        exactly the same nets, so that the solver, not the row-by-row repair, decides the split.
        (The top base layer of a RadiX-Net with radices 2,4,8 has 8 classes of 128 rows, each four
        times what a part may carry at K = 32; split by the next layer they are the 16-row groups.
        The last layer has no readers: its heavy classes are left to the repair.)"""
        entry = self._entry(t)
        if "classes" not in entry:
            classes = mergeable_rows(entry["w"])
            if self.balance is not None and t < len(self) and classes.size:
                classes = self._split_heavy(t, classes)
            entry["classes"] = classes
        return entry["classes"]

    def _split_heavy(self, t: int, classes: np.ndarray) -> np.ndarray:
        k, epsilon = self.balance
        rw = self.rw(t)
        weight = np.bincount(classes, weights=rw)
        heavy = weight > layer_capacity(rw, k, epsilon)
        if not heavy.any():
            return classes
        readers = identical_rows(self.w(t + 1).T.tocsr())  # neurons of layer t with the same readers
        n = classes.size
        key = np.where(heavy[classes], n + readers.astype(np.int64) * n + classes, classes.astype(np.int64))
        return number_by_first(first_of_groups(key))

    def num_classes(self, t: int) -> int:
        """How many classes of identical rows layer t has (the free vertices of its subproblem)."""
        classes = self.classes(t)
        return int(classes.max()) + 1 if classes.size else 0

    def class_rows(self, t: int):
        """Layer t's pattern with one row per class of identical rows (all rows when none merge)."""
        entry = self._entry(t)
        if "class_rows" not in entry:
            classes, w, n_cls = self.classes(t), entry["w"], self.num_classes(t)
            entry["class_rows"] = w[first_index(classes, n_cls)] if n_cls < w.shape[0] else w
        return entry["class_rows"]

    def __getstate__(self):
        return {"source": self.source, "widths": self.widths, "balance": self.balance}

    def __setstate__(self, state):
        self.__init__(state["source"], state["widths"], state["balance"])


# ---------------------------------------------------------------- simple balanced splits
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


def block_partition(net: Layers, k: int, seed: int) -> list[np.ndarray]:
    return [split_by_load(np.arange(n), net.rw(t), k) for t, n in enumerate(net.widths)]


def random_partition(net: Layers, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [split_by_load(rng.permutation(n), net.rw(t), k) for t, n in enumerate(net.widths)]


# ---------------------------------------------------------------- one layer against fixed neighbours
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
    weights = np.concatenate([np.bincount(classes, weights=net.rw(t), minlength=n_cls).astype(np.int64),
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


def mergeable_rows(w) -> np.ndarray:
    """Rows that move as one vertex: identical non-empty rows. Empty rows (dead neurons of a pruned
    layer) read nothing, so merging them gains nothing and would tie all their readers together."""
    classes = identical_rows(w)
    empty = np.flatnonzero(np.diff(w.indptr) == 0)
    if empty.size:
        key = classes.copy()
        key[empty] = classes.max() + 1 + np.arange(empty.size)
        classes = number_by_first(first_index(key)[key])
    return classes


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


# ---------------------------------------------------------------- choosing among candidate layer partitions
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


def best_relabel(w, part_in: np.ndarray, part_out: np.ndarray, k: int, held=None):
    """(volume, label map) for layer `w` when part_out's labels are renamed to suit part_in.

    V = Σ_j |T_j| − Σ_j [owner(j) ∈ T_j]; the first term does not depend on the names, the second
    is an assignment problem between owner parts and reader parts (Hungarian, exact)."""
    from scipy.optimize import linear_sum_assignment

    held = reader_parts(w, part_out, k) if held is None else held
    n_in = held.shape[0]
    owner = sp.csr_matrix((np.ones(n_in), (part_in.astype(np.int64), np.arange(n_in))), shape=(k, n_in))
    together = np.asarray(owner @ held.astype(np.float64))  # [owner part, reader part]: columns in common
    rows, cols = linear_sum_assignment(-together)
    rename = np.empty(k, np.int64)
    rename[cols] = rows
    return int(held.sum() - together[rows, cols].sum()), rename


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
    at most one grouped solve a layer). Returns [(chain's first layer, t, layer partition), ...]
    in order. Progress: the layers up to the next start's."""
    L = len(net)
    out = []
    carried_to = 0
    # The next chain starts on a layer this one read: keep a window of layers (12-layer chains
    # every 4th layer read each layer three times with the default few, a fifth of the
    # partitioner's time at 65536×120).
    with net.keeping(max(window, carry) + 1):
        for t0, after in zip(starts, [*starts[1:], L + 1]):
            for s in range(t0, min(L, t0 + stride - 1) + 1):
                last = min(L, s + window - 1)
                chain = chain_from(net, s, last, k, epsilon, seed, solver, threads, s == t0, 1 if carry else 2)
                out += [(s, t, part) for t, part in chain]
                # (a chain that ends where the last carried one still runs cannot start the next)
                base = free_run_end(net, chain, k) if carry and s == t0 and chain[-1][0] >= carried_to else None
                if base is not None and carried_to <= base < L:
                    carried = carried_chain(net, chain[base - s][1], base, min(L, base + carry), k, epsilon,
                                            seed + 7 * L * s + 3 * L, solver, threads)
                    if carried:
                        carried_to = carried[-1][0]
                        out += [(s, t, part) for t, part in carried]
            if progress:
                progress("candidates", after - 1, L)
    return out


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
        if np.bincount(parts[t], weights=net.rw(t), minlength=k).max() > capacity and solver.improves:
            # Groups near a part's load may not pack into K parts (65536 wide, K = 128: a thousand
            # rows over, moved one by one by the repair, 7 s a layer): V-cycles with the classes
            # free balance it and keep most of the groups together.
            parts[t], _ = solve_layer(net, t, parts, k, epsilon, seed + t, solver, threads, start=parts[t])
        rebalance_layer(net, parts, t, k, epsilon)
    return [(t, parts[t]) for t in range(t0 + 1, last + 1)]


def _sweep_and_chains(net, k, epsilon, seed, solver, window, stride, carry, share, tick):
    """One worker's share: the sweep if `share` asks for it, then its chain start layers."""
    with_sweep, starts = share
    swept = sweep(net, k, epsilon, seed, solver, 1, lambda *_: tick()) if with_sweep else None
    return swept, chains_from(net, k, epsilon, seed, solver, 1, window, starts, lambda *_: tick(), stride, carry)


PARALLEL_METRICS_NEURONS = 1 << 20  # below this the metrics pass takes seconds: not worth two spawns
def sweep_solve_cost(width: int) -> float:
    """A sweep solve in chain solves: the sweep reads and classifies every layer anew, where
    consecutive chains share theirs, which matters as layers grow (65536×1920, K = 8: with equal
    weights the chains-only worker finished ~8 minutes before the sweep's; at N = 1024, equal
    weights balanced best)."""
    return 1.0 + 0.7 * min(1.0, width / 65536)


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


def block_shares(items: list, jobs: int, block: int = 8) -> list[list]:
    """`jobs` fixed shares of a list of per-layer work items: blocks of `block` consecutive items
    dealt round-robin, so a worker reads a layer once for neighbouring items and the shares stay
    balanced along the network (deep layers cost more than the first ones)."""
    blocks = [items[i:i + block] for i in range(0, len(items), block)]
    return [[item for blk in blocks[w::jobs] for item in blk] for w in range(jobs)]


def in_processes(task, common: tuple, shares: list, progress=None) -> list:
    """task(*common, share, tick) for each share, each in its own spawned process; results in share
    order. A worker calls tick() after each unit of work; progress(units done by all) follows them.

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
    ticks = 0
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
                    raise WorkerError(f"partition worker {dead[0].pid} died (exit code {dead[0].exitcode})") from None
                continue
            if ok == "tick":
                ticks += 1
                if progress:
                    progress(ticks)
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
        results.put((index, True, task(*common, share, lambda: results.put((index, "tick", None)))))
    except Exception as e:  # noqa: BLE001 — reported by the parent in one line
        results.put((index, False, f"{e.__class__.__name__}: {e}"))


def sweep_and_candidates(net: Layers, k, epsilon, seed, solver, threads, window, progress=None, jobs=1, stride=1,
                         carry=0):
    """The sweep, and extra candidate partitions per layer (`chains_from`): they carry
    each layer's own structure, which a sweep started elsewhere can lose for good (a RadiX-Net
    block changes structure every few layers); a chain of `window` layers from every `stride`-th
    layer (`chain_window`), carried on `carry` layers from free starts (`carry_length`). Returns
    (sweep's layer partitions, candidates per
    layer, the sweep first).

    With `jobs` > 1 the chains, which do not depend on the sweep, run beside it: worker 0 sweeps
    and takes fewer chains (`chain_shares`), each worker a fixed share in a fresh process."""
    L = len(net)
    if jobs > 1:
        shares = chain_shares(L, window, jobs, sweep_cost=sweep_solve_cost(max(net.widths[1:])), stride=stride)
        stage = f"sweep and candidates ({jobs} processes)"
        units = L + sum(map(len, shares))  # a unit: a layer swept or a chain
        done = in_processes(_sweep_and_chains, (net, k, epsilon, seed, solver, window, stride, carry),
                            [(w == 0, starts) for w, starts in enumerate(shares)],
                            progress and (lambda n: progress(stage, n, units)))
        swept = done[0][0]
        triples = sorted((t for _, share in done for t in share), key=lambda x: (x[0], x[1]))
    else:
        swept = sweep(net, k, epsilon, seed, solver, threads, progress)
        triples = chains_from(net, k, epsilon, seed, solver, threads, window, chain_starts(L, stride), progress, stride,
                              carry)
    cands = [[] if t == 0 else [swept[t]] for t in range(L + 1)]  # the sweep first: never worse than it
    seen = [set() if t == 0 else {same_up_to_names(swept[t])} for t in range(L + 1)]
    for _, t, part in triples:  # by start layer: the same order whatever the split
        key = same_up_to_names(part)
        if key not in seen[t]:  # neighbouring lookahead stretches often give one partition
            seen[t].add(key)
            cands[t].append(part)
    return swept, cands


def same_up_to_names(part: np.ndarray) -> bytes:
    """A key equal for two layer partitions exactly when they differ only in the parts' names:
    the parts renamed in order of their first row."""
    return hashlib.sha1(number_by_first(first_of_groups(part)).astype(np.int32).tobytes()).digest()


def transitions(net: Layers, k, items, tick=lambda: None):
    """For each (t, candidates of layer t−1, candidates of layer t): the volume of layer t for
    every pair of candidates, and the label map that renames each of layer t's to suit each of
    layer t−1's (`best_relabel`) — [(t, volume[a, b], rename[a, b, :]), ...]."""
    out = []
    for t, before, here in items:
        w = net.w(t)
        held = [layer_reader_parts(net, t, c, k) for c in here]
        volume = np.zeros((len(before), len(here)), np.float64)
        rename = np.zeros((len(before), len(here), k), np.int64)
        for a, prev in enumerate(before):
            for b, (c, h) in enumerate(zip(here, held)):
                volume[a, b], rename[a, b] = best_relabel(w, prev, c, k, h)
        out.append((t, volume, rename))
        tick()
    return out


def choose_candidates(net: Layers, cands, k, progress=None, jobs=1):
    """The sequence of candidates (one per layer) with the least volume, by dynamic programming
    over the layers, each candidate renamed to suit the one before (`best_relabel`). Returns the
    layer partitions (inputs placed optimally) and their volume.

    The pairwise costs of consecutive layers are independent, so `jobs` processes compute them
    (blocks of consecutive layers, each read once); the DP itself is a few numbers per layer. A
    rename found against layer t−1's candidate as computed holds for it renamed too (renaming the
    owner parts permutes the assignment problem's rows), so the chosen sequence's renames compose."""
    L = len(net)
    items = [(t, cands[t - 1], cands[t]) for t in range(2, L + 1)]
    stage = "candidate sequence" + (f" ({jobs} processes)" if jobs > 1 else "")
    if jobs > 1 and len(items) > 1:
        done = in_processes(transitions, (net, k), block_shares(items, jobs),
                            progress and (lambda n: progress(stage, n + 1, L)))
        steps = {t: (volume, rename) for share in done for t, volume, rename in share}
    else:
        layers_done = iter(range(2, L + 1))
        tick = (lambda: progress(stage, next(layers_done), L)) if progress else (lambda: None)
        steps = {t: (volume, rename) for t, volume, rename in transitions(net, k, items, tick)}
    del items
    cost = np.array([layer_reader_parts(net, 1, c, k).sum() - net.widths[0] for c in cands[1]], np.float64)
    back = [None, None]
    for t in range(2, L + 1):
        total = cost[:, None] + steps[t][0]
        back.append(total.argmin(axis=0))
        cost = total.min(axis=0)
    pick = [0] * (L + 1)
    pick[L] = int(np.argmin(cost))
    for t in range(L, 1, -1):
        pick[t - 1] = int(back[t][pick[t]])
    parts = [None] * (L + 1)
    parts[1] = cands[1][pick[1]].copy()
    names = np.arange(k)  # final label of each of the chosen layer t−1 candidate's own labels
    for t in range(2, L + 1):
        names = names[steps[t][1][pick[t - 1], pick[t]]]
        parts[t] = names.astype(parts[1].dtype)[cands[t][pick[t]]]
    parts[0] = place_inputs(net, parts, k)
    return parts, int(cost.min())


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


# ---------------------------------------------------------------- balance repair
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


# ---------------------------------------------------------------- entry point
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
            parts, cands = sweep_and_candidates(net, k, epsilon, seed, solver, threads, window, progress, jobs, stride,
                                                carry)
            parts, _ = choose_candidates(net, cands, k, progress, jobs)
            del cands
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


def _layer_stats_share(net, k, epsilon, items, tick):
    out = []
    for t, part_in, part_out in items:
        out.append(layer_stats(net.checked(t), part_in, part_out, k, epsilon))
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


def _progress(method: str, k: int):
    """progress(stage, done, total): `progress.every_tenth`'s lines, a tenth of each stage."""
    report = every_tenth(f"{method} K={k}")
    return lambda stage, done, total: report(done, total, stage)
