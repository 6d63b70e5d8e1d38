"""A lower bound on the forward volume of every partition balanced in every layer (`spdnn bound`).

A partitioner's volume says little on its own: this bound says how much any partition with the
same K and ε must send, so a target below it is out of reach and the gap above it is what a
better partitioner could still win. It holds for every network; it is strong where rows repeat
(RadiX-Net and the Graph Challenge networks: 16 identical rows per group) and weak on random ones.

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

Parts are coupled only through coverage (Σ_p u_t^p ≥ R_t, every row class is held somewhere),
which is moved into the objective with multipliers μ_t ≥ 0 (weak duality):

    V ≥ K · min_{u_0..u_L} Σ_t (h_t(u_{t−1}, u_t) − μ_t u_t) + Σ_t μ_t R_t − n_0,

(layer 1's alignment with the weightless inputs is at most n_0 in total). The inner minimum is a
shortest path over u (`_chain_minimum`); μ is improved by projected subgradient steps and every
iterate is a valid bound: the best is reported. Layers whose column classes differ in size
contribute 0 (still valid).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .errors import UserError
from .hypergraph import identical_rows
from .volume import balance_bound

EXACT_SUBSETS = 50_000  # enumerate row subsets of S_t(u, ·) exactly while C(R, u) stays below this
DENSE_LIMIT = 1 << 25  # largest M_t kept dense; beyond it the alignment is bounded by cap alone
STATE_LIMIT = 200_000_000  # Σ_t (states of u_{t−1}) × (states of u_t): the DP's memory, 8 bytes each


def rows_per_part(weights: np.ndarray, k: int, epsilon: float) -> tuple[int, int]:
    """(most, fewest) rows one part can hold when every part is within the balance bound."""
    bound = balance_bound(weights, k, epsilon)
    most = int(np.searchsorted(np.cumsum(np.sort(weights)), bound, side="right"))
    return most, max(0, weights.size - (k - 1) * most)


def expansion(row_class, col_class, w: sp.csr_matrix) -> np.ndarray:
    """e[u] ≤ the number of column classes read by any u row classes (u = 0..R).

    Always: counting incidences, e(u) ≥ ⌈u·d_row/d_col⌉ with d_row the fewest classes a row class
    reads and d_col the most row classes reading one column class. Sharper where the incidence is
    a union of cycles (RadiX-Net layers): u row classes that are not whole cycles read ≥ u + 1."""
    n_r, n_c = int(row_class.max()) + 1, int(col_class.max()) + 1
    rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    pairs = np.unique(row_class[rows] * n_c + col_class[w.indices])
    a, c = np.divmod(pairs, n_c)
    d_row, d_col = np.bincount(a, minlength=n_r), np.bincount(c, minlength=n_c)
    u = np.arange(n_r + 1)
    e = np.maximum(np.where(u > 0, d_row.min(), 0), -(-u * d_row.min() // max(int(d_col.max()), 1)))
    if (d_row == 2).all() and (d_col == 2).all():  # union of even cycles
        graph = sp.coo_matrix((np.ones(a.size), (a, n_r + c)), shape=(n_r + n_c,) * 2)
        _, label = connected_components(graph, directed=False)
        whole = np.zeros(n_r + 1, bool)  # u reachable as a union of whole cycles
        whole[0] = True
        for length in np.bincount(label[:n_r]):
            if length:
                whole[length:] |= whole[:-length].copy()
        e = np.maximum(e, u + ~whole)
    return np.minimum(e, n_c)


def submatrix_bound(m: np.ndarray, u_max: int) -> np.ndarray:
    """S[u, v] ≥ the largest sum of a u-row × v-column submatrix of m ≥ 0 (u ≤ u_max, v ≤ columns).

    Exact for the u whose row subsets are few enough to enumerate; otherwise the smallest of three
    relaxations (best u rows each with its own best v columns; the transpose; and, when all row
    sums and all column sums are equal, the expander mixing lemma
    sum ≤ total·u·v/(R·C) + σ₂·√(u(1 − u/R)·v(1 − v/C)) with σ₂ the second singular value),
    tightened by subadditivity over the exact sizes."""
    n_r, n_c = m.shape
    u_max = min(u_max, n_r)
    row_best = np.cumsum(-np.sort(-m, axis=1), axis=1)  # [a, v-1]: row a's best v columns
    col_best = np.cumsum(-np.sort(-m, axis=0), axis=0)  # [u-1, c]: column c's best u rows
    s = np.zeros((u_max + 1, n_c + 1))
    by_rows = np.cumsum(-np.sort(-row_best, axis=0), axis=0)  # [u-1, v-1]
    by_cols = np.cumsum(-np.sort(-col_best, axis=1), axis=1)  # [u-1, v-1]
    s[1:, 1:] = np.minimum(by_rows[:u_max], by_cols[:u_max])
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    if n_r > 1 and n_c > 1 and np.ptp(rows) == 0 and np.ptp(cols) == 0:
        # biregular: the top singular pair is (total/√(RC), 1/√R, 1/√C) and the rest is bounded by σ₂
        sigma2 = np.linalg.svd(m, compute_uv=False)[1] * (1 + 1e-9) + 1e-9
        u = np.arange(u_max + 1)[:, None].astype(float)
        v = np.arange(n_c + 1)[None, :].astype(float)
        mixing = m.sum() * u * v / (n_r * n_c) + sigma2 * np.sqrt(u * (1 - u / n_r) * v * (1 - v / n_c))
        s = np.minimum(s, mixing + 1e-7)
    exact = [u for u in range(1, u_max + 1) if math.comb(n_r, u) <= EXACT_SUBSETS]
    for u in exact:
        best = np.zeros(n_c)
        for chunk in _batched(itertools.combinations(range(n_r), u), 4096):
            sums = m[np.asarray(chunk)].sum(axis=1)  # [subset, column]
            best = np.maximum(best, np.cumsum(-np.sort(-sums, axis=1), axis=1).max(axis=0))
        s[u, 1:] = np.minimum(s[u, 1:], best)
    for u in range(2, u_max + 1):
        for a in exact:
            if a < u:
                s[u] = np.minimum(s[u], s[u - a] + s[a])
    return s


def _batched(iterable, size):
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def layer_costs(layers, k: int, epsilon: float, progress=None):
    """h_t as matrices [u_{t−1}, u_t] (inf where a u is impossible), R_t and the class size z_t per layer."""
    caps, row_classes, costs, counts, sizes = [None], [None], [], [], []
    cache: dict = {}
    states = 0
    for t, w in enumerate(layers, start=1):
        w = sp.csr_matrix(w)
        weights = np.diff(w.indptr).astype(np.int64)
        most, fewest = rows_per_part(weights, k, epsilon)
        rc = identical_rows(w)
        cc = identical_rows(w.T.tocsr())
        n_r, n_c = int(rc.max()) + 1, int(cc.max()) + 1
        size = np.bincount(rc).max()
        u_lo, u_hi = -(-fewest // size), min(n_r, most)
        z = np.bincount(cc)
        states += (1 if t == 1 else caps[-1][0] + 1) * (u_hi + 1)
        if states > STATE_LIMIT:
            raise UserError(f"bound: layer {t}: up to {u_hi} row classes per part; the bound's tables would exceed "
                            f"{STATE_LIMIT * 8 / 1e9:.1f} GB (too many distinct rows per part; use fewer layers or a larger K)")
        h = np.full((1 if t == 1 else caps[-1][0] + 1, u_hi + 1), np.inf)
        sizes.append(float(z[0]) if (z == z[0]).all() else 0.0)
        if (z == z[0]).all():
            e = expansion(rc, cc, w)[:u_hi + 1]
            v = np.arange(n_c + 1)
            if t == 1:
                aligned = np.zeros((1, n_c + 1))  # inputs: alignment taken off once, globally
            else:
                (prev_u, prev_cap), prev_rc = caps[-1], row_classes[-1]
                if (int(prev_rc.max()) + 1) * n_c <= DENSE_LIMIT:
                    m = np.zeros((int(prev_rc.max()) + 1, n_c))
                    np.add.at(m, (prev_rc, cc), 1)
                    key = (m.tobytes(), m.shape, prev_cap)
                    if key not in cache:
                        cache[key] = submatrix_bound(m, prev_u)
                    aligned = cache[key][:prev_u + 1]
                else:
                    aligned = np.full((prev_u + 1, n_c + 1), np.inf)
                aligned = np.minimum(aligned, prev_cap)
            g = z[0] * v[None, :] - np.minimum(aligned, z[0] * v[None, :])
            suffix = np.minimum.accumulate(g[:, ::-1], axis=1)[:, ::-1]  # min over v ≥ e(u)
            h[:, :] = suffix[:, e]
        else:  # classes of different sizes: no per-part bound here, the layer contributes 0
            h[:, :] = 0.0
        h[:, :u_lo] = np.inf
        costs.append(h)
        counts.append(n_r)
        caps.append((u_hi, most))
        row_classes.append(rc)
        if progress:
            progress(t, len(layers))
    return costs, counts, sizes


def _chain_minimum(costs, mu):
    """min over u_1..u_L of Σ_t (h_t(u_{t−1}, u_t) − μ_t u_t) and the minimising u."""
    f = None
    choices = []
    for t, h in enumerate(costs):
        step = h - mu[t] * np.arange(h.shape[1])[None, :]
        total = step if f is None else f[:, None] + step
        choices.append(total.argmin(axis=0))
        f = total[choices[-1], np.arange(total.shape[1])]
    u = int(np.argmin(f))
    value = float(f[u])
    path = [u]
    for choice in reversed(choices[1:]):
        u = int(choice[u])
        path.append(u)
    return value, np.array(path[::-1])


def volume_lower_bound(layers, widths, k: int, epsilon: float = 0.03, iterations: int = 300, progress=None) -> dict:
    """Lower bound on Σ_t V_t over all partitions into k parts balanced per layer (see module doc)."""
    t0 = time.perf_counter()
    if k == 1:
        return {"k": 1, "epsilon": epsilon, "lower_bound_forward": 0, "iterations": 0,
                "seconds": time.perf_counter() - t0}
    costs, counts, sizes = layer_costs(layers, k, epsilon, progress)
    counts = np.asarray(counts, np.float64)
    mu = np.asarray(sizes)  # start at the price of one more column class
    best = -np.inf
    for i in range(iterations):
        value, path = _chain_minimum(costs, mu)
        best = max(best, k * value + float(mu @ counts) - widths[0])
        grad = counts - k * path  # coverage slack: positive where parts touch too few classes
        if not grad.any():
            break
        mu = np.maximum(0.0, mu + 2.0 / math.sqrt(1 + i) * grad / np.abs(grad).max())
    bound = max(0, math.ceil(best - 1e-6))
    return {"k": k, "epsilon": epsilon, "lower_bound_forward": int(bound), "iterations": i + 1,
            "seconds": time.perf_counter() - t0}
