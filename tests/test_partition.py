"""Hypergraph model and partitions: km1 = volume, balance in every layer, bad partition files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_user_error, spdnn
from radixnet_reference import relabelled_radixnet

from spdnn.generate import radixnet, random_sparse
from spdnn.hypergraph import build_hypergraph, connectivity_minus_one, read_hgr, write_hgr
from spdnn.partition import METHODS, partition_network
from spdnn.volume import layer_capacity, partition_metrics, split_by_layer


def brute_force_columns(net, part):
    """(Σ_k Σ_j (λ_j − 1), Σ_k Σ_j [j is read and its owner's part holds none of its readers]), one net
    at a time, straight from the definitions."""
    parts = split_by_layer(part, net.widths)
    volume = owner_away = 0
    for k, w in enumerate(net.layers, start=1):
        csc = w.tocsc()
        for j in range(w.shape[1]):
            readers = set(parts[k][csc.indices[csc.indptr[j]:csc.indptr[j + 1]]].tolist())
            owner = int(parts[k - 1][j])
            volume += len(readers | {owner}) - 1
            owner_away += bool(readers) and owner not in readers
    return volume, owner_away


def brute_force_volume(net, part):
    return brute_force_columns(net, part)[0]


@pytest.mark.parametrize("seed", range(3))
def test_owner_away_words_split_the_volume(seed):
    """volume_forward_owner_away counts the words sent because an owner holds none of its column's
    readers; the rest is the readers' own spread, so it never exceeds the volume."""
    rng = np.random.default_rng(seed)
    widths = [int(x) for x in rng.integers(5, 30, size=4)]
    net = random_sparse(widths, int(rng.integers(1, 6)), seed=seed)
    for k in (2, 3, 5):
        part = rng.integers(0, k, size=sum(widths))
        metrics = partition_metrics(net.layers, net.widths, part, k)
        assert metrics["volume_forward_owner_away"] == brute_force_columns(net, part)[1]
        assert 0 < metrics["volume_forward_owner_away"] <= metrics["volume_forward"]
    # every layer on one part except the inputs, all on another: every read column is owned away
    part = np.concatenate([np.zeros(widths[0], int), np.ones(sum(widths[1:]), int)])
    metrics = partition_metrics(net.layers, net.widths, part, 2)
    read = np.count_nonzero(np.diff(net.layers[0].tocsc().indptr))
    assert metrics["volume_forward_owner_away"] == metrics["volume_forward"] == read


@pytest.mark.parametrize("seed", range(4))
def test_km1_on_hgr_equals_model_volume(tmp_path, seed):
    rng = np.random.default_rng(seed)
    widths = [int(x) for x in rng.integers(5, 30, size=4)]
    net = random_sparse(widths, int(rng.integers(1, 6)), seed=seed)
    hg = build_hypergraph(net.layers, net.widths)
    write_hgr(hg, tmp_path / "n.hgr")
    for chunk_pins in (1, 7):  # text printed a few pins at a time, across the nets' ends: the same file
        write_hgr(hg, tmp_path / "c.hgr", chunk_pins=chunk_pins)
        assert (tmp_path / "c.hgr").read_bytes() == (tmp_path / "n.hgr").read_bytes()
    nv, indptr, pins, weights = read_hgr(tmp_path / "n.hgr")
    assert nv == sum(widths) and indptr.size - 1 == sum(widths[:-1])
    np.testing.assert_array_equal(weights, np.maximum(hg.vertex_weights, 1))
    for k in (2, 3, 5):
        part = rng.integers(0, k, size=nv)
        vol = partition_metrics(net.layers, net.widths, part, k)["volume_forward"]
        assert connectivity_minus_one(indptr, pins, part) == vol == brute_force_volume(net, part)


def test_layer_nets_is_the_transpose_with_each_net_led_by_its_source():
    """The compiled counting-sort transpose against SciPy's CSC: rows with their column ids out of
    order, empty rows and columns, a layer with no entries; a column id past the layer's inputs
    (a matrix altered after it was built) is refused, never written past the end."""
    import scipy.sparse as sp

    from spdnn.hypergraph import layer_nets, vertex_offsets

    rng = np.random.default_rng(3)
    for rows, cols, density in ((7, 11, 0.3), (30, 5, 0.5), (4, 9, 0.0), (1, 1, 1.0)):
        w = sp.random(rows, cols, density=density, format="csr", random_state=rng)
        for i in range(rows):  # each row's column ids reversed: CSR does not promise order
            w.indices[w.indptr[i]:w.indptr[i + 1]] = w.indices[w.indptr[i]:w.indptr[i + 1]][::-1].copy()
        off = vertex_offsets([5, cols, rows])
        sizes, pins = layer_nets(w, 2, off)
        csc = w.tocsc()
        csc.sort_indices()
        expect = np.concatenate([np.concatenate([[off[1] + j], off[2] + csc.indices[csc.indptr[j]:csc.indptr[j + 1]]])
                                 for j in range(cols)])
        np.testing.assert_array_equal(sizes, np.diff(csc.indptr) + 1)
        np.testing.assert_array_equal(pins, expect)
    w = sp.csr_matrix(np.ones((2, 3), np.float32))
    w.indices[-1] = 3
    with pytest.raises(ValueError, match="column id 3"):
        layer_nets(w, 1, vertex_offsets([3, 2]))


def test_hgr_file_format(tmp_path):
    net = random_sparse([3, 2], 2, seed=0)
    spdnn("generate", "random", "--widths", "3,2", "--nnz-per-row", 2, "--seed", 0, "-o", tmp_path / "n.h5")
    spdnn("hypergraph", tmp_path / "n.h5", "-o", tmp_path / "n.hgr")
    lines = (tmp_path / "n.hgr").read_text().splitlines()
    assert lines[0] == "3 5 10"  # nets, vertices, format 10 = vertex weights
    csc = net.layers[0].tocsc()
    for j in range(3):  # net (1, j): its source v_j^0 (pin j+1) then its readers (pins 4, 5)
        pins = [int(x) for x in lines[1 + j].split()]
        assert pins[0] == j + 1 and pins[1:] == [4 + i for i in csc.indices[csc.indptr[j]:csc.indptr[j + 1]]]
    assert lines[4:] == ["1", "1", "1", "2", "2"]


NETS = {
    "radixnet": lambda: radixnet(64, 6, seed=1),
    "uneven": lambda: _uneven(),
}


def _uneven():
    """Rows of very different weight and a layer that is not square: per-layer balance is hard."""
    net = random_sparse([40, 60, 33, 30], 9, seed=5)
    for w in net.layers:
        drop = np.random.default_rng(1).random(w.nnz) < np.linspace(0, 0.9, w.nnz)
        w.data[drop] = 0
        w.eliminate_zeros()
    return net


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("k", [2, 3, 4, 8])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_balanced_in_every_layer(name, k, method):
    net = NETS[name]()
    part, metrics = partition_network(net.layers, net.widths, k, method, epsilon=0.03, seed=1)
    assert part.size == sum(net.widths) and part.min() >= 0 and part.max() < k
    parts = split_by_layer(part, net.widths)
    for t, w in enumerate(net.layers, start=1):
        rw = np.diff(w.indptr)
        loads = np.bincount(parts[t], weights=rw, minlength=k)
        assert loads.max() <= layer_capacity(rw, k, 0.03), (t, loads)
    assert metrics["balanced"] and metrics["volume_forward"] == brute_force_volume(net, part)


def test_hypergraph_beats_random_and_is_deterministic():
    net = radixnet(256, 8, seed=3)
    a, ma = partition_network(net.layers, net.widths, 4, "hypergraph", seed=5)
    b, _ = partition_network(net.layers, net.widths, 4, "hypergraph", seed=5)
    np.testing.assert_array_equal(a, b)
    _, mr = partition_network(net.layers, net.widths, 4, "random", seed=5)
    _, ms = partition_network(net.layers, net.widths, 4, "sweep", seed=5)
    assert ma["volume_forward"] < 0.7 * mr["volume_forward"]
    assert ma["volume_forward"] <= ms["volume_forward"]


def test_partition_cli_and_volume(tmp_path):
    spdnn("generate", "radixnet", "--neurons", 64, "--layers", 4, "--seed", 1, "-o", tmp_path / "n.h5")
    proc = spdnn("partition", tmp_path / "n.h5", "-k", 3, "--method", "hypergraph", "-o", tmp_path / "p")
    # Progress lines say which pass they belong to (each pass runs over all layers).
    for stage in ("sweep: layer 4/4", "candidates: layer 4/4", "refinement pass 1/1: layer 4/4"):
        assert sum(stage in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    side = json.loads((tmp_path / "p.json").read_text())
    vol = json.loads(spdnn("volume", tmp_path / "n.h5", tmp_path / "p").stdout)
    assert vol["volume_forward"] == side["volume_forward"] and vol["k"] == 3 and side["seconds"] >= 0
    assert vol["volume_training"] == 2 * vol["volume_forward"] - vol["volume_per_layer"][0]
    assert len(vol["messages_per_layer"]) == 4 and vol["balanced"]
    # PaToH-style files (several ids per line) are read too.
    ids = (tmp_path / "p").read_text().split()
    (tmp_path / "patoh").write_text(" ".join(ids[:100]) + "\n" + " ".join(ids[100:]) + "\n")
    assert json.loads(spdnn("volume", tmp_path / "n.h5", tmp_path / "patoh").stdout)["volume_forward"] == vol["volume_forward"]


@pytest.mark.parametrize("content, fragment", [
    ("0\n1\n", "has 2 entries"),
    (None, "negative part id"),
    (None, ">= K = 2"),
    (None, "not an integer"),
])
def test_bad_partition_files(tmp_path, content, fragment):
    spdnn("generate", "random", "--widths", "4,4", "--nnz-per-row", 2, "-o", tmp_path / "n.h5")
    good = ["0", "1"] * 4
    if fragment == "negative part id":
        good[3] = "-1"
    elif fragment == ">= K = 2":
        good[5] = "2"
    elif fragment == "not an integer":
        good[6] = "1.5"
    (tmp_path / "p").write_text(content or "\n".join(good) + "\n")
    args = ["volume", tmp_path / "n.h5", tmp_path / "p"] + (["-k", 2] if fragment == ">= K = 2" else [])
    assert_user_error(spdnn(*args, check=False), "p", fragment)


def test_k_larger_than_a_layer(tmp_path):
    spdnn("generate", "random", "--widths", "16,16,5", "--nnz-per-row", 2, "-o", tmp_path / "n.h5")
    proc = spdnn("partition", tmp_path / "n.h5", "-k", 8, "--method", "block", "-o", tmp_path / "p", check=False)
    assert_user_error(proc, "K=8", "layer 2", "5 rows")
    assert not (tmp_path / "p").exists()


def test_parallel_refinement_is_reproducible_and_balanced():
    net = radixnet(128, 6, seed=2)
    a, ma = partition_network(net.layers, net.widths, 4, "hypergraph", seed=1, jobs=2)
    b, _ = partition_network(net.layers, net.widths, 4, "hypergraph", seed=1, jobs=2)
    np.testing.assert_array_equal(a, b)
    assert ma["balanced"]


def _weighted_km1(indptr, pins, net_weights, block) -> int:
    net_of = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    k = int(block.max()) + 1
    lam = np.bincount(np.unique(net_of * k + block[pins]) // k, minlength=indptr.size - 1)
    return int(((lam - 1) * net_weights).sum())


def test_layer_subproblem_cost_is_the_exact_local_volume():
    """The solver's subproblem (identical rows merged into one vertex, nets without a cut
    dropped, identical nets merged into one weighted net) has a weighted connectivity−1 equal to
    the exact volume of the nets touching the layer, for any partition keeping each class of
    identical rows together; on RadiX-Net layers the solver sees 16× fewer rows. Empty rows are
    never merged."""
    from spdnn.layer_solve import layer_subproblem, local_volume
    from spdnn.layers import Layers, mergeable_rows

    for net in (radixnet(64, 6, seed=2), random_sparse([40, 30, 30, 20, 25], 3, seed=1)):
        layers = Layers(net.layers, net.widths)
        rng = np.random.default_rng(0)
        k, t = 3, 3
        classes = layers.classes(t)
        n_cls = int(classes.max()) + 1
        if net.widths[0] == 64:
            assert n_cls == 4  # 64 neurons = 4 groups of 16 identical rows
        for trial in range(5):
            parts = [rng.integers(0, k, size=n).astype(np.uint8) for n in net.widths]
            if trial == 0:
                parts[t + 1] = None  # the sweep's case: the next layer not placed yet
            nv, indptr, pins, net_weights, weights, _fixed = layer_subproblem(layers, t, parts, k)
            assert nv == n_cls + k and weights[:n_cls].sum() == net.layers[t - 1].nnz
            block = np.concatenate([rng.integers(0, k, size=n_cls), np.arange(k)])
            parts[t] = block[classes].astype(np.uint8)
            assert _weighted_km1(indptr, pins, net_weights, block) == local_volume(layers, parts, t, k)
    w = radixnet(64, 6, seed=2).layers[0].tolil()
    w[[5, 9], :] = 0  # two dead neurons: empty rows stay apart
    got = mergeable_rows(w.tocsr())
    assert got[5] != got[9] and np.unique(got).size == 4 + 2  # four groups, two lone dead rows


def test_layer_volume_through_row_classes_equals_layer_traffic():
    """The partitioner's volume of a layer (through its classes of identical rows) counts what
    `volume.layer_traffic` counts, also when a partition splits classes (`rebalance_layer` may)."""
    from spdnn.layer_solve import layer_reader_parts, layer_volume, reader_parts
    from spdnn.layers import Layers
    from spdnn.volume import layer_traffic

    for net in (radixnet(64, 4, seed=2), random_sparse([40, 30, 30, 20], 3, seed=1)):
        layers = Layers(net.layers, net.widths)
        rng = np.random.default_rng(3)
        for k in (2, 5):
            for t in range(1, len(net.layers) + 1):
                part_in = rng.integers(0, k, size=net.widths[t - 1]).astype(np.uint8)
                classes = layers.classes(t)
                for part_out in (rng.integers(0, k, size=net.widths[t]),
                                 rng.integers(0, k, size=int(classes.max()) + 1)[classes]):
                    part_out = part_out.astype(np.uint8)
                    expected = layer_traffic(net.layers[t - 1], part_in, part_out, k)[0].size
                    assert layer_volume(layers, t, part_in, part_out, k) == expected
                    assert (layer_reader_parts(layers, t, part_out, k)
                            == reader_parts(net.layers[t - 1], part_out, k)).all()


def test_best_relabel_is_the_best_renaming():
    """The Hungarian renaming beats (or ties) every one of the K! renamings of the next layer."""
    import itertools

    from spdnn.candidate_sequence import best_relabel

    net = random_sparse([12, 10], 3, seed=5)
    rng = np.random.default_rng(1)
    for k in (3, 4):
        part_in, part_out = rng.integers(0, k, size=12), rng.integers(0, k, size=10)
        volume, rename = best_relabel(net.layers[0], part_in, part_out, k)
        brute = min(partition_metrics(net.layers, net.widths, np.concatenate([part_in, np.array(p)[part_out]]),
                                      k)["volume_forward"] for p in itertools.permutations(range(k)))
        assert volume == brute == partition_metrics(net.layers, net.widths,
                                                    np.concatenate([part_in, rename[part_out]]), k)["volume_forward"]


def test_hypergraph_recovers_structure_the_sweep_misses():
    layers, widths, _ = relabelled_radixnet(256, 12, seed=0, rename_inputs=False)  # 3 blocks of 4 layers
    for k, ratio in ((2, 0.8), (4, 0.95)):
        sweep = partition_network(layers, widths, k, "sweep")[1]["volume_forward"]
        ours = partition_network(layers, widths, k, "hypergraph")[1]
        assert ours["balanced"] and ours["volume_forward"] <= ratio * sweep, (k, ours["volume_forward"], sweep)


def test_imbalance_of_wide_layers_beside_all_layers():
    """A 10-row classifier at K = 8 cannot be balanced better than 2 rows on one rank (1.6): the
    all-layer column shows it, the wide-layer column (>= 10·K rows) shows the partitioner."""
    net = random_sparse([64, 90, 90, 10], 8, seed=2)
    _part, m = partition_network(net.layers, net.widths, 8, "random", 0.03, 0)
    assert m["balanced"] and m["imbalance_max"] == pytest.approx(1.6)
    assert m["imbalance_max_wide"] == max(m["imbalance_per_layer"][:2]) <= (90 + 8) / 90  # avg + one row


def _children(pid: int, marker: str = "spawn_main") -> list[int]:
    from pathlib import Path

    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (p / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid and marker.encode() in cmd:
                out.append(int(p.name))
    return out


def _start_partition_with_workers(tmp_path):
    import subprocess
    import time

    from conftest import BIN, env

    spdnn("generate", "radixnet", "--neurons", 1024, "--layers", 24, "--seed", 1, "-o", tmp_path / "n.h5")
    scratch = tmp_path / "tmp"  # TMPDIR: where the candidates go (`candidate_store.py`)
    scratch.mkdir()
    proc = subprocess.Popen([str(BIN / "spdnn"), "partition", str(tmp_path / "n.h5"), "-k", "8", "--jobs", "2",
                             "-o", str(tmp_path / "p.part")], env={**env(), "TMPDIR": str(scratch)},
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_children(proc.pid)) < 2 and proc.poll() is None:
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) == 2, "workers did not start"
    assert [p.name.startswith("spdnn-candidates-") for p in scratch.iterdir()] == [True]
    return proc, workers, scratch


def test_stopping_the_partitioner_stops_its_workers(tmp_path):
    import os
    import signal
    import time

    proc, workers, scratch = _start_partition_with_workers(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    time.sleep(1)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")]
    assert not (tmp_path / "p.part").exists() and not list(scratch.iterdir())


def test_a_dying_worker_fails_the_partitioner_promptly(tmp_path):
    import os
    import signal
    import time

    proc, workers, scratch = _start_partition_with_workers(tmp_path)
    os.kill(workers[0], signal.SIGKILL)
    t0 = time.time()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and time.time() - t0 < 10
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "partition worker" in lines[0] and "died" in lines[0] and "Traceback" not in err
    time.sleep(1)
    assert not os.path.exists(f"/proc/{workers[1]}") and not (tmp_path / "p.part").exists()
    assert not list(scratch.iterdir())


def test_one_integer_capacity_at_the_edge():
    """ε = 0.13 and avg = 100: in floats 1.13·100 = 112.99999999999999 and a load of 113 reads as a
    violation; every component uses the same exact integer capacity, 113."""
    from spdnn.layer_solve import rebalance_layer
    from spdnn.layers import Layers
    from spdnn.volume import rows_per_part

    weights = np.ones(200, np.int64)
    assert layer_capacity(weights, 2, 0.13) == 113 and 1.13 * 100 < 113
    assert layer_capacity(weights, 2, 0.0) == 101  # avg + the heaviest row
    assert rows_per_part(weights, 2, 0.13)[0] == 113
    w = random_sparse([50, 200], 1, seed=0).layers[0]
    parts = [np.zeros(50, np.int64), np.r_[np.zeros(113, np.int64), np.ones(87, np.int64)]]
    assert rebalance_layer(Layers([w], [50, 200]), parts, 1, 2, 0.13) == 0  # nothing to repair
    assert partition_metrics([w], [50, 200], np.concatenate(parts), 2, 0.13)["balanced"] is True
    parts[1][113] = 0  # 114: one too many
    assert partition_metrics([w], [50, 200], np.concatenate(parts), 2, 0.13)["balanced"] is False


@pytest.mark.parametrize("make", [lambda: radixnet(128, 6, seed=1),
                                  lambda: random_sparse([90, 70, 70, 50], 5, seed=2)])
def test_kahypar_backend_gives_a_balanced_partition_of_every_layer(make, tmp_path):
    """`--backend kahypar`: the per-layer method with KaHyPar and spdnn's shipped configuration
    (the first layer's subproblem has weight-0 inputs, which KaHyPar itself rejects by exiting)."""
    from spdnn.network import write_network

    net = make()
    for k in (2, 3):
        part, metrics = partition_network(net.layers, net.widths, k, "hypergraph", 0.03, seed=0, backend="kahypar")
        assert metrics["balanced"] and metrics["backend"] == "kahypar" and part.max() < k
        assert metrics["volume_forward"] == partition_metrics(net.layers, net.widths, part, k, 0.03)["volume_forward"]
    write_network(net, tmp_path / "net.h5")
    proc = spdnn("partition", tmp_path / "net.h5", "-k", "3", "--backend", "kahypar", "-o", tmp_path / "p.part")
    assert "volume" in proc.stderr and (tmp_path / "p.part").exists()
    assert_user_error(spdnn("partition", tmp_path / "net.h5", "-k", "3", "--backend", "metis", "-o", tmp_path / "q.part",
                            check=False), "--backend")


def test_solver_improve_keeps_fixed_vertices_and_never_worsens():
    """V-cycles from a given partition (what refinement does on wide layers): anchors stay in
    their blocks, and the result's km1 is never above the starting partition's."""
    from spdnn.layer_solve import layer_subproblem
    from spdnn.layers import Layers
    from spdnn.partitioner import Solver

    net = random_sparse([60, 80, 80, 60], 4, seed=3)
    layers = Layers(net.layers, net.widths)
    k, t = 4, 2
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, k, size=n).astype(np.uint8) for n in net.widths]
    nv, indptr, pins, net_weights, weights, fixed = layer_subproblem(layers, t, parts, k)
    for seed in range(3):
        start = np.concatenate([rng.integers(0, k, size=nv - k), np.arange(k)])
        got = Solver().improve(nv, indptr, pins, k, 0.03, seed, weights, start, net_weights=net_weights, fixed=fixed)
        assert (got.partition[nv - k:] == np.arange(k)).all()
        assert got.km1 == _weighted_km1(indptr, pins, net_weights, got.partition)
        assert got.km1 <= _weighted_km1(indptr, pins, net_weights, start)


NETS_BY_NAME = {"radixnet": "radixnet(256, 8, seed=1)", "random": "random_sparse([96, 128, 128, 128, 64], 5, seed=4)"}


@pytest.mark.parametrize("name", sorted(NETS_BY_NAME))
def test_refinement_by_vcycles_is_balanced_and_never_worse(monkeypatch, name):
    """With every layer counted as wide, refinement improves each layer's current partition by
    V-cycles: every kept change lowers the exact local volume, each layer stays balanced, and the
    same seed gives the same partition."""
    import spdnn.layer_solve as layer_solve
    from spdnn.layer_solve import improve_layer, local_volume, sweep
    from spdnn.layers import Layers
    from spdnn.partitioner import Solver

    monkeypatch.setattr(layer_solve, "FRESH_SOLVE_MAX_VERTICES", 0)
    net = eval(NETS_BY_NAME[name])
    layers = Layers(net.layers, net.widths)
    k = 4
    parts = sweep(layers, k, 0.03, 0, Solver(), 1, None)
    for t in range(1, len(net.layers) + 1):
        new = improve_layer(layers, parts, t, k, 0.03, 7, Solver(), 1)
        if new is not None:
            trial = list(parts)
            trial[t] = new
            assert local_volume(layers, trial, t, k) < local_volume(layers, parts, t, k)
            assert np.bincount(new, weights=layers.rw(t), minlength=k).max() <= layer_capacity(layers.rw(t), k, 0.03)
    # Same seed, same bytes, in a fresh process each (Mt-KaHyPar's V-cycles, like its solves in
    # general, depend on the calls its process made before: the CLI makes one call per process).
    import subprocess
    import sys

    code = ("import sys, spdnn.layer_solve, spdnn.partition as p; from spdnn.generate import radixnet, random_sparse; "
            "spdnn.layer_solve.FRESH_SOLVE_MAX_VERTICES = 0; net = " + NETS_BY_NAME[name] + "; "
            "a, m = p.partition_network(net.layers, net.widths, 4, 'hypergraph', seed=5); "
            "assert m['balanced']; sys.stdout.write(a.tobytes().hex())")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 2 * sum(net.widths)
