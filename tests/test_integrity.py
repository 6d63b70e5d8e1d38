"""Experiment integrity: training that learns (the recipe), divergence and interruption handled,
checkpoints that resume, corrupted files and impossible K refused in one line."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import BIN, assert_user_error, env, mpirun, spdnn

from spdnn.network import read_network
from spdnn.reference import class_loss, loss_and_delta
from spdnn.training import DivergenceGuard, learning_rate

RECIPE = ["--batch-size", 16, "--lr", 0.03, "--lr-schedule", "cosine", "--seed", 0]


@pytest.fixture(scope="module")
def radix(tmp_path_factory):
    """A 256×12 RadiX-Net (challenge weights), its trainable version, partitions at K = 1, 2, 3."""
    d = tmp_path_factory.mktemp("integrity")
    spdnn("generate", "radixnet", "--neurons", 256, "--layers", 12, "--seed", 1, "-o", d / "radix.h5")
    spdnn("reinit", d / "radix.h5", "--init", "he", "--seed", 0, "-o", d / "he.h5")
    spdnn("partition", d / "radix.h5", "-k", 1, "--method", "block", "-o", d / "k1.part")
    spdnn("partition", d / "radix.h5", "-k", 2, "--method", "hypergraph", "-o", d / "k2.part")
    spdnn("partition", d / "radix.h5", "-k", 3, "--method", "random", "-o", d / "k3.part")
    return d


def test_challenge_weights_do_not_train_but_the_recipe_does(radix):
    """The challenge's constant weights stay near chance; the recipe (pattern + He init, 10-class
    readout, cosine schedule) reaches >= 0.85 on digits at K = 1 and K = 2 with equal losses."""
    mpirun(1, "train", radix / "radix.h5", "--partition", radix / "k1.part", "--epochs", 2, *RECIPE,
           "-o", radix / "gc.h5", "--metrics", radix / "gc.json")
    assert json.loads((radix / "gc.json").read_text())["test_accuracy"] < 0.5
    runs = {}
    for k in (1, 2):
        mpirun(k, "train", radix / "he.h5", "--partition", radix / f"k{k}.part", "--epochs", 5, *RECIPE,
               "-o", radix / f"t{k}.h5", "--metrics", radix / f"t{k}.json")
        runs[k] = json.loads((radix / f"t{k}.json").read_text())
        assert runs[k]["test_accuracy"] >= 0.85, runs[k]["test_accuracy"]
        assert runs[k]["words_match_model"] is True
    assert abs(runs[1]["loss_last"] - runs[2]["loss_last"]) <= 1e-3 * abs(runs[1]["loss_last"])


def test_reinit_keeps_the_pattern_and_is_seeded(radix, tmp_path):
    a, b = read_network(radix / "radix.h5"), read_network(radix / "he.h5")
    for wa, wb, bb in zip(a.layers, b.layers, b.biases):
        np.testing.assert_array_equal(wa.indices, wb.indices)
        np.testing.assert_array_equal(wa.indptr, wb.indptr)
        assert abs(wb.data.std() - np.sqrt(2 / 32)) < 0.02 and not bb.any()
    spdnn("reinit", radix / "radix.h5", "--seed", 0, "-o", tmp_path / "again.h5")
    assert (tmp_path / "again.h5").read_bytes() == (radix / "he.h5").read_bytes()


def test_divergence_stops_with_one_line(radix, tmp_path):
    out = tmp_path / "d.h5"
    proc = mpirun(2, "train", radix / "he.h5", "--partition", radix / "k2.part", "--epochs", 2, "--batch-size", 16,
                  "--lr", 50, "-o", out, check=False)
    assert_user_error(proc, "diverged")
    assert not any(tmp_path.iterdir())


def test_divergence_guard_rules():
    g = DivergenceGuard()
    g.check(0, 0, 2.0, False)
    g.check(1, 0, 30.0, True)  # mean 16 <= 10 × 2
    with pytest.raises(Exception, match="epoch 2"):
        g.check(2, 1, 25.0, True)
    with pytest.raises(Exception, match="nan"):
        DivergenceGuard().check(0, 0, float("nan"), False)


def test_learning_rate_schedule():
    assert learning_rate(5, 100, 0.1, "constant") == 0.1
    lrs = [learning_rate(s, 100, 0.1, "cosine") for s in range(100)]
    assert lrs[0] == pytest.approx(0.1 / 5) and lrs[4] == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 4 / 100)))
    assert max(lrs) <= 0.1 and lrs[-1] < 1e-3 and all(a >= b for a, b in itertools.pairwise(lrs[5:]))


def test_class_readout_split_over_ranks_equals_serial():
    """The loss over the first C outputs, with the output rows spread over three 'ranks' (threads
    whose reduce hook is an allreduce), equals the serial one; outputs >= C get no gradient."""
    import threading

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 6)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    owners = rng.integers(0, 3, 16)
    for loss in ("cross-entropy", "mse"):
        value, delta = loss_and_delta(logits, y, loss, num_classes=10)
        assert not delta[10:].any()
        barrier, slots = threading.Barrier(3), [None] * 3
        results = [None] * 3

        def rank(p):
            def allreduce(a, op):
                slots[p] = a
                barrier.wait()
                out = (np.max if op == "max" else np.sum)(np.stack(slots), axis=0)
                barrier.wait()
                return out

            rows = np.flatnonzero(owners == p)
            results[p] = (rows, *class_loss(logits[rows], rows, y, loss, 10, 6, allreduce))

        threads = [threading.Thread(target=rank, args=(p,)) for p in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = np.zeros_like(delta)
        for rows, v, d in results:
            assert v == pytest.approx(value, rel=1e-6)
            got[rows] = d
        np.testing.assert_allclose(got, delta, rtol=1e-6, atol=1e-7)


def test_stop_after_without_checkpoint_every_leaves_a_checkpoint(radix, tmp_path):
    out = tmp_path / "s.h5"
    args = ["train", radix / "he.h5", "--partition", radix / "k2.part", "--epochs", 1, *RECIPE, "-o", out]
    proc = mpirun(2, *args, "--stop-after", 20, check=False)
    assert proc.returncode == 3 and "rerun the same command to resume" in proc.stderr
    assert Path(f"{out}.ckpt.h5").exists() and not out.exists()
    proc = mpirun(2, *args)
    assert "at step 20" in proc.stderr
    mpirun(2, *args[:-1], tmp_path / "straight.h5")
    for wa, wb in zip(read_network(out).layers, read_network(tmp_path / "straight.h5").layers):
        np.testing.assert_array_equal(wa.data, wb.data)


def test_cancelled_mpi_job_leaves_one_line(radix, tmp_path):
    """SIGTERM to the job's process group (what Snakemake and SLURM do): one line, no backtraces,
    no output, every rank gone."""
    out = tmp_path / "never.h5"
    cmd = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "spdnn"), "train", str(radix / "he.h5"), "--partition",
           str(radix / "k2.part"), "--epochs", "500", "--batch-size", "8", "-o", str(out)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # Cancel once it trains (its first progress line), not after a fixed time: on a loaded machine
    # the ranks may still be importing then, before any handler exists (the default action: silence).
    err_lines = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any(line.startswith("epoch ") for line in err_lines) and time.monotonic() < deadline:
        assert proc.poll() is None, "".join(err_lines)
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    reader.join(timeout=60)
    err = "".join(err_lines)
    lines = [line for line in err.splitlines() if not line.lstrip().startswith(("epoch ", "in epoch "))]
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], err
    assert not out.exists() and not Path(f"{out}.ckpt.h5").exists()


def _flip_byte_in(path, dataset, out):
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(0)
    raw = bytearray(Path(path).read_bytes())
    raw[info.byte_offset + info.size // 2] ^= 0xFF
    Path(out).write_bytes(raw)


def test_corrupted_weights_are_detected_by_every_reader(radix, tmp_path):
    bad = tmp_path / "bad.h5"
    _flip_byte_in(radix / "radix.h5", "layers/l00003/data", bad)
    spdnn("images", "--neurons", 256, "-o", tmp_path / "im.tsv")
    for args in (["info", bad], ["partition", bad, "-k", 2, "-o", tmp_path / "p.part"], ["hypergraph", bad, "-o", tmp_path / "h.hgr"],
                 ["volume", bad, radix / "k2.part"], ["bound", bad, "-k", 2], ["infer", bad, tmp_path / "im.tsv", "-o", tmp_path / "c.tsv"],
                 ["reinit", bad, "-o", tmp_path / "r.h5"]):
        assert_user_error(spdnn(*args, check=False), "bad.h5", "corrupt network file")
    proc = mpirun(2, "train", bad, "--partition", radix / "k2.part", "--epochs", 1, "-o", tmp_path / "t.h5", check=False)
    assert_user_error(proc, "corrupt network file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "im.tsv"]


def test_index_beyond_the_width_is_refused(radix, tmp_path):
    """A file whose checksums pass but whose column indices point past the input width (written
    by another tool, or a 1.0 file without checksums) is refused, not computed with."""
    bad = tmp_path / "idx.h5"
    bad.write_bytes((radix / "radix.h5").read_bytes())
    with h5py.File(bad, "a") as f:
        g = f["layers/l00002"]
        idx = g["indices"][:]
        idx[5] = 999
        del g["indices"]
        g.create_dataset("indices", data=idx)
    assert_user_error(spdnn("info", bad, check=False), "layer 2", "999")


def test_volume_refuses_k_larger_than_a_layer_and_says_the_inferred_k(tmp_path):
    spdnn("generate", "random", "--widths", "16,12,10", "--nnz-per-row", 4, "-o", tmp_path / "n.h5")
    (tmp_path / "p.part").write_text("0\n" * 37 + "5\n")
    assert_user_error(spdnn("volume", tmp_path / "n.h5", tmp_path / "p.part", "-k", 100, check=False),
                      "K=100", "layer 1")
    proc = spdnn("volume", tmp_path / "n.h5", tmp_path / "p.part")
    assert "K = 6 inferred" in proc.stderr and json.loads(proc.stdout)["k"] == 6
