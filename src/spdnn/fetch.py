"""Download the official Graph Challenge files: resumable, atomic, gzip-verified, checksummed."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .atomic import write_text_atomic
from .errors import UserError

GC_ROOT = "https://graphchallenge.s3.amazonaws.com/synthetic/sparsechallenge_2019/"


def gc_files(neurons: int, layers: int) -> list[str]:
    return [f"dnn/neuron{neurons}.tar.gz", f"dnn/neuron{neurons}-l{layers}-categories.tsv",
            f"mnist/sparse-images-{neurons}.tsv.gz"]


def fetch_gc(neurons: int, layers: int, dest, root: str = GC_ROOT, progress=True) -> dict:
    """Fetch each file to DEST/<basename>; returns {basename: sha256}; written to DEST/provenance.json."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    digests = {}
    for rel in gc_files(neurons, layers):
        url = root.rstrip("/") + "/" + rel
        target = dest / Path(rel).name
        if not target.exists():
            _download(url, target, progress)
        if target.suffix == ".gz":
            _verify_gzip(target)
        digests[target.name] = _sha256(target)
    write_text_atomic(dest / "provenance.json", json.dumps({"root": root, "sha256": digests}, indent=1, sort_keys=True) + "\n")
    return digests


def _download(url: str, target: Path, progress: bool) -> None:
    """Continue a partial download (`.part`, HTTP Range) and rename only when complete."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # nothing left to fetch
            part.replace(target)
            return
        raise UserError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"{url}: cannot download ({e})") from None
    resumed = have and getattr(resp, "status", 200) == 206
    total = resp.headers.get("Content-Length")
    total = int(total) + (have if resumed else 0) if total else None
    with resp, open(part, "ab" if resumed else "wb") as f:
        done = have if resumed else 0
        while chunk := resp.read(1 << 20):
            f.write(chunk)
            done += len(chunk)
            if progress and total:
                print(f"\r{target.name}: {done / 2**20:.1f}/{total / 2**20:.1f} MiB", end="", file=sys.stderr)
    if progress and total:
        print(file=sys.stderr)
    if total is not None and part.stat().st_size != total:
        raise UserError(f"{url}: download incomplete ({part.stat().st_size} of {total} bytes); run again to resume")
    part.replace(target)


def _verify_gzip(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (OSError, EOFError) as e:
        bad = path.with_name(path.name + ".corrupt")
        path.replace(bad)
        raise UserError(f"{path}: gzip integrity check failed ({e}); moved to {bad.name}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
