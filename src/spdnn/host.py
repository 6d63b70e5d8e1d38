"""What a process may use of its machine: the cores for helper threads, and glibc's heap.

The chunk threads of a network file (`h5_chunks`: compressing as a layer is written, inflating
as one is read) are as many as the cores the process may count on. A serial stage counts every core
of its affinity mask; `partition --jobs J` processes a J-th each; the K ranks of an MPI run that
share a node (under `mpiexec` without binding, the same mask) split its cores between them
(`core_share`, `collective.node_core_share`), so that K ranks do not each start threads for the
whole node. (The one read-ahead thread, `read_ahead`, does not depend on the cores.)

The heap functions are process-wide settings of glibc's allocator (no-ops where it is not glibc).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from functools import cache


def affinity() -> frozenset[int]:
    """The CPUs this process may run on: its affinity mask (a SLURM task's CPUs, a `taskset`),
    else every core of the machine."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return frozenset(range(os.cpu_count() or 1))


def usable_cores() -> int:
    return len(affinity())


def core_share(own: Iterable[int], node: list[Iterable[int]]) -> int:
    """Cores one process of `node` (the CPU sets of every process of the run on this node, its own
    among them) may count on for its threads: the node's CPUs they may run on, split evenly
    between them, never more than its own set. `mpiexec -n 4` without binding on 16 cores: each
    of the 4 sees 16 and gets 4; `srun` binding each task to 4 of 64 cores: 4; 16 ranks on 16
    cores: 1 (no helper threads)."""
    own = frozenset(own)
    cpus = frozenset().union(*map(frozenset, node)) | own
    return max(1, min(len(own), len(cpus) // max(1, len(node))))


@cache
def _libc():
    try:
        return ctypes.CDLL(None)  # the process's own symbols: glibc's where it is glibc
    except (OSError, TypeError):  # TypeError: no CDLL(None) on Windows
        return None


@cache
def _malloc_trim():
    trim = getattr(_libc(), "malloc_trim", None)  # glibc's; absent on macOS and musl
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def reuse_freed_memory() -> bool:
    """Ask glibc to serve large temporaries from its heap instead of fresh mmaps (else a no-op).
    Every layer product allocates blocks of a few MB; by default each is a fresh mapping whose
    pages fault in on first touch, which measured 2–3× the arithmetic of a training layer's
    backward pass at B = 256. Process-wide, so spdnn's commands call it at start (and the
    benchmark gives it to every row, peers included)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:  # macOS, musl, Windows
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, 32 << 20)  # glibc's upper limit on 64-bit systems
    return bool(ok and mallopt(m_trim_threshold, 256 << 20))


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system, once a layer is written (glibc; a no-op
    elsewhere). spdnn's commands keep freed memory for reuse (`reuse_freed_memory`: no trimming
    under 256 MB free), and the chunk threads allocate in malloc arenas of their own, so what a
    layer freed there and in the main heap stayed resident and grew with the layers (import-gc of
    4096 × 64 beside other work: 131 MB without threads, 140–224 MB with them, 125–131 MB trimmed
    after every layer; a page fault per page reused, ≈1 s in 120 layers of 65536)."""
    trim = _malloc_trim()  # once a layer: looked up and typed once
    if trim is not None:
        trim(0)
