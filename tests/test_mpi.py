"""Distributed runs under real mpiexec: equal to the serial reference, words = model volume."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import BIN, assert_user_error, env, mpirun, spdnn

from spdnn.datasets import load_dataset
from spdnn.graphchallenge import read_categories
from spdnn.network import read_network, write_network
from spdnn.reference import sgd_step
from spdnn.training import batch_schedule

TRAIN = ["--epochs", 1, "--batch-size", 32, "--lr", 0.05, "--seed", 3]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpi")
    spdnn("generate", "radixnet", "--neurons", 256, "--layers", 8, "--seed", 2, "-o", d / "radix.h5")
    spdnn("images", "--neurons", 256, "-o", d / "images.tsv")
    spdnn("infer", d / "radix.h5", d / "images.tsv", "-o", d / "serial.tsv", "--activations", d / "serial_act.h5")
    # A classifier with uneven rows (pruned-like): 64 → 90 → 70 → 10.
    spdnn("generate", "random", "--widths", "64,90,70,10", "--nnz-per-row", 12, "--seed", 4, "-o", d / "clf.h5")
    for k in (2, 3, 4, 8):
        for method in ("random", "hypergraph"):
            spdnn("partition", d / "radix.h5", "-k", k, "--method", method, "-o", d / f"radix-{method}-k{k}.part")
        spdnn("partition", d / "clf.h5", "-k", k, "--method", "block" if k == 3 else "hypergraph", "-o", d / f"clf-k{k}.part")
    (d / "radix-k1.part").write_text("0\n" * (256 * 9))
    (d / "clf-k1.part").write_text("0\n" * (64 + 90 + 70 + 10))
    return d


def read_act(path):
    with h5py.File(path) as f:
        return f["activations"][:]


@pytest.mark.parametrize("k,method", [(1, None), (2, "hypergraph"), (3, "random"), (4, "hypergraph"), (8, "random")])
def test_inference_equals_serial(work, k, method):
    part = work / ("radix-k1.part" if k == 1 else f"radix-{method}-k{k}.part")
    out = work / f"cats-{k}.tsv"
    mpirun(k, "infer", work / "radix.h5", work / "images.tsv", "--partition", part, "-o", out,
           "--activations", work / f"act-{k}.h5", "--batch-size", 700, "--metrics", work / f"inf-{k}.json")
    assert out.read_text() == (work / "serial.tsv").read_text()
    serial = read_categories(work / "serial.tsv")
    assert 0 < serial.size < 1797
    np.testing.assert_allclose(read_act(work / f"act-{k}.h5"), read_act(work / "serial_act.h5"), rtol=1e-5, atol=1e-5)
    m = json.loads((work / f"inf-{k}.json").read_text())
    vol = json.loads(spdnn("volume", work / "radix.h5", part, "-k", k).stdout)
    assert m["words_match_model"] is True
    samples = m["samples_per_layer"]  # dead samples are dropped every few layers
    assert samples[0] == 1797 and samples[-1] < 1797 and all(a >= b for a, b in itertools.pairwise(samples))
    assert m["words_forward_counted"] == [s * v for s, v in zip(samples, vol["volume_per_layer"])]
    assert sum(r["words_sent_forward"][0] for r in m["per_rank"]) == 1797 * vol["volume_per_layer"][0]
    assert len(m["per_rank"]) == k and all(r["peak_rss_mb"] > 0 for r in m["per_rank"])


@pytest.mark.parametrize("k,method,exchange", [(2, "hypergraph", "p2p"), (3, "random", "neighbor")])
def test_streamed_inference_equals_serial(work, k, method, exchange):
    """--stream-layers: each rank reads its rows of a layer when the pass reaches it and drops them
    after (three passes here: batches of 700). Same categories and activations as the serial run,
    the words counted equal the model's, and the report covers every layer."""
    part = work / f"radix-{method}-k{k}.part"
    out, act, metrics = work / f"stream-{k}.tsv", work / f"stream-act-{k}.h5", work / f"stream-{k}.json"
    mpirun(k, "infer", work / "radix.h5", work / "images.tsv", "--partition", part, "-o", out, "--stream-layers",
           "--exchange", exchange, "--activations", act, "--batch-size", 700, "--metrics", metrics)
    assert out.read_text() == (work / "serial.tsv").read_text()
    np.testing.assert_array_equal(read_act(act), read_act(work / "serial_act.h5"))
    m = json.loads(metrics.read_text())
    vol = json.loads(spdnn("volume", work / "radix.h5", part, "-k", k).stdout)
    assert m["stream_layers"] is True and m["words_match_model"] is True
    assert m["words_forward_counted"] == [s * v for s, v in zip(m["samples_per_layer"], vol["volume_per_layer"])]
    rows = np.array([r["rows_per_layer"] for r in m["per_rank"]])
    assert rows.shape == (k, 8) and (rows.sum(axis=0) == 256).all()
    assert sum(r["nnz_local"] for r in m["per_rank"]) == 8 * 256 * 32  # every layer's rows, once (RadiX-Net: 32 a row)


def test_streamed_inference_stops_reading_when_every_sample_is_dead(work):
    """With every sample dead (bias −10) the ranks agree at the first check (layer 4) and the
    streamed run reads none of the later layers: about half the bytes of the run that loads its
    share of every layer first; the same (empty) categories as the serial run."""
    net, part = work / "dead.h5", work / "dead-k2.part"
    spdnn("generate", "radixnet", "--neurons", 256, "--layers", 8, "--seed", 2, "--bias", -10, "-o", net)
    spdnn("partition", net, "-k", 2, "--method", "random", "-o", part)
    spdnn("infer", net, work / "images.tsv", "-o", work / "dead-serial.tsv")
    read = {}
    for flags in ((), ("--stream-layers",)):
        out, metrics = work / f"dead-{len(flags)}.tsv", work / f"dead-{len(flags)}.json"
        mpirun(2, "infer", net, work / "images.tsv", "--partition", part, "-o", out, *flags, "--metrics", metrics)
        assert out.read_text() == (work / "dead-serial.tsv").read_text() == ""
        m = json.loads(metrics.read_text())
        assert m["samples_per_layer"] == [1797] * 4 + [0] * 4
        read[flags] = sum(r["bytes_read"] for r in m["per_rank"])
    assert read[("--stream-layers",)] < 0.6 * read[()]


@pytest.mark.parametrize("batch", [300, 4096])
def test_data_parallel_inference(work, batch):
    """Each batch is split over the ranks (300: 6 batches in three slices of 100, the last of 99; the
    default 4,096: the 1,797 digits in one batch, and still every rank works on a third). The same
    categories and activations, bitwise (a sample's sums do not depend on its batch), as serial."""
    out, act, metrics = work / f"dp{batch}.tsv", work / f"dp{batch}.h5", work / f"dp{batch}.json"
    mpirun(3, "infer", work / "radix.h5", work / "images.tsv", "--mode", "data-parallel", "-o", out,
           "--batch-size", batch, "--activations", act, "--metrics", metrics)
    assert out.read_text() == (work / "serial.tsv").read_text()
    np.testing.assert_array_equal(read_act(act), read_act(work / "serial_act.h5"))
    m = json.loads(metrics.read_text())
    assert [r["images"] for r in m["per_rank"]] == [599, 599, 599] and m["setup_seconds"] > 0


def test_activations_of_batches_that_die_in_a_narrowing_network(work):
    """--activations where every sample dies before the last layer of a 64 → 90 → 70 → 10 network
    (bias −10): zeros for every image, serial and distributed (the serial run once stopped with a
    traceback: the dead batch's block was layer 1's, 90 high, not 10)."""
    net = work / "clf-dead.h5"
    spdnn("generate", "random", "--widths", "64,90,70,10", "--nnz-per-row", 12, "--seed", 4, "--bias", -10, "-o", net)
    spdnn("images", "--neurons", 64, "-o", work / "im64.tsv")
    runs = {"serial": [], "row-wise": ["--partition", work / "clf-k2.part"], "data-parallel": ["--mode", "data-parallel"]}
    for name, flags in runs.items():
        out, act = work / f"dead-{name}.tsv", work / f"dead-{name}.h5"
        cmd = ("infer", net, work / "im64.tsv", "-o", out, "--activations", act, "--batch-size", 700, *flags)
        if name == "serial":
            spdnn(*cmd)
        else:
            mpirun(2, *cmd)
        assert out.read_text() == ""
        a = read_act(act)
        assert a.shape == (1797, 10) and not a.any()


def test_data_parallel_inference_of_fewer_images_than_ranks(work):
    """Two images over three ranks: one rank gets none; a network whose last layer is narrower
    than its first (an empty slice's block has the first layer's height)."""
    from spdnn.datasets import digits_images
    from spdnn.images import write_images

    write_images(digits_images(64, 0.5)[:2], work / "two.tsv")
    spdnn("infer", work / "clf.h5", work / "two.tsv", "-o", work / "two-serial.tsv", "--activations", work / "two.h5")
    mpirun(3, "infer", work / "clf.h5", work / "two.tsv", "--mode", "data-parallel", "-o", work / "two-dp.tsv",
           "--activations", work / "two-dp.h5", "--metrics", work / "two-dp.json")
    assert (work / "two-dp.tsv").read_text() == (work / "two-serial.tsv").read_text() != ""
    np.testing.assert_array_equal(read_act(work / "two-dp.h5"), read_act(work / "two.h5"))
    assert [r["images"] for r in json.loads((work / "two-dp.json").read_text())["per_rank"]] == [1, 0, 1]


def serial_training(net_path, seed=3, lr=0.05, batch=32, epochs=1):
    net = read_network(net_path)
    data = load_dataset("digits", None, net.widths[0], seed)
    for _, _, ids in batch_schedule(len(data.y_train), batch, epochs, seed):
        sgd_step(net, np.ascontiguousarray(data.x_train[ids].T), data.y_train[ids], lr, "cross-entropy")
    return net


def assert_same_weights(a, b, rtol=1e-5):
    """rtol=0: bitwise (distributed runs sum in float64 and round once, as the serial run does)."""
    if rtol == 0:
        for wa, wb, ba, bb in zip(a.layers, b.layers, a.biases, b.biases):
            np.testing.assert_array_equal(wa.indices, wb.indices)
            np.testing.assert_array_equal(wa.data, wb.data)
            np.testing.assert_array_equal(ba, bb)
        return
    for wa, wb in zip(a.layers, b.layers):
        assert (wa != 0).nnz == (wb != 0).nnz or wa.nnz == wb.nnz
        np.testing.assert_allclose(wa.toarray(), wb.toarray(), rtol=rtol, atol=1e-6)
    for ba, bb in zip(a.biases, b.biases):
        np.testing.assert_allclose(ba, bb, rtol=rtol, atol=1e-6)


@pytest.fixture(scope="module")
def trained_k1(work):
    mpirun(1, "train", work / "clf.h5", "--partition", work / "clf-k1.part", *TRAIN, "-o", work / "t1.h5")
    return read_network(work / "t1.h5")


def test_train_k1_equals_serial_reference(work, trained_k1):
    ref = serial_training(work / "clf.h5")
    assert_same_weights(trained_k1, ref, rtol=0)
    assert (trained_k1.layers[0] != read_network(work / "clf.h5").layers[0]).nnz > 0  # it did train


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_train_equals_k1(work, trained_k1, k):
    out = work / f"t{k}.h5"
    mpirun(k, "train", work / "clf.h5", "--partition", work / f"clf-k{k}.part", *TRAIN, "-o", out,
           "--metrics", work / f"t{k}.json")
    assert_same_weights(read_network(out), trained_k1, rtol=0)
    m = json.loads((work / f"t{k}.json").read_text())
    vol = json.loads(spdnn("volume", work / "clf.h5", work / f"clf-k{k}.part", "-k", k).stdout)
    samples = len(load_dataset("digits", None, 64, 3).y_train)  # every training sample passes once
    assert m["words_match_model"] is True
    assert m["words_forward_counted"] == [samples * v for v in vol["volume_per_layer"]]
    assert m["words_backward_counted"] == [0] + [samples * v for v in vol["volume_per_layer"][1:]]
    assert m["test_accuracy"] > 0.1 and m["steps"] == 45
    assert m["setup_seconds"] > 0 and m["evaluate_seconds"] > 0 and m["write_seconds"] > 0
    # mpiexec binds no rank: each may run on every CPU of this process, shared by the K ranks
    assert m["cores_per_rank"] == len(os.sched_getaffinity(0)) / k


def test_neighbor_collectives_transport(work, trained_k1):
    """MPI-3 Neighbor_alltoallv moves the same words and gives the same results as point-to-point."""
    mpirun(4, "train", work / "clf.h5", "--partition", work / "clf-k4.part", *TRAIN, "-o", work / "tn.h5",
           "--exchange", "neighbor", "--metrics", work / "tn.json")
    assert_same_weights(read_network(work / "tn.h5"), trained_k1, rtol=0)
    assert json.loads((work / "tn.json").read_text())["words_match_model"] is True
    mpirun(3, "infer", work / "radix.h5", work / "images.tsv", "--partition", work / "radix-random-k3.part",
           "-o", work / "cn.tsv", "--exchange", "neighbor")
    assert (work / "cn.tsv").read_text() == (work / "serial.tsv").read_text()


def test_data_parallel_training_equals_k1(work, trained_k1):
    mpirun(3, "train", work / "clf.h5", "--mode", "data-parallel", *TRAIN, "-o", work / "tdp.h5", "--metrics", work / "tdp.json")
    assert_same_weights(read_network(work / "tdp.h5"), trained_k1, rtol=0)
    m = json.loads((work / "tdp.json").read_text())
    net = read_network(work / "clf.h5")
    assert m["grad_words_per_step"] == net.nnz + sum(net.widths[1:])
    assert m["words_match_model"] is True and m["words_per_step_per_rank"] == round(4 / 3 * m["grad_words_per_step"])


def test_data_parallel_training_with_a_rank_that_gets_no_samples(tmp_path):
    """Batches of 4 over 3 ranks, the epoch's last one of 1 or 2 samples: a rank with no sample in
    that step adds zeros to the sum, not the gradient it sent the step before (its buffer is kept
    from step to step); the weights still equal the serial run's."""
    net, part = tmp_path / "small.h5", tmp_path / "k1.part"
    spdnn("generate", "random", "--widths", "64,48,40,10", "--nnz-per-row", 5, "--seed", 2, "-o", net)
    spdnn("partition", net, "-k", 1, "--method", "block", "-o", part)
    args = ["--dataset", "digits", "--epochs", 1, "--batch-size", 4, "--lr", 0.05, "--seed", 3]
    assert len(load_dataset("digits", None, 64, 3).y_train) % 4 in (1, 2)
    spdnn("train", net, "--partition", part, *args, "-o", tmp_path / "serial.h5")
    mpirun(3, "train", net, "--mode", "data-parallel", *args, "-o", tmp_path / "dp.h5")
    assert_same_weights(read_network(tmp_path / "dp.h5"), read_network(tmp_path / "serial.h5"), rtol=0)


def test_checkpoint_resume_gives_same_result(work):
    out = work / "resumed.h5"
    args = ["train", work / "clf.h5", "--partition", work / "clf-k2.part", *TRAIN, "-o", out, "--checkpoint-every", 5]
    proc = mpirun(2, *args, "--stop-after", 12, check=False)
    assert proc.returncode == 3, proc.stderr
    assert not out.exists() and Path(str(out) + ".ckpt.h5").exists()
    proc = mpirun(2, *args)
    assert "resuming" in proc.stderr and "at step 12" in proc.stderr
    mpirun(2, "train", work / "clf.h5", "--partition", work / "clf-k2.part", *TRAIN, "-o", work / "straight.h5")
    a, b = read_network(out), read_network(work / "straight.h5")
    for wa, wb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(wa.data, wb.data)  # bitwise: resume replays the same steps
    assert not Path(str(out) + ".ckpt.h5").exists()


WRITE_BY_RANKS = """
import sys
from mpi4py import MPI
from spdnn.data_parallel import DataParallelStepper
from spdnn.network import read_header, read_network
from spdnn.rowwise import RowWiseModel, load_partition_collective
net, part, out, replica_out = sys.argv[1:]
comm, header = MPI.COMM_WORLD, read_header(net)
model = RowWiseModel(comm, net, load_partition_collective(comm, header, part), header)
model.write_network(out, {"written": "by the ranks"}, {"step": 7})
replicas = DataParallelStepper(comm, read_network(net), None, "cross-entropy", 10, cores=1)
replicas.write(replica_out, {"written": "by the ranks"}, {"step": 7})
"""


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """4 layers of 360,000 nonzeros (arrays of two chunks, the second padded), a small last one, and a
    bias of its own for every neuron."""
    d = tmp_path_factory.mktemp("wide")
    spdnn("generate", "random", "--widths", "64,9000,9000,9000,9000,10", "--nnz-per-row", 40, "--seed", 5,
          "--ymax", 32, "-o", d / "wide.h5")
    net = read_network(d / "wide.h5")
    net.biases = [np.random.default_rng(k).standard_normal(b.size).astype(np.float32) for k, b in enumerate(net.biases)]
    write_network(net, d / "wide.h5")
    return d


@pytest.mark.parametrize("k, method", [(2, "random"), (3, "random"), (8, "random"), (3, "block")])
def test_the_ranks_write_the_bytes_one_process_writes(wide, tmp_path, k, method):
    """A run's network is put together (row-wise: from its owners' rows; data-parallel: a replica)
    and compressed layer by layer on rank (k − 1) mod K and stored by rank 0: the file must be byte
    for byte the one a single process writes of the same network (K = 2 and 3: rounds of layers
    full and not; K = 8 > 5 layers: ranks with none; `block`: the reader sends a layer's arrays as
    they are, `random`: packed by rank)."""
    spdnn("partition", wide / "wide.h5", "-k", k, "--method", method, "-o", tmp_path / "p.part")
    script = tmp_path / "write.py"
    script.write_text(WRITE_BY_RANKS)
    cmd = [str(BIN / "mpiexec"), "-n", str(k), str(BIN / "python"), str(script), str(wide / "wide.h5"),
           str(tmp_path / "p.part"), str(tmp_path / "ranks.h5"), str(tmp_path / "replicas.h5")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    net = read_network(wide / "wide.h5")
    net.provenance = {"written": "by the ranks"}
    write_network(net, tmp_path / "one.h5", {"step": 7}, cores=1)  # HDF5 filters every chunk itself
    assert (tmp_path / "ranks.h5").read_bytes() == (tmp_path / "one.h5").read_bytes()
    assert (tmp_path / "replicas.h5").read_bytes() == (tmp_path / "one.h5").read_bytes()


def test_user_errors_from_every_rank(work, tmp_path):
    proc = mpirun(3, "train", work / "clf.h5", "--partition", work / "clf-k2.part", *TRAIN, "-o", tmp_path / "x.h5", check=False)
    assert_user_error(proc, "K = 2", "3 ranks")
    proc = mpirun(2, "infer", work / "radix.h5", work / "images.tsv", "--partition", work / "clf-k2.part",
                  "-o", tmp_path / "c.tsv", check=False)
    assert_user_error(proc, "clf-k2.part", "entries")
    np.savez(tmp_path / "bad.npz", X=np.zeros((5, 10)), y=np.zeros(5, int))
    proc = mpirun(2, "train", work / "clf.h5", "--partition", work / "clf-k2.part", "--data", tmp_path / "bad.npz",
                  "-o", tmp_path / "x.h5", check=False)
    assert_user_error(proc, "bad.npz", "width 64")
    proc = mpirun(2, "infer", work / "radix.h5", work / "images.tsv", "--mode", "data-parallel", "--stream-layers",
                  "-o", tmp_path / "c.tsv", check=False)
    assert_user_error(proc, "--stream-layers", "row-wise")
    # A bad line near the end of the images: rank 0 meets it after batches were done; every rank stops.
    lines = (work / "images.tsv").read_text().splitlines(keepends=True)
    lines[-3] = "1797\t9\n"
    (tmp_path / "bad.tsv").write_text("".join(lines))
    for mode in (["--partition", work / "radix-hypergraph-k2.part"], ["--mode", "data-parallel"]):
        proc = mpirun(2, "infer", work / "radix.h5", tmp_path / "bad.tsv", *mode, "--batch-size", 300,
                      "-o", tmp_path / "c.tsv", "--activations", tmp_path / "c.h5", check=False)
        assert_user_error(proc, "bad.tsv", f"line {len(lines) - 2}: expected 3 tab-separated fields")
    assert not any(tmp_path.glob("x.h5*")) and not (tmp_path / "c.tsv").exists()
    assert not any(tmp_path.glob("*c.h5*")) and not any(tmp_path.glob("*c.tsv*"))


def test_the_ranks_check_the_partition_in_shares_and_agree(work, tmp_path):
    """Each rank reads the ids of every K-th layer only (rank 1 of 2: layers 1, 3, 5, 7 of the
    partition's 9 slices); the combined verdict is still the file's: its first negative id, or its
    K against the ranks, wherever they lie."""
    ids = (work / "radix-hypergraph-k2.part").read_text().split()
    too_many = list(ids)
    too_many[3 * 256 + 10] = "2"  # a slice rank 0 does not read
    (tmp_path / "k3.part").write_text("\n".join(too_many) + "\n")
    negative = list(ids)
    negative[6 * 256 + 2] = negative[5 * 256 + 7] = "-1"  # the first in rank 1's slice 5, another in rank 0's
    (tmp_path / "neg.part").write_text("\n".join(negative) + "\n")
    for part, fragment in (("k3.part", "K = 3 parts, but the job runs 2 ranks"),
                           ("neg.part", f"line {5 * 256 + 8}: negative part id")):
        proc = mpirun(2, "infer", work / "radix.h5", work / "images.tsv", "--partition", tmp_path / part,
                      "-o", tmp_path / "c.tsv", check=False)
        assert_user_error(proc, part, fragment)
    assert not (tmp_path / "c.tsv").exists()


def test_an_output_that_cannot_be_written_stops_a_run_before_its_work(work, tmp_path):
    """An output under a regular file (its directory cannot be made, even by root) or an output that
    is a directory: one line naming it, before the training or inference runs, not after it."""
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "x.h5"
    proc = mpirun(2, "train", work / "clf.h5", "--partition", work / "clf-k2.part", *TRAIN, "-o", bad, check=False)
    assert_user_error(proc, f"cannot write {bad}")
    assert "epoch" not in proc.stderr  # not one epoch ran
    proc = mpirun(2, "train", work / "clf.h5", "--mode", "data-parallel", *TRAIN, "-o", tmp_path, check=False)
    assert_user_error(proc, f"cannot write {tmp_path}", "directory")
    proc = mpirun(2, "infer", work / "radix.h5", work / "images.tsv", "--partition", work / "radix-random-k2.part",
                  "-o", tmp_path / "c.tsv", "--activations", bad, check=False)
    assert_user_error(proc, f"cannot write {bad}")
    for args in (["infer", work / "radix.h5", work / "images.tsv", "-o", bad],
                 ["partition", work / "clf.h5", "-k", 2, "-o", bad],
                 ["generate", "radixnet", "--neurons", 64, "--layers", 2, "-o", bad]):
        proc = spdnn(*args, check=False)
        assert_user_error(proc, f"cannot write {bad}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written, no temporary left


def _rank_pids(marker: str):
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(marker.encode() in c for c in cmd) and any(c.endswith(b"/spdnn") for c in cmd[:2]):
                pids.append(int(p.name))
    return pids


def test_a_dying_rank_fails_the_job_promptly(work, tmp_path):
    out = tmp_path / "never.h5"
    cmd = [str(BIN / "mpiexec"), "-n", "3", str(BIN / "spdnn"), "train", str(work / "clf.h5"), "--partition",
           str(work / "clf-k3.part"), "--epochs", "200", "--batch-size", "8", "-o", str(out)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    pids = []
    while time.time() < deadline and len(pids) < 3:
        time.sleep(0.5)
        pids = _rank_pids(str(out))
    assert len(pids) == 3, "ranks did not start"
    time.sleep(3)  # well into training
    os.kill(sorted(pids)[1], signal.SIGKILL)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("job hung after a rank died")
    assert proc.returncode != 0
    assert not out.exists()


def test_a_plan_refuses_an_extended_block_that_does_not_hold_the_owned_rows():
    """`forward(…, ext=)` skips the copy of the owned block: a block of the wrong shape, or one whose
    head is not the activations given, must be refused, not exchanged (checked before any MPI call)."""
    from spdnn.comm_plan import CommPlan

    plan = CommPlan(layer=3, n_owned=4, send_ranks=[], send_idx=[], recv_ranks=[], recv_slices=[], ext_len=6)
    ext = plan.extended_block(5)
    assert ext.shape == (6, 5) and ext.dtype == np.float32 and ext.flags.c_contiguous
    for block, x in ((ext, np.zeros((4, 5), np.float32)), (ext, ext[1:5]), (ext[:, :4], ext[:4, :4]),
                     (np.empty((7, 5), np.float32), ext[:4])):
        with pytest.raises(ValueError, match="layer 3: ext must be"):
            plan.forward(None, x, block)
