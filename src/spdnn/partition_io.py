"""Partition files: one part id per vertex, in vertex-id order (hMETIS/KaHyPar/Mt-KaHyPar format).

The reader also accepts several whitespace-separated ids per line (PaToH writes them so).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .errors import UserError


def read_partition(path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such partition file")
    raw = path.read_bytes()
    # C parser, no per-token Python objects (N=65536, L=1920 has 1.3e8 vertices). It warns and
    # stops at the first token that is not an integer; then find and report that token.
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


def write_partition(part: np.ndarray, path, sidecar: dict | None = None) -> None:
    """PART and PART.json (metrics, time, parameters), each written atomically; streamed in chunks."""
    part = np.asarray(part, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for lo in range(0, part.size, 1 << 20):
            f.write("\n".join(part[lo:lo + (1 << 20)].astype(str).tolist()) + "\n")
    if sidecar is not None:
        write_text_atomic(str(path) + ".json", json.dumps(sidecar, indent=1) + "\n")
