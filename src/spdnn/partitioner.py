"""One thin wrapper per hypergraph partitioner: hypergraph arrays, k, ε, seed, preset → result.

Backends: Mt-KaHyPar (PyPI `mtkahypar`, the default) and KaHyPar (PyPI `kahypar`). Mt-KaHyPar has
built-in presets, Python exceptions and is ≈15× faster on this model (README, "Design reference").
KaHyPar's wheel ships no configuration, so spdnn ships one (`data/kahypar_km1_kway.ini`, its km1
direct k-way quality setting); KaHyPar exit()s on input it rejects (a vertex of weight 0), so the
wrapper gives it none: zero weights become 1 and the others are scaled so that they still weigh
1000× more in total (the balance is then re-checked, and repaired, by the caller).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .errors import UserError

PRESETS = ("deterministic", "default", "quality")
BACKENDS = ("mtkahypar", "kahypar")
KAHYPAR_CONFIG = Path(__file__).resolve().parent / "data" / "kahypar_km1_kway.ini"


@dataclass
class PartitionerResult:
    partition: np.ndarray  # int64 block per vertex
    km1: int
    imbalance: float  # Mt-KaHyPar's (max block weight / perfect) − 1
    seconds: float


@cache
def _initializer(threads: int):
    import mtkahypar

    # Quiet: warnings about thread pinning would interleave with our progress lines.
    return mtkahypar.initialize(threads, False)


def partition_hypergraph(num_vertices: int, net_indptr: np.ndarray, pins: np.ndarray, k: int, epsilon: float,
                         seed: int, vertex_weights: np.ndarray, net_weights: np.ndarray | None = None,
                         fixed: np.ndarray | None = None, preset: str = "deterministic",
                         threads: int = 1, initial: np.ndarray | None = None, vcycles: int = 1) -> PartitionerResult:
    """km1-minimising k-way partition balanced on the total vertex weight (one constraint).

    `fixed[v]` = block of a fixed vertex or −1. The deterministic preset makes a fixed seed
    reproduce the same partition regardless of thread timing. With `initial` (a block per vertex,
    fixed vertices in their blocks) no partition is built from scratch: `vcycles` V-cycles improve
    the given one, which costs a fifth of a fresh solve on a 65536-wide layer's subproblem.
    """
    import mtkahypar

    if preset not in PRESETS:
        raise UserError(f"unknown partitioner preset {preset!r} (choose from {', '.join(PRESETS)})")
    if k < 2:
        return PartitionerResult(np.zeros(num_vertices, np.int64), 0, 0.0, 0.0)
    t0 = time.perf_counter()
    init = _initializer(threads)
    preset_type = {"deterministic": mtkahypar.PresetType.DETERMINISTIC, "default": mtkahypar.PresetType.DEFAULT,
                   "quality": mtkahypar.PresetType.QUALITY}[preset]
    ctx = init.context_from_preset(preset_type)
    ctx.set_partitioning_parameters(k, epsilon, mtkahypar.Objective.KM1)
    ctx.logging = False
    mtkahypar.set_seed(int(seed))
    nets = _nets_as_lists(pins, net_indptr)
    if net_weights is None:
        net_weights = np.ones(len(nets), np.int64)
    # Python lists, not numpy arrays: pybind11 converts a list of lists 5× faster (at N = 65536,
    # 29,000 nets per layer: 0.03 s instead of 0.12 s of every solve).
    hg = init.create_hypergraph(ctx, int(num_vertices), len(nets), nets,
                                np.asarray(vertex_weights, np.int64).tolist(), np.asarray(net_weights, np.int64).tolist())
    if fixed is not None and (np.asarray(fixed) >= 0).any():
        hg.add_fixed_vertices(np.asarray(fixed, np.int64).tolist(), k)
    if initial is None:
        phg = hg.partition(ctx)
    else:  # V-cycles: coarsen within the given blocks, refine on every level; no initial partitioning
        phg = hg.create_partitioned_hypergraph(ctx, k, np.asarray(initial, np.int64).tolist())  # (ctx, k) order
        phg.improve_partition(ctx, int(vcycles))
    part = np.asarray(phg.get_partition(), dtype=np.int64)
    return PartitionerResult(part, int(phg.km1()), float(phg.imbalance(ctx)), time.perf_counter() - t0)


def _nets_as_lists(pins, net_indptr) -> list:
    """[[pins of net 0], [pins of net 1], ...] from CSR-style arrays."""
    pins = np.asarray(pins, np.int64)
    sizes = np.diff(net_indptr)
    if sizes.size and sizes[0] > 0 and (sizes == sizes[0]).all():  # one net size (common: all 2- or 3-pin nets)
        return pins.reshape(-1, int(sizes[0])).tolist()
    flat, ends = pins.tolist(), np.asarray(net_indptr, np.int64).tolist()
    return [flat[a:b] for a, b in itertools.pairwise(ends)]


def kahypar_partition(num_vertices: int, net_indptr: np.ndarray, pins: np.ndarray, k: int, epsilon: float,
                      seed: int, vertex_weights: np.ndarray, net_weights: np.ndarray | None = None,
                      fixed: np.ndarray | None = None) -> PartitionerResult:
    """The same problem as `partition_hypergraph`, solved by KaHyPar with spdnn's configuration."""
    import kahypar

    if k < 2:
        return PartitionerResult(np.zeros(num_vertices, np.int64), 0, 0.0, 0.0)
    t0 = time.perf_counter()
    weights = np.asarray(vertex_weights, np.int64)
    zero = weights == 0
    if zero.any():  # KaHyPar rejects weight 0 (and exits): weigh them 1, everything else ≥ 1000× more
        scale = max(1, -(-1000 * int(zero.sum()) // max(int(weights.sum()), 1)))
        weights = np.where(zero, 1, weights * scale)
    n_nets = len(net_indptr) - 1
    hg = kahypar.Hypergraph(int(num_vertices), n_nets, np.asarray(net_indptr, np.int64).tolist(),
                            np.asarray(pins, np.int64).tolist(), int(k),
                            (np.ones(n_nets, np.int64) if net_weights is None else np.asarray(net_weights, np.int64)).tolist(),
                            weights.tolist())
    if fixed is not None:
        for v in np.flatnonzero(np.asarray(fixed) >= 0):
            hg.fixNodeToBlock(int(v), int(fixed[v]))
    ctx = kahypar.Context()
    ctx.loadINIconfiguration(str(KAHYPAR_CONFIG))
    ctx.setK(int(k))
    ctx.setEpsilon(float(epsilon))
    ctx.setSeed(int(seed))
    ctx.suppressOutput(True)
    kahypar.partition(hg, ctx)
    part = np.fromiter((hg.blockID(v) for v in range(num_vertices)), np.int64, num_vertices)
    return PartitionerResult(part, int(kahypar.connectivityMinusOne(hg)), float(kahypar.imbalance(hg, ctx)),
                             time.perf_counter() - t0)


@dataclass(frozen=True)
class Solver:
    """Which partitioner solves the layer subproblems, and how (a Mt-KaHyPar preset)."""

    backend: str = "mtkahypar"
    preset: str = "quality"

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise UserError(f"unknown partitioner backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.preset not in PRESETS:
            raise UserError(f"unknown partitioner preset {self.preset!r} (choose from {', '.join(PRESETS)})")

    def solve(self, num_vertices, net_indptr, pins, k, epsilon, seed, vertex_weights, net_weights=None, fixed=None,
              threads: int = 1) -> PartitionerResult:
        if self.backend == "kahypar":  # one thread; its own configuration (no presets)
            return kahypar_partition(num_vertices, net_indptr, pins, k, epsilon, seed, vertex_weights, net_weights, fixed)
        return partition_hypergraph(num_vertices, net_indptr, pins, k, epsilon, seed, vertex_weights, net_weights,
                                    fixed, self.preset, threads)

    @property
    def improves(self) -> bool:
        """Can it improve a given partition (V-cycles)? Mt-KaHyPar can; KaHyPar's Python interface cannot."""
        return self.backend == "mtkahypar"

    def improve(self, num_vertices, net_indptr, pins, k, epsilon, seed, vertex_weights, initial, net_weights=None,
                fixed=None, threads: int = 1) -> PartitionerResult:
        """One V-cycle from the partition `initial` (Mt-KaHyPar only: see `improves`)."""
        if not self.improves:
            raise ValueError(f"backend {self.backend} cannot improve a given partition")
        return partition_hypergraph(num_vertices, net_indptr, pins, k, epsilon, seed, vertex_weights, net_weights,
                                    fixed, self.preset, threads, initial=initial)
