"""Decimal text of integer arrays, compiled (numba): the `.hgr` file, partition files and the
challenge's TSV files.

At the target size these files hold 4·10⁹ integers (the hypergraph's pins, the weights' row and
column ids). NumPy's `astype(str)` and a join print about 1.4·10⁶ integers a second (the
hypergraph stage was on course for about an hour at 65536×1920); this loop prints about 3·10⁷
nine-digit ones a second, two digits at a time from a table, into one preallocated byte buffer.

Imported only by the writers (numba's import costs ≈ 0.3 s); compiled on first use, cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), np.uint8).copy()  # "00" … "99"
_POWERS = np.array([10**i for i in range(20)], np.uint64)  # 10^19 < 2^64: every int64 ≥ 0 fits
SPACE, TAB, NEWLINE = 32, 9, 10
_BYTES, _BYTE_STARTS = np.arange(256, dtype=np.uint8), np.arange(257, dtype=np.int64)  # every byte as a one-byte text


@njit(cache=True, nogil=True, boundscheck=False)
def _print(values, after, table, starts, pairs, powers, out):
    """Each value ≥ 0 in decimal, then the text table[starts[t]:starts[t + 1]] for t = after[i];
    the length written. One function on purpose: the same digits written by a helper it calls
    (inlined or not) ran at half the speed."""
    pos = 0
    for i in range(values.size):
        v = np.uint64(values[i])
        n = 1
        while n < 20 and v >= powers[n]:
            n += 1
        e = pos + n  # digits written from the back, two at a time
        while v >= 100:
            q = v // np.uint64(100)
            r = (v - q * np.uint64(100)) * 2
            e -= 2
            out[e] = pairs[r]
            out[e + 1] = pairs[r + 1]
            v = q
        if v >= 10:
            r = v * 2
            out[e - 2] = pairs[r]
            out[e - 1] = pairs[r + 1]
        else:
            out[e - 1] = 48 + v
        pos += n
        t = after[i]
        for b in range(starts[t], starts[t + 1]):
            out[pos] = table[b]
            pos += 1
    return pos


def _digits(values: np.ndarray) -> int:
    """The most digits any of the (non-negative) values has."""
    if values.size and values.min() < 0:
        raise ValueError("decimal_text prints non-negative integers only")
    return len(str(int(values.max()))) if values.size else 1


def numbers(values, seps) -> np.ndarray:
    """Each value in decimal followed by its separator byte (seps: one uint8 per value, or one for
    all), as a uint8 array that `file.write` takes as it is."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    seps = np.broadcast_to(np.asarray(seps, np.uint8), values.shape).copy()
    out = np.empty(values.size * (_digits(values) + 1), np.uint8)
    return out[:_print(values, seps, _BYTES, _BYTE_STARTS, _PAIRS, _POWERS, out)]


def triples(rows, cols, which, tokens: list[bytes]) -> np.ndarray:
    """Lines `row<TAB>col<TAB>token<NEWLINE>`, the token of line i being tokens[which[i]] (a
    value's text, printed once per distinct value by the caller), as a uint8 array."""
    rows = np.asarray(rows, dtype=np.int64)
    values = np.empty(2 * rows.size, np.int64)  # row, col, row, col, …
    values[0::2], values[1::2] = rows, cols
    after = np.empty(2 * rows.size, np.int32)  # a tab after a row; after a col, the rest of its line
    after[0::2], after[1::2] = 0, np.asarray(which) + 1
    texts = [b"\t"] + [b"\t" + t + b"\n" for t in tokens]
    table = np.frombuffer(b"".join(texts), np.uint8)
    starts = np.concatenate([[0], np.cumsum([len(t) for t in texts])]).astype(np.int64)
    out = np.empty(2 * rows.size * (_digits(values) + 1) + rows.size * (max(map(len, texts)) - 1), np.uint8)
    return out[:_print(values, after, table, starts, _PAIRS, _POWERS, out)]
