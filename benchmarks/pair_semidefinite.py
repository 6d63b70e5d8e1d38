"""K = 2: a lower bound from the layer-pair decomposition of the three-state model, each pair's
minimum bounded from below by a semidefinite relaxation and certified from the solver's dual.

The model and the decomposition are `layer_pairs.py`'s: every row class of a layer is whole on
side 0, whole on side 1, or split (its rows out of the balance, free as owners); with a price μ per
split row that telescopes, the forward volume of every balanced partition is at least
Σ_t min over the states of layers t − 1 and t of [cost_t + μ·rows split in t − 1 − μ·rows split
in t]. Each pair's minimum is a problem over about 128 classes in three states, too large to solve
exactly here (`benchmarks/README.md`); this script bounds it from below instead.

The relaxation. Give class c the one-hot indicators x_c = (x_c0, x_c1, x_cS) and relax the matrix
of products M = [1 x][1 x]ᵀ to: M ⪰ 0, M ≥ 0, M_00 = 1, diag M = x, the one-hot rows Σ_s x_cs = 1
and their products with every indicator (Σ_s M[cs, k] = x_k), each layer's capacity
Σ_c w_c x_cσ ≤ cap and its products with x_k and with 1 − x_k (so the balance sees which classes
share a side). Column j (readers' classes R_j, owner class o) costs 1 − Σ_σ [R_j all whole on σ]·[o
split or on σ]; each product of indicators is at most any of its pairwise products, so with p_jσ ≤
M[gσ, hσ] for readers g ≠ h of R_j and p_jσ ≤ M[gσ, oσ] + M[gσ, oS] for g in R_j (owner-free inputs:
p_jσ ≤ x_gσ), the cost 1 − p_j0 − p_j1 is never above the column's. One reader class is kept off
side 1 (flipping both layers' sides costs the same). Columns with the same readers and owner class
are one term, counted with their number.

Lifted (`--lift`). A column of two reader classes g, h costs a product of three indicators, which
the pairwise products see only loosely. The lift gives "g and h both whole on σ" an indicator u of
its own, a row and column of M, tied to x_gσ and x_hσ by u·x_g = u·x_h = u and by u ≤ x_g, u ≤ x_h,
u ≥ x_g + x_h − 1 each multiplied by every other indicator and by its complement; then the column's
term is the entry u·(owner on σ or split) itself. It only adds constraints to a larger matrix, so
it is never weaker: on the real network's layer 8, 361.8 words against 338.1 (its whole-class ceiling
NS_t: 420), at about 4 times the time (the layer's 64 reader pairs, two states each: 128 more rows).

The certificate. SCS solves min cᵀx, Ax + s = b, s ∈ K to a tolerance only, so the value it reports
proves nothing. Its dual y, projected onto K* (non-negative parts clipped, the semidefinite part's
negative eigenvalues dropped), proves cᵀx ≥ −bᵀy − Σ_i |(Aᵀy + c)_i| for every feasible x, since
every variable lies in [−1, 1] (M ⪰ 0 with diag M = x ∈ [0, 1]; 0 ≤ p_jσ ≤ x_gσ through the one-hot
products). That is each pair's bound; the script prints their sum. Up to floating-point rounding in
the residual, it is a proof.

    python benchmarks/pair_semidefinite.py NET.h5 [--epsilon 0.03] [--mu 0.5] [--layers A:B] [--lift A:B] [--jobs 2]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import scipy.sparse as sp
import scs
from layer_pairs import class_readers

from spdnn.errors import UserError
from spdnn.hypergraph import identical_rows
from spdnn.network import read_network
from spdnn.volume import layer_capacity

SQRT2 = math.sqrt(2.0)
MAX_DIM = 800  # indicators of one pair (three per class, 1 + 3·256 at the two layers' most): SCS's memory grows as its square


class _Rows:
    """Rows of A (as triplets) and b, added cone by cone."""

    def __init__(self):
        self.i, self.j, self.v, self.b = [], [], [], []

    def add(self, cols, vals, rhs):
        row = len(self.b)
        self.i.extend([row] * len(cols))
        self.j.extend(cols)
        self.v.extend(vals)
        self.b.append(rhs)


class _Index:
    """Where each indicator sits in M: 0 the constant, then three per reader class, three per owner
    class, and (lifted) two per reader pair: "both whole on σ"."""

    def __init__(self, n_r: int, n_o: int, pairs: list):
        self.n_r, self.n_o = n_r, n_o
        self.pair_at = {pq: i for i, pq in enumerate(pairs)}
        self.dim = 1 + 3 * (n_r + n_o) + 2 * len(pairs)
        self.n_m = self.dim * (self.dim + 1) // 2

    def state(self, c: int, s: int) -> int:
        """Class c's indicator of state s; readers' classes first (c < n_r), then owners'."""
        return 1 + 3 * c + s

    def reader(self, g: int, s: int) -> int:
        return self.state(g, s)

    def owner(self, o: int, s: int) -> int:
        return self.state(self.n_r + o, s)

    def both(self, pq: tuple, sigma: int) -> int:
        return 1 + 3 * (self.n_r + self.n_o) + 2 * self.pair_at[pq] + sigma

    def m(self, i: int, j: int) -> int:
        """The variable of M[i, j]: its position in SCS's svec (lower triangle, by columns)."""
        i, j = max(i, j), min(i, j)
        return j * self.dim - j * (j - 1) // 2 + (i - j)


def _indicators(ix: _Index, zero: _Rows, nonneg: _Rows) -> None:
    """M_00 = 1, diag M = x, M ≥ 0, each class one state, times every indicator."""
    m, dim = ix.m, ix.dim
    zero.add([m(0, 0)], [1.0], 1.0)
    for i in range(1, dim):
        zero.add([m(i, i), m(0, i)], [1.0, -1.0], 0.0)
    for c in range(ix.n_r + ix.n_o):
        states = [ix.state(c, s) for s in range(3)]
        zero.add([m(0, k) for k in states], [1.0] * 3, 1.0)
        for k in range(1, dim):
            zero.add([m(s, k) for s in states] + [m(0, k)], [1.0, 1.0, 1.0, -1.0], 0.0)
    zero.add([m(0, ix.reader(0, 1))], [1.0], 0.0)  # against the flip symmetry
    for i in range(dim):
        for j in range(i + 1, dim):
            nonneg.add([m(i, j)], [-1.0], 0.0)


def _balance(ix: _Index, nonneg: _Rows, idx: list, weight, capacity: int) -> None:
    """Σ w x ≤ cap, times x_k and times 1 − x_k for every indicator k."""
    m, weight, capacity = ix.m, [float(x) for x in weight], float(capacity)
    for k in range(ix.dim):
        nonneg.add([m(i, k) for i in idx] + [m(0, k)], weight + [-capacity], 0.0)
        if k:
            nonneg.add([m(0, i) for i in idx] + [m(i, k) for i in idx] + [m(0, k)],
                       weight + [-x for x in weight] + [capacity], capacity)


def _both(ix: _Index, zero: _Rows, nonneg: _Rows, pq: tuple, sigma: int) -> None:
    """u = x_a·x_b for the pair's indicators a, b on σ: u·x_a = u·x_b = u, and each of u ≤ x_a,
    u ≤ x_b, u ≥ x_a + x_b − 1 times x_k and times 1 − x_k for every other indicator k."""
    m = ix.m
    a, b, q = ix.reader(pq[0], sigma), ix.reader(pq[1], sigma), ix.both(pq, sigma)
    zero.add([m(q, a), m(0, q)], [1.0, -1.0], 0.0)
    zero.add([m(q, b), m(0, q)], [1.0, -1.0], 0.0)
    for k in range(ix.dim):
        if k in (q, a, b):
            continue
        nonneg.add([m(q, k), m(a, k)], [1.0, -1.0], 0.0)
        nonneg.add([m(q, k), m(b, k)], [1.0, -1.0], 0.0)
        nonneg.add([m(a, k), m(b, k), m(0, k), m(q, k)], [1.0, 1.0, -1.0, -1.0], 0.0)
        if k:
            nonneg.add([m(0, q), m(q, k), m(0, a), m(a, k)], [1.0, -1.0, -1.0, 1.0], 0.0)
            nonneg.add([m(0, q), m(q, k), m(0, b), m(b, k)], [1.0, -1.0, -1.0, 1.0], 0.0)
            nonneg.add([m(0, a), m(a, k), m(0, b), m(b, k), m(0, q), m(q, k)],
                       [1.0, -1.0, 1.0, -1.0, -1.0, 1.0], 1.0)


def _column_term(ix: _Index, nonneg: _Rows, col: int, readers: tuple, o: int, sigma: int, lift: bool) -> None:
    """p (variable `col`) ≤ every pairwise product of the column's term on σ (module doc); lifted,
    also ≤ u·(owner on σ or split), the term itself for two readers."""
    m = ix.m
    nonneg.add([col], [-1.0], 0.0)
    for g, h in itertools.combinations(readers, 2):
        nonneg.add([col, m(ix.reader(g, sigma), ix.reader(h, sigma))], [1.0, -1.0], 0.0)
    terms = [ix.reader(g, sigma) for g in readers]
    if lift and len(readers) == 2:
        terms.append(ix.both(readers, sigma))
    for t in terms:
        if o < 0:  # free owners (the inputs)
            nonneg.add([col, m(0, t)], [1.0, -1.0], 0.0)
        else:
            nonneg.add([col, m(t, ix.owner(o, sigma)), m(t, ix.owner(o, 2))], [1.0, -1.0, -1.0], 0.0)


def pair_problem(prev_layer, layer, epsilon: float, mu_owner: float, mu_reader: float, lift: bool = False):
    """SCS data (A, b, c), cones and the objective's constant for one layer pair (prev_layer None:
    the inputs, owners free and unpriced). `lift`: add the products "both readers of a column whole
    on σ" as indicators of their own (module doc)."""
    cls, size, cw, readers = class_readers(layer)
    n_r = int(cls.max()) + 1
    balance = [(cw, layer_capacity(np.diff(sp.csr_matrix(layer).indptr), 2, epsilon), _Index.reader)]
    n_o, o_cls, o_size = 0, None, None
    if prev_layer is not None:
        prev_rows = np.diff(sp.csr_matrix(prev_layer).indptr)
        o_cls = identical_rows(prev_layer)
        n_o = int(o_cls.max()) + 1
        o_size = np.bincount(o_cls)
        balance.append((np.bincount(o_cls, weights=prev_rows), layer_capacity(prev_rows, 2, epsilon), _Index.owner))
    groups: dict = {}  # (reader classes, owner class or −1) → columns
    for j, rc in enumerate(readers):
        if rc.size:
            key = (tuple(int(g) for g in rc), -1 if o_cls is None else int(o_cls[j]))
            groups[key] = groups.get(key, 0) + 1
    pairs = sorted({rc for rc, _ in groups if len(rc) == 2}) if lift else []
    ix = _Index(n_r, n_o, pairs)
    n_x = ix.n_m + 2 * len(groups)
    zero, nonneg = _Rows(), _Rows()
    _indicators(ix, zero, nonneg)
    for weight, capacity, at in balance:  # at: where a class's state sits (`_Index.reader` / `.owner`)
        for s in (0, 1):
            _balance(ix, nonneg, [at(ix, c, s) for c in range(weight.size)], weight, capacity)
    for pq in pairs:
        for sigma in (0, 1):
            _both(ix, zero, nonneg, pq, sigma)
    c = np.zeros(n_x)
    for gi, ((rc, o), columns) in enumerate(groups.items()):
        for sigma in (0, 1):
            col = ix.n_m + 2 * gi + sigma
            _column_term(ix, nonneg, col, rc, o, sigma, lift)
            c[col] = -columns
    for g in range(n_r):
        c[ix.m(0, ix.reader(g, 2))] -= mu_reader * size[g]
    for o in range(n_o):
        c[ix.m(0, ix.owner(o, 2))] += mu_owner * o_size[o]
    # the semidefinite cone: s = svec(M), off-diagonal entries scaled by √2
    diag = np.zeros(ix.n_m, bool)
    diag[[ix.m(i, i) for i in range(ix.dim)]] = True
    rows_z, rows_l = len(zero.b), len(nonneg.b)
    A = sp.vstack([
        sp.csr_matrix((zero.v, (zero.i, zero.j)), shape=(rows_z, n_x)),
        sp.csr_matrix((nonneg.v, (nonneg.i, nonneg.j)), shape=(rows_l, n_x)),
        sp.hstack([sp.diags(-np.where(diag, 1.0, SQRT2)), sp.csr_matrix((ix.n_m, n_x - ix.n_m))]),
    ]).tocsc()
    b = np.concatenate([zero.b, nonneg.b, np.zeros(ix.n_m)])
    return {"A": A, "b": b, "c": c}, {"z": rows_z, "l": rows_l, "s": [ix.dim]}, float(sum(groups.values()))


def _project_psd(v: np.ndarray, dim: int) -> np.ndarray:
    """svec v (SCS's order and scaling) projected onto the semidefinite cone."""
    rows, cols = np.tril_indices(dim)
    order = np.lexsort((rows, cols))  # by column, then row: SCS's order
    r, q = rows[order], cols[order]
    mat = np.zeros((dim, dim))
    off = r != q
    mat[r, q] = np.where(off, v / SQRT2, v)
    mat[q, r] = mat[r, q]
    w, u = np.linalg.eigh(mat)
    mat = (u * np.maximum(w, 0.0)) @ u.T
    return np.where(off, mat[r, q] * SQRT2, mat[r, q])


def certified_bound(data, cone, constant: float, y: np.ndarray) -> float:
    """A lower bound on the relaxation's minimum (plus `constant`) from any dual y (module doc)."""
    y = y.copy()
    z, nonneg = cone["z"], cone["l"]  # rows: z equalities, then `nonneg` inequalities, then the matrix
    y[z:z + nonneg] = np.maximum(y[z:z + nonneg], 0.0)
    y[z + nonneg:] = _project_psd(y[z + nonneg:], cone["s"][0])
    residual = data["A"].T @ y + data["c"]
    return constant - float(data["b"] @ y) - float(np.abs(residual).sum())


def pair_bound(prev_layer, layer, epsilon: float, mu_owner: float, mu_reader: float, lift: bool = False,
               eps: float = 1e-4, max_iters: int = 20_000) -> tuple[float, float, int]:
    """(certified lower bound on the pair's minimum, SCS's primal value, iterations). SCS's
    tolerance `eps` only decides how close the certificate comes to the relaxation's minimum."""
    data, cone, constant = pair_problem(prev_layer, layer, epsilon, mu_owner, mu_reader, lift)
    solver = scs.SCS(data, cone, verbose=False, eps_abs=eps, eps_rel=eps, max_iters=max_iters)
    sol = solver.solve()
    return (certified_bound(data, cone, constant, sol["y"]), constant + float(data["c"] @ sol["x"]),
            int(sol["info"]["iter"]))


def _span(text: str | None, L: int) -> range:
    """'A:B' (1-based, B excluded) → the 0-based layer indices; None → none."""
    if text is None:
        return range(0)
    lo, hi = (int(x) for x in text.split(":"))
    if not 1 <= lo < hi <= L + 1:
        raise UserError(f"layers {text}: give A:B with 1 ≤ A < B ≤ {L + 1}")
    return range(lo - 1, hi - 1)


def _one(args):
    t, prev_layer, layer, epsilon, mu_owner, mu_reader, lift = args
    start = time.perf_counter()
    return (t, lift, *pair_bound(prev_layer, layer, epsilon, mu_owner, mu_reader, lift), time.perf_counter() - start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("network")
    ap.add_argument("--epsilon", type=float, default=0.03)
    ap.add_argument("--mu", type=float, default=0.5, help="price per split row (telescoped; ½ measured best)")
    ap.add_argument("--layers", default=None, help="A:B, the pairs of layers A..B−1 only (1-based): a partial sum")
    ap.add_argument("--lift", default=None, help="A:B, the layers whose pairs get the lifted relaxation (stronger, "
                                                 "about 2 min a 128-class pair against 15–40 s on the real network)")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    layers = read_network(args.network).layers
    L = len(layers)
    try:
        span = _span(args.layers, L) if args.layers else range(L)
        lifted = set(_span(args.lift, L))
        classes = [int(identical_rows(w).max()) + 1 for w in layers]  # once a layer, not once a pair
        for t in span:
            size = 1 + 3 * (classes[t] + (classes[t - 1] if t else 0))
            if size > MAX_DIM:
                raise UserError(f"layer {t + 1}: its pair has {size} indicators (three per row class) > {MAX_DIM}; "
                                f"this bound is for networks whose rows repeat in classes")
    except UserError as e:
        print(f"pair_semidefinite: {e}", file=sys.stderr)
        return 2
    # the inputs' owners are free and unpriced; the last layer's readers are not refunded
    work = [(t, layers[t - 1] if t else None, layers[t], args.epsilon, args.mu if t else 0.0,
             0.0 if t == L - 1 else args.mu, t in lifted) for t in span]
    total, start = 0.0, time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for t, lift, bound, primal, iters, seconds in pool.map(_one, work):
            total += bound
            print(f"layer {t + 1}: pair bound {bound:.2f}{' (lifted)' if lift else ''} (SCS primal {primal:.2f}, "
                  f"{iters} iterations, {seconds:.0f} s; {time.perf_counter() - start:.0f} s in all)", flush=True)
    whole = len(span) == L
    print(f"{args.network}: {'' if whole else f'layers {span.start + 1}..{span.stop}: '}the layer-pair semidefinite "
          f"bound at μ = {args.mu}: {total:,.3f} words at K = 2, ε = {args.epsilon}, {len(lifted & set(span))} pairs lifted"
          # volumes are integers; the margin covers the rounding in the certificates' residuals
          + (f" (so ≥ {math.ceil(total - 1e-3):,} for every balanced partition)" if whole else " (a partial sum)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
