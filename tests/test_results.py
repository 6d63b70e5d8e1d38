"""Aggregation on small synthetic per-partition and per-run JSON files."""

from __future__ import annotations

import json

import numpy as np
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


@pytest.fixture(scope="module")
def cost_model_partitions(tmp_path_factory):
    """A RadiX-Net and a random network (64 neurons, 4 layers) in the workflow's layout, with their
    K = 1 (trivial: one part), block K = 2, random K = 2 and random K = 3 partitions."""
    from spdnn.generate import radixnet_stream, random_stream
    from spdnn.network import LayerFile
    from spdnn.partition import partition_network
    from spdnn.partition_io import write_partition

    root = tmp_path_factory.mktemp("costmodel")
    parts = {}
    for kind, stream in (("radixnet", radixnet_stream(64, 4, 0)), ("random", random_stream([64] * 5, 8, 0))):
        net = root / "results" / kind / "network.h5"
        (net.parent / "partitions").mkdir(parents=True)
        stream.write(net)
        layers = LayerFile(net)
        for method, k in (("trivial", 1), ("block", 2), ("random", 2), ("random", 3)):
            part = net.parent / "partitions" / f"{method}-k{k}.part"
            values, _ = partition_network(layers, layers.widths, k, "block" if method == "trivial" else method)
            write_partition(values, part, k=k)
            parts[kind, method, k] = (net, part)
        layers.close()
    return parts


def test_the_cost_model_counts_the_block_entries_each_ranks_kernels_compute(cost_model_partitions):
    """A rank's entries in dense blocks are those its runtime's kernels put in blocks (the layer's
    rows of that rank, entries in stored order): all of a RadiX-Net's under a block partition, part
    of them where a random partition splits the row groups, none in a random network's rows."""
    from spdnn.costmodel import rank_layer_stats
    from spdnn.kernels import layer_kernels
    from spdnn.network import LayerFile
    from spdnn.partition_io import read_partition
    from spdnn.volume import split_by_layer

    def in_blocks(w):
        kernels = layer_kernels(w)
        return kernels.rows.size * kernels.row_length if kernels.dense_blocks else 0

    for kind, method, k, share in (("radixnet", "block", 2, "all"), ("radixnet", "random", 3, "some"),
                                   ("random", "block", 2, "none")):
        net, part_path = cost_model_partitions[kind, method, k]
        layers = LayerFile(net)
        part = read_partition(part_path)
        [stats] = rank_layer_stats(layers, layers.widths, [(part, k)])
        parts = split_by_layer(part, layers.widths)
        for t, w in enumerate(layers):
            for p in range(k):
                assert stats.block_load[t, p] == in_blocks(w[np.flatnonzero(parts[t + 1] == p)]), (kind, t, p)
            assert stats.whole_blocks[t] == in_blocks(w)
        layers.close()
        fraction = stats.block_load.sum() / stats.load.sum()
        assert {"all": fraction == 1, "some": 0 < fraction < 1, "none": fraction == 0}[share], (kind, fraction)


def test_the_cost_model_fits_a_rate_for_each_kernel(cost_model_partitions):
    """Step times made from known parameters (dense blocks 8× faster than CSR rows) on RadiX-Net
    and random networks, row-wise and data-parallel: the fit finds the parameters again and
    predicts every run."""
    from spdnn.costmodel import CostParams, predict_table

    truth = CostParams(gamma_block=1e-10, gamma_scattered=8e-10, alpha=2e-5, beta=5e-9, delta=3e-4, mu=1e-8)
    parts = [str(part) for (_, _, k), (_, part) in cost_model_partitions.items() if k <= 2]
    batches = [16, 64, 256]
    _, exact, _ = predict_table(pd.DataFrame(), parts, batches, given=truth)
    exact = exact[exact["k"] <= 2]
    runs = exact.rename(columns={"predicted_step_seconds": "step_seconds"}).assign(kind="train", cores_per_rank=1.0)
    params, pred, n_fit = predict_table(runs, parts, batches)
    assert n_fit == len(runs) == 2 * 4 * len(batches)  # K = 1, block, random and data-parallel
    np.testing.assert_allclose(pred["predicted_step_seconds"], pred["measured_step_seconds"], rtol=1e-6)
    np.testing.assert_allclose(params.vector(), truth.vector(), rtol=1e-4)


def test_cost_model_values_from_a_cluster_need_both_compute_rates(tmp_path, cost_model_partitions):
    from conftest import assert_user_error, spdnn

    runs = tmp_path / "runs.csv"
    runs.write_text("network,kind,method,k,mode,batch_size,step_seconds\n")
    part = cost_model_partitions["radixnet", "block", 2][1]
    out = ["--partitions", part, "--params", tmp_path / "p.json", "-o", tmp_path / "pred.csv"]
    assert_user_error(spdnn("costmodel", runs, "--gamma-block", "1e-10", "--alpha", "1e-5", *out, check=False),
                      "--gamma-scattered")
    assert not (tmp_path / "pred.csv").exists()
    spdnn("costmodel", runs, "--gamma-block", "1e-10", "--gamma-scattered", "8e-10", *out)
    params = json.loads((tmp_path / "p.json").read_text())
    assert params["source"] == "config" and params["gamma_scattered"] == 8e-10 and params["beta"] == 0.0
    assert (pd.read_csv(tmp_path / "pred.csv")["predicted_step_seconds"] > 0).all()


def test_the_cost_model_reads_a_network_once_for_all_its_partitions(cost_model_partitions):
    """One pass over a network's layers for all its partitions (read as layer slices) gives each
    partition the statistics it gets alone from its whole vector."""
    from spdnn.costmodel import rank_layer_stats
    from spdnn.network import LayerFile
    from spdnn.partition_io import PartitionReader, read_partition
    from spdnn.volume import partition_metrics

    for kind in ("radixnet", "random"):
        items = [(part, k) for (n, _, k), (_, part) in cost_model_partitions.items() if n == kind]
        layers = LayerFile(cost_model_partitions[kind, "block", 2][0])
        together = rank_layer_stats(layers, layers.widths, [(PartitionReader(p, layers.widths), k) for p, k in items])
        for (p, k), stats in zip(items, together):
            [alone] = rank_layer_stats(layers, layers.widths, [(read_partition(p), k)])
            volumes = partition_metrics(layers, layers.widths, read_partition(p), k)["volume_per_layer"]
            assert list(stats.words.sum(axis=1)) == [2 * v for v in volumes]  # each word: a send, a receive
            for name in ("load", "block_load", "msgs", "words", "whole_blocks"):
                assert np.array_equal(getattr(stats, name), getattr(alone, name)), (kind, p, name)
        assert [stats.load.shape[1] for stats in together] == [k for _, k in items]
        layers.close()


def test_the_cost_model_rejects_a_partition_with_ids_beyond_its_k(tmp_path, cost_model_partitions):
    from conftest import assert_user_error, spdnn

    from spdnn.partition_io import read_partition, write_partition

    net, good = cost_model_partitions["radixnet", "random", 3]
    bad = tmp_path / "results" / "radixnet" / "partitions" / "random-k2.part"  # K = 2 by its name, ids 0..2
    bad.parent.mkdir(parents=True)
    (tmp_path / "results" / "radixnet" / "network.h5").symlink_to(net)
    write_partition(read_partition(good), bad, k=3)
    runs = tmp_path / "runs.csv"
    runs.write_text("network,kind,method,k,mode,batch_size,step_seconds\n")
    out = tmp_path / "pred.csv"
    assert_user_error(spdnn("costmodel", runs, "--partitions", bad, "--params", tmp_path / "p.json", "-o", out,
                            check=False), "part id 2 ≥ K = 2")
    assert not out.exists()
