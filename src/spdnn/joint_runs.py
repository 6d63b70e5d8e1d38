"""How much a part whose rows are runs in two consecutive layers can align (`bound.py`).

A part's alignment at layer t is the number of its rows of layer t − 1 whose columns of layer t
it reads: ⟨1_R, M_t 1_C⟩ with R the row classes it touches in layer t − 1 and C the column classes
its row classes of layer t read. On RadiX-Net layers both are structured: R is r' partial runs
along the previous layer's cycles (plus whole cycles), C the u + r columns read by u row classes
in r partial runs along this layer's cycles. The bound's other tables restrict one side at a time
(the best r arcs over any rows, or the best rows over any columns), and on the real Graph Challenge
network that grants a part of two or three runs 40–50 % more alignment than any such part has (one
boundary at K = 8: 58 and 74 neurons, where the best parts of 2 and 3 runs in both layers align 41
and 50).

Here both sides at once:

* `best_reads` is exact for one weight vector per previous set: the heaviest columns that u row
  classes in r partial runs (and whole cycles) read, by a dynamic program along each cycle and a
  max-plus product over the cycles;
* `two_sided_alignment` applies it to every single partial run and every single whole cycle of the
  previous layer (exact for those), then bounds a set of several such pieces by the sum of its
  pieces' bests (each piece takes its own best columns, so the sum can only be larger: valid).

All are pure functions of M_t and the cycles (`cycle_runs.cycles`).
"""

from __future__ import annotations

import numpy as np

_NONE = -np.inf


def _cycle_reads(weights: np.ndarray, u_max: int, runs_max: int) -> np.ndarray:
    """out[s, u, r]: the largest weights[s]-sum of the columns that u rows of one cycle, in r partial
    runs (u < ℓ) or the whole cycle (u = ℓ, r = 0), read; weights[s, i] is column i's weight, read by
    rows i − 1 and i (cyclically: the `cycles` order, where row i reads columns i and i + 1)."""
    n, ell = weights.shape
    # The cycle is cut before row 0. Axis 0 is row ℓ − 1's membership, assumed at the start (it
    # decides whether column 0 is read, and whether a member row 0 starts a run or continues the
    # one that wraps) and required at the end. f[last, s, u, r, previous row a member].
    f = np.full((2, n, u_max + 1, runs_max + 1, 2), _NONE)
    f[0, :, 0, 0, 0] = f[1, :, 0, 0, 1] = 0.0
    g = np.empty_like(f)
    for i in range(ell):
        w = weights[None, :, i, None, None]
        np.maximum(f[..., 0], f[..., 1] + w, out=g[..., 0])  # row i out: column i read iff row i − 1 in
        g[:, :, 0, :, 1] = _NONE
        np.add(f[:, :, :-1, :, 1], w, out=g[:, :, 1:, :, 1])  # row i in, continuing a run
        np.maximum(g[:, :, 1:, 1:, 1], f[:, :, :-1, :-1, 0] + w, out=g[:, :, 1:, 1:, 1])  # ... or starting one
        f, g = g, f
    out = np.maximum(f[0, ..., 0], f[1, ..., 1])  # row ℓ − 1 as assumed
    out[:, 1:, 0] = _NONE  # members without a start: the whole cycle, set exactly below
    if ell <= u_max:
        out[:, ell, 0] = weights.sum(axis=1)
    return out


def _max_plus(a: np.ndarray, b: np.ndarray, u_max: int, runs_max: int) -> np.ndarray:
    """out[s, u, r] = max over u1 + u2 = u, r1 + r2 = r of a[s, u1, r1] + b[s, u2, r2]."""
    some_a, some_b = np.isfinite(a).any(axis=0), np.isfinite(b).any(axis=0)
    if some_a.sum() > some_b.sum():
        a, b, some_a = b, a, some_b  # loop over the sparser side (a short cycle's table)
    out = np.full_like(a, _NONE)
    for u1, r1 in zip(*np.nonzero(some_a), strict=True):
        x = a[:, u1, r1]
        out[:, u1:, r1:] = np.maximum(out[:, u1:, r1:], x[:, None, None] + b[:, :u_max + 1 - u1, :runs_max + 1 - r1])
    return out


def best_reads(weights: np.ndarray, cyc, u_max: int, runs_max: int) -> np.ndarray:
    """out[s, u, r] (exact): the largest sum of weights[s] (one weight per column class) over the
    column classes read by u row classes forming r partial runs and any whole cycles along `cyc`;
    −inf where no such set exists."""
    out = None
    for _, cols in cyc:
        table = _cycle_reads(weights[:, cols], u_max, runs_max)
        out = table if out is None else _max_plus(out, table, u_max, runs_max)
    return out


def _pieces(prev_cyc, n_rows: int, u_max: int):
    """Row indicators [piece, row class] of every partial run (length ≤ u_max) and every whole
    cycle (length ≤ u_max) along the previous layer's cycles, each piece's length, and whether it
    is a run."""
    rows, sizes, is_run = [], [], []
    for order, _ in prev_cyc:
        ell = order.size
        lengths = [(length, True) for length in range(1, min(u_max, ell - 1) + 1)]
        if ell <= u_max:
            lengths.append((ell, False))
        for length, run in lengths:
            for start in range(ell if run else 1):
                x = np.zeros(n_rows)
                x[order[(start + np.arange(length)) % ell]] = 1.0
                rows.append(x)
                sizes.append(length)
                is_run.append(run)
    return np.array(rows).reshape(-1, n_rows), np.array(sizes, int), np.array(is_run, bool)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """out[x] = max over x1 + x2 = x of a[x1] + b[x2] (a, b: [size, u, r] tables of one side)."""
    out = np.full_like(a, _NONE)
    for x1 in range(a.shape[0]):
        if np.isneginf(a[x1]).all():
            continue
        out[x1:] = np.maximum(out[x1:], a[x1][None] + b[:a.shape[0] - x1])
    return out


def two_sided_alignment(m: np.ndarray, prev_cyc, cyc, u_max: int, runs_max: int) -> np.ndarray:
    """A[u', r', u, r] ≥ ⟨1_R, m 1_C⟩ for every R of u' row classes of layer t − 1 in r' partial
    runs plus whole cycles along `prev_cyc`, and every C read by u row classes of layer t in r
    partial runs plus whole cycles along `cyc` (u, u' ≤ u_max; r, r' ≤ runs_max); −inf where no
    such R or C exists. m [previous row class, column class] counts the neurons in both.

    Exact where R is one partial run or one whole cycle; a set of several pieces gets the sum of
    its pieces' best alignments (sizes split every way), each over its own best C."""
    n_rows = m.shape[0]
    rows, sizes, is_run = _pieces(prev_cyc, n_rows, u_max)
    tables = best_reads(rows @ m, cyc, u_max, runs_max)  # [piece, u, r]
    run_best = np.full((u_max + 1,) + tables.shape[1:], _NONE)
    cycle_best = np.full_like(run_best, _NONE)
    for best, chosen in ((run_best, is_run), (cycle_best, ~is_run)):
        for size in np.unique(sizes[chosen]):
            best[size] = tables[chosen & (sizes == size)].max(axis=0)
    # Whole cycles, any number of them (each its own piece): closure of the max-plus product.
    wholes = np.full_like(run_best, _NONE)
    wholes[0] = 0.0
    for _ in range(u_max):
        more = np.maximum(wholes, _compose(wholes, cycle_best))
        if np.array_equal(more, wholes):
            break
        wholes = more
    out = np.full((u_max + 1, runs_max + 1) + tables.shape[1:], _NONE)
    current = wholes
    out[:, 0] = wholes  # u' = 0: the empty set, alignment 0
    for r in range(1, runs_max + 1):
        current = _compose(current, run_best)
        out[:, r] = current
    return out
