"""Communication volume and balance of a row-wise partition (README, "Design reference"), from the model.

For layer k, the forward step sends x^{k-1}_j once from its owner p = part_{k-1}[j] to every other
rank q that owns a row reading it: V_k = Σ_j (λ_j^k − 1). Backward (fold) sends the same words in
reverse for k ≥ 2. Messages = directed pairs (p → q) with at least one word.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .arrays import distinct
from .errors import UserError

WIDE_ROWS_PER_PART = 10  # `imbalance_max_wide`: layers with at least 10·K rows


def split_by_layer(part: np.ndarray, widths) -> list[np.ndarray]:
    off = np.concatenate([[0], np.cumsum(np.asarray(widths, dtype=np.int64))])
    return [part[off[k]:off[k + 1]] for k in range(len(widths))]


def layer_reads(w, part_in: np.ndarray, part_out: np.ndarray):
    """Each nonzero of a layer as (its column, the part of the row reading it, whether that part is
    not the column's owner): what `layer_traffic` and `owner_away_words` both count from."""
    rows = np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))
    cols = w.indices.astype(np.int64)
    recv = part_out[rows].astype(np.int64)
    return cols, recv, recv != part_in[cols]


def layer_traffic(w, part_in: np.ndarray, part_out: np.ndarray, k_parts: int, reads=None):
    """Forward words of one layer as unique (j, receiver) pairs → (senders, receivers, columns).
    `reads`: the layer's `layer_reads` where the caller has them."""
    cols, recv, remote = layer_reads(w, part_in, part_out) if reads is None else reads
    key = distinct(cols[remote] * k_parts + recv[remote], limit=w.shape[1] * k_parts)
    j, q = np.divmod(key, k_parts)
    return part_in[j].astype(np.int64), q, j


def owner_away_words(w, part_in: np.ndarray, part_out: np.ndarray, reads=None) -> int:
    """Words of one layer's expand sent because a column's owner holds none of its readers: the
    columns read somewhere and by no row of the owner's part. Each of them sends one word more than
    its readers' own spread over the parts (λ_j − 1 = (|parts(R_j)| − 1) + [owner ∉ parts(R_j)]), so
    the rest of the volume is what splitting the readers costs, and this part what the owners'
    placement relative to the next layer costs (at K = 2 on the real Graph Challenge network, 97 % of
    the method's volume: benchmarks/README.md). `reads`: as in `layer_traffic`."""
    cols, _, remote = layer_reads(w, part_in, part_out) if reads is None else reads
    read = np.bincount(cols, minlength=part_in.size) > 0
    read_locally = np.bincount(cols[~remote], minlength=part_in.size) > 0
    return int(np.count_nonzero(read & ~read_locally))


def layer_loads(w, part_out: np.ndarray, k_parts: int) -> np.ndarray:
    return np.bincount(part_out, weights=np.diff(w.indptr), minlength=k_parts).astype(np.int64)


def layer_capacity(row_weights: np.ndarray, k_parts: int, epsilon: float) -> int:
    """The largest load a part may carry in a layer: floor(max((1+ε)·avg, avg + w_max)), avg =
    Σ weights / K, w_max the heaviest row (rows are indivisible; README, "Design reference").

    One integer, computed exactly: ε is read as the decimal it was written as (0.13 = 13/100, not
    the float 0.130000000000000004), so with ε = 0.13 and avg = 100 a load of 113 is balanced for
    every partitioner, `volume`, the balance check and `bound` alike. Loads are integers, so
    load ≤ capacity ⟺ load ≤ the real-valued bound."""
    total = int(np.sum(row_weights, dtype=np.int64))
    heaviest = int(np.max(row_weights)) if np.size(row_weights) else 0
    eps = Fraction(repr(float(epsilon)))
    avg = Fraction(total, k_parts)
    return math.floor(max((1 + eps) * avg, avg + heaviest))


def rows_per_part(weights: np.ndarray, k: int, epsilon: float) -> tuple[int, int]:
    """(most, fewest) rows one part can hold when every part is within the balance bound."""
    bound = layer_capacity(weights, k, epsilon)
    most = int(np.searchsorted(np.cumsum(np.sort(weights)), bound, side="right"))
    return most, max(0, weights.size - (k - 1) * most)


def layer_imbalance(loads: np.ndarray) -> float:
    avg = loads.sum() / loads.size
    return float(loads.max() / avg) if avg > 0 else 1.0


def layer_stats(w, part_in: np.ndarray, part_out: np.ndarray, k_parts: int, epsilon: float | None = None) -> dict:
    """One layer's share of `partition_metrics`: words and messages of its expand (and how many of
    the words are `owner_away_words`), words each part sends and receives, its loads."""
    reads = layer_reads(w, part_in, part_out)  # once: both counts below read the same nonzeros
    senders, receivers, _ = layer_traffic(w, part_in, part_out, k_parts, reads)
    loads = layer_loads(w, part_out, k_parts)
    return {"volume": int(senders.size), "owner_away": owner_away_words(w, part_in, part_out, reads),
            "messages": int(distinct(senders * k_parts + receivers, limit=k_parts * k_parts).size),
            "sent": np.bincount(senders, minlength=k_parts), "received": np.bincount(receivers, minlength=k_parts),
            "imbalance": layer_imbalance(loads), "wide": w.shape[0] >= WIDE_ROWS_PER_PART * k_parts,
            "max_load": int(loads.max()),
            "violation": epsilon is not None and loads.max() > layer_capacity(np.diff(w.indptr), k_parts, epsilon)}


def partition_metrics(layers, widths, part: np.ndarray, k_parts: int, epsilon: float | None = None) -> dict:
    """Everything `spdnn volume` prints. Per-rank totals are summed over layers."""
    parts = split_by_layer(part, widths)
    stats = [layer_stats(w, parts[k - 1], parts[k], k_parts, epsilon)  # any iterable of layers (streamed)
             for k, w in enumerate(layers, start=1)]
    return combine_layer_stats(stats, k_parts, epsilon)


def combine_layer_stats(stats: list[dict], k_parts: int, epsilon: float | None = None) -> dict:
    """`partition_metrics` from the `layer_stats` of layers 1..L, in order."""
    per_layer_volume = [st["volume"] for st in stats]
    per_layer_imbalance = [st["imbalance"] for st in stats]
    fwd_sent = np.zeros(k_parts, np.int64)
    fwd_recv = np.zeros(k_parts, np.int64)
    bwd_sent = np.zeros(k_parts, np.int64)
    bwd_recv = np.zeros(k_parts, np.int64)
    for k, st in enumerate(stats, start=1):
        fwd_sent += st["sent"]
        fwd_recv += st["received"]
        if k >= 2:  # the fold reverses the expand; layer 1 has none (δ^0 is never needed)
            bwd_sent += st["received"]
            bwd_recv += st["sent"]
    violations = [k for k, st in enumerate(stats, start=1) if st["violation"]]
    # A layer of few rows (a 10-row classifier at K = 8) cannot be balanced better than a row per
    # rank: its imbalance says nothing about the partitioner (`wide`). Tables show both.
    wide = [st["imbalance"] for st in stats if st["wide"]]
    total = int(sum(per_layer_volume))
    return {
        "k": k_parts,
        "layers": len(stats),
        "volume_forward": total,
        "volume_training": int(2 * total - per_layer_volume[0]),
        "volume_per_layer": per_layer_volume,
        "volume_per_layer_max": int(max(per_layer_volume)),
        "volume_forward_owner_away": int(sum(st["owner_away"] for st in stats)),
        "messages_per_layer": [st["messages"] for st in stats],
        "messages_forward": int(sum(st["messages"] for st in stats)),
        "imbalance_per_layer": per_layer_imbalance,
        "imbalance_max": float(max(per_layer_imbalance)),
        "imbalance_max_wide": float(max(wide)) if wide else None,
        "max_load_per_layer": [st["max_load"] for st in stats],
        "max_send_forward": int(fwd_sent.max()),
        "max_recv_forward": int(fwd_recv.max()),
        "max_send_training": int((fwd_sent + bwd_sent).max()),
        "max_recv_training": int((fwd_recv + bwd_recv).max()),
        "epsilon": epsilon,
        "balanced": None if epsilon is None else not violations,
        "unbalanced_layers": violations,
    }


def check_length(size: int, widths, where) -> None:
    """A partition names one part per vertex: n_0 + … + n_L entries."""
    total = int(np.sum(widths, dtype=np.int64))
    if size != total:
        raise UserError(f"{where}: has {size} entries, the network has {total} vertices (n_0 + … + n_L)")


def check_partition(part: np.ndarray, widths, k_parts: int, where: str) -> None:
    check_length(part.size, widths, where)
    if part.size and part.min() < 0:
        raise UserError(f"{where}: line {int(np.argmax(part < 0)) + 1}: negative part id {int(part.min())}")
    if part.size and part.max() >= k_parts:
        line = int(np.argmax(part >= k_parts)) + 1
        raise UserError(f"{where}: line {line}: part id {int(part[line - 1])} >= K = {k_parts}")
