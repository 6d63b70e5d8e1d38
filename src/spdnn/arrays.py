"""Array helpers used on every layer, where numpy's general-purpose paths are slow.

`np.unique(x)` without flags takes numpy 2.x's hash-table path: 1.1–2.7 s for 2·10⁶ int64 keys
here, against 0.04 s for a sort and 0.01 s for a bitmap. A Graph Challenge layer at N = 65536 has
2·10⁶ nonzeros, and the partitioner asks for distinct (input, part) pairs several times per layer.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

BITMAP_LIMIT = 1 << 28  # keys below this: a bitmap (≤ 256 MB of bools), else a sort


def distinct(keys: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Sorted distinct values of non-negative integer `keys` (int64). `limit`, when known, is an
    upper bound on the keys (exclusive): below BITMAP_LIMIT a bitmap is used, O(limit + n)."""
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.zeros(0, np.int64)
    if limit is not None and limit <= BITMAP_LIMIT:
        seen = np.zeros(int(limit), bool)
        seen[keys] = True
        return np.flatnonzero(seen)
    s = np.sort(keys.astype(np.int64, copy=False))
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def first_of_groups(key: np.ndarray) -> np.ndarray:
    """rep[i] = the first index with key[i]'s value (a stable sort, not numpy's hash unique)."""
    n = key.size
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.concatenate([[True], ks[1:] != ks[:-1]])
    group = np.cumsum(starts) - 1
    rep = np.empty(n, np.int64)
    rep[order] = order[starts][group]
    return rep


def number_by_first(rep: np.ndarray) -> np.ndarray:
    """Class ids 0, 1, … numbered in order of each class's first member, given rep[i] = the first
    index of i's class (rep[i] ≤ i, rep[rep[i]] = rep[i])."""
    is_first = rep == np.arange(rep.size)
    return (np.cumsum(is_first) - 1)[rep].astype(np.int64)


def first_index(classes: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """first[c] = the smallest i with classes[i] == c (classes 0..n_classes−1, each present)."""
    n_classes = int(classes.max()) + 1 if n_classes is None else n_classes
    first = np.empty(n_classes, np.int64)
    first[classes[::-1]] = np.arange(classes.size - 1, -1, -1)  # the last write is the smallest i
    return first


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate arange(s, s+c) for each (s, c), vectorised."""
    counts = np.asarray(counts).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts).astype(np.int64) - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(total, dtype=np.int64) + offsets


@cache
def compiled(source, fastmath: bool | frozenset = False):
    """`source` compiled by numba (on first use in a process, cached on disk; numba's import, ≈ 0.3 s,
    is paid only by a process that calls a compiled pass). `fastmath`: numba's flags (a frozenset,
    so that the call is cached), for a pure float64 sum that may be reassociated."""
    from numba import njit

    flags = set(fastmath) if isinstance(fastmath, frozenset) else fastmath
    return njit(cache=True, nogil=True, boundscheck=False, fastmath=flags)(source)


def in_threads(work, shares: list, check=None) -> None:
    """work(item) for each item of each share, each share in a thread of its own (one share: in
    this thread); `check()`, if given, before each item (it raises to stop: a time budget). For
    passes that write disjoint parts of their output and spend their time where the GIL is
    released (compiled `nogil` passes, NumPy's sorts): the same result, bit for bit, on any
    number of threads. An exception in a share is raised here."""
    def run(share):
        for item in share:
            if check is not None:
                check()
            work(item)

    if len(shares) <= 1:
        for share in shares:
            run(share)
        return
    with ThreadPoolExecutor(len(shares)) as pool:
        for done in [pool.submit(run, share) for share in shares]:
            done.result()


def interleaved(n: int, threads: int) -> list[np.ndarray]:
    """range(n) dealt out to at most `threads` shares (i, i + threads, …): even shares where the
    work per index grows or shrinks along the range."""
    return [np.arange(i, n, threads) for i in range(max(1, min(threads, n)))]
