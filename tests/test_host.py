"""The cores a process's helper threads may count on, alone and as one of K MPI ranks; glibc's heap."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from conftest import BIN, env

from spdnn.host import affinity, core_share, release_free_memory, reuse_freed_memory


def test_core_share_splits_the_node_between_its_ranks():
    node16 = frozenset(range(16))
    assert core_share(node16, [node16]) == 16  # a serial stage: its whole mask
    assert core_share(node16, [node16] * 4) == 4  # mpiexec -n 4, no binding: each sees all 16
    assert core_share(node16, [node16] * 16) == 1
    assert core_share(node16, [node16] * 40) == 1  # oversubscribed: never 0
    bound = [frozenset(range(4 * r, 4 * r + 4)) for r in range(16)]  # srun, 4 CPUs a task on 64
    assert all(core_share(own, bound) == 4 for own in bound)
    assert core_share({0}, [{0}, {1, 2, 3, 4, 5, 6, 7}]) == 1  # never more than its own mask
    assert core_share({0, 1, 2}, [{0, 1, 2}, {0, 1, 2}, {5}]) == 1  # 4 CPUs for 3 ranks


RANK_SHARE = ("from mpi4py import MPI; from spdnn.collective import node_core_share; "
              "shares = MPI.COMM_WORLD.gather(node_core_share(MPI.COMM_WORLD)); "
              "MPI.COMM_WORLD.Get_rank() or print(*shares)")  # one line: ranks' prints may interleave


@pytest.mark.parametrize("ranks", [1, 2])
def test_each_rank_takes_its_share_of_the_node(ranks):
    """Under `mpiexec -n K` without binding every rank sees the whole mask: its threads get 1/K."""
    proc = subprocess.run([str(BIN / "mpiexec"), "-n", str(ranks), sys.executable, "-c", RANK_SHARE],
                          capture_output=True, text=True, env=env(), timeout=120, check=True)
    assert proc.stdout.split() == [str(max(1, len(affinity()) // ranks))] * ranks


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap settings are glibc's")
def test_heap_settings_reach_glibc():
    assert reuse_freed_memory() is True
    release_free_memory()  # found and called (argtypes set): no error
