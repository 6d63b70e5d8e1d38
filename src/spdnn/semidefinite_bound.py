"""A semidefinite lower bound on the forward volume of every balanced partition (`spdnn bound`).

The class-count bound (`bound.py`) is near 0 wherever rows do not repeat (random and pruned
networks) and loose at K = 2 on the Graph Challenge networks, where it sees one layer at a time.
This one sees every layer at once, through one quadratic form, and needs no repeated rows.

Derivation. Label part p by the unit vector e_p of a regular simplex (⟨e_p, e_q⟩ = −1/(K−1) for
p ≠ q; K = 2: spins ±1), so [p ≠ q] = (K−1)(1 − ⟨e_p, e_q⟩)/K. Column j of layer t (neuron j of
layer t−1, owner a) with readers R (the rows of layer t that read it, m = |R| ≥ 1) sends
w_j = |{parts of R} − {a}| words. For any two readers i, k, w_j ≥ |{y_i, y_k} − {a}| ≥ ([y_i ≠ a] +
[y_k ≠ a] + [y_i ≠ y_k])/2 (check the five cases; equality at K = 2), so w_j is at least any
average of those: over the ordered pairs of readers in different row classes of layer t (when R
holds one class only: over the distinct pairs; m = 1: [y ≠ a]). In Gram terms, with x_i the label
vectors, S = Σ_R x, S_g the sum over reader class g, m_g its size and P = m² − Σ_g m_g²:

    w_j ≥ (2(K−1)/K)·(3/4 − (2 Σ_R ρ_i⟨a, x_i⟩ + (‖S‖² − Σ_g ‖S_g‖²)/P)/4)     (m = 1: (2(K−1)/K)(1/2 − ⟨a, y⟩/2)),

ρ_i = (m − m_g(i))/P the share of the pairs that reader i is in (1/m where j's reader classes are
of one size; with 1/m for every reader the right-hand side exceeded w_j on unequal classes: a
class of 1 with a, one of 3 away from it gives 1.25 for 1 word).

at K = 2 equal to w_j whenever j's readers agree (so on a partition that keeps identical rows
together, the sum below is exactly its volume). Summed: V ≥ (2(K−1)/K)·(c − ⟨Q, X⟩), X the Gram
matrix of the labels (X ⪰ 0, diag X = 1), Q block tridiagonal over the layers and the same for
every K. Balance: in layer t ≥ 1, ‖Σ_{i∈t} x_i‖² = (K·Σ_p n_p² − n_t²)/(K−1) ≤ s_t(K)², n_p the
part sizes, at most the most rows a part may hold (`rows_per_part`). So with μ_t > 0

    ⟨Q, X⟩ = ⟨Q', X⟩ + Σ_t μ_t ‖Σ_{i∈t} x_i‖² ≤ ⟨Q', X⟩ + Σ_t μ_t s_t(K)²,   Q' = Q − Σ_t μ_t 1_t 1_tᵀ,

and for every vector y, ⟨Q', X⟩ = ⟨Q' − diag y, X⟩ + Σ y ≤ n·max(0, λ_max(Q' − diag y)) + Σ y (the
dual of the semidefinite relaxation). So

    V ≥ (2(K−1)/K)·(c − Σ y − n·max(0, λ_max(Q' − diag y)) − Σ_t μ_t s_t(K)²)

for *every* y and μ: their choice only decides how strong it is, and one (y, μ) serves every K.
y comes from a rank-r solution of the relaxation (rows v_i of V unit vectors, tr VᵀQ'V maximised
by L-BFGS over unnormalised rows): y_i = v_iᵀ(Q'V)_i, the relaxation's multipliers at a stationary
point. λ_max is computed by Lanczos (ARPACK) and raised by the Ritz pair's residual norm. Lanczos
alone proves nothing (it can miss the top of the spectrum), so λ is then *verified*: λI − (Q' −
diag y) is block tridiagonal over the layers, and it is positive definite iff every Schur complement
S_t = D_t − Q_{t,t−1} S_{t−1}⁻¹ Q_{t−1,t} of its block LDLᵀ factorisation has a Cholesky factor
(`eigenvalue_verified`; dense n_t × n_t blocks, so only where the layers are at most VERIFY_WIDTH
wide and the work fits VERIFY_FLOPS). Where a factor fails, λ is raised and checked again. A
verified certificate is a proof up to floating-point rounding (λ keeps a margin of about the
Lanczos tolerance); an unverified one holds to the Lanczos solver's accuracy. The relaxation drops
⟨x_i, x_k⟩ ≥ −1/(K−1), so beyond K = 2 it is weaker than it could be. Memory: Q (the pairs of
rows reading a common column, ≈ Σ_j m_j² entries) and n·r·(2·LBFGS_MEMORY + 8) floats.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla_dense
import scipy.optimize as so
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from .arrays import first_of_groups, number_by_first
from .hypergraph import identical_rows, vertex_offsets
from .volume import rows_per_part

RANK = 16  # columns of V: at 8 the certificate's λ_max stays well above 0 on the real 1024×120
PENALTY = 1.0  # first μ_t = PENALTY / n_t: the balance term weighs about as much as the layer's alignment
ROUNDS = 3
LBFGS_MEMORY = 8
MAX_STEPS = 1000  # per round
FTOL = 1e-7  # L-BFGS stops when a step gains less than this fraction of the value
EIG_TOL = 1e-6
EIG_GRID = 1e-5  # λ_max is reported rounded up to this (costs ≤ n·1e-5 words)
VERIFY_WIDTH = 2048  # widest layer whose dense Schur complement (32 MB) the λ check factors
VERIFY_FLOPS = 1e12  # and the most work it does (1024×120: 2.8e11, about 20 s here)
VERIFY_RAISES = 12  # checks of λ, then λ + EIG_GRID·2^i (i = 0, 1, ...), before giving up unproved


def solver_bytes(neurons: int, rank: int = RANK) -> int:
    """Memory of the solver beside Q: V, its gradient and the L-BFGS pairs (8-byte floats)."""
    return 8 * neurons * rank * (2 * LBFGS_MEMORY + 8)


class SdpBudget(Exception):
    """Past the time or memory budget: no semidefinite bound (the caller keeps the class bound)."""


@dataclass
class AgreementForm:
    """V ≥ constant − xᵀ q x for every ±1 vector x (K = 2; one entry per neuron, layer by layer).
    q is None in a form read back with a certificate (`certificate_file.py`): the bound needs only
    the constant and the layers' sizes."""

    q: sp.csr_matrix | None
    constant: float
    offsets: np.ndarray  # layer t's neurons are offsets[t]:offsets[t+1]
    row_weights: list  # per layer t ≥ 1, the balance weight of each row (its nonzeros)

    def words_at_least(self, spins: np.ndarray) -> float:
        x = np.asarray(spins, dtype=np.float64)
        return self.constant - float(x @ (self.q @ x))

    def slack_squared(self, k: int, epsilon: float) -> np.ndarray:
        """s_t(K)²: the most ‖Σ_{i∈t} x_i‖² of a partition balanced in layer t (layer 0: n_0², no balance)."""
        out = np.zeros(len(self.offsets) - 1)
        out[0] = float(self.offsets[1]) ** 2
        for t, weights in enumerate(self.row_weights, start=1):
            n = weights.size
            most = min(n, max(1, rows_per_part(weights, k, epsilon)[0]))
            full, rest = divmod(n, most)  # Σ n_p² is largest with parts filled to `most` in turn
            out[t] = max(0.0, (k * (full * most ** 2 + rest ** 2) - n ** 2) / (k - 1))
        return out


@dataclass
class Certificate:
    """One (y, μ) of the module doc: a bound for every K (`bound`), and how it was found."""

    form: AgreementForm
    epsilon: float
    mu: np.ndarray
    y: np.ndarray
    lambda_max: float
    rank: int
    steps: int = 0
    seconds: float = 0.0
    lambda_verified: bool = False  # λ_max proved by block Cholesky (module doc), not only by Lanczos

    @property
    def relaxation(self) -> float:
        """c − Σ y: the relaxed value before the balance and eigenvalue terms."""
        return self.form.constant - float(np.sum(self.y))

    def value(self, k: int) -> float:
        """The module doc's right-hand side before rounding: (2(K−1)/K)·(c − Σ y − n·λ⁺ − Σ_t μ_t s_t(K)²)."""
        slack = float(self.mu @ self.form.slack_squared(k, self.epsilon))
        return 2 * (k - 1) / k * (self.relaxation - self.y.size * max(0.0, self.lambda_max) - slack)

    def bound(self, k: int) -> int:
        return 0 if k < 2 else max(0, math.ceil(self.value(k) - 1e-6))

    def summary(self, k: int) -> dict:
        return {"lower_bound_forward": self.bound(k), "relaxation": self.relaxation, "lambda_max": self.lambda_max,
                "lambda_verified": self.lambda_verified, "rank": self.rank, "steps": self.steps,
                "seconds": self.seconds}


def _layer_terms(w):
    """One layer's blocks: (owner–reader block, n_t × n_{t−1}; reader–reader block, n_t × n_t;
    its part of the constant)."""
    n_out, n_in = w.shape
    wc = w.tocsc()
    m = np.diff(wc.indptr).astype(np.int64)
    col = np.repeat(np.arange(n_in, dtype=np.int64), m)
    row = wc.indices.astype(np.int64)
    if row.size == 0:
        return sp.csr_matrix((n_out, n_in)), sp.csr_matrix((n_out, n_out)), 0.0
    cls = identical_rows(w)[row]
    group = number_by_first(first_of_groups(col * (int(cls.max()) + 1) + cls))  # (column, row class)
    size = np.bincount(group)[group].astype(np.float64)
    sum_sq = np.bincount(col, weights=size, minlength=n_in)  # Σ_g m_g² per column
    mf = m.astype(np.float64)
    one_class = sum_sq == mf * mf
    pairs = np.where(one_class, mf * mf - mf, mf * mf - sum_sq)  # P: ordered pairs averaged over
    single = one_class[col]  # one reader class: every reader its own group
    group = np.where(single, group.max() + 1 + np.arange(row.size), group)
    # A reader's share of the pairs it is in, (m − m_g)/P (1/m where the classes are equal or m = 1)
    keep = pairs[col] > 0
    share = np.ones(row.size)
    share[keep] = (mf[col] - np.bincount(group)[group])[keep] / pairs[col[keep]]
    reader = sp.csr_matrix((0.25 * share, (row, col)), shape=(n_out, n_in))
    scale = 1.0 / np.sqrt(4.0 * pairs[col[keep]])
    s = sp.csr_matrix((scale, (row[keep], col[keep])), shape=(n_out, n_in))
    g = sp.csr_matrix((scale, (row[keep], group[keep])), shape=(n_out, int(group.max()) + 1))
    cross = (s @ s.T - g @ g.T).tocsr()
    cross.eliminate_zeros()
    read = m > 0
    constant = float(np.sum(np.where(pairs[read] > 0, 0.75, 0.5)))
    return reader, cross, constant


def agreement_form(layers, widths, after_layer=None) -> AgreementForm:
    """The quadratic form of the module doc (K = 2 scaling), built one layer at a time;
    `after_layer(t)` is called after each (a budget check may raise there)."""
    widths = [int(n) for n in widths]
    offsets = vertex_offsets(widths)
    blocks = [[None] * len(widths) for _ in widths]
    blocks[0][0] = sp.csr_matrix((widths[0], widths[0]))
    row_weights = []
    constant = 0.0
    read = getattr(layers, "pattern", layers.__getitem__)  # the form needs the patterns only (LayerFile: no weights read)
    for t in range(1, len(widths)):
        w = sp.csr_matrix(read(t - 1))
        reader, cross, c = _layer_terms(w)
        blocks[t][t - 1], blocks[t - 1][t], blocks[t][t] = reader, reader.T, cross
        constant += c
        row_weights.append(np.diff(w.indptr).astype(np.int64))
        if after_layer:
            after_layer(t)
    return AgreementForm(sp.bmat(blocks, format="csr"), constant, offsets, row_weights)


def semidefinite_certificate(layers, widths, epsilon: float = 0.03, rank: int = RANK, seed: int = 0,
                             rounds: int = ROUNDS, max_seconds: float | None = None, note=None,
                             after_layer=None) -> Certificate:
    """A (y, μ) of the module doc, found for K = 2 and valid for every K (`Certificate.bound`).

    The K = 2 bound is concave in the balance multipliers μ (the relaxation's value is a maximum of
    functions linear in μ), with slope ‖Σ_{i∈t} v_i‖² − s_t² in μ_t: each of `rounds` solves is
    followed by a multiplicative step of μ_t towards the layers whose relaxed imbalance exceeds what
    balance allows, and the next solve starts from the last V. Every round gives a valid
    certificate; the best at K = 2 is kept. Past `max_seconds` while building Q or before a first
    certificate: `SdpBudget`. `after_layer(t)`: called after each layer of Q is built (the
    caller's memory check)."""
    t0 = time.perf_counter()
    widths = [int(n) for n in widths]
    n = sum(widths)
    deadline = None if max_seconds is None else t0 + max_seconds

    def built(t):
        if deadline is not None and time.perf_counter() > deadline:
            raise SdpBudget(f"layer {t} of {len(widths) - 1}: the semidefinite bound ran out of time (--max-seconds)")
        if after_layer:
            after_layer(t)

    form = agreement_form(layers, widths, built)
    slack = form.slack_squared(2, epsilon)  # the μ steps aim at K = 2
    counts = np.diff(form.offsets)
    mu = np.where(np.arange(len(widths)) > 0, PENALTY / np.maximum(counts, 1), 0.0)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, rank))
    best, steps = None, 0
    for round_ in range(1, rounds + 1):
        v, taken = maximise_unit_rows(lambda x, mu=mu: _apply(form, mu, x), v, deadline)
        steps += taken
        if deadline is not None and time.perf_counter() > deadline:
            if best is None:
                raise SdpBudget("the semidefinite bound ran out of time (--max-seconds)")
            break
        y = np.sum(_apply(form, mu, v) * v, axis=1)
        lam = _largest_eigenvalue(lambda x, mu=mu, y=y: _apply(form, mu, x[:, None])[:, 0] - y * x, n, rng)
        found = Certificate(form, epsilon, mu.copy(), y, lam, rank)
        if best is None or found.value(2) > best.value(2):
            best = found
        if note:
            note(f"semidefinite round {round_}/{rounds}: {best.bound(2)} words at K = 2 "
                 f"({time.perf_counter() - t0:.1f} s)")
        imbalance = np.add.reduceat(v, form.offsets[:-1], axis=0)
        imbalance = np.sum(imbalance * imbalance, axis=1)
        mu *= np.clip(np.sqrt((imbalance + 1.0) / (slack + 1.0)), 0.5, 2.0)
    best.lambda_max, best.lambda_verified = _verified_eigenvalue(form, best.mu, best.y, best.lambda_max, deadline)
    best.steps, best.seconds = steps, time.perf_counter() - t0
    return best


def _apply(form: AgreementForm, mu: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Q'v = Qv − Σ_t μ_t 1_t (1_tᵀ v)."""
    sums = np.add.reduceat(v, form.offsets[:-1], axis=0)
    return form.q @ v - np.repeat(mu[:, None] * sums, np.diff(form.offsets), axis=0)


def maximise_unit_rows(apply, start: np.ndarray, deadline, max_steps: int = MAX_STEPS, ftol: float = FTOL):
    """Unit rows V maximising tr(VᵀQ'V), `apply(V)` = Q'V (L-BFGS over unnormalised rows, from
    `start`); (V, steps)."""
    n, rank = start.shape
    steps = 0

    def objective(flat):
        nonlocal steps
        steps += 1
        w = flat.reshape(n, rank)
        norms = np.sqrt(np.einsum("ij,ij->i", w, w))[:, None]
        v = w / norms
        qv = apply(v)
        along = np.einsum("ij,ij->i", qv, v)[:, None]  # the gradient's part that changes |w_i| only
        grad = v * along
        grad -= qv
        grad *= 2.0 / norms
        return -float(along.sum()), grad.ravel()

    def stop(intermediate_result):
        if deadline is not None and time.perf_counter() > deadline:
            raise StopIteration

    res = so.minimize(objective, start.ravel(), jac=True, method="L-BFGS-B", callback=stop,
                      options={"maxiter": max_steps, "maxcor": LBFGS_MEMORY, "ftol": ftol})
    v = res.x.reshape(n, rank)
    return v / np.linalg.norm(v, axis=1, keepdims=True), steps


def _largest_eigenvalue(matvec, n: int, rng) -> float:
    """λ_max of a symmetric operator by Lanczos, raised by the Ritz pair's residual norm (dense
    below 65 rows), rounded up to EIG_GRID."""
    if n <= 64:  # ARPACK needs n > k + 1 and is no faster here
        dense = np.column_stack([matvec(e) for e in np.eye(n)])
        return math.ceil(float(np.linalg.eigvalsh((dense + dense.T) / 2)[-1]) / EIG_GRID) * EIG_GRID
    # Shifted by 1 so that ARPACK's relative tolerance is an absolute one near λ_max ≈ 0
    op = sla.LinearOperator((n, n), matvec=lambda x: matvec(x) + x, dtype=np.float64)
    vals, vecs = sla.eigsh(op, k=1, which="LA", tol=EIG_TOL, ncv=min(n - 1, 40), v0=rng.standard_normal(n))
    u = vecs[:, 0]
    residual = float(np.linalg.norm(matvec(u) + u - vals[0] * u))
    # Rounded up to a grid 10× the tolerance: ARPACK's last digits vary from run to run (its BLAS
    # sums depend on memory alignment, measured ±3e-7 here), and the same seed must give the same bytes
    return math.ceil((float(vals[0]) - 1.0 + residual) / EIG_GRID) * EIG_GRID


def verification_flops(widths) -> float:
    """Work of one `eigenvalue_verified` pass: per layer a Cholesky factor, a triangular solve
    against the coupling block and the product that updates the Schur complement."""
    w = np.asarray(widths, dtype=np.float64)
    return float(np.sum(w ** 3 / 3) + np.sum(w[:-1] ** 2 * w[1:] + w[:-1] * w[1:] ** 2))


def eigenvalue_verified(form: AgreementForm, mu: np.ndarray, y: np.ndarray, lam: float, deadline=None):
    """True when λI − (Q' − diag y) is positive definite (so λ > λ_max(Q' − diag y)), False when
    not, None past `deadline`. Block LDLᵀ over the layers (module doc): the matrix is block
    tridiagonal, its diagonal blocks D_t = λI + diag y_t − Q_tt + μ_t 11ᵀ dense, the coupling
    −Q_{t,t−1} sparse; it is positive definite iff every Schur complement has a Cholesky factor."""
    off, q = form.offsets, form.q
    factor = None
    for t in range(len(off) - 1):
        if deadline is not None and time.perf_counter() > deadline:
            return None
        a, b = off[t], off[t + 1]
        block = -q[a:b, a:b].toarray()
        block += mu[t]
        block[np.diag_indices_from(block)] += lam + y[a:b]
        if factor is not None:
            z = sla_dense.solve_triangular(factor, q[off[t - 1]:a, a:b].toarray(), lower=True, check_finite=False)
            block -= z.T @ z
        try:
            factor = np.linalg.cholesky(block)
        except np.linalg.LinAlgError:
            return False
    return True


def _verified_eigenvalue(form: AgreementForm, mu, y, lam: float, deadline) -> tuple[float, bool]:
    """(λ, proved): Lanczos's λ checked by `eigenvalue_verified` and raised until it passes; the
    Lanczos value, unproved, where the layers are too wide, the work too large or time runs out."""
    widths = np.diff(form.offsets)
    if widths.max() > VERIFY_WIDTH or verification_flops(widths) > VERIFY_FLOPS:
        return lam, False
    for i in range(VERIFY_RAISES):
        raised = lam + (EIG_GRID * 2 ** (i - 1) if i else 0.0)
        ok = eigenvalue_verified(form, mu, y, raised, deadline)
        if ok is None:
            return lam, False
        if ok:
            return raised, True
    return lam, False
