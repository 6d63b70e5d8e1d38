"""Networks stage: generators, network file, Graph Challenge import/export, bad input."""

from __future__ import annotations

import gzip
import json
import tarfile

import h5py
import numpy as np
import pytest
from conftest import assert_user_error, spdnn

from spdnn.generate import radixnet, random_sparse
from spdnn.graphchallenge import export_gc, import_gc
from spdnn.network import read_network, write_network


def nets_equal(a, b):
    assert a.widths == b.widths
    for wa, wb in zip(a.layers, b.layers):
        assert (wa != wb).nnz == 0
        assert wa.dtype == wb.dtype == np.float32
    for ba, bb in zip(a.biases, b.biases):
        np.testing.assert_array_equal(ba, bb)
    assert a.ymax == b.ymax


def test_radixnet_structure():
    net = radixnet(256, 9, seed=3)
    assert net.widths == [256] * 10
    for w in net.layers:
        assert np.all(np.diff(w.indptr) == 32)
        assert np.all(np.bincount(w.indices, minlength=256) == 32)
        assert np.all(w.data == np.float32(1 / 16))
    np.testing.assert_array_equal(net.biases[0], np.float32(-0.3))  # default for N outside the GC sizes
    assert radixnet(1024, 1, 0).biases[0][0] == np.float32(-0.3)
    assert radixnet(4096, 1, 0).biases[0][0] == np.float32(-0.35)
    # Layers 1..m are unpermuted, later blocks permute inputs: different patterns, same degrees.
    assert (net.layers[0] != net.layers[4]).nnz > 0


@pytest.mark.parametrize("radices", [[4, 4, 4], [2, 4, 8], [8, 8]])
def test_radixnet_other_bases_connect_every_pair_by_one_group_path(radices):
    """Base layer i of radix b reads b groups; rows still sum to 2; the m base layers together
    join every output to every input through exactly one sequence of groups (16 neurons each)."""
    net = radixnet(1024, len(radices), seed=0, radices=radices)
    paths = None
    for w, b in zip(net.layers, radices):
        assert np.all(np.diff(w.indptr) == 16 * b) and np.all(np.bincount(w.indices, minlength=1024) == 16 * b)
        np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), 2.0)
        step = (w != 0).astype(np.int64)
        paths = step if paths is None else step @ paths
    assert np.all(paths.toarray() == 16 ** (len(radices) - 1))
    assert net.provenance["radices"] == radices


def test_radixnet_default_bases_are_the_challenge_ones():
    a, b = radixnet(256, 5, seed=1), radixnet(256, 5, seed=1, radices=[2, 2, 2, 2])
    nets_equal(a, b)
    assert a.provenance["radices"] == [2, 2, 2, 2]


@pytest.mark.parametrize("radices", ["4,4", "4,4,4,4", "1,16,4", "3,3,7"])
def test_radixnet_bad_radices(tmp_path, radices):
    out = tmp_path / "r.h5"
    assert_user_error(spdnn("generate", "radixnet", "--neurons", 1024, "--layers", 3, "--radices", radices,
                            "-o", out, check=False), "--radices must be integers >= 2 whose product is N/16 = 64")
    assert not out.exists()


@pytest.mark.parametrize("kind, args, flags", [
    ("random", ["--widths", "8,8", "--nnz-per-row", 2, "--radices", "2,2"], "--radices"),
    ("random", ["--widths", "8,8", "--nnz-per-row", 2, "--neurons", 64, "--layers", 2], "--neurons, --layers"),
    ("radixnet", ["--neurons", 64, "--layers", 2, "--nnz-per-row", 2, "--init", "constant"], "--nnz-per-row, --init"),
], ids=["random-radices", "random-neurons", "radixnet-random-options"])
def test_generate_refuses_the_other_kinds_options(tmp_path, kind, args, flags):
    out = tmp_path / "n.h5"
    assert_user_error(spdnn("generate", kind, *args, "-o", out, check=False), f"generate {kind} does not take {flags}")
    assert not out.exists()


def test_radixnet_reproduces_real_layers_1_to_6(gc_archive):
    real = import_gc(gc_archive, layers=7)
    gen = radixnet(1024, 7, seed=0)
    for k in range(6):
        assert (real.layers[k] != gen.layers[k]).nnz == 0, f"layer {k + 1}"
    # Layer 7 is base layer 1 with permuted inputs: same row/column degrees, different pattern.
    assert (real.layers[6] != gen.layers[0]).nnz > 0
    assert np.all(np.diff(real.layers[6].indptr) == 32)


def test_import_real_archive(gc_archive, tmp_path):
    out = tmp_path / "gc.h5"
    proc = spdnn("import-gc", gc_archive, "-o", out)
    assert "3932160 nonzeros" in proc.stderr
    net = read_network(out)
    assert net.num_layers == 120 and net.nnz == 3_932_160
    for w in net.layers:
        assert np.all(np.diff(w.indptr) == 32)
        assert np.all(np.bincount(w.indices, minlength=1024) == 32)
    assert net.biases[0][0] == np.float32(-0.3) and net.ymax == 32
    info = json.loads(spdnn("info", out).stdout)
    assert info["nnz_total"] == 3_932_160 and len(info["provenance"]["sha256"]) == 120


def test_same_seed_same_bytes(tmp_path):
    for name in ("a", "b"):
        spdnn("generate", "radixnet", "--neurons", 64, "--layers", 6, "--seed", 7, "-o", tmp_path / f"{name}.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    spdnn("generate", "radixnet", "--neurons", 64, "--layers", 6, "--seed", 8, "-o", tmp_path / "c.h5")
    assert (tmp_path / "a.h5").read_bytes() != (tmp_path / "c.h5").read_bytes()


def test_random_generator_distinct_and_seeded():
    a = random_sparse([50, 40, 30, 10], 7, seed=1)
    b = random_sparse([50, 40, 30, 10], 7, seed=1)
    for wa, wb in zip(a.layers, b.layers):
        assert (wa != wb).nnz == 0
        assert np.all(np.diff(wa.indptr) == 7)  # distinct columns: no duplicates were merged


@pytest.mark.parametrize("square", [True, False])
def test_export_import_round_trip(tmp_path, square):
    if square:
        net = radixnet(64, 8, seed=2)
    else:  # a classifier whose layers are not square, with trained (non-constant) biases
        net = random_sparse([64, 256, 256, 10], 12, seed=4)
        net.biases = [np.linspace(-1, 1, b.size).astype(np.float32) for b in net.biases]
    export_gc(net, tmp_path / "out")
    back = import_gc(tmp_path / "out")
    nets_equal(net, back)
    write_network(back, tmp_path / "a.h5")
    export_gc(read_network(tmp_path / "a.h5"), tmp_path / "out2")
    nets_equal(back, import_gc(tmp_path / "out2"))


def test_export_official_layout(gc_archive, tmp_path):
    net = import_gc(gc_archive, layers=2)
    export_gc(net, tmp_path)
    with tarfile.open(gc_archive) as tf:
        official = tf.extractfile("neuron1024/n1024-l2.tsv").read()
    assert (tmp_path / "neuron1024" / "n1024-l2.tsv").read_bytes() == official


def test_network_reader_rejects_other_major_version(tmp_path):
    path = tmp_path / "n.h5"
    write_network(radixnet(32, 2, 0), path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = "2.0"
    assert_user_error(spdnn("info", path, check=False), "version 2.0")
    (tmp_path / "junk.h5").write_text("not hdf5")
    assert_user_error(spdnn("info", tmp_path / "junk.h5", check=False), "junk.h5")


def _write_layers(d, layers_text: dict[int, str], n=4):
    sub = d / f"neuron{n}"
    sub.mkdir(parents=True, exist_ok=True)
    for k, text in layers_text.items():
        (sub / f"n{n}-l{k}.tsv").write_text(text)
    return d


GOOD = "1\t1\t0.5\n2\t3\t0.5\n4\t4\t0.5\n"


@pytest.mark.parametrize("text, fragment", [
    ("1\t1\t0.5\n2\t3\n", "line 2"),
    ("1\t1\t0.5\n2\t3\t0.5\t9\n", "line 2"),
    ("1\t1\t0.5\nx\t3\t0.5\n", "non-numeric"),
    ("1\t1\t0.5\n0\t3\t0.5\n", "index 0"),
    ("1\t1\t0.5\n5\t3\t0.5\n", "beyond the declared size 4"),
    ("1\t1\t0.5\n2.5\t3\t0.5\n", "not an integer"),
])
def test_bad_tsv_lines(tmp_path, text, fragment):
    src = _write_layers(tmp_path / "src", {1: GOOD, 2: text})
    out = tmp_path / "net.h5"
    proc = spdnn("import-gc", src, "-o", out, check=False)
    assert_user_error(proc, "n4-l2.tsv", fragment)
    assert not out.exists() and not list(tmp_path.glob(".net.h5*"))


def test_missing_layer_and_inconsistent_sizes(tmp_path):
    src = _write_layers(tmp_path / "a", {1: GOOD, 3: GOOD})
    assert_user_error(spdnn("import-gc", src, "-o", tmp_path / "x.h5", check=False), "missing layer file n4-l2.tsv")
    src = _write_layers(tmp_path / "b", {1: GOOD})
    (src / "neuron8").mkdir()
    (src / "neuron8" / "n8-l2.tsv").write_text(GOOD)
    assert_user_error(spdnn("import-gc", src, "-o", tmp_path / "y.h5", check=False), "different neuron counts")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_truncated_archive(tmp_path):
    src = _write_layers(tmp_path / "src", {1: GOOD * 2000, 2: GOOD * 2000})
    archive = tmp_path / "neuron4.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "neuron4", arcname="neuron4")
    data = archive.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    proc = spdnn("import-gc", tmp_path / "cut.tar.gz", "-o", tmp_path / "n.h5", check=False)
    assert_user_error(proc, "cut.tar.gz", "truncated or corrupt")
    assert not (tmp_path / "n.h5").exists()
    spdnn("import-gc", archive, "-o", tmp_path / "ok.h5")  # the whole archive imports


def test_images_and_categories(tmp_path):
    spdnn("images", "--neurons", 1024, "-o", tmp_path / "im.tsv")
    from spdnn.images import read_images

    im = read_images(tmp_path / "im.tsv", 1024)
    assert im.shape == (1797, 1024) and set(np.unique(im.data)) == {1.0}
    gz = tmp_path / "im.tsv.gz"
    gz.write_bytes(gzip.compress((tmp_path / "im.tsv").read_bytes()))
    assert (read_images(gz, 1024) != im).nnz == 0
    assert_user_error(spdnn("images", "--neurons", 1000, "-o", tmp_path / "x.tsv", check=False), "not a square")


def test_fetch_gc_from_file_url(tmp_path):
    root = tmp_path / "mirror"
    (root / "dnn").mkdir(parents=True)
    (root / "mnist").mkdir()
    src = _write_layers(tmp_path / "src", {1: GOOD})
    with tarfile.open(root / "dnn" / "neuron4.tar.gz", "w:gz") as tf:
        tf.add(src / "neuron4", arcname="neuron4")
    (root / "dnn" / "neuron4-l1-categories.tsv").write_text("1\n")
    (root / "mnist" / "sparse-images-4.tsv.gz").write_bytes(gzip.compress(b"1\t1\t1\n"))
    dest = tmp_path / "dl"
    # A partial earlier download (.part) is completed, never taken for the whole file.
    dest.mkdir()
    full = (root / "dnn" / "neuron4-l1-categories.tsv").read_bytes()
    (dest / "neuron4-l1-categories.tsv.part").write_bytes(full[:1])
    out = spdnn("fetch-gc", "--neurons", 4, "--layers", 1, "--root", root.as_uri() + "/", dest)
    digests = json.loads(out.stdout)
    assert set(digests) == {"neuron4.tar.gz", "neuron4-l1-categories.tsv", "sparse-images-4.tsv.gz"}
    assert (dest / "neuron4-l1-categories.tsv").read_bytes() == full
    assert json.loads((dest / "provenance.json").read_text())["sha256"] == digests
    net = import_gc(dest / "neuron4.tar.gz")
    assert net.nnz == 3
    # Corrupt gzip is detected and not left in place looking complete.
    (root / "mnist" / "sparse-images-4.tsv.gz").write_bytes(b"\x1f\x8b\x08garbage")
    (dest / "sparse-images-4.tsv.gz").unlink()
    proc = spdnn("fetch-gc", "--neurons", 4, "--layers", 1, "--root", root.as_uri() + "/", dest, check=False)
    assert_user_error(proc, "gzip integrity")
    assert not (dest / "sparse-images-4.tsv.gz").exists()


def test_import_streams_an_archive_in_any_member_order(tmp_path):
    """An archive yields its members in its own order: here layers shuffled, then network.json and
    the per-neuron bias files last. The streamed import (one layer at a time, each written as it
    comes) gives back the exported network, biases included; a missing layer leaves no output."""
    import random

    net = random_sparse([30, 20, 20, 10], 3, seed=1)
    net.biases = [np.random.default_rng(k).normal(size=n).astype(np.float32) for k, n in enumerate(net.widths[1:])]
    export_gc(net, tmp_path / "exp")
    files = [f for f in (tmp_path / "exp").rglob("*") if f.is_file()]
    layers = [f for f in files if f.name.endswith(".tsv") and "bias" not in f.name]
    random.Random(3).shuffle(layers)
    late = sorted(set(files) - set(layers))
    assert any("bias" in f.name for f in late) and any(f.name == "network.json" for f in late)
    for name, members in (("all", layers + late), ("gap", layers[1:] + late)):
        with tarfile.open(tmp_path / f"{name}.tar.gz", "w:gz") as tf:
            for f in members:
                tf.add(f, arcname=str(f.relative_to(tmp_path / "exp")))
    spdnn("import-gc", tmp_path / "all.tar.gz", "-o", tmp_path / "all.h5")
    nets_equal(read_network(tmp_path / "all.h5"), net)
    nets_equal(import_gc(tmp_path / "all.tar.gz"), net)
    proc = spdnn("import-gc", tmp_path / "gap.tar.gz", "-o", tmp_path / "gap.h5", check=False)
    missing = layers[0].name
    assert_user_error(proc, "missing layer file", missing)
    assert not (tmp_path / "gap.h5").exists() and not list(tmp_path.glob(".gap.h5*"))


def test_layer_file_pattern_reads_no_weights(tmp_path):
    """`LayerFile.pattern` (the partitioner's read) has the layer's exact pattern, every stored
    entry 1, without touching the weights."""
    from spdnn.network import LayerFile

    net = random_sparse([30, 40, 20], 5, seed=1)
    write_network(net, tmp_path / "n.h5")
    layers = LayerFile(tmp_path / "n.h5")
    for i, w in enumerate(net.layers):
        p = layers.pattern(i)
        assert p.shape == w.shape and (p.indptr == w.indptr).all() and (p.indices == w.indices).all()
        assert (p.data == 1).all()
