"""Image files read a batch at a time: the same images as a whole read, wherever the chunks and
batches fall; bad lines named by their line in the file; serial inference batch by batch."""

from __future__ import annotations

import gzip
import tempfile

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_user_error, spdnn

import spdnn.images as spdnn_images
from spdnn.errors import UserError
from spdnn.graphchallenge import read_categories
from spdnn.images import iter_image_batches, read_images, write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Digits at N = 64 with gaps: image 11 and images 40..59 have no pixel (all-zero rows),
    and the file ends with image 99. Written in order of image id (im.tsv, .gz), pixel by pixel
    (pixels.tsv, as MATLAB's `find` lists a matrix) and shuffled."""
    d = tmp_path_factory.mktemp("images")
    spdnn("images", "--neurons", 64, "--threshold", 0.5, "-o", d / "all.tsv")
    im = read_images(d / "all.tsv", 64)[:100].tolil()
    im[11, :] = 0
    im[40:60, :] = 0
    im[99, 5] = 1.0  # the last image keeps a pixel: it sets the count
    im = im.tocsr()
    im.eliminate_zeros()
    write_images(im, d / "im.tsv")
    (d / "im.tsv.gz").write_bytes(gzip.compress((d / "im.tsv").read_bytes()))
    lines = (d / "im.tsv").read_text().splitlines(keepends=True)
    by_pixel = sorted(lines, key=lambda line: (int(line.split("\t")[1]), int(line.split("\t")[0])))
    (d / "pixels.tsv").write_text("".join(by_pixel))
    np.random.default_rng(0).shuffle(lines)
    (d / "shuffled.tsv").write_text("".join(lines))
    return d, im


@pytest.mark.parametrize("name", ["im.tsv", "im.tsv.gz", "pixels.tsv", "shuffled.tsv"])
@pytest.mark.parametrize("batch,chunk_bytes", [(1, 50), (7, 50), (16, 300), (20, 1 << 20), (1000, 64)])
def test_batches_are_the_whole_file_cut_anywhere(images, name, batch, chunk_bytes, monkeypatch, tmp_path):
    d, im = images
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where files out of order are sorted out
    monkeypatch.setattr(spdnn_images, "SPILL_IMAGES", 30)  # several temporary files, batches across them
    got = list(iter_image_batches(d / name, 64, batch, chunk_bytes=chunk_bytes))
    assert [lo for lo, _ in got] == list(range(0, 100, batch))
    assert all(b.shape == (min(batch, 100 - lo), 64) and b.dtype == np.float32 for lo, b in got)
    whole = sp.vstack([b for _, b in got]).tocsr()
    assert whole.shape == im.shape and (whole != im).nnz == 0
    assert whole[40:60].nnz == 0 and whole[11].nnz == 0 and whole[12].nnz > 0
    assert not list(tmp_path.iterdir())  # the temporary files are gone


def test_sorting_a_file_out_of_order_leaves_no_name_on_disk_even_midway(images, monkeypatch, tmp_path):
    """While a file out of order is being read back, its lines sit in a temporary file without a
    name: a process killed then (SIGKILL, out of memory) leaves nothing under $TMPDIR."""
    d, im = images
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(spdnn_images, "SPILL_IMAGES", 30)
    batches = iter_image_batches(d / "shuffled.tsv", 64, 10, chunk_bytes=200)
    lo, first = next(batches)  # every line spilled, the first range read back
    assert lo == 0 and (first != im[:10]).nnz == 0
    assert not list(tmp_path.iterdir())
    batches.close()


def test_no_room_to_sort_a_file_out_of_order_is_one_line(images, monkeypatch, tmp_path):
    d, _ = images
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"cannot sort the image lines by image id in a temporary file under .*missing.*TMPDIR"):
        list(iter_image_batches(d / "shuffled.tsv", 64, 10))
    assert list(iter_image_batches(d / "im.tsv", 64, 10))  # a file in order needs no temporary file


@pytest.mark.parametrize("batch,chunk_bytes", [(1, 20), (2, 40), (3, 1 << 20)])
def test_a_pixel_given_twice_sums_and_pixels_come_in_any_order(batch, chunk_bytes, tmp_path):
    """Within an image, lines may list pixels in any order and repeat one (the values sum, as
    scipy's COO → CSR does); each batch comes out canonical (pixels sorted, once each). The last
    line has no newline."""
    lines = ["1\t5\t1", "1\t2\t1", "1\t5\t0.5", "2\t3\t2", "3\t1\t1", "3\t1\t1", "3\t4\t3", "5\t2\t1"]
    f = tmp_path / "twice.tsv"
    f.write_text("\n".join(lines))
    r, c, v = (np.array([float(x.split("\t")[k]) for x in lines]) for k in range(3))
    want = sp.csr_matrix((v, (r.astype(int) - 1, c.astype(int) - 1)), shape=(5, 8), dtype=np.float32)
    got = list(iter_image_batches(f, 8, batch, chunk_bytes=chunk_bytes))
    assert all(b.has_canonical_format for _, b in got)
    whole = sp.vstack([b for _, b in got]).tocsr()
    assert whole.shape == (5, 8) and (whole != want).nnz == 0 and whole[0, 4] == 1.5 and whole[2, 0] == 2


def test_write_images_is_the_same_bytes_in_any_batch(images, tmp_path):
    d, im = images
    write_images(im, tmp_path / "a.tsv", batch=3)
    assert (tmp_path / "a.tsv").read_bytes() == (d / "im.tsv").read_bytes()
    assert read_images(tmp_path / "a.tsv", 64).shape == (100, 64)
    (tmp_path / "empty.tsv").write_text("")
    assert read_images(tmp_path / "empty.tsv", 64).shape == (0, 64)


def test_images_count_repeats_the_digits(tmp_path):
    spdnn("images", "--neurons", 64, "-o", tmp_path / "once.tsv")
    spdnn("images", "--neurons", 64, "--count", 4000, "-o", tmp_path / "more.tsv")
    once, more = read_images(tmp_path / "once.tsv", 64), read_images(tmp_path / "more.tsv", 64)
    assert once.shape == (1797, 64) and more.shape == (4000, 64)
    assert (more[:1797] != once).nnz == 0 and (more[1797:3594] != once).nnz == 0 and (more[3594:] != once[:406]).nnz == 0
    assert_user_error(spdnn("images", "--neurons", 64, "--count", 0, "-o", tmp_path / "x.tsv", check=False), "--count")


def _lines(d):
    return (d / "im.tsv").read_text().splitlines(keepends=True)


@pytest.mark.parametrize("edit, fragment", [
    (lambda lines: lines.__setitem__(900, "3\t7\n"), "line 901: expected 3 tab-separated fields"),
    (lambda lines: lines.__setitem__(900, "x\t7\t1\n"), "line 901: non-numeric field 'x'"),
    (lambda lines: lines.__setitem__(900, "70\t65\t1\n"), "line 901: column index 65 is beyond the declared size 64"),
    (lambda lines: lines.append("2147483649\t1\t1\n"), r"line 1\d+: image 2147483649 is beyond the 2,147,483,648 images"),
])
def test_a_bad_line_is_named_by_its_line_in_the_file(images, tmp_path, edit, fragment):
    d, _ = images
    lines = _lines(d)
    assert len(lines) > 1000
    edit(lines)
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(lines))
    for chunk_bytes in (40, 333, 1 << 20):  # line 901 in a later chunk, or in the first
        with pytest.raises(UserError, match=fragment):
            list(iter_image_batches(bad, 64, 10, chunk_bytes=chunk_bytes))


def test_a_file_that_leaves_the_order_of_image_ids_late(images, tmp_path, monkeypatch):
    """Begun in order, a file is handed on as it is read: a line for an earlier image, past the
    lines the order is judged on, is an error naming it. Out of order within them, the file is
    sorted out through temporary files, and the line counts."""
    d, im = images
    monkeypatch.setattr(spdnn_images, "ORDER_LINES", 500)
    lines = _lines(d)
    lines.insert(900, "2\t1\t1\n")
    bad = tmp_path / "late.tsv"
    bad.write_text("".join(lines))
    with pytest.raises(UserError, match=r"line 901: image 2 comes after image .*sort -s -n -k1,1 late\.tsv"):
        list(iter_image_batches(bad, 64, 10, chunk_bytes=333))
    monkeypatch.setattr(spdnn_images, "ORDER_LINES", 1000)
    whole = sp.vstack([b for _, b in iter_image_batches(bad, 64, 10, chunk_bytes=333)]).tocsr()
    assert whole[1, 0] == im[1, 0] + 1 and (whole != im).nnz == 1


def test_bad_files_are_reported_at_the_call(images, tmp_path):
    d, _ = images
    with pytest.raises(UserError, match="no such images file"):
        iter_image_batches(tmp_path / "none.tsv", 64, 10)  # before any batch is asked for
    with pytest.raises(UserError, match="batch size"):
        iter_image_batches(d / "im.tsv", 64, 0)
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes((d / "im.tsv.gz").read_bytes()[:-40])
    with pytest.raises(UserError, match="truncated or corrupt gzip"):
        list(iter_image_batches(cut, 64, 10))


def test_serial_inference_in_batches_equals_one_batch(images, tmp_path):
    """Any batch size gives the same categories and activations; a bad line in the last batch
    leaves no categories, metrics or activations, though earlier batches were done."""
    d, _ = images
    spdnn("generate", "radixnet", "--neurons", 64, "--layers", 6, "--seed", 3, "-o", tmp_path / "n.h5")
    runs = {}
    for name, batch in (("im.tsv.gz", 100), ("im.tsv.gz", 16), ("im.tsv.gz", 1), ("pixels.tsv", 16)):
        out = tmp_path / f"c{batch}{name}.tsv"
        spdnn("infer", tmp_path / "n.h5", d / name, "-o", out, "--batch-size", batch,
              "--activations", tmp_path / f"a{batch}{name}.h5")
        with h5py.File(tmp_path / f"a{batch}{name}.h5") as f:
            runs[name, batch] = (out.read_text(), f["activations"][:])
    one = runs["im.tsv.gz", 100]
    cats = read_categories(tmp_path / "c100im.tsv.gz.tsv")
    assert 0 < cats.size < 80 and not set(cats) & {11, *range(40, 60)}  # blank images die
    assert one[1].shape == (100, 64)
    for key, run in runs.items():
        assert run[0] == one[0], key
        np.testing.assert_array_equal(run[1], one[1])
    lines = _lines(d)
    lines[-2] = "99\t1\n"
    (tmp_path / "bad.tsv").write_text("".join(lines))
    outs = [tmp_path / "x.tsv", tmp_path / "x.h5", tmp_path / "x.json"]
    proc = spdnn("infer", tmp_path / "n.h5", tmp_path / "bad.tsv", "-o", outs[0], "--batch-size", 16,
                 "--activations", outs[1], "--metrics", outs[2], check=False)
    assert_user_error(proc, "bad.tsv", f"line {len(lines) - 1}")
    assert not any(p.exists() for p in outs) and not list(tmp_path.glob(".x.*"))


def test_inference_progress_lines(capsys):
    from spdnn.inference import Progress

    progress = Progress(every=0.0)
    progress(4096, [np.arange(3), np.arange(5)])
    assert "infer: 4096 images, 8 survive so far" in capsys.readouterr().err
    quiet = Progress(every=3600.0)
    quiet(8192, [])
    assert capsys.readouterr().err == ""


def test_layer_progress_lines_every_tenth_and_every_minute(capsys, monkeypatch):
    """A line per tenth of the layers, and one at least every `seconds` in between: a tenth of a
    long stage (the bound of 65536×1920) is over 20 minutes."""
    import spdnn.progress as progress

    clock = iter(range(0, 10_000, 7))  # 7 s a call
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    report = progress.every_tenth("bound K=8", noun="layer tables")
    for done in range(1, 101):
        report(done, 100)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "  bound K=8: layer tables 9/100 (63.0 s)"  # a minute before the first tenth
    assert "  bound K=8: layer tables 10/100 (70.0 s)" in lines and lines[-1].startswith("  bound K=8: layer tables 100/100")
    assert len(lines) == 20  # the tenths and, between them, the minutes
    report = progress.every_tenth("generate", seconds=3600)
    for done in range(1, 101):
        report(done, 100)
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == [
        f"  generate: layer {done}/100" for done in range(10, 101, 10)]


def test_stage_progress_lines_restart_their_tenths_and_keep_the_minute(capsys, monkeypatch):
    """The partitioner's stages each count their own layers: a new stage starts at its first tenth
    again, the minute rule holds across stages, and a count reported twice is printed once."""
    import spdnn.progress as progress

    clock = iter(range(0, 10_000, 5))  # 5 s a call
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    report = progress.every_tenth("hypergraph K=8")
    for stage in ("sweep", "refinement pass 1/1"):
        for done in range(1, 21):
            report(done, 20, stage)
        report(20, 20, stage)
    lines = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == [f"  hypergraph K=8, {stage}: layer {done}/20" for stage in ("sweep", "refinement pass 1/1")
                     for done in range(2, 21, 2)]
    report = progress.every_tenth("hypergraph K=8")
    for done in range(1, 1001):
        report(done, 1000, "candidates")  # 5 s a layer: 12 layers a minute, 100 a tenth
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "  hypergraph K=8, candidates: layer 12/1000 (60.0 s)"
    assert len(lines) == 10 * 9  # each tenth and, after it, a line 12, 24, ..., 96 layers on
