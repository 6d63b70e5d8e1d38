"""A lower bound over the partitions that keep every class of identical rows whole.

Why: at K = 2 the semidefinite bound (`semidefinite_bound.py`, 36,229 words on the real Graph
Challenge 1024×120) is 1.50× below the hypergraph method (54,483), and the structured families
(`whole_class_chain.py`) say the method is within 1.1 % of their optimum. Which side is the gap on? The bound's
relaxation is free to point the rows of one identical-row class different ways (to split the
class), while every partition built here keeps such classes whole (the hypergraph method merges
identical rows into one vertex). This script solves the same relaxation with one label vector
per class, so its value bounds every partition that keeps classes whole: the distance from it to
the method is the method's, the distance from it down to the semidefinite bound is what splitting
classes could buy (some splits do pay on the real network, a few words each: benchmarks/README.md).

The form: the agreement form of `semidefinite_bound` (V ≥ c − xᵀQx at K = 2, the same Q for every
K) restricted to x = A·z, A the rows-to-classes indicator (layer 0's neurons one class each):
Q_c = AᵀQA, balance through the classes' row counts. As in `semidefinite_bound`, y comes from a
rank-r solution (L-BFGS over unit rows), μ from a few rounds of steps along the relaxed imbalance,
and for every (y, μ) and every partition keeping classes whole

    V ≥ (2(K−1)/K)·(c − Σ y − n_c·max(0, λ_max(Q_c − Σ_t μ_t w_t w_tᵀ − diag y)) − Σ_t μ_t s_t(K)²)

(w_t: the rows of each class of layer t; s_t(K)²: `AgreementForm.slack_squared`). λ_max comes from
a dense symmetric eigensolver (LAPACK, rounded up to `EIG_GRID`), so the classes must be few
(MAX_CLASSES; 8,064 on the real network). Beside it, the class-count bound (`bound.py`) over the
same partitions (`whole_classes=True`: a part touches no more classes than its lightest ones that
fit its capacity), which is the stronger of the two beyond K = 2. Neither is a bound on every
partition: on tiny chains the best partition can split a class (`tests/test_whole_class_bound.py`).

    python benchmarks/whole_class_bound.py NET.h5 -k 2,8,32 [--compare PART ...] [--round TRIALS]

Prints per K both bounds, and for each partition given its volume, whether it keeps every class
whole, and volume / the larger bound. `--round` also brackets the K = 2 whole-class optimum from
above: random hyperplanes through the relaxation's class vectors give whole-class partitions
(`rounded_partition`), the cheapest few are refined by the partitioner's own passes
(`partition.refine`), and the best is printed beside the bound.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from spdnn.bound import volume_lower_bound
from spdnn.hypergraph import identical_rows
from spdnn.layer_solve import layer_volume, place_inputs
from spdnn.layers import Layers
from spdnn.network import read_network
from spdnn.partition import refine
from spdnn.partition_io import read_partition
from spdnn.partitioner import Solver
from spdnn.semidefinite_bound import (
    EIG_GRID,
    PENALTY,
    AgreementForm,
    Certificate,
    agreement_form,
    maximise_unit_rows,  # the same L-BFGS over unit rows
)
from spdnn.volume import layer_capacity, partition_metrics, split_by_layer

RANK = 32  # the class problem is small: a higher rank than the row problem's 16 costs little
ROUNDS = 3
MAX_STEPS = 3000
MAX_CLASSES = 12_000  # a dense eigenproblem of 12,000² doubles: 1.15 GB
REFINED = 6  # rounded partitions refined, the cheapest first
PASSES = 3  # refinement passes each


class ClassSolution(NamedTuple):
    certificate: Certificate
    vectors: np.ndarray  # classes × rank: the relaxation's unit rows in the certificate's round


class ClassForm(NamedTuple):
    form: AgreementForm  # the row form (its constant, layers and slack)
    q: sp.csr_matrix  # AᵀQA
    weights: sp.csr_matrix  # layers × classes: rows of each class (its balance weight)


def row_classes(layers, widths) -> list[np.ndarray]:
    """Per layer of neurons, each neuron's class (layer 0: every neuron its own)."""
    return [np.arange(int(widths[0]))] + [identical_rows(w) for w in layers]


def class_form(layers, widths, classes=None) -> ClassForm:
    """classes: `row_classes` of the network, when the caller has them already."""
    form = agreement_form(layers, widths)
    classes = row_classes(layers, widths) if classes is None else classes
    first = np.cumsum([0] + [int(c.max()) + 1 for c in classes])
    ids = np.concatenate([c + f for c, f in zip(classes, first)])
    a = sp.csr_matrix((np.ones(ids.size), (np.arange(ids.size), ids)), shape=(ids.size, int(first[-1])))
    layer_of = np.repeat(np.arange(len(classes)), np.diff(first))
    sizes = np.asarray(a.sum(axis=0)).ravel()
    weights = sp.csr_matrix((sizes, (layer_of, np.arange(sizes.size))), shape=(len(classes), sizes.size))
    return ClassForm(form, (a.T @ form.q @ a).tocsr(), weights)


def _apply(cf: ClassForm, mu: np.ndarray, v: np.ndarray) -> np.ndarray:
    return cf.q @ v - cf.weights.T @ (mu[:, None] * (cf.weights @ v))


def whole_class_certificate(layers, widths, epsilon: float = 0.03, rank: int = RANK, rounds: int = ROUNDS,
                            seed: int = 0, classes=None) -> ClassSolution:
    """`semidefinite_bound.Certificate` of the class problem (its bound formula holds as it is, with
    y and n = one per class, the row form's constant and slack), and the vectors it came from."""
    cf = class_form(layers, widths, classes)
    n = cf.q.shape[0]
    if n > MAX_CLASSES:
        raise SystemExit(f"{n} classes: more than the dense eigensolver's {MAX_CLASSES}")
    dense, wt = cf.q.toarray(), cf.weights.toarray()
    counts = np.diff(cf.form.offsets)
    mu = np.where(np.arange(counts.size) > 0, PENALTY / np.maximum(counts, 1), 0.0)
    slack = cf.form.slack_squared(2, epsilon)  # the μ steps aim at K = 2, as in semidefinite_bound
    v = np.random.default_rng(seed).standard_normal((n, rank))
    best = None
    for _ in range(rounds):
        v, _ = maximise_unit_rows(lambda x, mu=mu: _apply(cf, mu, x), v, None, MAX_STEPS, 1e-9)
        y = np.sum(_apply(cf, mu, v) * v, axis=1)
        top = float(np.linalg.eigvalsh(dense - (wt.T * mu) @ wt - np.diag(y))[-1])
        found = Certificate(cf.form, epsilon, mu.copy(), y, math.ceil(top / EIG_GRID) * EIG_GRID, rank)
        if best is None or found.value(2) > best.certificate.value(2):
            best = ClassSolution(found, v.copy())
        imbalance = np.sum((cf.weights @ v) ** 2, axis=1)
        mu = mu * np.clip(np.sqrt((imbalance + 1.0) / (slack + 1.0)), 0.5, 2.0)
    return best


class LayerBalance(NamedTuple):
    loads: np.ndarray  # per class: its rows' weights
    capacity: int  # the most a part may hold (`volume.layer_capacity`, K = 2)


def layer_balance(layers, widths, classes, epsilon: float) -> list[LayerBalance]:
    """Per layer 1..L: what every rounding of it needs, found once for all hyperplanes."""
    net = Layers(layers, widths, balance=None)
    return [LayerBalance(np.bincount(classes[t], weights=net.rw(t)), layer_capacity(net.rw(t), 2, epsilon))
            for t in range(1, len(widths))]


def rounded_partition(layers, widths, classes, vectors, hyperplane, epsilon: float = 0.03,
                      balance: list[LayerBalance] | None = None) -> list[np.ndarray]:
    """A K = 2 partition keeping every class whole, per layer of neurons: each layer's classes
    sorted by their vector's side of the hyperplane, the first ones to part 0 up to the balanced
    split point nearest the sign change (layer 0: `place_inputs`). balance: `layer_balance`."""
    balance = layer_balance(layers, widths, classes, epsilon) if balance is None else balance
    first = np.cumsum([0] + [int(c.max()) + 1 for c in classes])
    score = vectors @ hyperplane
    parts = [None]
    for t, (loads, capacity) in enumerate(balance, start=1):
        s = score[first[t]:first[t + 1]]
        order = np.argsort(-s, kind="stable")
        load = np.cumsum(loads[order])
        fits = np.flatnonzero((load <= capacity) & (load[-1] - load <= capacity)) + 1  # classes in part 0
        if fits.size == 0:
            raise SystemExit(f"layer {t}: no split of whole classes is balanced within ε = {epsilon}")
        side = np.ones(s.size, np.int8)
        side[order[:fits[np.argmin(np.abs(fits - np.sum(s > 0)))]]] = 0
        parts.append(side[classes[t]])
    parts[0] = place_inputs(Layers(layers, widths), parts, 2)
    return parts


def best_rounding(layers, widths, classes, vectors, epsilon: float = 0.03, trials: int = 200, seed: int = 0,
                  refined: int = REFINED, passes: int = PASSES) -> tuple[int, np.ndarray]:
    """(the cheapest rounding's volume, the best partition after refinement) over `trials`
    hyperplanes; the `refined` cheapest roundings get `passes` passes of `partition.refine` each
    (identical rows are one vertex there: classes stay whole, which `main` checks)."""
    net = Layers(layers, widths, balance=(2, epsilon))
    rng = np.random.default_rng(seed)

    def volume(parts):
        return sum(layer_volume(net, t, parts[t - 1], parts[t], 2) for t in range(1, len(widths)))

    balance = layer_balance(layers, widths, classes, epsilon)
    rounded = []
    for trial in range(trials):
        parts = rounded_partition(layers, widths, classes, vectors, rng.standard_normal(vectors.shape[1]), epsilon,
                                  balance)
        rounded.append((volume(parts), trial, parts))
    rounded.sort(key=lambda r: r[:2])
    solver, best = Solver(), None
    for _, trial, parts in rounded[:refined]:
        for n in range(passes):
            parts = refine(net, parts, 2, epsilon, seed + trial + 104_729 * n, solver, 1, 1, None)
        words = volume(parts)
        if best is None or words < best[0]:
            best = (words, parts)
    return rounded[0][0], np.concatenate(best[1])


def class_part(cls: np.ndarray, p: np.ndarray) -> np.ndarray | None:
    """Each class's part (cls: each row's class, p: each row's part), or None where a class's rows
    are in more than one part."""
    lowest, highest = np.full(int(cls.max()) + 1, p.max()), np.zeros(int(cls.max()) + 1, p.dtype)
    np.minimum.at(lowest, cls, p)
    np.maximum.at(highest, cls, p)
    return None if np.any(lowest != highest) else lowest


def keeps_classes_whole(classes, widths, part) -> bool:
    """classes: `row_classes` of the network, found once for every partition compared."""
    return all(class_part(cls, p) is not None for cls, p in zip(classes[1:], split_by_layer(part, widths)[1:]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("network")
    p.add_argument("-k", default="2", help="comma-separated K")
    p.add_argument("--epsilon", type=float, default=0.03)
    p.add_argument("--compare", nargs="*", default=[], help="partitions (spdnn partition -o PART) of this network")
    p.add_argument("--round", type=int, default=0, metavar="TRIALS",
                   help="also round the relaxation's class vectors to K = 2 partitions (this many hyperplanes)")
    a = p.parse_args()
    net = read_network(a.network)
    t0 = time.perf_counter()
    classes = row_classes(net.layers, net.widths)  # for the relaxation, the rounding and every comparison
    cert, vectors = whole_class_certificate(net.layers, net.widths, a.epsilon, classes=classes)
    seconds = time.perf_counter() - t0
    print(f"semidefinite, whole classes: {cert.y.size} classes, λ_max {cert.lambda_max:.1e}, {seconds:.0f} s")
    parts = [(path, read_partition(path).astype(np.int64)) for path in a.compare]
    if a.round:
        t0 = time.perf_counter()
        raw, part = best_rounding(net.layers, net.widths, classes, vectors, a.epsilon, a.round)
        seconds = time.perf_counter() - t0
        parts.append((f"rounded ({a.round} hyperplanes: cheapest {raw:,}; {REFINED} refined, {seconds:.0f} s)", part))
    print("| K | semidefinite, whole classes | class-count, whole classes | partition | volume "
          "| keeps classes whole | volume / larger bound |\n|---|---|---|---|---|---|---|")
    for k in [int(k) for k in a.k.split(",")]:
        t0 = time.perf_counter()
        counted = volume_lower_bound(net.layers, net.widths, k, a.epsilon, semidefinite=False,
                                     whole_classes=True)["lower_bound_forward"]
        best = max(cert.bound(k), counted, 1)
        print(f"| {k} | {cert.bound(k):,} | {counted:,} ({time.perf_counter() - t0:.0f} s) | | | | |")
        for path, part in parts:
            if int(part.max()) + 1 != k:  # a partition is compared at the K of its part ids
                continue
            metrics = partition_metrics(net.layers, net.widths, part, k, a.epsilon)
            vol, whole = metrics["volume_forward"], keeps_classes_whole(classes, net.widths, part)
            balanced = "" if metrics["balanced"] else f" (not within ε = {a.epsilon})"
            print(f"| | | | {path}{balanced} | {vol:,} | {'yes' if whole else 'no'} | {vol / best:.3f} |")


if __name__ == "__main__":
    main()
