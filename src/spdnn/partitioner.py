"""One thin wrapper around Mt-KaHyPar: hypergraph arrays, k, ε, seed, preset → result.

Mt-KaHyPar (PyPI `mtkahypar`) is used rather than KaHyPar (`kahypar`): same algorithm family,
built-in presets (KaHyPar's wheel ships none and exit()s on a bad .ini), Python exceptions,
fixed vertices, and ≈15× faster on this model (README, "Design reference").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import UserError

PRESETS = ("deterministic", "default", "quality")


@dataclass
class PartitionerResult:
    partition: np.ndarray  # int64 block per vertex
    km1: int
    imbalance: float  # Mt-KaHyPar's (max block weight / perfect) − 1
    seconds: float


@lru_cache(maxsize=None)
def _initializer(threads: int):
    import mtkahypar

    # Quiet: warnings about thread pinning would interleave with our progress lines.
    return mtkahypar.initialize(threads, False)


def partition_hypergraph(num_vertices: int, net_indptr: np.ndarray, pins: np.ndarray, k: int, epsilon: float,
                         seed: int, vertex_weights: np.ndarray, net_weights: np.ndarray | None = None,
                         fixed: np.ndarray | None = None, preset: str = "deterministic",
                         threads: int = 1) -> PartitionerResult:
    """km1-minimising k-way partition balanced on the total vertex weight (one constraint).

    `fixed[v]` = block of a fixed vertex or −1. The deterministic preset makes a fixed seed
    reproduce the same partition regardless of thread timing.
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
    phg = hg.partition(ctx)
    part = np.asarray(phg.get_partition(), dtype=np.int64)
    return PartitionerResult(part, int(phg.km1()), float(phg.imbalance(ctx)), time.perf_counter() - t0)


def _nets_as_lists(pins, net_indptr) -> list:
    """[[pins of net 0], [pins of net 1], ...] from CSR-style arrays."""
    pins = np.asarray(pins, np.int64)
    sizes = np.diff(net_indptr)
    if sizes.size and sizes[0] > 0 and (sizes == sizes[0]).all():  # one net size (common: all 2- or 3-pin nets)
        return pins.reshape(-1, int(sizes[0])).tolist()
    flat, ends = pins.tolist(), np.asarray(net_indptr, np.int64).tolist()
    return [flat[a:b] for a, b in zip(ends[:-1], ends[1:])]
