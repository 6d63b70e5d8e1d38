"""Row classes along cycles: the RadiX-Net structure the lower bound (`bound.py`) exploits.

On Graph Challenge layers the incidence row class → column classes is a union of cycles (row
class g reads column classes g and g + s): a part's row classes then split into runs along them,
and u classes in r partial runs read exactly u + r column classes. Here: finding the cycles, the
densest blocks a run or an arc can align (one side, both sides, or an explicit set), and the
explicit sets a part may hold (`placed_sets`). Pure functions of the class-count matrix M_t.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .arrays import compiled, distinct, in_threads, interleaved


def class_incidence(row_class, col_class, w: sp.csr_matrix):
    """(row class, column class) pairs of the layer, each once, sorted by row class; and the counts."""
    n_r, n_c = int(row_class.max()) + 1, int(col_class.max()) + 1
    rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    a, c = np.divmod(distinct(row_class[rows] * n_c + col_class[w.indices], limit=n_r * n_c), n_c)
    return a, c, n_r, n_c


def cycles(row_class, col_class, w: sp.csr_matrix, incidence=None):
    """The incidence row class → column classes as cycles, or None if it is not a union of cycles.

    Each cycle is (rows, cols) with rows[i] reading cols[i] and cols[(i+1) % ℓ]: a run of a < ℓ
    consecutive rows reads the a + 1 consecutive columns from the same start. `incidence`: the
    layer's `class_incidence` where the caller has it."""
    a, c, n_r, n_c = class_incidence(row_class, col_class, w) if incidence is None else incidence
    if not ((np.bincount(a, minlength=n_r) == 2).all() and (np.bincount(c, minlength=n_c) == 2).all()):
        return None
    row_cols = c.reshape(n_r, 2)  # pairs are sorted by row class: two columns each
    col_rows = a[np.argsort(c, kind="stable")].reshape(n_c, 2)
    seen = np.zeros(n_r, bool)
    out = []
    for start in range(n_r):
        if seen[start]:
            continue
        rs, cs = [start], [int(row_cols[start, 0])]
        r, col = start, int(row_cols[start, 1])
        while True:
            seen[r] = True
            cs.append(col)
            nxt = int(col_rows[col, 0] if col_rows[col, 1] == r else col_rows[col, 1])
            if nxt == start:
                break
            rs.append(nxt)
            col = int(row_cols[nxt, 0] if row_cols[nxt, 1] == col else row_cols[nxt, 1])
            r = nxt
        out.append((np.array(rs), np.array(cs[:len(rs)])))
    return out


def arc_bound(m: np.ndarray, cyc, lengths, up_to: int | None = None, threads: int = 1, check=None) -> np.ndarray:
    """best[L, u] ≥ the sum of the best u rows of m over any L consecutive columns of one cycle.

    `cyc` orders m's columns in cycles; u = 0..rows, L = 1..max length (whole cycles included);
    with `up_to`, only L ≤ up_to (the rest −inf): a runs table of at most up_to classes reads no
    longer arc, and at N = 16384 the whole cycle is 1,024 classes for states of ~140. `threads`:
    the lengths dealt out to that many threads (the same table). `check()`, if given, is called
    before each length (it raises to stop: a caller's time budget, minutes into a wide layer)."""
    n_r = m.shape[0]
    best = np.full((lengths + 1, n_r + 1), -np.inf)
    best[0] = 0.0
    last = lengths if up_to is None else min(lengths, up_to)
    nonzeros = sp.csc_matrix(m)  # once: the counting pass takes its cycles' columns from it (0.5 → 0.2 s at 4096²)
    top = _count_range(nonzeros)
    sliding, add_tops = (compiled(_add_tops_sliding), None) if top is not None else (None, compiled(_add_tops))

    def window_tops(cols):
        """add(length, starts, out): `_add_tops` of one cycle's windows of that length."""
        if top is not None:
            # Counts (every Graph Challenge layer's M_t unpriced): a window moves one column at a
            # time, ~16 entries out and ~16 in, so its row sums and their histogram follow it in
            # place and the u best rows are read off the histogram; no window's sums are sorted or
            # even written out. 10× less work at N = 65536 than sorting, the same exact sums.
            c = nonzeros[:, cols]
            values = c.data.astype(np.int64)
            return lambda length, starts, out: sliding(c.indptr, c.indices, values, length, starts, out, top)
        # Prefix sums along the cycle (walked twice, for arcs that wrap), once: every arc length
        # reads its sums from them; [position, row], so that a start's sums are one contiguous row.
        pre = np.ascontiguousarray(np.concatenate(
            [np.zeros((n_r, 1)), np.cumsum(m[:, np.concatenate([cols, cols])], axis=1)], axis=1).T)

        def sorted_tops(length, starts, out):
            sums = pre[length:length + starts] - pre[:starts]  # [start, row]
            sums.sort(axis=1)  # NumPy's sort: vectorised, and it releases the GIL (threads)
            add_tops(sums, out)
        return sorted_tops

    tables = [(cols.size, window_tops(cols)) for _, cols in cyc]

    def fill(length):
        for ell, add in tables:
            if length <= ell:
                best[length, 0] = 0.0
                add(length, ell if length < ell else 1, best[length])

    in_threads(fill, [share + 1 for share in interleaved(last, threads)], check)  # lengths 1..last
    return best


COUNT_LIMIT = 1 << 16  # largest row sum given the counting pass (its histogram's size)


def _count_range(m: sp.csc_matrix) -> int | None:
    """The largest row sum of m when m is a matrix of counts (non-negative integers) whose row sums
    stay within COUNT_LIMIT, else None: then every window's row sums are integers in 0..that.
    From its non-zeros: three passes over a dense 4,096² took 0.15 s."""
    data = m.data
    if 0 in m.shape or (data < 0).any() or not np.array_equal(data, np.floor(data)):
        return None
    top = float(np.bincount(m.indices, weights=data, minlength=m.shape[0]).max())
    return int(top) if top <= COUNT_LIMIT else None


def _add_tops(sums, best):
    """best[u] = max(best[u], the sum of the u largest of sums[s]) for every start s, u ≥ 1; each
    row of `sums` sorted ascending. The running sums in NumPy's cumsum order (the same bits)."""
    n = sums.shape[1]
    for s in range(sums.shape[0]):
        acc = 0.0
        for u in range(n):
            value = sums[s, n - 1 - u]
            acc = value if u == 0 else acc + value
            if acc > best[u + 1]:
                best[u + 1] = acc


def _add_tops_sliding(indptr, rows, values, length, starts, best, top):
    """`_add_tops` for the windows of `length` consecutive columns (of ℓ along one cycle, in CSC
    form; wrapping) starting at 0..starts − 1, when every entry is an integer and every row sum at
    most `top`: exact integers, the same table.

    A start's u best row sums are a concave piecewise linear function of u, one piece per value v
    its row sums take: over the rows whose sum is v (u in lo..hi), b + v·u with b = Σ (w − v)·n_w
    over the values w > v held by n_w rows; past its last non-zero row (v = 0), its total. The
    window's histogram follows it in place (a column in, a column out), so a start costs its
    distinct values, not its non-zero rows (thousands at N = 65536: reading them off one by one
    was most of the bound's time). Then, per slope v, the upper envelope of every start's piece:
    pieces in decreasing b, each writes the points of its range no higher piece wrote (`nxt`: the
    next unwritten point, with path halving), so a point is written once a slope."""
    n, ell = best.size - 1, indptr.size - 1
    sums = np.zeros(n, np.int64)
    counts = np.zeros(top + 1, np.int64)
    counts[0] = n
    # slope, lo, hi, b of each piece; written out to `best` when a start's pieces might not fit
    # (a start has at most top + 1), as fixed arrays: growing them in the loop cost 80 % more.
    cap = 8 * starts + top + 2
    slope, lo = np.empty(cap, np.int64), np.empty(cap, np.int64)
    hi, b = np.empty(cap, np.int64), np.empty(cap, np.int64)
    pieces = 0
    first = np.empty(top + 2, np.int64)
    nxt = np.arange(n + 2)
    last = starts + length - 2
    for s in range(last + 1):  # column s enters; for s ≥ length, column s − length leaves
        if s >= length:
            col = (s - length) % ell
            for e in range(indptr[col], indptr[col + 1]):
                a = rows[e]
                counts[sums[a]] -= 1
                sums[a] -= values[e]
                counts[sums[a]] += 1
        col = s % ell
        for e in range(indptr[col], indptr[col + 1]):
            a = rows[e]
            counts[sums[a]] -= 1
            sums[a] += values[e]
            counts[sums[a]] += 1
        if s < length - 1:
            continue
        acc, u = 0, 0  # the sum of the u best rows so far
        for value in range(top, -1, -1):
            c = counts[value] if value > 0 else n - u
            if c == 0:
                continue
            slope[pieces], lo[pieces], hi[pieces], b[pieces] = value, u + 1, u + c, acc - value * u
            pieces += 1
            acc += value * c
            u += c
        if pieces <= cap - (top + 2) and s < last:
            continue
        # The pieces by slope (a counting sort), then each slope's in decreasing b.
        first[:] = 0
        for j in range(pieces):
            first[slope[j] + 1] += 1
        for value in range(top + 1):
            first[value + 1] += first[value]
        by_slope, at = np.empty(pieces, np.int64), first[:-1].copy()
        for j in range(pieces):
            by_slope[at[slope[j]]] = j
            at[slope[j]] += 1
        for value in range(top + 1):
            group = by_slope[first[value]:first[value + 1]]
            if group.size == 0:
                continue
            keys = b[group]
            k_max = keys.max()
            if k_max > 4 * group.size + 4096:  # a counting sort's array would outgrow the pieces
                order = group[np.argsort(-keys)]
            else:
                start = np.zeros(k_max + 2, np.int64)
                for key in keys:
                    start[k_max - key + 1] += 1
                for i in range(k_max + 1):
                    start[i + 1] += start[i]
                order = np.empty(group.size, np.int64)
                for j in range(group.size):
                    order[start[k_max - keys[j]]] = group[j]
                    start[k_max - keys[j]] += 1
            low, high = lo[group].min(), hi[group].max()
            nxt[low:high + 2] = np.arange(low, high + 2)
            for j in order:
                i = lo[j]
                while nxt[i] != i:  # the first unwritten point from lo on
                    nxt[i] = nxt[nxt[i]]
                    i = nxt[i]
                while i <= hi[j]:
                    x = float(b[j] + value * i)
                    if x > best[i]:
                        best[i] = x
                    nxt[i] = i + 1
                    i += 1
                    while nxt[i] != i:
                        nxt[i] = nxt[nxt[i]]
                        i = nxt[i]
        pieces = 0


def runs_bound(piece: np.ndarray, lo: int, hi: int, whole: int, total_max: int, runs_max: int,
               threads: int = 1, check=None, wanted: np.ndarray | None = None) -> np.ndarray:
    """out[r, x, ·] ≥ the alignment of r partial runs (lengths lo..hi) plus any number of whole
    cycles (length `whole`), x in total; `piece[L, ·]` bounds one run of length L (`arc_bound`).

    Each piece takes its own best rows, so the sum bounds the union from above; −inf marks an
    impossible (r, x). `threads`: the last axis split between that many threads (the same table);
    `check()`, if given, before each number of runs (seconds a level at N = 65536).

    `wanted` (bool [runs_max + 1, total_max + 1]): the cells a caller reads, where that is few of
    them (a layer's runs states span ≈ 18 totals of ≈ 420 at N = 65536). Runs counts up to half
    of runs_max are built for every total as above; above half, r runs are the best first half
    runs plus the best r − half others (`_split_runs`), only at the wanted totals and those whole
    cycles reach them from, where that is less work; the cells left out are +inf (no bound, so
    that a cell read by mistake weakens the bound, never breaks it). Max-plus sums of the same
    pieces: the same values at the wanted cells (bit for bit where the pieces are integers, as
    every count table is; otherwise up to the order of the additions)."""
    n = piece.shape[1]
    out = np.full((runs_max + 1, total_max + 1, n), -np.inf)
    out[0, 0] = 0.0
    hi = min(hi, total_max)
    add_runs, split, piece = compiled(_add_runs), compiled(_split_runs), np.ascontiguousarray(piece, np.float64)
    blocks = [v for v in np.array_split(np.arange(n), max(1, min(threads, n))) if v.size]  # contiguous: no cache line shared
    half = (runs_max + 1) // 2
    totals = None if wanted is None else _split_totals(wanted, lo, hi, whole, half)
    for r in range(1, runs_max + 1):
        if check is not None:
            check()
        if r == 1:  # 0 + piece[L]: one run is the piece itself
            out[1, lo:hi + 1] = piece[lo:hi + 1]
        elif totals is not None and r > half:
            out[r] = np.inf
            spans = (half * lo, half * hi, (r - half) * lo, (r - half) * hi)  # where each half is finite
            in_threads(lambda v, r=r, spans=spans: split(out[half], out[r - half], totals[r], *spans, out[r], v[0],
                                                         v[-1] + 1), [[v] for v in blocks])
        else:
            in_threads(lambda v, r=r: add_runs(piece, lo, hi, out, r, v[0], v[-1] + 1), [[v] for v in blocks])
    with np.errstate(invalid="ignore"):  # +inf (left out) + a −inf piece: NaN, which fmax passes over
        for x in range(whole, total_max + 1):
            out[:, x] = np.fmax(out[:, x], out[:, x - whole] + piece[whole][None, :])
    return out


def _add_runs(piece, lo, hi, out, r, v_lo, v_hi):
    """out[r, x, v] = max(out[r, x, v], max over L in lo..hi of out[r − 1, x − L, v] + piece[L, v])
    for v in v_lo..v_hi − 1: one more run, in one compiled pass (NumPy's slices took a second a
    table at N = 16384)."""
    for length in range(lo, hi + 1):
        add = piece[length]
        for x in range(length, out.shape[1]):
            before, after = out[r - 1, x - length], out[r, x]
            for v in range(v_lo, v_hi):  # a select, not a branch: the loop vectorises
                candidate, current = before[v] + add[v], after[v]
                after[v] = candidate if candidate > current else current


def _split_totals(wanted: np.ndarray, lo: int, hi: int, whole: int, half: int) -> list | None:
    """Per runs count r > half, the totals `runs_bound` builds as two halves: the wanted ones and
    those whole cycles reach them from (x − i·whole); None where that is no less work than
    building every total from r − 1 runs."""
    x_max = wanted.shape[1] - 1
    totals, split_work = [None] * wanted.shape[0], 0
    per_level = sum(x_max + 1 - length for length in range(lo, hi + 1))  # `_add_runs`' sums a level
    for r in range(half + 1, wanted.shape[0]):
        reach = wanted[r].copy()
        for start in range(whole, x_max + 1, whole):  # x is needed when x + whole is
            reach[:x_max + 1 - start] |= wanted[r, start:]
        xs = np.flatnonzero(reach)
        # the first half's totals y: half·lo..half·hi, and x − y within (r − half)·lo..(r − half)·hi
        ys = (np.minimum(half * hi, xs - (r - half) * lo) - np.maximum(half * lo, xs - (r - half) * hi) + 1)
        split_work += int(np.maximum(ys, 0).sum())
        totals[r] = xs
    return totals if split_work < (wanted.shape[0] - 1 - half) * per_level else None


def _split_runs(first, second, xs, first_lo, first_hi, second_lo, second_hi, out, v_lo, v_hi):
    """out[x, v] = max over y of first[y, v] + second[x − y, v] (−inf where no y fits) for x in xs,
    y in first_lo..first_hi, x − y in second_lo..second_hi (outside them the tables are −inf)."""
    for x in xs:
        row = out[x]
        for v in range(v_lo, v_hi):
            row[v] = -np.inf
        for y in range(max(first_lo, x - second_hi), min(first_hi, x - second_lo) + 1):
            a, b = first[y], second[x - y]
            for v in range(v_lo, v_hi):  # a select, not a branch: the loop vectorises
                candidate, current = a[v] + b[v], row[v]
                row[v] = candidate if candidate > current else current


def joint_arc_bound(m: np.ndarray, row_orders: np.ndarray, col_orders: np.ndarray, run_lengths, arc_lengths,
                    threads: int = 1, check=None) -> dict:
    """best[(a, b)] = the largest sum of m over a run of a consecutive rows along one of
    row_orders' cycles times an arc of b consecutive columns along one of col_orders' cycles
    (exact), for a in run_lengths and b in arc_lengths (0 < a ≤ ℓ_r, 0 < b ≤ ℓ_c).

    row_orders [cycles, ℓ_r] and col_orders [cycles, ℓ_c] list m's rows and columns in cycle order.
    This is the part whose rows were one partial run in the previous layer and are one partial run
    in this one: both sides restricted at once, where `arc_bound` restricts one side only. Only the
    lengths asked for are computed: the runs states span SPAN + 1 sizes, while 1..ℓ would be
    ℓ_r·ℓ_c passes over the whole matrix (minutes a layer at N = 4096). `threads`: the run lengths
    dealt out to that many threads (the same table); `check()` as in `arc_bound`, before each."""
    lr, lc = row_orders.shape[1], col_orders.shape[1]
    rr = np.concatenate([row_orders, row_orders], axis=1)
    cc = np.concatenate([col_orders, col_orders], axis=1)
    sub = m[rr[:, None, :, None], cc[None, :, None, :]]  # [row cycle, col cycle, 2ℓ_r, 2ℓ_c]
    pre = np.zeros(sub.shape[:2] + (2 * lr + 1, 2 * lc + 1))
    pre[:, :, 1:, 1:] = sub.cumsum(axis=2).cumsum(axis=3)
    runs, arcs = np.asarray(run_lengths, np.int64), np.asarray(arc_lengths, np.int64)
    best = np.full((runs.size, arcs.size), -np.inf)
    window_maxima = compiled(_window_maxima)
    in_threads(lambda i: window_maxima(pre, runs, arcs, lr, lc, best, i), interleaved(runs.size, threads), check)
    return {(int(a), int(b)): float(best[i, j]) for i, a in enumerate(runs) for j, b in enumerate(arcs)}


def _window_maxima(pre, runs, arcs, lr, lc, best, i):
    """best[i, j] for every j = the largest sum of a window of runs[i] × arcs[j] consecutive cells
    along the cycles, from the 2-D prefix sums `pre` [row cycle, column cycle, 2ℓ_r + 1, 2ℓ_c + 1] (a window
    as long as its cycle: one start). One compiled pass; the four terms in NumPy's order (the same
    sums, bit for bit), a row window's two prefix rows read once for every arc length: NumPy's
    window arrays took a minute a layer at N = 16384 (1,024 row classes, 115 × 115 lengths)."""
    a = runs[i]
    starts_r = lr if a < lr else 1
    for x in range(pre.shape[0]):
        for y in range(pre.shape[1]):
            for s in range(starts_r):
                hi, lo = pre[x, y, a + s], pre[x, y, s]
                for j in range(arcs.size):
                    b = arcs[j]
                    n = lc if b < lc else 1
                    hi_b, lo_b = hi[b:b + n], lo[b:b + n]
                    top = best[i, j]
                    for t in range(n):
                        top = max(top, hi_b[t] - lo_b[t] - hi[t] + lo[t])
                    best[i, j] = top


class Placed(NamedTuple):
    """Explicit row-class sets a part may hold in a layer, tracked as states of their own: the
    classes (rows [set, row class]), the column classes they read (cols [set, column class]), u, r."""
    rows: np.ndarray
    cols: np.ndarray
    u: np.ndarray
    r: np.ndarray


def placed_sets(cyc, reads: np.ndarray, sizes, limit: int) -> Placed | None:
    """The sets of `sizes` row classes that are one partial run along the layer's cycles (every
    start), then the unions of whole cycles (every choice), while at most `limit` sets in all. Each
    family is all or nothing, so the state (u, r) it covers needs no unplaced stand-in. `reads`
    [row class, column class] is the layer's incidence; cycles of different lengths: None."""
    if not cyc or len({r.size for r, _ in cyc}) != 1:
        return None
    ell, n_r = cyc[0][0].size, reads.shape[0]
    sets, us, rs = [], [], []
    runs = [u for u in sizes if 0 < u < ell]
    if runs and len(runs) * n_r <= limit:
        for u in runs:
            for rows, _ in cyc:
                sets += [rows[(s + np.arange(u)) % ell] for s in range(ell)]
            us += [u] * n_r
            rs += [1] * n_r
    for u in sizes:
        if u > 0 and u % ell == 0 and len(sets) + math.comb(len(cyc), u // ell) <= limit:
            for chosen in itertools.combinations(range(len(cyc)), u // ell):
                sets.append(np.concatenate([cyc[i][0] for i in chosen]))
                us.append(u)
                rs.append(0)
    if not sets:
        return None
    rows = np.zeros((len(sets), n_r), bool)
    for i, x in enumerate(sets):
        rows[i, x] = True
    return Placed(rows, (rows.astype(np.int64) @ reads) > 0, np.array(us), np.array(rs))


def set_runs(weights: np.ndarray, orders, lo: int, hi: int, total_max: int, runs_max: int) -> np.ndarray:
    """out[r, x, s] ≥ the largest sum of weights[s] over r partial runs (lengths lo..hi) along the
    cycles `orders` plus whole cycles, x classes in all (`runs_bound` on each set's best single runs):
    what a placed set aligns with a part whose other side is only known as runs."""
    ell = orders[0].size
    order = np.stack(orders)  # [cycle, ℓ]
    pre = np.zeros(weights.shape[:1] + order.shape[:1] + (2 * ell + 1,))
    pre[:, :, 1:] = np.cumsum(weights[:, np.concatenate([order, order], axis=1)], axis=2)
    piece = np.zeros((ell + 1, weights.shape[0]))
    for length in range(1, ell + 1):
        starts = np.arange(ell if length < ell else 1)
        piece[length] = (pre[:, :, starts + length] - pre[:, :, starts]).max(axis=(1, 2))
    return runs_bound(piece, lo, hi, ell, total_max, runs_max)
