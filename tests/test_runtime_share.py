"""Each rank reads, holds and writes only its share: bytes read /K, binary partitions read by
layer slices, one neighbourhood communicator at any depth, no exchange once every sample died,
an up-front refusal of a run that would not fit."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import assert_user_error, mpirun, spdnn

from spdnn.network import read_network
from spdnn.partition_io import PartitionReader, read_partition


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("share")
    spdnn("generate", "radixnet", "--neurons", 256, "--layers", 12, "--seed", 3, "-o", d / "n.h5")
    spdnn("reinit", d / "n.h5", "-o", d / "he.h5")  # trainable: the training recipe's weights
    spdnn("images", "--network", d / "n.h5", "-o", d / "im.tsv")
    for k in (1, 2, 4):
        spdnn("partition", d / "n.h5", "-k", k, "--method", "random", "-o", d / f"k{k}.part")
    return d


def test_partition_writes_a_binary_twin_read_by_slices(net):
    text = np.loadtxt(net / "k4.part", dtype=np.int64)
    binary = np.load(net / "k4.part.npy")
    assert binary.dtype == np.uint8 and np.array_equal(binary, text)
    reader = PartitionReader(net / "k4.part", [256] * 13)
    assert reader.binary and np.array_equal(reader.layer(3), text[3 * 256:4 * 256])
    assert reader.bytes_read < 256 + 200  # the header and one layer, not the whole file


def test_binary_and_text_partitions_give_the_same_run(net, tmp_path):
    (tmp_path / "text.part").write_bytes((net / "k2.part").read_bytes())  # no .npy beside it
    outs = []
    for part in (net / "k2.part", tmp_path / "text.part"):
        out = tmp_path / f"{part.name}.h5"
        mpirun(2, "train", net / "he.h5", "--partition", part, "--epochs", 1, "--batch-size", 64, "--lr", 0.01,
               "-o", out, "--metrics", f"{out}.json")
        outs.append(read_network(out))
        assert json.loads(open(f"{out}.json").read())["words_match_model"] is True
    for a, b in zip(outs[0].layers, outs[1].layers):
        np.testing.assert_array_equal(a.data, b.data)


def test_a_stale_binary_partition_is_ignored(net, tmp_path):
    for suffix in ("", ".npy"):
        (tmp_path / f"p.part{suffix}").write_bytes((net / f"k2.part{suffix}").read_bytes())
    ids = (tmp_path / "p.part").read_text().split()
    ids[0] = "1" if ids[0] == "0" else "0"
    (tmp_path / "p.part").write_text("\n".join(ids) + "\n")
    os.utime(tmp_path / "p.part.npy", ns=(1, 1))  # older than the edited text
    assert read_partition(tmp_path / "p.part")[0] == int(ids[0])


def test_bytes_read_per_rank_shrink_with_k(net, tmp_path):
    most, total, partition = {}, {}, {}
    for k in (1, 2, 4):
        part = net / f"k{k}.part"
        mpirun(k, "infer", net / "n.h5", net / "im.tsv", "--partition", part, "-o", tmp_path / f"c{k}.tsv",
               "--metrics", tmp_path / f"m{k}.json")
        ranks = json.loads((tmp_path / f"m{k}.json").read_text())["per_rank"]
        read = [r["bytes_read"] for r in ranks]
        most[k], total[k] = max(read), sum(read)
        partition[k] = max(r["bytes_read_partition"] for r in ranks)
        assert partition[k] < 3 * 13 * 256 + 1000  # two passes over 1 byte per neuron at most
    for k in (2, 4):  # the ids are checked in shares: a rank reads ⌈13/K⌉ of the 13 slices, not all
        assert partition[k] <= partition[1] - (13 - -(-13 // k)) * 256, partition
    for k in (2, 4):  # the layers are read once in all
        assert abs(total[k] - total[1]) < 0.1 * total[1], total
    assert most[2] < 0.6 * most[1] and most[4] < 0.35 * most[1], most
    assert (tmp_path / "c4.tsv").read_text() == (tmp_path / "c1.tsv").read_text()


def test_inference_stops_exchanging_once_every_sample_died(tmp_path):
    spdnn("generate", "radixnet", "--neurons", 64, "--layers", 10, "--bias", -100, "-o", tmp_path / "dead.h5")
    spdnn("images", "--network", tmp_path / "dead.h5", "--threshold", 0.5, "-o", tmp_path / "im.tsv")
    spdnn("partition", tmp_path / "dead.h5", "-k", 2, "--method", "block", "-o", tmp_path / "p.part")
    mpirun(2, "infer", tmp_path / "dead.h5", tmp_path / "im.tsv", "--partition", tmp_path / "p.part",
           "-o", tmp_path / "c.tsv", "--metrics", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["survivors"] == 0 and m["words_match_model"] is True
    assert m["samples_per_layer"][:4] == [1797] * 4 and m["samples_per_layer"][4:] == [0] * 6
    assert sum(m["words_forward_counted"][4:]) == 0


def test_neighbour_transport_at_any_depth(tmp_path):
    """1,100 layers would need 2,200 graph communicators, one per layer and direction: beyond
    MPICH's limit (2,046 here: a loop of Create_dist_graph_adjacent fails at the 2,047th). One
    shared communicator works, and moves the words of point-to-point."""
    widths = ",".join(["16"] + ["8"] * 1099 + ["10"])
    spdnn("generate", "random", "--widths", widths, "--nnz-per-row", 2, "--seed", 1, "-o", tmp_path / "deep.h5")
    spdnn("partition", tmp_path / "deep.h5", "-k", 2, "--method", "random", "-o", tmp_path / "p.part")
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).random((40, 16)), y=np.arange(40) % 10)
    res = {}
    for exchange in ("neighbor", "p2p"):
        out = tmp_path / f"{exchange}.h5"
        mpirun(2, "train", tmp_path / "deep.h5", "--partition", tmp_path / "p.part", "--data", tmp_path / "d.npz",
               "--epochs", 1, "--batch-size", 16, "--lr", 1e-4, "--exchange", exchange, "-o", out,
               "--metrics", f"{out}.json", timeout=600)
        res[exchange] = json.loads(open(f"{out}.json").read())
    assert res["neighbor"]["words_match_model"] and res["neighbor"]["words_forward_counted"] == res["p2p"]["words_forward_counted"]
    assert res["neighbor"]["loss_last"] == res["p2p"]["loss_last"]


def test_a_run_that_would_not_fit_stops_up_front(net, tmp_path):
    proc = mpirun(2, "train", net / "he.h5", "--partition", net / "k2.part", "--epochs", 1, "--batch-size", 256,
                  "--max-memory", 0.001, "-o", tmp_path / "t.h5", check=False)
    assert_user_error(proc, "needs", "GiB per rank", "--max-memory")
    assert not any(tmp_path.iterdir())
