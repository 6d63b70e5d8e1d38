"""Graph Challenge input images (`sparse-images-{N}.tsv[.gz]`: 1-based `image<TAB>pixel<TAB>value`
lines), read and written a batch of images at a time.

The official N = 65536 file holds 60,000 images, ≈ 7.5e8 lines (≈ 11 GB of text): parsed whole,
its int64/float64 triples alone would take 18 GB, beyond a 24 GB machine with the parser's copies.
So the file is parsed in chunks of about `CHUNK_BYTES` and handed on as batches of consecutive
image ids: a reader holds one chunk and one batch, whatever the number of images. A file in order
of image id (as `spdnn images` writes it) is handed on as it is read. A file in another order
(MATLAB's `find` writes a matrix column by column: pixel by pixel) is first sorted out into
ranges of image ids in a temporary file (12 bytes a line, under $TMPDIR; nameless, so a killed
process leaves nothing behind), which are then read back one range at a time. Which way is decided
by the first `ORDER_LINES` lines; a file that begins in order and leaves it later gets one line
saying where, and how to sort it.
"""

from __future__ import annotations

import gzip
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .atomic import atomic_path
from .errors import UserError
from .graphchallenge import format_triples, parse_triples

CHUNK_BYTES = 1 << 24  # 16 MiB of text, ≈ 1.1 M lines: parsed, ≈ 27 MB of triples (64 MiB: as fast, 240 MB more at the peak)
ORDER_LINES = 1 << 20  # a file is taken to be in order of image id if its first 1 M lines are
SPILL_IMAGES = 4096  # image ids per temporary file, for files not in order of image id
MAX_IMAGE = np.iinfo(np.int32).max  # 0-based image ids are stored as int32
SPILL_RECORD = np.dtype([("r", "<i4"), ("c", "<i4"), ("v", "<f4")])


def iter_image_batches(path, neurons: int, batch: int, chunk_bytes: int = CHUNK_BYTES
                       ) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Yield (lo, images lo .. lo + batch − 1 as CSR float32, batch × neurons) for lo = 0, batch,
    2·batch, … up to the largest image id in the file (the last batch may be shorter). An image
    with no line is an all-zero row, as when the file is read whole; a pixel given twice sums.
    A missing file or a bad batch size is reported at the call, a bad line when it is reached."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such images file")
    if batch < 1:
        raise UserError(f"the batch size must be at least 1 (got {batch})")
    return _batches(path, neurons, batch, chunk_bytes)


def _batches(path: Path, neurons: int, batch: int, chunk_bytes: int) -> Iterator[tuple[int, sp.csr_matrix]]:
    chunks = _parsed_chunks(path, neurons, chunk_bytes)
    first, lines = [], 0  # the order is judged on the file's first ORDER_LINES lines (or all)
    for chunk in chunks:
        first.append(chunk)
        lines += chunk[1].size
        if lines >= ORDER_LINES:
            break
    if not first:
        return
    r = np.concatenate([chunk[1] for chunk in first])
    in_order = bool(np.all(r[1:] >= r[:-1]))
    del r, chunk  # nothing but `first` may keep a parsed chunk (see `_handed_over`)
    chunks = itertools.chain(_handed_over(first), chunks)
    yield from _in_order(chunks, path, neurons, batch) if in_order else _spilled(chunks, neurons, batch)


def _handed_over(items: list):
    """The items of a list, each dropped from it as it is handed on: a chain over the list itself
    would keep the first parsed chunk (24 bytes a line, ≈ 27 MB at the default size) until the file's end."""
    items.reverse()
    while items:
        yield items.pop()


def _in_order(chunks, path: Path, neurons: int, batch: int):
    """Lines in order of image id (the first chunk was): a batch is complete once a later image
    appears, and is handed on at once."""
    pending = _Pending()
    lo = 0  # the first image id not yet handed on
    for first_line, r, c, v in chunks:
        _check_order(r, pending.last, path, first_line)
        pending.add(r, c, v)
        while pending.last >= lo + batch:  # no later line can belong to batch lo: it is complete
            yield lo, pending.take(lo, lo + batch, neurons)
            lo += batch
    end = pending.last + 1  # images in all
    while lo < end:
        hi = min(end, lo + batch)
        yield lo, pending.take(lo, hi, neurons)
        lo = hi


def _spilled(chunks, neurons: int, batch: int):
    try:
        yield from _spilled_ranges(chunks, neurons, batch)
    except OSError as e:  # the temporary file's, not the images file's (`_line_chunks` names those)
        raise UserError(f"cannot sort the image lines by image id in a temporary file under "
                        f"{tempfile.gettempdir()} ({e}); set TMPDIR to a larger disk, or sort the file "
                        f"first (sort -s -n -k1,1)") from None


def _spilled_ranges(chunks, neurons: int, batch: int):
    """Lines in any order (a file written pixel by pixel, say): each chunk's lines, 12 bytes each,
    sorted by range of `group` image ids, are appended to one temporary file, and where each
    range's segment lies is noted; then each range is gathered from its segments, sorted, and
    handed on a batch at a time. Memory: a chunk, then a range; disk: 12 bytes a line under
    $TMPDIR, in a file without a name (`tempfile.TemporaryFile`), so that a process killed
    midway (SIGKILL, out of memory) leaves nothing behind."""
    group = batch * max(1, SPILL_IMAGES // batch)
    last = -1
    segments: dict[int, list[tuple[int, int]]] = {}  # range → (byte offset, lines) of each of its segments
    with tempfile.TemporaryFile(buffering=0, prefix="spdnn-images-") as spill:
        for _, r, c, v in chunks:
            last = max(last, int(r.max()))
            g = r // group
            order = np.argsort(g, kind="stable")
            records = np.empty(r.size, SPILL_RECORD)
            records["r"], records["c"], records["v"] = r, c, v
            records = records[order]  # sorted compact (12 bytes a line), not the parser's 24
            g = g[order]
            starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
            ranges = g[starts]
            ends = np.r_[starts[1:], r.size]
            offset = spill.tell()
            for grp, a, b in zip(ranges.tolist(), starts.tolist(), ends.tolist()):
                segments.setdefault(grp, []).append((offset + a * SPILL_RECORD.itemsize, b - a))
            records.tofile(spill)  # numpy writes it all and moves the file's position past it
        for first in range(0, last + 1, group):
            parts = segments.pop(first // group, [])
            records = np.empty(sum(n for _, n in parts), SPILL_RECORD)
            into, at = records.view(np.uint8), 0
            for offset, n in parts:
                size = n * SPILL_RECORD.itemsize
                _read_exactly(spill, offset, into[at:at + size])
                at += size
            records = records[np.argsort(records["r"], kind="stable")]
            pending = _Pending()
            if records.size:
                pending.add(records["r"], records["c"], records["v"])
            for lo in range(first, min(first + group, last + 1), batch):
                hi = min(lo + batch, first + group, last + 1)
                yield lo, pending.take(lo, hi, neurons)


def _read_exactly(f, offset: int, into: np.ndarray) -> None:
    f.seek(offset)
    view = memoryview(into)
    while view.nbytes:
        got = f.readinto(view)
        if not got:
            raise OSError("the file came back shorter than written")
        view = view[got:]


def read_images(path, neurons: int) -> sp.csr_matrix:
    """The whole file as one CSR (images × neurons) float32: for small files (tests, training);
    inference reads batch by batch (`iter_image_batches`)."""
    whole = [im for _, im in iter_image_batches(path, neurons, batch=np.iinfo(np.int32).max)]
    return whole[0] if whole else sp.csr_matrix((0, neurons), dtype=np.float32)


def write_images(images: sp.csr_matrix, path, batch: int | None = None, count: int | None = None) -> None:
    """Official layout: lines by image, then pixel; written `batch` images at a time (default:
    about 2 M lines, ≈ 50 MB of text and its Python strings). With `count`, that many images, the
    given ones repeated in turn (a file of the challenge's size from a smaller set, not held)."""
    count = images.shape[0] if count is None else count
    batch = batch or max(1, (1 << 21) * images.shape[0] // max(1, images.nnz))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for lo in range(0, count, batch):
            hi = min(count, lo + batch)
            rows = slice(lo, hi) if hi <= images.shape[0] else np.arange(lo, hi) % images.shape[0]  # no gather when not repeating
            coo = images[rows].tocoo()
            order = np.lexsort((coo.col, coo.row))
            f.write(format_triples(coo.row[order].astype(np.int64) + lo, coo.col[order].astype(np.int64),
                                   coo.data[order]))


def _parsed_chunks(path: Path, neurons: int, chunk_bytes: int):
    """(first line's number, image ids, pixels, values) of each chunk that has lines, 0-based."""
    for first_line, raw in _line_chunks(path, chunk_bytes):
        r, c, v = parse_triples(raw, str(path), shape=(None, neurons), first_line=first_line)
        if r.size and r.max() > MAX_IMAGE:  # ids are kept as int32
            i = int(np.argmax(r > MAX_IMAGE))
            raise UserError(f"{path}: line {first_line + i}: image {int(r[i]) + 1} is beyond the "
                            f"{MAX_IMAGE + 1:,} images supported")
        if r.size:
            yield first_line, r, c, v


def _line_chunks(path: Path, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number of the chunk's first line, whole lines of about chunk_bytes) until the file ends.
    A chunk is completed to its line's end by one more `readline`, so only one chunk's text is
    held while it is parsed."""
    opener = gzip.open if path.suffix == ".gz" else open
    line = 1
    try:
        with opener(path, "rb") as f:
            while data := f.read(chunk_bytes):
                if not data.endswith(b"\n"):
                    data += f.readline()  # the rest of the line (at the end: a last line without newline)
                yield line, data
                line += data.count(b"\n")
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        what = "truncated or corrupt gzip file" if opener is gzip.open else "cannot read"
        raise UserError(f"{path}: {what} ({e})") from None


def _check_order(r: np.ndarray, last: int, path: Path, first_line: int) -> None:
    """Image ids must not decrease (within the chunk, and from the previous chunk's last line)."""
    prev = np.concatenate(([last], r[:-1]))
    back = r < prev
    if back.any():
        i = int(np.argmax(back))
        raise UserError(f"{path}: line {first_line + i}: image {r[i] + 1} comes after image {prev[i] + 1}, "
                        f"though the file began in order of image id; sort it (sort -s -n -k1,1 {path.name})")


class _Pending:
    """Parsed lines not yet handed on, in order of image id, stored compact (int32 ids, float32
    values: 12 bytes a line against the parser's 24), one piece per chunk."""

    def __init__(self):
        self.pieces = []  # (image ids, pixels, values), each sorted by image id, in order
        self.last = -1  # the largest image id seen

    def add(self, r, c, v) -> None:
        # no copy when already compact (a spilled range read back is)
        self.pieces.append((r.astype(np.int32, copy=False), c.astype(np.int32, copy=False),
                            v.astype(np.float32, copy=False)))
        self.last = int(r[-1])

    def take(self, lo: int, hi: int, neurons: int) -> sp.csr_matrix:
        """Images lo .. hi − 1 (every pending line below hi) as CSR; the rest stays pending.

        Built directly from the sorted pieces: the row pointers from where each image begins in
        each piece, the pixels and values joined once (no COO → CSR copy of the batch)."""
        bounds = np.arange(lo, hi + 1)
        indptr = np.zeros(hi - lo + 1, np.int64)
        cols, vals, rest = [], [], []
        for r, c, v in self.pieces:
            n = int(np.searchsorted(r, hi))
            indptr += np.searchsorted(r[:n], bounds)
            cols.append(c[:n])
            vals.append(v[:n])
            if n < r.size:
                rest.append((r[n:], c[n:], v[n:]))
        self.pieces = rest
        if indptr[-1] <= MAX_IMAGE:  # int32 like the pixels: mixed index types would make scipy copy both as int64
            indptr = indptr.astype(np.int32)
        indices = cols[0] if len(cols) == 1 else np.concatenate(cols or [np.zeros(0, np.int32)])
        data = vals[0] if len(vals) == 1 else np.concatenate(vals or [np.zeros(0, np.float32)])
        images = sp.csr_matrix((data, indices, indptr), shape=(hi - lo, neurons))
        # A pixel given twice sums (as scipy's COO → CSR conversion does for a whole file). A no-op
        # on a batch already canonical; otherwise in place, on lines that are this batch's alone.
        images.sum_duplicates()
        return images
