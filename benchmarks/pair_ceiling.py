"""How high can a semidefinite bound that averages over reader pairs go at K = 2? A ceiling.

Why: the semidefinite bound (`semidefinite_bound.py`, 36,229 words on the real Graph Challenge
1024×120 at K = 2) charges each column an *average*, over pairs (i, k) of its readers, of

    ([y_i ≠ a] + [y_k ≠ a] + [y_i ≠ y_k])/2 = (3 − ⟨x_i, a⟩ − ⟨x_k, a⟩ − ⟨x_i, x_k⟩)/4   (K = 2, a the owner),

and relaxes the ±1 labels to unit vectors. The released form averages over the pairs of readers in
different row classes; its variants tried (pairs inside a class mixed in, the pairs reweighed
towards the worst ones between rounds: benchmarks/README.md) moved it by −2.4 % to +1.3 %. Any
weights π_j on column j's pairs (i = k included: (1 − ⟨x_i, a⟩)/2) give a valid bound, and none
can give more than the relaxation with each column's *largest* pair term:

    bound(π) ≤ min over unit vectors x, balanced, of Σ_j Σ_(i,k) π_j(i,k)·M_j(i,k)(x) ≤ Σ_j max_(i,k) M_j(i,k)(x̂)

for every balanced x̂ (‖Σ_{i∈t} x̂_i‖² ≤ s_t(2)², the balance the bound allows, as in
`AgreementForm.slack_squared`). So a balanced x̂ with a low Σ_j max M_j is a ceiling on the whole
family at K = 2, the released bound included: no choice of pair weights can prove more. At ±1
labels the max-pair sum is the volume exactly (a reader away from the owner makes its own pair
(i, i) cost 1), so the relaxation's minimum sits between the family's best bound and the optimum,
and x̂'s cost above that minimum by however far the search stops short of it.

x̂ is found by L-BFGS over rank-r unit rows on the max made smooth (τ·log Σ exp(M/τ), τ lowered
in stages), balance by a penalty on the excess over s_t²/2; each stage's max-pair value at its x̂
is printed (float64), with the largest ‖Σ x̂‖² / s² (≤ 1: the ceiling holds).

`--triangles WEIGHT` asks how much room is left for a stronger bound of the same kind: the ±1 labels
also satisfy the triangle inequalities among a column's owner and any two of its readers
(s·⟨x_i, a⟩ + s'·⟨x_k, a⟩ + s·s'·⟨x_i, x_k⟩ ≥ −1, s, s' = ±1), which the relaxation drops; their
squared violations are penalised, and the value is printed with the largest violation left (a
ceiling for bounds that add those inequalities only where none is left; otherwise an estimate).

    python benchmarks/pair_ceiling.py NET.h5 [--epsilon 0.03] [--rank 16] [--steps 250] [--stages 4] [--triangles W]

Exit 1 if the last configuration is not balanced (then no ceiling is claimed).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp

from spdnn.hypergraph import vertex_offsets
from spdnn.network import read_network
from spdnn.semidefinite_bound import AgreementForm

STAGES = ((0.05, 1.0), (0.02, 4.0), (0.01, 16.0), (0.005, 64.0))  # (τ, penalty weight × n_t) per stage


class ColumnPairs:
    """Per layer t ≥ 1: each column's readers (rows of layer t, padded to the layer's largest
    count by repeating a reader, which leaves every max unchanged), the columns that have readers,
    and the sparse sums that carry a gradient back to the rows."""

    def __init__(self, layers, widths):
        self.widths = [int(w) for w in widths]
        self.offsets = vertex_offsets(self.widths)
        self.readers, self.owners, self.gather_rows, self.gather_owners = [], [], [], []
        for t in range(1, len(self.widths)):
            wc = sp.csc_matrix(layers[t - 1])
            count = np.diff(wc.indptr)
            owners = np.flatnonzero(count)
            m = int(count.max(initial=1))
            pad = np.minimum(np.arange(m)[None, :], count[owners, None] - 1)  # repeat the last reader
            readers = wc.indices[wc.indptr[owners, None] + pad]
            n_t, flat = self.widths[t], readers.size
            self.readers.append(readers)
            self.owners.append(owners)
            self.gather_rows.append(sp.csr_matrix((np.ones(flat), (readers.ravel(), np.arange(flat))),
                                                  shape=(n_t, flat)))
            self.gather_owners.append(sp.csr_matrix((np.ones(owners.size), (owners, np.arange(owners.size))),
                                                    shape=(self.widths[t - 1], owners.size)))

    def layer(self, x, t):
        return x[self.offsets[t]:self.offsets[t + 1]]

    def terms(self, x, t, dtype=np.float64):
        """M(i, k) = (3 − ⟨x_i, a⟩ − ⟨x_k, a⟩ − ⟨x_i, x_k⟩)/4 per column of layer t (columns × m × m)."""
        reader = self.layer(x, t)[self.readers[t - 1]].astype(dtype)
        owner = self.layer(x, t - 1)[self.owners[t - 1]].astype(dtype)
        along = (reader @ owner[:, :, None])[:, :, 0]
        return (3 - along[:, :, None] - along[:, None, :] - reader @ reader.transpose(0, 2, 1)) / 4, reader, owner


def max_pair_words(pairs: ColumnPairs, x: np.ndarray) -> float:
    """Σ_j max_(i,k) M_j(i, k) at unit rows x (float64): the volume itself at ±1 labels."""
    return words_and_shortfall(pairs, x)[0]


def words_and_shortfall(pairs: ColumnPairs, x: np.ndarray) -> tuple[float, float]:
    """(`max_pair_words`, `triangle_shortfall`) from one pass over the layers' pair terms."""
    words, worst = 0.0, 0.0
    for t in range(1, len(pairs.widths)):
        m_t = pairs.terms(x, t)[0]
        words += float(m_t.max(axis=(1, 2)).sum())
        worst = max([worst] + [float(-1 - side.min()) for _, _, side in triangle_sides(m_t)])
    return words, worst


def imbalance_ratio(pairs: ColumnPairs, x: np.ndarray, slack: np.ndarray) -> float:
    """max_t ‖Σ_{i∈t} x_i‖² / s_t² over layers t ≥ 1 (≤ 1: balanced as the bound requires)."""
    sums = np.add.reduceat(x, pairs.offsets[:-1], axis=0)
    return float(np.max(np.sum(sums[1:] ** 2, axis=1) / np.maximum(slack[1:], 1e-12)))


def triangle_sides(m_t: np.ndarray):
    """The four triangle inequalities of ±1 labels among a column's owner a and readers i, k,
    s·⟨x_i, a⟩ + s'·⟨x_k, a⟩ + s·s'·⟨x_i, x_k⟩ ≥ −1, as left-hand sides from M = (3 − h_i − h_k − G_ik)/4
    (h: along the owner, G: the readers' Gram matrix); (s, s', that side) per sign pair."""
    h = (1 - 2 * np.einsum("cii->ci", m_t))  # M_ii = (1 − h_i)/2
    gram = 3 - h[:, :, None] - h[:, None, :] - 4 * m_t
    for s, s2 in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        yield s, s2, s * h[:, :, None] + s2 * h[:, None, :] + s * s2 * gram


def _triangle_penalty(m_t, weight, d_along, d_gram) -> float:
    """weight·Σ max(0, −1 − side)² over the triangle sides; adds its gradient (in h and G) in place."""
    total = 0.0
    for s, s2, side in triangle_sides(m_t):
        short = np.maximum(0, -1 - side)
        total += float(weight * np.sum(short.astype(np.float64) ** 2))
        d_side = -2 * weight * short
        d_along += s * d_side.sum(axis=2) + s2 * d_side.sum(axis=1)
        d_gram += s * s2 * (d_side + d_side.transpose(0, 2, 1))
    return total


def triangle_shortfall(pairs: ColumnPairs, x: np.ndarray) -> float:
    """The largest violation, max(0, −1 − side), of the triangle inequalities over every column's
    owner and pair of readers (0: x satisfies all of them)."""
    return words_and_shortfall(pairs, x)[1]


def smoothed_objective(pairs: ColumnPairs, slack: np.ndarray, tau: float, weight: float, rank: int,
                       triangles: float = 0.0):
    """f(w) = Σ_j τ·log Σ exp(M_j/τ) + Σ_t (weight/n_t)·max(0, ‖Σ_t x‖² − s_t²/2) (+ `triangles`
    times the squared violations of the triangle inequalities, `triangle_sides`), x = w's rows
    normalised, and its gradient in w (float32 inside: the max and the gradient's direction only)."""
    n = pairs.offsets[-1]
    counts = np.diff(pairs.offsets)

    def f(flat):
        w = flat.reshape(n, rank)
        norms = np.linalg.norm(w, axis=1, keepdims=True)
        x = w / norms
        grad = np.zeros_like(x)
        value = 0.0
        for t in range(1, len(pairs.widths)):
            m_t, reader, owner = pairs.terms(x, t, np.float32)
            top = m_t.max(axis=(1, 2), keepdims=True)
            e = np.exp((m_t - top) * np.float32(1 / tau))
            z = e.sum(axis=(1, 2), keepdims=True)
            value += float((top + tau * np.log(z)).astype(np.float64).sum())
            p = e / z  # dvalue/dM
            d_along = -(p.sum(axis=2) + p.sum(axis=1)) / 4
            d_gram = -(p + p.transpose(0, 2, 1)) / 4
            if triangles:
                value += _triangle_penalty(m_t, triangles, d_along, d_gram)
            d_reader = d_gram @ reader + d_along[:, :, None] * owner[:, None, :]
            d_owner = (d_along[:, None, :] @ reader)[:, 0, :]
            a, b = pairs.offsets[t], pairs.offsets[t + 1]
            grad[a:b] += pairs.gather_rows[t - 1] @ d_reader.reshape(-1, rank).astype(np.float64)
            grad[pairs.offsets[t - 1]:a] += pairs.gather_owners[t - 1] @ d_owner.astype(np.float64)
        sums = np.add.reduceat(x, pairs.offsets[:-1], axis=0)
        excess = np.sum(sums ** 2, axis=1) - slack / 2
        active = (excess > 0) & (np.arange(excess.size) > 0)
        scale = np.where(active, weight / counts, 0.0)
        value += float(np.sum(scale * excess))
        grad += np.repeat(2 * scale[:, None] * sums, counts, axis=0)
        grad -= x * np.sum(grad * x, axis=1, keepdims=True)  # the part that moves along the sphere
        return value, (grad / norms).ravel()

    return f


def pair_ceiling(layers, widths, epsilon: float = 0.03, rank: int = 16, steps: int = 250,
                 stages=STAGES, seed: int = 0, triangles: float = 0.0, note=None) -> tuple[float, float, float, np.ndarray]:
    """(max-pair words at the last x̂, its imbalance ratio, its triangle shortfall, x̂): a ceiling on every pair-average
    semidefinite bound at K = 2 when the ratio is ≤ 1 (module doc). `triangles` > 0 also pushes x̂
    towards the triangle inequalities (`triangle_sides`; module doc)."""
    pairs = ColumnPairs(layers, widths)
    row_weights = [np.diff(sp.csr_matrix(w).indptr).astype(np.int64) for w in layers]
    slack = AgreementForm(None, 0.0, pairs.offsets, row_weights).slack_squared(2, epsilon)
    n = pairs.offsets[-1]
    flat = np.random.default_rng(seed).standard_normal(n * rank)
    t0 = time.perf_counter()
    for tau, weight in stages:
        res = so.minimize(smoothed_objective(pairs, slack, tau, weight, rank, triangles), flat, jac=True,
                          method="L-BFGS-B", options={"maxiter": steps, "maxcor": 8})
        flat = res.x
        x = flat.reshape(n, rank) / np.linalg.norm(flat.reshape(n, rank), axis=1, keepdims=True)
        (words, short), ratio = words_and_shortfall(pairs, x), imbalance_ratio(pairs, x, slack)
        if note:
            note(f"τ = {tau}: max-pair words {words:,.1f}, ‖Σx‖²/s² ≤ {ratio:.4f}, triangle inequalities "
                 f"violated by ≤ {short:.4f}, {res.nit} steps, {time.perf_counter() - t0:.0f} s")
    return words, ratio, short, x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network")
    ap.add_argument("--epsilon", type=float, default=0.03)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=250, help="L-BFGS steps per stage")
    ap.add_argument("--stages", type=int, default=len(STAGES), choices=range(1, len(STAGES) + 1))
    ap.add_argument("--triangles", type=float, default=0.0, metavar="WEIGHT",
                    help="penalise violations of the triangle inequalities among a column's owner and two readers")
    args = ap.parse_args(argv)
    net = read_network(args.network)
    words, ratio, short, _ = pair_ceiling(net.layers, net.widths, args.epsilon, args.rank, args.steps,
                                   STAGES[:args.stages], triangles=args.triangles, note=lambda s: print(s, flush=True))
    if ratio > 1:
        print(f"{args.network}: the last configuration is not balanced (‖Σx‖²/s² = {ratio:.3f} > 1): no ceiling",
              file=sys.stderr)
        return 1
    if args.triangles:  # a ceiling for bounds that also use the triangle inequalities only where none is violated
        print(f"{args.network}: with the triangle inequalities (violated by ≤ {short:.4f}), a balanced configuration "
              f"of unit vectors costs {words:,.1f} words at K = 2, ε = {args.epsilon}"
              + (": no pair-average bound with them exceeds it" if short == 0 else " (an estimate, not a ceiling)"))
        return 0
    print(f"{args.network}: no pair-average semidefinite bound at K = 2, ε = {args.epsilon} exceeds "
          f"{words:,.1f} words (a balanced configuration of unit vectors costing that much)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
