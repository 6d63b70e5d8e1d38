"""Aggregation: per-partition and per-run JSON files → pandas tables (CSV, written atomically).

Table schemas are documented in the README ("Results tables").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .atomic import atomic_path
from .errors import UserError

PART_RE = re.compile(r"(?:^|/)results/(?P<network>[^/]+)/partitions/(?P<method>[a-z]+)-k(?P<k>\d+)\.part\.json$")
BOUND_RE = re.compile(r"(?:^|/)results/(?P<network>[^/]+)/bounds/k(?P<k>\d+)\.json$")
RUN_RE = re.compile(r"(?:^|/)results/(?P<network>[^/]+)/runs/(?P<kind>infer|train)-(?P<method>[a-z]+)-k(?P<k>\d+)-"
                    r"(?P<mode>row-wise|data-parallel)(?:-b(?P<b>\d+))?\.json$")

PARTITION_COLUMNS = ["network", "method", "k", "volume_forward", "volume_training", "volume_per_layer_max",
                     "volume_forward_owner_away", "imbalance_max", "imbalance_max_wide", "balanced", "messages_forward", "max_send_forward", "max_recv_forward",
                     "max_send_training", "max_recv_training", "partition_seconds", "lower_bound_forward"]
RUN_COLUMNS = ["network", "kind", "method", "k", "mode", "batch_size", "step_seconds", "compute_seconds",
               "comm_seconds", "wait_seconds", "words_per_step_counted", "words_per_step_model",
               "messages_per_step", "samples_per_second", "edges_per_second", "test_accuracy", "loss_last",
               "peak_rss_mb_max", "words_match_model", "cores_per_rank"]


def _load(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read metrics ({e})") from None


def _match(regex, path):
    m = regex.search(Path(path).as_posix())
    if not m:
        raise UserError(f"{path}: not a results/... metrics path this stage understands")
    return m.groupdict()


def partition_table(paths, bound_paths=()) -> pd.DataFrame:
    """One row per partition; `lower_bound_forward` (from `spdnn bound`, same network and K) beside it."""
    bounds = {}
    for p in bound_paths:
        key = _match(BOUND_RE, p)
        bounds[(key["network"], int(key["k"]))] = _load(p)["lower_bound_forward"]
    rows = []
    for p in paths:
        key, m = _match(PART_RE, p), _load(p)
        k = int(key["k"])
        rows.append({"network": key["network"], "method": key["method"], "k": k,
                     **{c: m.get(c) for c in PARTITION_COLUMNS[3:-2]}, "partition_seconds": m.get("seconds"),
                     "lower_bound_forward": bounds.get((key["network"], k), 0 if k == 1 else None)})
    return pd.DataFrame(rows, columns=PARTITION_COLUMNS).sort_values(["network", "method", "k"], ignore_index=True)


def _per_rank_max(m: dict, field: str):
    ranks = m.get("per_rank") or []
    vals = [sum(r[field]) for r in ranks if field in r]
    return max(vals) if vals else None


def run_row(path) -> dict:
    key, m = _match(RUN_RE, path), _load(path)
    train = key["kind"] == "train"
    steps = m.get("steps_run") or 1
    if not train:  # an inference run is one pass over all images: report it as one "step"
        steps = 1
    row = {"network": key["network"], "kind": key["kind"], "method": key["method"], "k": int(key["k"]),
           "mode": key["mode"], "batch_size": int(key["b"]) if key["b"] else m.get("batch_size")}
    row["step_seconds"] = m.get("step_seconds") if train else m.get("seconds")
    for field in ("compute_seconds", "comm_seconds", "wait_seconds"):
        v = _per_rank_max(m, field)
        row[field] = v / steps if v is not None else None
    if key["mode"] == "row-wise":
        counted = sum(m.get("words_forward_counted", [])) + sum(m.get("words_backward_counted", []))
        model = sum(m.get("words_forward_model", [])) + sum(m.get("words_backward_model", []))
        msgs = sum(sum(r.get("messages_sent_forward", [])) + sum(r.get("messages_sent_backward", []))
                   for r in m.get("per_rank", []))
        row.update(words_per_step_counted=counted / steps, words_per_step_model=model / steps,
                   messages_per_step=msgs / steps)
    else:
        k = int(key["k"])
        sent = sum(r.get("words_sent_allreduce", 0) for r in m.get("per_rank", []))
        # Model: K ranks each send round(2(K−1)/K·M) words per step (data_parallel.py states the rounding).
        model = k * m.get("words_per_step_per_rank", 0) if train else 0
        row.update(words_per_step_counted=sent / steps if train else 0, words_per_step_model=model,
                   messages_per_step=2 * (k - 1) * k if train else 0)
    row["samples_per_second"] = m.get("samples_per_second")
    row["edges_per_second"] = m.get("edges_per_second")
    row["test_accuracy"] = m.get("test_accuracy")
    row["loss_last"] = m.get("loss_last")
    rss = [r.get("peak_rss_mb") for r in m.get("per_rank", []) if r.get("peak_rss_mb") is not None]
    row["peak_rss_mb_max"] = max(rss) if rss else None
    row["words_match_model"] = m.get("words_match_model")
    row["cores_per_rank"] = m.get("cores_per_rank")  # under 1: the ranks shared cores
    return row


def run_table(paths) -> pd.DataFrame:
    rows = [run_row(p) for p in paths]
    return pd.DataFrame(rows, columns=RUN_COLUMNS).sort_values(
        ["network", "kind", "mode", "method", "k", "batch_size"], ignore_index=True, na_position="first")


INFERENCE_COLUMNS = ["network", "images", "survivors", "seconds", "samples_per_second", "edges_per_second",
                     "truth", "matches_truth"]
SERIAL_RE = re.compile(r"(?:^|/)results/(?P<network>[^/]+)/inference/serial\.json$")


def inference_table(paths) -> pd.DataFrame:
    """Serial inference per network; `matches_truth` is true where the official categories were
    given and reproduced (a mismatch fails the workflow before this table is made), empty where
    the inputs were generated and there is nothing to check against."""
    rows = []
    for p in paths:
        key, m = _match(SERIAL_RE, p), _load(p)
        rows.append({"network": key["network"], **{c: m.get(c) for c in INFERENCE_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=INFERENCE_COLUMNS).sort_values("network", ignore_index=True)


def write_csv(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
