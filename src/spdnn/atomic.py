"""Write outputs under a temporary name and rename, so no half-written file looks complete."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


def output_error(path) -> str | None:
    """Why `path` cannot be written, in one line (its directory cannot be made, a file cannot be
    created there, or it is a directory), else None. Commands ask before their work, not after it:
    a training run or a partition must not be lost to an output path that was never writable."""
    path = Path(path)
    if path.is_dir():
        return f"cannot write {path}: it is a directory"
    existing = next((d for d in path.parents if d.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"cannot write {path}: {existing} is not a directory"
    probe = path.with_name(f".{path.name}.probe{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.unlink(probe)
    except OSError as e:
        return f"cannot write {path}: {e.strerror or e}"
    return None


def outputs_error(*paths) -> str | None:
    """The first of `paths` (None: not asked for) that cannot be written, as `output_error` says."""
    return next((e for e in (output_error(p) for p in paths if p is not None) if e), None)


def check_outputs(*paths) -> None:
    """`outputs_error` as a `UserError` (one line, status 2)."""
    error = outputs_error(*paths)
    if error:
        raise UserError(error)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it to `path` only if the block succeeds."""
    path = Path(path)
    check_outputs(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
