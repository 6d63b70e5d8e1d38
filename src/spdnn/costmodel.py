"""Latency–bandwidth cost model of a training step, fitted here, predicting beyond this machine.

Row-wise, per layer k: T_k = max_p (γ·c·B·load_k(p) + α·d_k·msgs_k(p) + β·d_k·B·words_k(p)),
with load = nonzeros of p's rows, msgs/words = messages and words p sends plus receives per
sample in the expand, d_k = 2 for training (expand + fold; 1 for k = 1), c = 3 (forward SpMM,
backward SpMM, gradient). A step adds δ per layer (interpreter and launch overhead, which a
Python runtime does have) and μ per weight it updates (the SGD update, independent of B):
T = Σ_k T_k + δ·L + μ·Σ_k max_p load_k(p).

Data-parallel: T = γ·c·B·nnz/K + δ·L + μ·M + α·2(K−1) + β·2(K−1)/K·M, M = nnz + Σ n_k
(every rank packs and updates all M gradients; a bandwidth-optimal allreduce moves them).

γ, α, β, δ, μ are fitted by non-negative least squares on measured step times (runs with K ≤ 2,
where timings mean something on this 2-core machine), or taken from the config for a cluster.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import nnls

from .arrays import distinct
from .volume import layer_loads, layer_traffic, split_by_layer

COMPUTE_PASSES = 3  # forward SpMM, backward SpMM, pattern gradient


@dataclass
class CostParams:
    gamma: float  # s per multiply-add per sample
    alpha: float  # s per message
    beta: float  # s per word
    delta: float  # s per layer per step (overhead)
    mu: float = 0.0  # s per updated weight per step

    def vector(self):
        return np.array([self.gamma, self.alpha, self.beta, self.delta, self.mu])


def rank_layer_stats(layers, widths, part: np.ndarray, k_parts: int):
    """(L × K) arrays: load (nnz of owned rows), messages and words sent + received per sample.
    `layers`: any iterable of W^k (a `network.LayerFile` streams: one layer in memory)."""
    parts = split_by_layer(part, widths)
    load, msgs, words = [], [], []
    for t, w in enumerate(layers):
        load.append(layer_loads(w, parts[t + 1], k_parts))
        p, q, _ = layer_traffic(w, parts[t], parts[t + 1], k_parts)  # one (sender, receiver) per word
        words.append(np.bincount(p, minlength=k_parts) + np.bincount(q, minlength=k_parts))
        senders, receivers = np.divmod(distinct(p * k_parts + q, limit=k_parts * k_parts), k_parts)
        msgs.append(np.bincount(senders, minlength=k_parts) + np.bincount(receivers, minlength=k_parts))
    return tuple(np.array(a, dtype=np.float64).reshape(len(load), k_parts) for a in (load, msgs, words))


def rowwise_terms(stats, batch: int, params: CostParams) -> float:
    load, msgs, words = stats
    d = np.full(load.shape[0], 2.0)
    d[0] = 1.0
    per_rank = (params.gamma * COMPUTE_PASSES * batch * load + params.alpha * d[:, None] * msgs
                + params.beta * d[:, None] * batch * words)
    return float(per_rank.max(axis=1).sum() + params.delta * load.shape[0] + params.mu * load.max(axis=1).sum())


def rowwise_features(stats, batch: int, params: CostParams | None = None) -> np.ndarray:
    """Linear features [γ, α, β, δ, μ] of the step time at the critical rank of each layer.

    The critical rank is chosen with `params` (or by load when fitting from scratch), which
    makes the max linear around the fitted point.
    """
    load, msgs, words = stats
    d = np.full(load.shape[0], 2.0)
    d[0] = 1.0
    if params is None:
        crit = load.argmax(axis=1)
    else:
        crit = (params.gamma * COMPUTE_PASSES * batch * load + params.alpha * d[:, None] * msgs
                + params.beta * d[:, None] * batch * words).argmax(axis=1)
    idx = np.arange(load.shape[0])
    return np.array([COMPUTE_PASSES * batch * load[idx, crit].sum(), (d * msgs[idx, crit]).sum(),
                     batch * (d * words[idx, crit]).sum(), load.shape[0], load[idx, crit].sum()])


def data_parallel_features(nnz: int, grad_words: int, num_layers: int, k: int, batch: int) -> np.ndarray:
    return np.array([COMPUTE_PASSES * batch * nnz / k, 2 * (k - 1), 2 * (k - 1) / k * grad_words, num_layers,
                     grad_words])


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

    from .network import LayerFile, describe
    from .partition_io import read_partition

    sizes, stats = {}, {}
    for p in partitions:
        m = re.search(r"([a-z]+)-k(\d+)\.part$", p)
        method, k = m.group(1), int(m.group(2))
        net_path = network_of(p)
        network = net_path.split("/")[-2]
        layers = LayerFile(net_path)  # streamed per partition: one layer in memory, never the network
        if network not in sizes:
            sizes[network] = (describe(net_path)["nnz_total"], layers.widths)
        stats[(network, method, k)] = rank_layer_stats(layers, layers.widths, read_partition(p), k)
        layers.close()

    def features(network, method, k, mode, batch, params=None):
        if mode == "data-parallel":
            nnz, widths = sizes[network]
            return data_parallel_features(nnz, nnz + sum(widths[1:]), len(widths) - 1, k, batch)
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
            params = CostParams(0.0, 0.0, 0.0, 0.0)
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
