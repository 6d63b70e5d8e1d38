"""A lower bound on the forward volume of every partition balanced in every layer (`spdnn bound`).

A partitioner's volume says little on its own: this bound says how much any partition with the
same K and ε must send, so a target below it is out of reach and the gap above it is what a
better partitioner could still win. It holds for every network; it is strong where rows repeat
(RadiX-Net and the Graph Challenge networks: 16 identical rows per group); on random and pruned
networks it is valid but near 0.

Derivation. In layer t, a *column class* is a set of columns read by exactly the same rows (z_c
columns) and a *row class* a set of identical rows. For column j of class c, with T_c the parts
holding a reader of c, λ_j − 1 = |T_c| − [owner(j) ∈ T_c]. Summed over j, exactly:

    V_t = Σ_p Σ_{c ∈ C_p} (z_c − o_{p,c}),                                   (1)

C_p the classes read by p's rows, o_{p,c} the columns of c that p owns (its rows of layer t−1).
So the volume splits into one term per part and layer. For part p let u_t be the number of row
classes of layer t it touches. Then |C_p| ≥ e_t(u_t), the least number of column classes that
u_t row classes read (`expansion`), and Σ_{c∈C_p} o_{p,c} ≤ min(cap_{t−1}, S_t(u_{t−1}, |C_p|)),
with cap the most rows a part may hold under the balance bound and S_t(u, v) ≥ the largest sum
of a u×v submatrix of M_t = [neurons of layer-(t−1) row class a that fall in layer-t column class
c] (`submatrix_bound`). With one class size z per layer, adding a class to C_p adds z to the cost
and at most z to the alignment, so

    cost_p^t ≥ h_t(u_{t−1}, u_t) = min_{v ≥ e_t(u_t)} [z·v − min(cap_{t−1}, S_t(u_{t−1}, v), z·v)].

Where the row classes and column classes of a layer form cycles (RadiX-Net: row class g reads
column classes g and g + s), a part's row classes split into r partial runs and whole cycles, it
reads exactly u + r column classes, and those form r arcs plus whole cycles. The state of a part
in a layer is then (u, r) (r ≤ RUNS; more runs, or no cycles, keep the generic bound), and the
alignment is also at most the sum over the pieces of the best single arc of that length
(`cycle_runs.arc_bound`, `runs_bound`), on the column side (this layer's runs) and on the row side (the
previous layer's runs), and for a part that is one partial run in both layers, the densest block
of a run of rows times an arc of columns (`joint_arc_bound`). This is what makes the bound tight
on Graph Challenge layers: a dense u×v block of M_t is easy to find, a dense block whose columns
are a few arcs is not.

A part's rows of layer t appear in two tables: as readers in layer t and as owners in layer t + 1.
With states (u, r) each table picks its own best runs for them. For the fewest classes a part may
touch and one more (u ≤ u_lo + PLACED_SPAN), the sets that are one partial run or a union of whole
cycles are states of their own, each carrying its set (`cycle_runs.placed_sets`, at most
PLACED_LIMIT a layer): between two placed states the alignment is the exact block of M_t, the same
rows in both tables; into or out of one, its columns or its rows are known exactly (best rows,
best runs of rows, over its columns; and the transpose: `cycle_runs.set_runs`). On the real
1024-neuron network a single part's best chain of runs aligns 18 % less than the per-table bests.

Both sides at once (`joint_runs`): for runs states of at most u_lo + JOINT_SPAN classes in both
layers, a part whose rows of layer t − 1 are r' runs (and whole cycles) and whose rows of layer t
are r runs aligns at most the sum over its previous runs of each run's best alignment with the
columns of any r runs of layer t (exact by a dynamic program along the cycles; exact overall for
one run). The tables above restrict the rows or the columns to runs and leave the other side
free; at K = 8 on the real network the Lagrangian's parts were two to four runs in most layers,
and that freedom is what they took. With both sides (and RUNS 4 → 6): K = 8 89,336 → 96,198.

Each part is granted its densest cells of M_t on its own, though a neuron has one owner. Prices
π_t on the cells (`alignment_prices`) charge for that: the tables are built on M_t ∘ (1 − π_t)
and ⟨π_t, M_t⟩ is added back once per layer. The bound is computed with and without them (π = 0)
and the larger is kept.

Parts are coupled only through coverage: every row class is held somewhere (Σ_p u_t^p ≥ R_t) and
every neuron is owned, so the parts' loads add up to the layer's (Σ_p ℓ_t(u_t^p) ≥ R_t, with
ℓ_t(u) the most load a part touching u row classes can carry, min(capacity, the u heaviest
classes), in units of the mean class load). Without the second, K parts of one class each (half
the rows each may hold) would cover R_t = K classes. Both are moved into the objective with
multipliers μ_t, ν_t ≥ 0 (weak duality):

    V ≥ K · min_{s_1..s_L} Σ_t (h_t(s_{t−1}, s_t) − μ_t u(s_t) − ν_t ℓ_t(s_t)) + Σ_t (μ_t + ν_t) R_t
        − n_0 − Σ_t ⟨π_t, M_t⟩,

(layer 1's alignment with the weightless inputs is at most n_0 in total). The inner minimum is a
shortest path over the states (`_chain_minimum`); μ, ν are improved by projected subgradient steps and every
iterate is a valid bound: the best is reported. Layers whose column classes differ in size
contribute 0 (still valid).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import time
import weakref
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .alignment_prices import cell_prices, fits, single_class_blocks
from .arrays import compiled
from .cycle_runs import Placed, arc_bound, class_incidence, cycles, joint_arc_bound, placed_sets, runs_bound, set_runs
from .hypergraph import identical_rows
from .joint_runs import two_sided_alignment
from .semidefinite_bound import SdpBudget, semidefinite_certificate, solver_bytes
from .volume import layer_capacity, rows_per_part

EXACT_SUBSETS = 50_000  # enumerate row subsets of S_t(u, ·) exactly while C(R, u) stays below this
EXACT_WORK = 250_000_000  # ... and C(R, u)·u·columns (the entries summed) too
DENSE_LIMIT = 1 << 25  # largest M_t kept dense; beyond it the alignment is bounded by cap alone
GENERIC_EXACT = 256  # generic states kept one per u up to u_lo + this many classes ...
BUCKETS_PER_DOUBLING = 44  # ... and above it shared, 44 per doubling of u (a factor 1.016 each)
STATE_LIMIT = 200_000_000  # Σ_t (states of u_{t−1}) × (states of u_t): the DP's memory, 8 bytes each


def expansion(row_class, col_class, w: sp.csr_matrix, cyc=None, incidence=None) -> np.ndarray:
    """e[u] ≤ the number of column classes read by any u row classes (u = 0..R).

    Always: counting incidences, e(u) ≥ ⌈u·d_row/d_col⌉ with d_row the fewest classes a row class
    reads and d_col the most row classes reading one column class. Sharper where the incidence is
    a union of cycles (RadiX-Net layers; `cycles`, computed here when cyc is None): u row classes that
    are not whole cycles read ≥ u + 1."""
    incidence = class_incidence(row_class, col_class, w) if incidence is None else incidence
    a, c, n_r, n_c = incidence
    d_row, d_col = np.bincount(a, minlength=n_r), np.bincount(c, minlength=n_c)
    u = np.arange(n_r + 1)
    e = np.maximum(np.where(u > 0, d_row.min(), 0), -(-u * d_row.min() // max(int(d_col.max()), 1)))
    cyc = cycles(row_class, col_class, w, incidence) if cyc is None else cyc
    if cyc:
        whole = np.zeros(n_r + 1, bool)  # u reachable as a union of whole cycles
        whole[0] = True
        for rows_of_cycle, _ in cyc:
            length = rows_of_cycle.size
            whole[length:] |= whole[:-length].copy()
        e = np.maximum(e, u + ~whole)
    return np.minimum(e, n_c)


def submatrix_bound(m: np.ndarray, u_max: int, check=None) -> np.ndarray:
    """S[u, v] ≥ the largest sum of a u-row × v-column submatrix of m ≥ 0 (u ≤ u_max, v ≤ columns).

    Exact for the u whose row subsets are few enough to enumerate; otherwise the smallest of three
    relaxations (best u rows each with its own best v columns; the transpose; and, when all row
    sums and all column sums are equal, the expander mixing lemma
    sum ≤ total·u·v/(R·C) + σ₂·√(u(1 − u/R)·v(1 − v/C)) with σ₂ the second singular value),
    tightened by subadditivity over the exact sizes. `check()`, if given, between its phases (each
    seconds at 4096²: it raises past a caller's time budget)."""
    check = check or (lambda: None)
    n_r, n_c = m.shape
    u_max = min(u_max, n_r)
    # Sorted along rows only (of a transposed copy where the sort is down the columns): a sort down
    # a C-ordered array's columns took 5× as long at 4096² (the same values, summed in the same order).
    row_best = np.cumsum(-np.sort(-m, axis=1), axis=1)  # [a, v-1]: row a's best v columns
    col_best = np.cumsum(-np.sort(-m.T, axis=1), axis=1).T  # [u-1, c]: column c's best u rows
    s = np.zeros((u_max + 1, n_c + 1))
    by_rows = np.cumsum(-np.sort(-row_best.T, axis=1), axis=1).T  # [u-1, v-1]
    by_cols = np.cumsum(-np.sort(-col_best, axis=1), axis=1)  # [u-1, v-1]
    s[1:, 1:] = np.minimum(by_rows[:u_max], by_cols[:u_max])
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    if n_r > 1 and n_c > 1 and np.ptp(rows) == 0 and np.ptp(cols) == 0:
        # biregular: the top singular pair is (total/√(RC), 1/√R, 1/√C) and the rest is bounded by σ₂
        check()
        sigma2 = second_singular_value_bound(m) * (1 + 1e-9) + 1e-9
        check()
        u = np.arange(u_max + 1)[:, None].astype(float)
        v = np.arange(n_c + 1)[None, :].astype(float)
        mixing = m.sum() * u * v / (n_r * n_c) + sigma2 * np.sqrt(u * (1 - u / n_r) * v * (1 - v / n_c))
        s = np.minimum(s, mixing + 1e-7)
    # Enumerate where the subsets are few and the work small: u = n_r − 1 has only n_r subsets, but
    # each is n_r − 1 rows (at n_r = 4096, 512 GB in one block).
    exact = [u for u in _few_subsets(n_r, u_max) if math.comb(n_r, u) * u * n_c <= EXACT_WORK]
    total = m.sum(axis=0)
    for u in exact:
        check()
        best = np.zeros(n_c)
        left_out = u > n_r - u  # a large subset is the total minus its complement: fewer rows to sum
        size = n_r - u if left_out else u
        for chunk in _batched(itertools.combinations(range(n_r), size), max(1, min(4096, (1 << 22) // (max(size, 1) * n_c)))):
            sums = m[np.asarray(chunk)].sum(axis=1) if size else np.zeros((1, n_c))  # [subset, column]
            if left_out:
                sums = total[None, :] - sums
            best = np.maximum(best, np.cumsum(-np.sort(-sums, axis=1), axis=1).max(axis=0))
        s[u, 1:] = np.minimum(s[u, 1:], best)
    for u in range(2, u_max + 1):
        for a in exact:
            if a < u:
                s[u] = np.minimum(s[u], s[u - a] + s[a])
    return s


def _few_subsets(n: int, u_max: int) -> list[int]:
    """The u in 1..u_max with C(n, u) ≤ EXACT_SUBSETS, without computing C(n, u) for every u (a
    4,096-digit integer near u = 2,048: half a second a table at n = 4096). C(n, u) rises to
    u = n/2 and falls symmetrically, so the small u are a prefix, the large ones its mirror."""
    low, c = [], 1
    for u in range(1, n // 2 + 1):
        c = c * (n - u + 1) // u
        if c > EXACT_SUBSETS:
            break
        low.append(u)
    few = set(low) | {n - u for u in low} | {n}  # C(n, n) = 1; C(n, n − u) = C(n, u)
    return sorted(u for u in few if u <= u_max)


def second_singular_value_bound(m: np.ndarray) -> float:
    """An upper bound on σ₂(m), m ≥ 0 with at least two rows and two columns.

    σ₂² is the second eigenvalue of the smaller Gram matrix G = m mᵀ (or mᵀ m): a symmetric
    eigenvalue problem, a third of the SVD's time at 4096² (3.6 s against 11.5 s; the SVD was most
    of a 65536-wide layer's `submatrix_bound`). Rounding is paid for, not hoped away: the product's error is at
    most γ_inner·|m||mᵀ| = γ_inner·G entrywise (m ≥ 0), LAPACK's eigenvalues are exact for G + E
    with ‖E‖₂ = O(n·ε)‖G‖₂, and ‖G‖₂ ≤ ‖G‖₁; the slack below covers both with a factor 4 to spare
    (≈ 3·10⁻¹¹ of σ₂² at 4096²: 1.9·10⁻⁹ on 60)."""
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    n, inner = gram.shape[0], max(m.shape)
    slack = 4.0 * (n + inner) * np.finfo(float).eps * float(np.abs(gram).sum(axis=0).max())
    return math.sqrt(max(float(np.linalg.eigvalsh(gram)[-2]) + slack, 0.0))


def _batched(iterable, size):
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


JOINT_LIMIT = 1 << 21  # largest M_t (row classes × column classes) given joint blocks: 4× its size in floats
RUNS = 6  # partial runs tracked per part and layer; more fall back to the generic bound
SPAN = 12  # row-class counts above the least possible one tracked with runs
PLACED_SPAN = 1  # ... and as explicit sets (`placed_sets`) for the fewest classes and one more
PLACED_LIMIT = 256  # most placed states per layer (2 sizes × 128 places): the DP is quadratic in states
JOINT_SPAN = 6  # row-class counts above the least possible one given both-sides run alignment (`joint_runs`)
JOINT_MAX = 24  # ... while at most this many classes (its dynamic program grows with the count)
JOINT_WORK = 400_000_000  # ... and its work (pieces × columns × states) at most this: ~2 s a layer


def _digest(*arrays) -> str:
    """A table's cache key: a digest of what it is computed from (not a copy of it). Of the non-zero
    entries only, with their positions (equal arrays, equal keys; any other array, another key):
    M_t at N = 65536 is 4,096² with 16 non-zeros a row, and hashing all its 134 MB took 0.19 s,
    three times a layer."""
    h = hashlib.sha256()
    for a in arrays:
        flat = np.ravel(a)
        at = np.flatnonzero(flat)
        h.update(f"{a.shape} {a.dtype} {at.size};".encode())  # the count: where positions end
        h.update(at.tobytes())
        h.update(flat[at].tobytes())
    return h.hexdigest()


class TableCache(OrderedDict):
    """The alignment tables of the last few distinct layer structures (RadiX-Net layers repeat with
    a short period, so a few suffice): memory stays bounded whatever the depth. At most `keep`
    tables and, beyond the most recent two, at most `budget` bytes: at N = 65536 a table is
    ≈ 100 MB and most are a layer's own (never read again), so sixteen of them were ≈ 1.5 GB of
    a 3.5 GB process. `threads`: how many threads build a missing table (the same table on any
    number); `check()`: called as the longest tables are built, it raises past the time budget."""

    def __init__(self, keep: int = 16, budget: int = 2**29, threads: int = 1, check=None):
        super().__init__()
        self.keep, self.budget, self.threads, self.check = keep, budget, threads, check
        self._matrix, self._matrix_digest = None, None  # a weak reference to the last M_t, its digest

    def key(self, kind: str, m: np.ndarray, *rest) -> tuple:
        """A table's key: its kind, M_t's digest (taken once a matrix: three tables a layer read the
        same M_t, 0.08 s each at 4,096²) and the digest of the rest it is computed from."""
        if self._matrix is None or self._matrix() is not m:
            self._matrix, self._matrix_digest = weakref.ref(m), _digest(m)
        return kind, self._matrix_digest, _digest(*rest)

    def get_or_build(self, key, build):
        """The table under `key`, built by `build()` when it is not kept."""
        if key not in self:
            self[key] = build()
        return self[key]

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.keep or (len(self) > 2 and sum(map(_table_bytes, self.values())) > self.budget):
            self.popitem(last=False)

    def __getitem__(self, key):
        # Least recently used goes first, not least recently built: a RadiX-Net block's layers share
        # one M_t (one generic table, 6.5 s at N = 65536), read by each of its 12 layers while two
        # new tables a layer would have pushed it out after eight.
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value


def _table_bytes(table) -> int:
    """An alignment table's size: an array, or a dict of arrays or numbers (`joint_arc_bound`)."""
    if isinstance(table, dict):
        return sum(_table_bytes(v) for v in table.values())
    return getattr(table, "nbytes", 8)


def _generic_alignment(m, prev_u, cache):
    key = cache.key("generic", m) + (int(prev_u.max()),)
    table = cache.get_or_build(key, lambda: submatrix_bound(m, int(prev_u.max()), cache.check))
    return table[prev_u]  # [prev state, v]


def _row_runs_alignment(m, prev_cyc, prev_u, prev_r, cache):
    """(the previous layer's runs states, [their state, v] bound) when its rows lie in prev_r runs
    along its cycles: no states where the cycles differ in length. Only their rows: the others'
    (≈ 3,700 generic states at N = 65536) would be +inf, 121 MB a layer."""
    ell = {r.size for r, _ in prev_cyc}
    sel = np.flatnonzero(prev_r <= RUNS)
    if len(ell) != 1 or not sel.size:
        return sel[:0], np.empty((0, m.shape[1] + 1))
    ell = ell.pop()
    # Only the runs states' row counts: the generic states reach every u up to the layer's classes
    # (4,096 at N = 65536), and a table that long was most of a 65536-wide layer's 6.5 minutes.
    u_max = int(prev_u[sel].max())
    wanted = np.zeros((RUNS + 1, u_max + 1), bool)
    wanted[prev_r[sel], prev_u[sel]] = True
    key = cache.key("rows", m, *(r for r, _ in prev_cyc), wanted) + (u_max,)

    def build():
        piece = arc_bound(m.T, [(c, r) for r, c in prev_cyc], ell, u_max, cache.threads, cache.check)  # [rows in run, v]
        return runs_bound(piece, 1, ell - 1, ell, u_max, RUNS, cache.threads, cache.check, wanted)  # [r', u', v]

    return sel, cache.get_or_build(key, build)[prev_r[sel], prev_u[sel]]


def _col_runs_alignment(m, cyc, prev_u, u, r, cache):
    """[prev state, run state] bound when this layer's rows lie in r runs along its cycles, so
    they read u + r columns made of r arcs and whole cycles."""
    ell = {c.size for _, c in cyc}
    if len(ell) != 1:
        return np.full((prev_u.size, u.size), np.inf)
    ell = ell.pop()
    total = int((u + r).max())
    wanted = np.zeros((RUNS + 1, total + 1), bool)
    wanted[r, u + r] = True
    key = cache.key("cols", m, *(c for _, c in cyc), wanted) + (total,)

    def build():
        piece = arc_bound(m, cyc, ell, total, cache.threads, cache.check)  # [columns in arc, u']
        return runs_bound(piece, 2, ell, ell, total, RUNS, cache.threads, cache.check, wanted)  # [r, v, u']

    return cache.get_or_build(key, build)[r[None, :], (u + r)[None, :], prev_u[:, None]]


def _joint_alignment(m, prev_cyc, cyc, prev_u, prev_r, u, r, cache):
    """[prev state, run state] bound for a part that is one partial run in both layers (inf for
    every other pair of states, where a side's cycles differ in length, and past JOINT_LIMIT)."""
    out = np.full((prev_u.size, u.size), np.inf)
    if (len({x.size for x, _ in prev_cyc}) != 1 or len({c.size for _, c in cyc}) != 1
            or m.size > JOINT_LIMIT):
        return out
    lr, lc = prev_cyc[0][0].size, cyc[0][1].size
    rows = (prev_r == 1) & (prev_u < lr)
    cols = (r == 1) & (u < lc)  # u rows in one partial run read the arc of u + 1 columns
    if not rows.any() or not cols.any():
        return out
    runs, arcs = sorted(set(prev_u[rows].tolist())), sorted(set((u[cols] + 1).tolist()))
    key = cache.key("joint", m, *(x for x, _ in prev_cyc), *(c for _, c in cyc)) + (tuple(runs), tuple(arcs))
    table = cache.get_or_build(key, lambda: joint_arc_bound(
        m, np.stack([x for x, _ in prev_cyc]), np.stack([c for _, c in cyc]), runs, arcs, cache.threads, cache.check))
    ri, ci = np.nonzero(rows)[0], np.nonzero(cols)[0]
    values = np.array([[table[a, b] for b in arcs] for a in runs])
    out[np.ix_(ri, ci)] = values[np.searchsorted(runs, prev_u[ri])[:, None], np.searchsorted(arcs, u[ci] + 1)[None, :]]
    return out


def _two_sided_fits(prev_classes: int, n_c: int, u_max: int) -> bool:
    """Whether the two-sided tables stay within their limits: about prev_classes·u_max pieces, each a
    dynamic program of n_c steps over (u_max + 1)(RUNS + 1) states, twice (the row before the cut)."""
    return u_max <= JOINT_MAX and prev_classes * u_max * n_c * (u_max + 1) * (RUNS + 1) * 4 <= JOINT_WORK


def _two_sided_costs(h, m, prev: LayerStates, cyc, u, r, u_max, z, cache):
    """h raised where both states are runs states of at most u_max classes: the alignment of a part
    whose rows of layer t − 1 are r' runs with the columns its r runs of layer t read, both sides
    restricted at once (`joint_runs.two_sided_alignment`; the tables above restrict one at a time)."""
    key = cache.key("both", m, *(x for x, _ in prev.cycles), *(c for _, c in cyc)) + (u_max,)
    table = cache.get_or_build(key, lambda: two_sided_alignment(m, prev.cycles, cyc, u_max, RUNS))
    rows = np.flatnonzero((prev.r <= RUNS) & (prev.u <= u_max))
    cols = np.flatnonzero((r <= RUNS) & (u <= u_max))
    if rows.size and cols.size:
        aligned = table[prev.u[rows][:, None], prev.r[rows][:, None], u[cols][None, :], r[cols][None, :]]
        width = z * (u[cols] + r[cols])[None, :]
        cost = width - np.minimum(np.minimum(aligned, float(prev.most)), width)  # −inf aligned: no such sets
        h[np.ix_(rows, cols)] = np.maximum(h[np.ix_(rows, cols)], cost)
    return h


def load_reach(weights, row_class, u, capacity) -> np.ndarray:
    """ℓ(u): the most load a part touching u row classes can carry (its capacity, or the u heaviest
    classes whole), in units of the mean class load. The parts together carry the whole layer,
    Σ_p ℓ(u_p) ≥ R: what the class coverage alone does not say (parts touching one class each
    cover R = K classes however few rows they hold)."""
    class_load = np.sort(np.bincount(row_class, weights=weights))[::-1]
    heaviest = np.concatenate([[0.0], np.cumsum(class_load)])
    mean_class_load = max(float(weights.sum()), 1.0) / class_load.size
    return np.minimum(capacity, heaviest[np.minimum(u, class_load.size)]) / mean_class_load


def _placed_costs(h, m, prev: LayerStates, placed, at, z):
    """h with what explicit sets know: between two placed states the exact alignment (the block of
    m the previous set's rows × this set's columns), and into a placed state from any state of u'
    classes the best u' rows over this set's columns. Unplaced states let each table pick its own
    best rows for the same part's classes; a placed set is the same rows in both of its tables."""
    p_u, p_r, p_cyc = prev.u, prev.r, prev.cycles
    h = h.copy()
    by_cols = m @ placed.cols.T  # [previous row class, set]
    best_rows = np.vstack([np.zeros(by_cols.shape[1]), np.cumsum(-np.sort(-by_cols, axis=0), axis=0)])
    aligned = best_rows[np.minimum(p_u, m.shape[0])]  # [previous state, set]
    runs = np.flatnonzero(p_r <= RUNS) if p_cyc and len({x.size for x, _ in p_cyc}) == 1 else []
    if len(runs):  # the previous rows are r' runs of u' classes: the best such runs over each set's columns
        ell = p_cyc[0][0].size
        table = set_runs(by_cols.T, [x for x, _ in p_cyc], 1, ell - 1, int(p_u[runs].max()), RUNS)
        aligned[runs] = np.minimum(aligned[runs], table[p_r[runs], p_u[runs]])
    if prev.placed is not None:
        sel = prev.at >= 0
        aligned[sel] = np.minimum(aligned[sel], (prev.placed.rows @ by_cols)[prev.at[sel]])
    width = z * placed.cols.sum(axis=1)[at[at >= 0]]
    cols = np.flatnonzero(at >= 0)
    exact = width[None, :] - np.minimum(np.minimum(aligned[:, at[cols]], float(prev.most)), width[None, :])
    h[:, cols] = np.maximum(h[:, cols], exact)
    return h


class LayerStates(NamedTuple):
    """A layer's part states as the next layer's table sees them: u and r of each state, the rows a
    part may hold, the row classes, the cycles (None: none), the placed sets (None: none) and each
    state's placed set (−1: not placed)."""
    u: np.ndarray
    r: np.ndarray
    most: int
    row_class: np.ndarray
    cycles: list | None
    placed: Placed | None
    at: np.ndarray


class LayerCosts(NamedTuple):
    """What `layer_costs` returns: per layer h_t, R_t, z_t, the states' u and ⟨π_t, M_t⟩ (0 without
    prices), and how many layers the prices would change (0: a priced pass is the same bound)."""
    costs: list
    counts: list
    sizes: list
    u_states: list
    load_states: list
    offsets: list
    priceable: int


class BoundBudget(Exception):
    """The bound would exceed its time or memory budget: `spdnn bound` reports null and why."""


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def layer_costs(layers, k: int, epsilon: float, progress=None, max_cells: int = STATE_LIMIT, deadline=None,
                max_resident: int | None = None, prices: bool = True, whole_classes: bool = False,
                threads: int = 1):
    """Per layer: h_t as a matrix [state_{t−1}, state_t] (inf where impossible), the row classes
    touched in each state, R_t, the class size z_t and the alignment price ⟨π, M_t⟩ to add back
    once (`alignment_prices`; `prices=False`: none, 0).

    A state is (u, r): u row classes touched and, on layers whose classes form cycles, r ≤ RUNS
    partial runs along them, so that exactly u + r column classes are read; r = RUNS + 1 stands
    for "more runs" or "no cycles" and gets the generic bound (≥ e(u) classes). Only states a
    balanced part can be in: u from the fewest classes whose rows reach the fewest rows a part
    holds. Generic states of many classes share coarse states (`state_groups`): h, u and the load
    are then per coarse state. `threads` build the cycles' alignment tables (`TableCache`)."""
    prev = None  # LayerStates of the layer before
    prev_starts = None  # where each of its coarse states begins (`state_groups`)
    t = 0

    def past_deadline():  # between layers, and inside the longest tables (a 65536-wide layer: minutes)
        if deadline is not None and time.perf_counter() > deadline:
            raise BoundBudget(f"layer {t} of {len(layers)}: the layer tables took longer than --max-seconds")

    cache = TableCache(threads=threads, check=past_deadline)
    costs, counts, sizes, u_states, load_states, offsets = [], [], [], [], [], []
    priceable = 0  # layers whose cells the prices would change
    cells = 0
    for t, w in enumerate(layers, start=1):
        w = sp.csr_matrix(w)
        weights = np.diff(w.indptr).astype(np.int64)
        most, fewest = rows_per_part(weights, k, epsilon)
        rc = identical_rows(w)
        cc = identical_rows(w.T.tocsr())
        n_r, n_c = int(rc.max()) + 1, int(cc.max()) + 1
        u_lo, u_hi = -(-fewest // np.bincount(rc).max()), min(n_r, most)
        capacity = layer_capacity(weights, k, epsilon)
        if whole_classes:  # a part of whole classes holds at most as many as its lightest ones that fit
            light = np.cumsum(np.sort(np.bincount(rc, weights=weights)))
            u_hi = min(u_hi, int(np.searchsorted(light, capacity, side="right")))
        z = np.bincount(cc)
        uniform = bool((z == z[0]).all())
        incidence = class_incidence(rc, cc, w) if uniform else None  # once: cycles, expansion, sets, prices
        cyc = cycles(rc, cc, w, incidence) if uniform else None
        # States from u_lo up: a part touching fewer classes cannot be balanced. (They were tables'
        # columns set to +inf; at N = 16384, K = 8 that was 45 % of the states, and the joint blocks'
        # window maxima for every run and arc length from 1, most of a layer's time.)
        u_of, r_of = [np.arange(u_lo, u_hi + 1)], [np.full(u_hi + 1 - u_lo, RUNS + 1)]
        if cyc:
            u_run = np.arange(u_lo, min(u_hi, u_lo + SPAN) + 1)
            for r in range(RUNS + 1):
                u_of.append(u_run)
                r_of.append(np.full(u_run.size, r))
        placed = None
        if cyc:
            a, c, _, _ = incidence
            reads = np.zeros((n_r, n_c), np.int64)
            reads[a, c] = 1
            placed = placed_sets(cyc, reads, range(u_lo, min(u_hi, u_lo + PLACED_SPAN) + 1), PLACED_LIMIT)
        at = [np.full(sum(x.size for x in u_of), -1)]  # each state's placed set, −1: none
        if placed is not None:
            u_of.append(placed.u)
            r_of.append(placed.r)
            at.append(np.arange(placed.u.size))
        u_of, r_of, at = np.concatenate(u_of), np.concatenate(r_of), np.concatenate(at)
        # a (u, r) whose sets are all placed is only reached through them
        covered = set() if placed is None else set(zip(placed.u.tolist(), placed.r.tolist()))
        unplaced = (at < 0) & np.array([(x, y) in covered for x, y in zip(u_of.tolist(), r_of.tolist())], bool)
        runs = r_of <= RUNS
        starts = state_groups(u_of, r_of, u_lo)
        n_prev = 1 if prev is None else prev.u.size
        cells += (1 if prev_starts is None else prev_starts.size) * starts.size
        if cells > max_cells:
            raise BoundBudget(f"layer {t}: up to {u_hi} row classes per part; the bound's tables would exceed "
                              f"{max_cells * 8 / 1e9:.3g} GB (--max-memory)")
        past_deadline()
        offsets.append(0.0)
        if not uniform:  # classes of different sizes: no per-part bound here, the layer contributes 0
            h = np.zeros((n_prev, u_of.size))
        else:
            zz = float(z[0])
            v = np.arange(n_c + 1)
            m = None
            if prev is None:
                aligned = np.zeros((1, n_c + 1))  # inputs: alignment taken off once, globally
            else:
                p_u, p_r, p_most, p_rc, p_cyc, p_placed, p_at = prev
                aligned = np.full((p_u.size, n_c + 1), float(p_most))
                if (int(p_rc.max()) + 1) * n_c <= DENSE_LIMIT:
                    shape = (int(p_rc.max()) + 1, n_c)  # counts, from float ones: np.add.at took 0.1 s at N = 65536
                    m = np.bincount(p_rc * n_c + cc, np.ones(cc.size), shape[0] * n_c).reshape(shape)
                    if fits(m.shape[0], n_r):
                        priceable += 1
                        if prices:  # the blocks only where they are priced: the plain pass only counts
                            a, c, _, _ = incidence
                            reads = np.split(c, np.flatnonzero(np.diff(a)) + 1)  # pairs sorted by row class
                            pi = cell_prices(m, k, single_class_blocks(m.shape, reads))
                            m, offsets[-1] = m * (1.0 - pi), float((pi * m).sum())
                    np.minimum(aligned, _generic_alignment(m, p_u, cache), out=aligned)  # in place: [prev state, v]
                    if p_cyc:
                        rows, runs_aligned = _row_runs_alignment(m, p_cyc, p_u, p_r, cache)
                        aligned[rows] = np.minimum(aligned[rows], runs_aligned)
                    if p_placed is not None:  # a placed set's rows are known: their best v columns
                        by_rows = p_placed.rows @ m  # [set, column class]
                        top = np.hstack([np.zeros((by_rows.shape[0], 1)),
                                         np.cumsum(-np.sort(-by_rows, axis=1), axis=1)])
                        sel = p_at >= 0
                        aligned[sel] = np.minimum(aligned[sel], top[p_at[sel]])
            np.minimum(aligned, zz * v[None, :], out=aligned)
            if cyc:  # runs states read exactly u + r classes: their columns, before `aligned` turns into minima
                width = u_of[runs] + r_of[runs]
                aligned_at_width = aligned[:, np.minimum(width, n_c)]
                exact = zz * v[None, np.minimum(width, n_c)] - aligned_at_width  # [prev state, runs state]
            # g = zz·v − aligned [prev state, v] (+inf where the previous state is impossible), and its
            # minima over at least v classes, in place
            compiled(_suffix_minima)(aligned, zz)
            suffix = aligned
            e = expansion(rc, cc, w, cyc or False, incidence)  # False: known to have no cycles
            least = e[u_of]  # generic states: at least e(u) classes; with cycles, "more runs": u + RUNS + 1
            if cyc:
                least = np.where(u_of <= u_lo + SPAN, np.maximum(least, u_of + RUNS + 1), least)
            h = suffix[:, np.minimum(least, n_c)]
            h[:, least > n_c] = np.inf
            if cyc:
                if m is not None:
                    cols = _col_runs_alignment(m, cyc, p_u, u_of[runs], r_of[runs], cache)
                    best = np.minimum(aligned_at_width, cols)
                    if p_cyc:
                        best = np.minimum(best, _joint_alignment(m, p_cyc, cyc, p_u, p_r, u_of[runs],
                                                                 r_of[runs], cache))
                    ell = {c.size for _, c in cyc}
                    if p_placed is not None and len(ell) == 1:  # a placed set's rows over r arcs of columns
                        sel = np.flatnonzero(p_at >= 0)
                        table = set_runs(by_rows, [c for _, c in cyc], 2, ell.pop(), int(width.max()), RUNS)
                        best[sel] = np.minimum(best[sel],
                                               table[r_of[runs][None, :], width[None, :], p_at[sel][:, None]])
                    exact = np.maximum(exact, zz * width[None, :] - best)
                exact[:, (width > n_c) | (r_of[runs] > u_of[runs])] = np.inf
                h[:, runs] = exact
                if m is not None and placed is not None:
                    h = _placed_costs(h, m, prev, placed, at, zz)
                joint_max = min(n_r, u_lo + JOINT_SPAN)
                if m is not None and p_cyc and _two_sided_fits(m.shape[0], n_c, joint_max):
                    h = _two_sided_costs(h, m, prev, cyc, u_of, r_of, joint_max, zz, cache)
        h[:, unplaced] = np.inf
        if max_resident is not None and resident_bytes() > max_resident:
            # The tables are budgeted above; this also covers the per-layer work (alignment tables
            # of wide layers: GBs at N >= 16384), so the job never outgrows what it asked for.
            raise BoundBudget(f"layer {t} of {len(layers)}: the bound's memory reached "
                              f"{resident_bytes() / 1e9:.3g} GB (--max-memory)")
        costs.append(_coarse(h, prev_starts, starts))
        counts.append(n_r)
        sizes.append(float(z[0]) if uniform else 0.0)
        u_states.append(np.maximum.reduceat(u_of, starts))
        load_states.append(np.maximum.reduceat(load_reach(weights, rc, u_of, capacity), starts))
        prev, prev_starts = LayerStates(u_of, r_of, most, rc, cyc, placed, at), starts
        if progress:
            progress(t, len(layers))
    return LayerCosts(costs, counts, sizes, u_states, load_states, offsets, priceable)


def _suffix_minima(aligned, z):
    """aligned [prev state, v] → min over v' ≥ v of z·v' − aligned[·, v'] (the fewest words a part
    sends that reads at least v classes), in place: one compiled pass where NumPy's difference and
    reversed running minimum made two more arrays of its size (121 MB a layer at N = 65536). The
    same operations on the same values: the same table."""
    for p in range(aligned.shape[0]):
        running = np.inf
        for v in range(aligned.shape[1] - 1, -1, -1):
            g = z * v - aligned[p, v]
            running = g if g < running else running
            aligned[p, v] = running


def state_groups(u, r, u_lo: int) -> np.ndarray:
    """Where each coarse state begins in a layer's list of states (consecutive states share one).

    Every state is its own, except the generic ones of many classes (u > u_lo + GENERIC_EXACT; runs
    and placed states have r ≤ RUNS), which share one per range of u, BUCKETS_PER_DOUBLING ranges per doubling of u: at
    N = 65536, K = 8 a part may touch 405..4,096 classes, ≈ 4,000 states a layer, and the dynamic
    programme's tables (states²) would pass 15 GB over 120 layers. A shared state costs the least of
    its members and is rewarded as its largest u and load (`_coarse`, `layer_costs`): every path
    over the states maps to one that is no dearer, so the bound stays a bound (a little lower where
    a minimum ran through them). No layer with at most GENERIC_EXACT + 1 generic states (every
    Graph Challenge layer up to N = 4096) is coarsened."""
    far = (r > RUNS) & (u > u_lo + GENERIC_EXACT)
    bucket = np.full(u.size, -1)
    base = max(u_lo + GENERIC_EXACT, 1)  # u_lo is 0 where a part may hold no rows
    bucket[far] = np.floor(np.log2(u[far] / base) * BUCKETS_PER_DOUBLING).astype(np.int64)
    begins = np.ones(u.size, bool)
    begins[1:] = (bucket[1:] < 0) | (bucket[1:] != bucket[:-1])  # the generic states are listed by u
    return np.flatnonzero(begins)


def _coarse(h, prev_starts, starts):
    """h [previous state, state] with each coarse state the least of its members, on both sides
    (h itself where no state shares: every layer up to N = 4096)."""
    shared_cols = starts.size < h.shape[1]
    shared_rows = prev_starts is not None and prev_starts.size < h.shape[0]
    if not (shared_cols or shared_rows):
        return h
    if shared_cols:
        h = np.minimum.reduceat(h, starts, axis=1)
    if shared_rows:
        h = np.minimum.reduceat(h, prev_starts, axis=0)
    return np.asfortranarray(h)


def _chain_minimum(costs, rewards):
    """min over states s_1..s_L of Σ_t (h_t(s_{t−1}, s_t) − rewards_t(s_t)) and the minimising states."""
    f = None
    choices = []
    min_plus = compiled(_min_plus_step)
    for h, reward in zip(costs, rewards):
        reward = np.asarray(reward, np.float64)
        choices.append(np.empty(h.shape[1], np.int64))
        f_next = np.empty(h.shape[1])
        min_plus(np.zeros(1) if f is None else f, f is None, h, reward, choices[-1], f_next)
        f = f_next
    s = int(np.argmin(f))
    value = float(f[s])
    path = [s]
    for choice in reversed(choices[1:]):
        s = int(choice[s])
        path.append(s)
    return value, np.array(path[::-1])


def _min_plus_step(f, first, h, reward, choice, f_next):
    """f_next[j] = min_i f[i] + (h[i, j] − reward[j]) (h[i, j] − reward[j] alone when `first`: no
    previous layer) and the first minimising i, in NumPy's order of the sums: one compiled pass
    over h, where NumPy made two temporaries of its size (the subgradient steps run this over
    every layer 300 times a pass). Column by column: the layer tables are Fortran-ordered."""
    for j in range(h.shape[1]):
        best, arg, r = np.inf, 0, reward[j]
        for i in range(h.shape[0]):
            v = h[i, j] - r if first else f[i] + (h[i, j] - r)
            if v < best:  # strict: the first minimum, as argmin
                best, arg = v, i
        choice[j], f_next[j] = arg, best


def _class_count_bound(layers, widths, k, epsilon, iterations, deadline, budgets, prices, whole_classes=False):
    """The class-count bound (an int ≥ 0), the subgradient steps taken, "time budget" or None, and
    how many layers alignment prices would change.

    Two coverage constraints per layer are moved into the objective: the row classes (Σ_p u ≥ R_t,
    multipliers μ_t) and the load (Σ_p load ≥ the layer's load, in units of the mean class load so
    that it also reads Σ ≥ R_t; multipliers ν_t)."""
    try:
        costs, counts, sizes, u_states, load_states, offsets, priceable = layer_costs(
            layers, k, epsilon, prices=prices, whole_classes=whole_classes, **budgets)
    except MemoryError as e:  # a table larger than the machine: no bound, said as such, not a crash
        raise BoundBudget(f"a layer table needs more memory than is available ({e})") from None
    counts = np.asarray(counts, np.float64)
    taken_back = float(sum(offsets))  # the alignment prices, added back once per layer
    mu = np.asarray(sizes)  # start at the price of one more column class
    # First steps of half a column class (at least 2 words): on the real network (z = 16) a fixed 2
    # left the multipliers short after 300 steps (K = 8 / 32: 89,104 / 149,782; with 8: 89,336 /
    # 149,995; 5–20 within 30 words of it, and 600 steps add nothing).
    reach = max(2.0, 0.5 * float(mu[mu > 0].mean())) if (mu > 0).any() else 2.0
    nu = np.zeros_like(mu)
    best = -np.inf
    layers_at = np.arange(len(costs))
    for i in range(iterations):
        if deadline is not None and i > 0 and time.perf_counter() > deadline:
            return max(0, math.ceil(best - 1e-6)), i, "time budget", priceable
        value, path = _chain_minimum(costs, [m * u + n * x for m, n, u, x in zip(mu, nu, u_states, load_states)])
        best = max(best, k * value + float((mu + nu) @ counts) - widths[0] - taken_back)
        # coverage slack: positive where parts touch too few classes / carry too little load
        grad_u = counts - k * np.array([u_states[t][s] for t, s in zip(layers_at, path)])
        grad_load = counts - k * np.array([load_states[t][s] for t, s in zip(layers_at, path)])
        scale = max(np.abs(grad_u).max(), np.abs(grad_load).max())
        if scale <= 1e-9:
            return max(0, math.ceil(best - 1e-6)), i + 1, None, priceable
        step = reach / math.sqrt(1 + i) / scale
        mu = np.maximum(0.0, mu + step * grad_u)
        nu = np.maximum(0.0, nu + step * grad_load)
    return max(0, math.ceil(best - 1e-6)), iterations, None, priceable


def volume_lower_bound(layers, widths, k: int, epsilon: float = 0.03, iterations: int = 300, progress=None,
                       max_seconds: float | None = None, max_memory_gb: float | None = None,
                       semidefinite=True, note=None, prices: bool = True, whole_classes: bool = False,
                       threads: int = 1) -> dict:
    """Lower bound on Σ_t V_t over all partitions into k parts balanced per layer (see module doc).

    `semidefinite`: True finds the semidefinite certificate (`semidefinite_bound.py`) next, in what
    is left of the budgets; a `Certificate` already found for this network and ε (one serves every
    K) is used as it is; False skips it. With it the larger of the two bounds is reported
    ("lower_bound_classes" and "semidefinite" say what each gave; past a budget the latter says why
    it has none). `whole_classes`: the class-count bound over the partitions that keep every class
    of identical rows in one part only (`benchmarks/whole_class_bound.py`; not a bound on the others).
    `threads`: for the layer tables of cycles (the same bound on any number).

    Budgets: past `max_memory_gb` of DP tables or of the process's resident memory (checked after
    each layer), or `max_seconds` while building them, raises
    `BoundBudget`. Past `max_seconds` in the subgradient steps, the best bound so far is returned
    (every step's value is a valid bound) with `"stopped": "time budget"`."""
    t0 = time.perf_counter()
    if k == 1:
        return {"k": 1, "epsilon": epsilon, "lower_bound_forward": 0, "iterations": 0,
                "seconds": time.perf_counter() - t0}
    deadline = None if max_seconds is None else t0 + max_seconds
    max_cells = STATE_LIMIT if max_memory_gb is None else int(max_memory_gb * 1e9 / 8)
    max_resident = None if max_memory_gb is None else int(max_memory_gb * 1e9)
    passes = 2 if prices else 1
    budgets = dict(max_cells=max_cells, deadline=deadline, max_resident=max_resident, threads=threads)
    if progress:
        budgets["progress"] = lambda t, total: progress(t, passes * total)
    best, steps, stopped, priceable = _class_count_bound(layers, widths, k, epsilon, iterations, deadline, budgets,
                                                         False, whole_classes)
    result = {"k": k, "epsilon": epsilon, "lower_bound_forward": best, "iterations": steps,
              "seconds": time.perf_counter() - t0}
    if stopped:
        result["stopped"] = stopped
    if prices and not priceable:  # every layer's classes too many for prices: the same bound again
        result["lower_bound_unpriced"], result["lower_bound_priced"] = best, None
        result["prices_skipped"] = "no layer has few enough classes for prices"
        if progress:
            progress(2 * len(layers), 2 * len(layers))
    elif prices:
        # Every π is valid, π = 0 included: the prices' bound is kept where it is the larger.
        if progress:
            budgets["progress"] = lambda t, total: progress(total + t, 2 * total)
        try:
            priced, _, stopped, _ = _class_count_bound(layers, widths, k, epsilon, iterations, deadline, budgets, True,
                                                       whole_classes)
            result["lower_bound_unpriced"], result["lower_bound_priced"] = best, priced
            result["lower_bound_forward"] = max(best, priced)
        except BoundBudget as e:
            result["lower_bound_unpriced"], result["lower_bound_priced"] = best, None
            result["prices_skipped"] = str(e)
            stopped = None
        if stopped:
            result["stopped"] = stopped
        result["seconds"] = time.perf_counter() - t0
    if semidefinite is True:
        semidefinite = find_certificate(layers, widths, epsilon, deadline, max_memory_gb, note)
    if semidefinite is not False:
        add_semidefinite(result, semidefinite, k)
        result["seconds"] = time.perf_counter() - t0
    return result


def find_certificate(layers, widths, epsilon, deadline=None, max_memory_gb=None, note=None):
    """The semidefinite certificate in what is left before `deadline` and within `max_memory_gb`
    (the process's resident memory, checked before the solver and after each layer of Q, plus the
    solver's arrays); past either, a string saying why there is none."""
    solver = solver_bytes(sum(widths))

    def check(t):
        if max_memory_gb is not None and resident_bytes() + solver > max_memory_gb * 1e9:
            where = f"layer {t} of {len(widths) - 1}: " if t else ""
            raise SdpBudget(f"{where}the semidefinite bound needs more than {max_memory_gb} GB (--max-memory)")

    left = None if deadline is None else deadline - time.perf_counter()
    try:
        if left is not None and left <= 0:
            raise SdpBudget("no time left for the semidefinite bound (--max-seconds)")
        check(0)
        return semidefinite_certificate(layers, widths, epsilon, max_seconds=left, note=note, after_layer=check)
    except SdpBudget as e:
        return str(e)


def add_semidefinite(result: dict, certificate, k: int) -> None:
    """Put a certificate's bound for k beside the class-count one (a string: why there is none)."""
    result["lower_bound_classes"] = result["lower_bound_forward"]
    if isinstance(certificate, str):
        result["semidefinite"] = {"lower_bound_forward": None, "reason": certificate}
    else:
        result["semidefinite"] = certificate.summary(k)
        result["lower_bound_forward"] = max(result["lower_bound_forward"], result["semidefinite"]["lower_bound_forward"])
