"""Partition files: one part id per vertex, in vertex-id order.

Two forms of the same vector:

- `PART` (text): one id per line, the interchange format hMETIS, KaHyPar and Mt-KaHyPar read and
  write. The reader also accepts several whitespace-separated ids per line (PaToH writes them so).
- `PART.npy` (binary, written beside the text by `spdnn partition`): the smallest unsigned integer
  type that holds K. Ranks and `spdnn volume` read only the layer slices they need from it
  (`PartitionReader`), never the whole vector: at N=65536, L=1920 the text is 1.3e8 lines (~2.5 GB
  parsed), the binary 128 MB. It is used only while it is at least as new as the text file, so an
  edited or replaced text partition is never shadowed by a stale binary one.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .errors import UserError


def read_partition(path) -> np.ndarray:
    """The whole partition vector, from the binary form when it is current (its own, smallest
    integer type: 1 byte per neuron up to K = 256), else the text (int64)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such partition file")
    binary = binary_path(path)
    if binary is not None:
        return np.load(binary)
    return parse_text_partition(path)


def parse_text_partition(path) -> np.ndarray:
    path = Path(path)
    raw = path.read_bytes()
    # C parser, no per-token Python objects. It warns and stops at the first token that is not
    # an integer; then find and report that token.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(raw.decode("ascii", errors="replace"), dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            _locate_bad_token(raw, path)


def _locate_bad_token(raw: bytes, path: Path):
    for line_no, line in enumerate(raw.decode("ascii", errors="replace").splitlines(), start=1):
        for tok in line.split():
            try:
                int(tok)
            except ValueError:
                raise UserError(f"{path}: line {line_no}: part id {tok!r} is not an integer") from None
    raise UserError(f"{path}: cannot parse partition file")


def binary_path(path) -> Path | None:
    """PART.npy when it exists and is at least as new as PART (else None: use the text)."""
    path = Path(path)
    npy = path.with_name(path.name + ".npy")
    if npy.exists() and npy.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        return npy
    return None


def id_dtype(k: int) -> np.dtype:
    """The smallest unsigned integer type that holds part ids 0..K−1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if k - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def write_partition(part: np.ndarray, path, sidecar: dict | None = None, k: int | None = None) -> None:
    """PART (text), PART.npy (binary) and PART.json (metrics, time, parameters), each written
    atomically; the text streamed in chunks. The binary is written last, so it is never older."""
    part = np.asarray(part)
    if part.dtype.kind not in "iu":
        raise TypeError(f"part ids must be integers, not {part.dtype}")
    k = int(part.max()) + 1 if k is None and part.size else (k or 1)
    from .decimal_text import NEWLINE, numbers  # compiled: 1.3·10⁸ lines at the target size

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for lo in range(0, part.size, 1 << 20):
            f.write(numbers(part[lo:lo + (1 << 20)], NEWLINE))
    if sidecar is not None:
        write_text_atomic(str(path) + ".json", json.dumps(sidecar, indent=1) + "\n")
    npy = Path(path).with_name(Path(path).name + ".npy")
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array(f, part.astype(id_dtype(k)), allow_pickle=False)


class PartitionReader:
    """Layer slices of a partition: `layer(t)` = owners of layer t's neurons, read from the file
    (binary: one seek and read per slice, so memory is one layer; text: parsed once, whole).
    Counts the bytes it reads (`bytes_read`)."""

    def __init__(self, path, widths):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: no such partition file")
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(widths, dtype=np.int64))])
        self.bytes_read = 0
        self._whole = None
        self._npy = binary_path(self.path)
        if self._npy is not None:
            with open(self._npy, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, self.dtype = read_header(f)
                self._data_offset = f.tell()
            self.size = int(shape[0]) if shape else 0
            self.bytes_read += self._data_offset
        else:
            self._whole = parse_text_partition(self.path)
            self.bytes_read += os.path.getsize(self.path)
            self.size = int(self._whole.size)

    @property
    def binary(self) -> bool:
        return self._npy is not None

    def check_length(self) -> None:
        from .volume import check_length

        check_length(self.size, np.diff(self.offsets), self.path)

    def check_ids(self, k: int) -> None:
        """Length, and every id in [0, K): one pass, a layer at a time."""
        self.check_length()
        top, negative = self.id_range()
        if negative:
            raise UserError(f"{self.path}: line {negative}: negative part id")
        if top > k:
            raise UserError(f"{self.path}: part id {top - 1} ≥ K = {k}")

    def layer(self, t: int) -> np.ndarray:
        lo, hi = int(self.offsets[t]), int(self.offsets[t + 1])
        if self._whole is not None:
            return self._whole[lo:hi]
        with open(self._npy, "rb") as f:
            f.seek(self._data_offset + lo * self.dtype.itemsize)
            out = np.fromfile(f, dtype=self.dtype, count=hi - lo)
        self.bytes_read += out.nbytes
        return out.astype(np.int64)

    def id_range(self, layers=None) -> tuple[int, int]:
        """(K = largest id + 1, 1-based line of the first negative id or 0) over `layers` (layer
        indices in increasing order; default every layer): one pass, a layer at a time."""
        top, negative = -1, 0
        for t in range(len(self.offsets) - 1) if layers is None else layers:
            ids = self.layer(t)
            if not ids.size:
                continue
            top = max(top, int(ids.max()))
            if not negative and ids.min() < 0:
                negative = int(self.offsets[t]) + int(np.argmax(ids < 0)) + 1
        return top + 1, negative
