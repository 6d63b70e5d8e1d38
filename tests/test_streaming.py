"""Offline stages that stream a network hold one layer at a time: their peak memory does not grow
with the number of layers, and they write the same bytes as the in-memory functions."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import BIN, env, spdnn

from spdnn.generate import radixnet
from spdnn.hypergraph import build_hypergraph, write_hgr
from spdnn.network import write_network


def peak_rss_mb(*args) -> float:
    """Run `spdnn args` and return its peak RSS (wait4: the larger of the command's own and that of
    the largest process it waited for: a partition worker that received the network shows)."""
    proc = subprocess.Popen([str(BIN / "spdnn"), *map(str, args)], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 0, err
    return usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def sizes(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    spdnn("images", "--neurons", 4096, "-o", d / "im.tsv")

    def stages(runs):  # in order: a stage may read what an earlier one wrote
        return {stage: peak_rss_mb(*args) for stage, args in runs.items()}

    chains = []
    for layers in (8, 64):
        net = d / f"n{layers}.h5"
        generate = {"generate": ["generate", "radixnet", "--neurons", 4096, "--layers", layers, "-o", net]}
        runs = {
            "info": ["info", net],
            "hypergraph": ["hypergraph", net, "-o", d / f"n{layers}.hgr"],
            "partition block": ["partition", net, "-k", 4, "--method", "block", "-o", d / f"p{layers}.part"],
            "volume": ["volume", net, d / f"p{layers}.part"],
            "export-gc": ["export-gc", net, d / f"gc{layers}"],
            "import-gc": ["import-gc", d / f"gc{layers}" / "neuron4096", "-o", d / f"imported{layers}.h5"],
            "partition hypergraph": ["partition", net, "-k", 4, "--jobs", 2, "-o", d / f"h{layers}.part"],
            "reinit": ["reinit", net, "-o", d / f"he{layers}.h5"],
            "infer (serial)": ["infer", net, d / "im.tsv", "-o", d / f"c{layers}.tsv"],
        }
        slow = {"partition hypergraph": runs.pop("partition hypergraph")}
        chains.append((layers, stages(generate), [slow, runs]))
    # Two at a time (each process's peak is its own): a hypergraph partition beside the other
    # stages of its network, the 64 layers' (the longest) first.
    with ThreadPoolExecutor(2) as pool:
        done = [(layers, pool.submit(stages, runs)) for layers, _, chain in chains[::-1] for runs in chain]
    rss = {layers: dict(first) for layers, first, _ in chains}
    for layers, future in done:
        rss[layers].update(future.result())
    return d, rss


@pytest.mark.parametrize("stage", ["generate", "info", "hypergraph", "partition block", "partition hypergraph", "volume",
                                   "export-gc", "import-gc", "reinit", "infer (serial)"])
def test_peak_memory_does_not_grow_with_layers(sizes, stage):
    _, rss = sizes
    # 64 layers of 4096×4096 with 32 nonzeros per row: 8.4e6 nonzeros, ~100 MB in memory at once.
    assert rss[64][stage] < 1.3 * rss[8][stage], (stage, rss[8][stage], rss[64][stage])


def test_streamed_outputs_equal_the_in_memory_ones(sizes, tmp_path):
    d, _ = sizes
    net = radixnet(4096, 8, 0)
    write_network(net, tmp_path / "n.h5")
    assert (tmp_path / "n.h5").read_bytes() == (d / "n8.h5").read_bytes()
    write_hgr(build_hypergraph(net.layers, net.widths), tmp_path / "n.hgr")
    assert (tmp_path / "n.hgr").read_bytes() == (d / "n8.hgr").read_bytes()


def test_streamed_import_equals_the_network(sizes):
    """`spdnn import-gc` writes layers in the order the source yields them; the network read back
    is the one exported, layer for layer."""
    from spdnn.network import read_network

    d, _ = sizes
    a, b = read_network(d / "n8.h5"), read_network(d / "imported8.h5")
    assert a.widths == b.widths and a.ymax == b.ymax
    for wa, wb, ba, bb in zip(a.layers, b.layers, a.biases, b.biases):
        assert (wa != wb).nnz == 0 and (ba == bb).all()


def test_streamed_partition_equals_the_in_memory_one(sizes):
    """`spdnn partition` reads layers from the file (its workers too); the in-memory call on the
    same network gives the same partition, byte for byte."""
    import json

    import numpy as np

    from spdnn.partition import partition_network

    d, _ = sizes
    net = radixnet(4096, 8, 0)
    meta = json.loads((d / "h8.part.json").read_text())
    part, _ = partition_network(net.layers, net.widths, 4, "hypergraph", meta["epsilon"], meta["seed"],
                                passes=meta["passes"], preset=meta["preset"], jobs=2)
    np.testing.assert_array_equal(part, np.load(d / "h8.part.npy"))
