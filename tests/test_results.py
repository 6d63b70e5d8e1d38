"""Aggregation on small synthetic per-partition and per-run JSON files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from spdnn.errors import UserError
from spdnn.results import partition_table, run_table, write_csv


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_partition_and_run_tables(tmp_path):
    r = tmp_path / "results" / "net"
    parts = [
        _write(r / "partitions" / "hypergraph-k2.part.json", {
            "volume_forward": 10, "volume_training": 18, "volume_per_layer_max": 6, "imbalance_max": 1.01,
            "messages_forward": 4, "max_send_forward": 5, "max_recv_forward": 5, "max_send_training": 9,
            "max_recv_training": 9, "seconds": 0.5}),
        _write(r / "partitions" / "random-k2.part.json", {"volume_forward": 30, "seconds": 0.01}),
    ]
    rank = {"compute_seconds": [0.2, 0.2], "comm_seconds": [0.1, 0.1], "wait_seconds": [0.05, 0.05],
            "messages_sent_forward": [1, 1], "messages_sent_backward": [0, 1], "peak_rss_mb": 100.0}
    runs = [
        _write(r / "runs" / "train-hypergraph-k2-row-wise-b16.json", {
            "steps_run": 10, "step_seconds": 0.05, "samples_per_second": 320.0, "test_accuracy": 0.9,
            "loss_last": 0.3, "words_match_model": True, "words_forward_counted": [100, 60],
            "words_backward_counted": [0, 60], "words_forward_model": [100, 60], "words_backward_model": [0, 60],
            "per_rank": [rank, dict(rank, peak_rss_mb=120.0)]}),
        _write(r / "runs" / "train-none-k2-data-parallel-b16.json", {
            "steps_run": 10, "step_seconds": 0.08, "grad_words_per_step": 1000, "words_per_step_per_rank": 1000,
            "cores_per_rank": 0.5,
            "per_rank": [{"compute_seconds": [0.5], "comm_seconds": [0.2], "wait_seconds": [0.2],
                          "words_sent_allreduce": 10000, "peak_rss_mb": 90.0}] * 2}),
        _write(r / "runs" / "infer-hypergraph-k2-row-wise.json", {
            "seconds": 0.4, "batch_size": 4096, "edges_per_second": 1e9, "words_forward_counted": [50],
            "words_backward_counted": [0], "words_forward_model": [50], "words_backward_model": [0],
            "per_rank": [rank]}),
    ]
    bounds = [_write(r / "bounds" / "k2.json", {"k": 2, "lower_bound_forward": 7})]
    pt = partition_table(parts, bounds)
    assert list(pt["method"]) == ["hypergraph", "random"] and pt.loc[0, "partition_seconds"] == 0.5
    assert list(pt["lower_bound_forward"]) == [7, 7]  # beside every partition of that network and K
    assert pd.isna(partition_table(parts).loc[0, "lower_bound_forward"])  # bound switched off
    assert pt.loc[1, "volume_forward"] == 30 and pd.isna(pt.loc[1, "imbalance_max"])
    rt = run_table(runs).set_index(["kind", "mode"])
    tr = rt.loc[("train", "row-wise")]
    assert tr["words_per_step_counted"] == 22 and tr["words_per_step_model"] == 22  # 220 words / 10 steps
    assert tr["messages_per_step"] == pytest.approx(0.6) and tr["compute_seconds"] == pytest.approx(0.04)
    assert tr["peak_rss_mb_max"] == 120.0 and tr["batch_size"] == 16
    dp = rt.loc[("train", "data-parallel")]
    assert dp["words_per_step_model"] == 2 * 1 * 1000 and dp["words_per_step_counted"] == 2000
    assert dp["cores_per_rank"] == 0.5 and pd.isna(tr["cores_per_rank"])  # metrics from before the field: unknown
    inf = rt.loc[("infer", "row-wise")]
    assert inf["step_seconds"] == 0.4 and inf["words_per_step_counted"] == 50 and inf["batch_size"] == 4096
    write_csv(rt.reset_index(), tmp_path / "runs.csv")
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 3 and not list(tmp_path.glob(".runs.csv*"))


def test_unknown_paths_and_bad_json(tmp_path):
    bad = _write(tmp_path / "elsewhere.json", {})
    with pytest.raises(UserError, match="not a results"):
        partition_table([bad])
    broken = tmp_path / "results" / "n" / "partitions" / "block-k2.part.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{")
    with pytest.raises(UserError, match="cannot read metrics"):
        partition_table([broken])


def test_every_method_has_its_own_fixed_style():
    """Colour, marker and line style all differ between methods (random and block coincide at
    K = 2, and must both stay visible), and a method's style does not depend on the config."""
    from spdnn.plots import STYLES, style

    methods = ["hypergraph", "sweep", "random", "block", "external", "data-parallel"]
    for attr in ("color", "marker", "ls"):
        values = [repr(style(m)[attr]) for m in methods]
        assert len(set(values)) == len(values), attr
    assert style("random") == STYLES["random"] and style("random") is not STYLES["random"]


def test_inference_table(tmp_path):
    from spdnn.results import inference_table

    p = tmp_path / "results" / "gc" / "inference" / "serial.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"images": 10, "survivors": 3, "seconds": 0.5, "samples_per_second": 20.0,
                             "edges_per_second": 1e6, "truth": "t.tsv", "matches_truth": True}))
    table = inference_table([p])
    assert table.loc[0, "network"] == "gc" and bool(table.loc[0, "matches_truth"]) and table.loc[0, "survivors"] == 3


def test_the_cost_model_is_fitted_on_runs_whose_ranks_had_a_core_each(tmp_path):
    """A run with more ranks than cores (cores_per_rank < 1) measured the sharing, not the model's
    terms: it is predicted, not fitted on."""
    from conftest import spdnn

    from spdnn.costmodel import predict_table

    net = tmp_path / "results" / "n" / "network.h5"
    net.parent.mkdir(parents=True)
    spdnn("generate", "radixnet", "--neurons", 64, "--layers", 3, "-o", net)
    part = net.parent / "partitions" / "block-k2.part"
    part.parent.mkdir()
    spdnn("partition", net, "-k", 2, "--method", "block", "-o", part)
    rows = [("n", "train", "none", 2, "data-parallel", b, seconds, cores)
            for b, seconds, cores in ((16, 0.010, 1.0), (64, 0.030, 1.0), (32, 0.500, 0.5))]
    runs = pd.DataFrame(rows, columns=["network", "kind", "method", "k", "mode", "batch_size", "step_seconds",
                                       "cores_per_rank"])
    _, pred, n_fit = predict_table(runs, [str(part)], [16, 32, 64], max_fit_k=2)
    assert n_fit == 2
    dp = pred[pred["mode"] == "data-parallel"].set_index("batch_size")
    assert list(dp.loc[[16, 32, 64], "used_for_fit"]) == [True, False, True]
    assert list(dp.loc[[16, 32, 64], "measured_cores_per_rank"]) == [1.0, 0.5, 1.0]  # the figure marks it
    assert dp.loc[32, "predicted_step_seconds"] < 0.1  # the fit did not follow the shared run's 0.5 s
