"""Shared helpers: run the installed `spdnn` and `mpiexec` of this environment as a user would."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "graphchallenge"
GC_ARCHIVE = SHARED / "neuron1024.tar.gz"
GC_CATEGORIES = SHARED / "neuron1024-l120-categories.tsv"


def benchmark_module(name: str):
    """A script of benchmarks/ as a module (benchmarks/ is not a package: each file runs alone, and
    imports its siblings as a script would, from its own folder)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    path = folder / f"{name}.py"
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__file__", None) and Path(cached.__file__).resolve() == path:
        return cached  # once per session: a second copy would not be the one `pickle` finds
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if cached is None:  # registered, so that its functions pickle by name (process pools: `--jobs`)
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def env():
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["OMP_NUM_THREADS"] = "1"
    return e


def spdnn(*args, check=True, timeout=300, cwd=None):
    # check=False: a failure is raised below with the command's stderr, which CalledProcessError hides
    proc = subprocess.run([str(BIN / "spdnn"), *map(str, args)], check=False, capture_output=True, text=True,
                          env=env(), timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"spdnn {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def mpirun(k, *args, check=True, timeout=300):
    cmd = [str(BIN / "mpiexec"), "-n", str(k), str(BIN / "spdnn"), *map(str, args)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def assert_user_error(proc, *fragments):
    """One error line on stderr naming the problem, status 2, no traceback (progress lines may precede)."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.fixture(scope="session")
def gc_archive():
    if not GC_ARCHIVE.exists():
        pytest.skip("../shared/data/graphchallenge/neuron1024.tar.gz not available")
    return GC_ARCHIVE


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
