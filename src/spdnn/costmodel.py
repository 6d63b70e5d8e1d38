"""Latency–bandwidth cost model of a training step, fitted here, predicting beyond this machine.

Row-wise, per layer k: T_k = max_p (c·B·(γ_b·blocks_k(p) + γ_s·scattered_k(p)) + α·d_k·msgs_k(p)
+ β·d_k·B·words_k(p)), with blocks/scattered = nonzeros of p's rows that the dense-block kernel
computes and that the CSR kernel computes (`kernels.block_rows` on p's rows: the kernel p's runtime
takes), msgs/words = messages and words p sends plus receives per sample in the expand, d_k = 2
for training (expand + fold; 1 for k = 1), c = 3 (forward SpMM, backward SpMM, gradient). A step
adds δ per layer (interpreter and launch overhead, which a Python runtime does have) and μ per
weight it updates (the SGD update, independent of B): T = Σ_k T_k + δ·L + μ·Σ_k max_p load_k(p).

Two compute rates because the kernels differ by several times a multiply-add: a dense block reads
each input once for R rows, a CSR row gathers scattered inputs. So a partition that splits the
blocks of a RadiX-Net layer costs compute as well as words (README "Cost model": what one γ
missed on the default workflow's runs).

Data-parallel: T = c·B·(γ_b·blocks + γ_s·scattered)/K + δ·L + μ·M + α·2(K−1) + β·2(K−1)/K·M,
M = nnz + Σ n_k (every rank packs and updates all M gradients; a bandwidth-optimal allreduce
moves them; each rank's replica holds whole layers, whose blocks are the serial kernel's).

γ_b, γ_s, α, β, δ, μ are fitted by non-negative least squares on measured step times (runs with
K ≤ 2, where timings mean something on this 2-core machine), or taken from the config for a cluster.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import nnls

from .arrays import distinct
from .errors import UserError
from .hypergraph import identical_rows
from .kernels import block_entries
from .partition_io import PartitionReader
from .volume import layer_loads, layer_traffic, split_by_layer

COMPUTE_PASSES = 3  # forward SpMM, backward SpMM, pattern gradient


@dataclass
class CostParams:
    gamma_block: float  # s per multiply-add per sample in a dense block
    gamma_scattered: float  # s per multiply-add per sample in a CSR row
    alpha: float  # s per message
    beta: float  # s per word
    delta: float  # s per layer per step (overhead)
    mu: float = 0.0  # s per updated weight per step

    def vector(self):
        return np.array([self.gamma_block, self.gamma_scattered, self.alpha, self.beta, self.delta, self.mu])


@dataclass
class LayerStats:
    """Per layer (rows) and rank (columns) of one partition: load (nonzeros of owned rows), the
    part of it in dense blocks, messages and words sent + received per sample; and per layer the
    whole layer's block nonzeros (a data-parallel replica's)."""
    load: np.ndarray
    block_load: np.ndarray
    msgs: np.ndarray
    words: np.ndarray
    whole_blocks: np.ndarray

    def compute_seconds(self, params: CostParams, batch: int) -> np.ndarray:
        return COMPUTE_PASSES * batch * (params.gamma_block * self.block_load
                                         + params.gamma_scattered * (self.load - self.block_load))


def rank_layer_stats(layers, widths, partitions) -> list[LayerStats]:
    """`LayerStats` of each (partition, K) of `partitions`, all of one network, from one pass over
    `layers` (any iterable of W^k; a `network.LayerFile` streams: one layer in memory): each layer
    is read, and its rows' classes hashed, once for all of the network's partitions. A partition
    is a vector or a `PartitionReader` (two layers' slices of each in memory at a time)."""
    slices = [(part.layer if isinstance(part, PartitionReader) else split_by_layer(part, widths).__getitem__, k)
              for part, k in partitions]
    owners = [layer(0) for layer, _ in slices]  # each partition's owners of the layer's inputs
    per_layer = []  # per layer: each partition's (load, block load, messages, words) by rank
    whole = []
    for t, w in enumerate(layers):
        # A rank's rows keep their entries' order (`rowwise`), so its classes are the layer's.
        classes, lengths = identical_rows(w, ordered=True), np.diff(w.indptr)
        whole.append(block_entries(classes, lengths))
        rows_owners = [layer(t + 1) for layer, _ in slices]
        per_layer.append([_rank_stats(w, classes, lengths, part_in, part_out, k)
                          for part_in, part_out, (_, k) in zip(owners, rows_owners, slices)])
        owners = rows_owners
    return [LayerStats(*(np.array([layer[i][j] for layer in per_layer], np.float64).reshape(len(per_layer), k)
                         for j in range(4)), np.array(whole, np.float64))
            for i, (_, k) in enumerate(slices)]


def _rank_stats(w, classes, lengths, part_in, part_out, k_parts: int) -> tuple:
    """One layer under one partition, by rank: load, the load in dense blocks, messages and words
    sent plus received per sample."""
    by_part = np.argsort(part_out, kind="stable")
    starts = np.searchsorted(part_out[by_part], np.arange(1, k_parts))
    block_load = [block_entries(classes[rows], lengths[rows]) for rows in np.split(by_part, starts)]
    p, q, _ = layer_traffic(w, part_in, part_out, k_parts)  # one (sender, receiver) per word
    words = np.bincount(p, minlength=k_parts) + np.bincount(q, minlength=k_parts)
    senders, receivers = np.divmod(distinct(p * k_parts + q, limit=k_parts * k_parts), k_parts)
    msgs = np.bincount(senders, minlength=k_parts) + np.bincount(receivers, minlength=k_parts)
    return layer_loads(w, part_out, k_parts), block_load, msgs, words


def _expand_factor(num_layers: int) -> np.ndarray:
    d = np.full(num_layers, 2.0)
    d[0] = 1.0
    return d


def rowwise_terms(stats: LayerStats, batch: int, params: CostParams) -> np.ndarray:
    """L × K seconds of each rank in each layer (compute and communication)."""
    d = _expand_factor(stats.load.shape[0])[:, None]
    return (stats.compute_seconds(params, batch) + params.alpha * d * stats.msgs
            + params.beta * d * batch * stats.words)


def rowwise_features(stats: LayerStats, batch: int, params: CostParams | None = None) -> np.ndarray:
    """Linear features [γ_b, γ_s, α, β, δ, μ] of the step time at the critical rank of each layer.

    The critical rank is chosen with `params` (or by load when fitting from scratch), which
    makes the max linear around the fitted point.
    """
    s = stats
    crit = s.load.argmax(axis=1) if params is None else rowwise_terms(s, batch, params).argmax(axis=1)
    idx = np.arange(s.load.shape[0])
    d = _expand_factor(s.load.shape[0])
    load, blocks = s.load[idx, crit], s.block_load[idx, crit]
    return np.array([COMPUTE_PASSES * batch * blocks.sum(), COMPUTE_PASSES * batch * (load - blocks).sum(),
                     (d * s.msgs[idx, crit]).sum(), batch * (d * s.words[idx, crit]).sum(), s.load.shape[0],
                     load.sum()])


def data_parallel_features(nnz: int, block_nnz: int, grad_words: int, num_layers: int, k: int,
                           batch: int) -> np.ndarray:
    return np.array([COMPUTE_PASSES * batch * block_nnz / k, COMPUTE_PASSES * batch * (nnz - block_nnz) / k,
                     2 * (k - 1), 2 * (k - 1) / k * grad_words, num_layers, grad_words])


def fit(features: np.ndarray, seconds: np.ndarray) -> CostParams:
    """Non-negative least squares on relative errors (each run weighs the same)."""
    scale = 1.0 / np.maximum(seconds, 1e-12)
    col = np.maximum(np.abs(features).max(axis=0), 1e-30)
    coef, _ = nnls(features * scale[:, None] / col, seconds * scale)
    return CostParams(*(coef / col))


def params_to_json(params: CostParams, source: str, runs: int) -> str:
    return json.dumps({**asdict(params), "source": source, "fitted_on_runs": runs}, indent=1) + "\n"


# ---------------------------------------------------------------- the workflow stage
def network_of(partition_path) -> str:
    """results/{network}/partitions/X.part → results/{network}/network.h5 (the workflow layout)."""
    from pathlib import Path

    return str(Path(partition_path).parent.parent / "network.h5")


def predict_table(runs, partitions: list[str], batch_sizes: list[int], max_fit_k: int = 2,
                  given: CostParams | None = None):
    """Fit (unless `given`) and predict. Returns (params, predictions DataFrame, number of fit runs)."""
    import re

    import pandas as pd

    from .network import LayerFile

    by_network = {}  # network file → [(method, K, partition file)]
    for p in partitions:
        m = re.search(r"([a-z]+)-k(\d+)\.part$", p)
        if m is None:
            raise UserError(f"{p}: not a partition of the workflow's naming (results/NETWORK/partitions/METHOD-kK.part)")
        by_network.setdefault(network_of(p), []).append((m.group(1), int(m.group(2)), p))
    sizes, stats = {}, {}
    for net_path, parts in by_network.items():
        network = net_path.split("/")[-2]
        layers = LayerFile(net_path)  # streamed once for all its partitions: one layer in memory
        readers = [PartitionReader(p, layers.widths) for _, _, p in parts]
        for reader, (_, k, _) in zip(readers, parts):
            reader.check_ids(k)
        found = rank_layer_stats(layers, layers.widths, [(reader, k) for reader, (_, k, _) in zip(readers, parts)])
        for (method, k, _), s in zip(parts, found):
            stats[(network, method, k)] = s
        sizes[network] = (int(found[0].load.sum()), int(found[0].whole_blocks.sum()), layers.widths)
        layers.close()

    def features(network, method, k, mode, batch, params=None):
        if mode == "data-parallel":
            nnz, block_nnz, widths = sizes[network]
            return data_parallel_features(nnz, block_nnz, nnz + sum(widths[1:]), len(widths) - 1, k, batch)
        key = (network, "trivial" if method == "none" else method, k)
        return rowwise_features(stats[key], batch, params) if key in stats else None

    train = runs[runs["kind"] == "train"] if len(runs) else runs

    def fits(r) -> bool:
        """Measured, K small enough, and ranks that had a core each (their seconds are the model's)."""
        return (r["k"] <= max_fit_k and r["step_seconds"] == r["step_seconds"]
                and not r.get("cores_per_rank", 1) < 1)

    def key(r) -> tuple:
        return r["network"], r["method"], r["k"], r["mode"], r["batch_size"]

    fit_rows = [r for _, r in train.iterrows() if fits(r)]
    fit_keys = {key(r) for r in fit_rows}
    params = given
    if params is None:
        if not fit_rows:
            params = CostParams(0.0, 0.0, 0.0, 0.0, 0.0)
        else:
            for _ in range(2):  # refit once with the critical ranks the first fit implies
                feats = np.array([features(r["network"], r["method"], r["k"], r["mode"], r["batch_size"], params)
                                  for r in fit_rows])
                params = fit(feats, np.array([r["step_seconds"] for r in fit_rows]))
    rows = []
    measured = {key(r): r for _, r in train.iterrows()}
    ks_by_net = {}
    for network, _method, k in stats:
        ks_by_net.setdefault(network, set()).add(k)
    combos = set()
    for (network, method, k) in stats:
        for b in batch_sizes:
            combos.add((network, "none" if method == "trivial" else method, k, "row-wise", b))
    for network, ks in ks_by_net.items():
        for k in ks:
            for b in batch_sizes:
                if k > 1:
                    combos.add((network, "none", k, "data-parallel", b))
    combos |= set(measured)
    for network, method, k, mode, b in sorted(combos, key=str):
        f = features(network, method, k, mode, b, params)
        if f is None:
            continue
        pred = float(f @ params.vector())
        run = measured.get((network, method, k, mode, b))
        meas = None if run is None else run["step_seconds"]
        rows.append({"network": network, "method": method, "k": k, "mode": mode, "batch_size": b,
                     "predicted_step_seconds": pred, "measured_step_seconds": meas,
                     "relative_error": (pred - meas) / meas if meas else None,
                     "used_for_fit": (network, method, k, mode, b) in fit_keys and given is None,
                     "measured_cores_per_rank": None if run is None else run.get("cores_per_rank")})
    return params, pd.DataFrame(rows), len(fit_rows)
