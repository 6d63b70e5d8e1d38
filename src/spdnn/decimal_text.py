"""Decimal text of integer arrays, compiled (numba): the `.hgr` file and the challenge's TSV files.

At the target size these files hold 4·10⁹ integers (the hypergraph's pins, the weights' row and
column ids). NumPy's `astype(str)` and a join print about 1.4·10⁶ integers a second (the
hypergraph stage ran at 2.4·10⁶ pins/s, ≈ 28 minutes at 65536×1920); this loop prints about
3·10⁷, two digits at a time from a table, into one preallocated byte buffer.

Imported only by the writers (numba's import costs ≈ 0.3 s); compiled on first use, cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), np.uint8).copy()  # "00" … "99"
_POWERS = np.array([10**i for i in range(20)], np.uint64)  # 10^19 < 2^64: every int64 ≥ 0 fits
SPACE, TAB, NEWLINE = 32, 9, 10


@njit(cache=True, nogil=True, boundscheck=False)
def _put(out, pos, value, pairs, powers):
    """The decimal digits of value ≥ 0 at out[pos:], two at a time from the back; the end."""
    v = np.uint64(value)
    n = 1
    while n < 20 and v >= powers[n]:
        n += 1
    end = pos + n
    e = end
    while v >= 100:
        q = v // np.uint64(100)
        r = (v - q * np.uint64(100)) * np.uint64(2)
        e -= 2
        out[e] = pairs[r]
        out[e + 1] = pairs[r + 1]
        v = q
    if v >= 10:
        r = v * np.uint64(2)
        out[e - 2] = pairs[r]
        out[e - 1] = pairs[r + 1]
    else:
        out[e - 1] = np.uint8(48 + v)
    return end


@njit(cache=True, nogil=True, boundscheck=False)
def _numbers(values, seps, pairs, powers, out):
    pos = 0
    for i in range(values.size):
        pos = _put(out, pos, values[i], pairs, powers)
        out[pos] = seps[i]
        pos += 1
    return pos


@njit(cache=True, nogil=True, boundscheck=False)
def _triples(rows, cols, which, tokens, token_starts, pairs, powers, out):
    pos = 0
    for i in range(rows.size):
        pos = _put(out, pos, rows[i], pairs, powers)
        out[pos] = TAB
        pos = _put(out, pos + 1, cols[i], pairs, powers)
        out[pos] = TAB
        pos += 1
        t = which[i]
        for b in range(token_starts[t], token_starts[t + 1]):
            out[pos] = tokens[b]
            pos += 1
        out[pos] = NEWLINE
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
    return out[:_numbers(values, seps, _PAIRS, _POWERS, out)]


def triples(rows, cols, which, tokens: list[bytes]) -> np.ndarray:
    """Lines `row<TAB>col<TAB>token<NEWLINE>`, the token of line i being tokens[which[i]] (a
    value's text, printed once per distinct value by the caller), as a uint8 array."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    which = np.ascontiguousarray(which, dtype=np.int64)
    table = np.frombuffer(b"".join(tokens), np.uint8) if tokens else np.zeros(0, np.uint8)
    starts = np.concatenate([[0], np.cumsum([len(t) for t in tokens], dtype=np.int64)]).astype(np.int64)
    widest = max((len(t) for t in tokens), default=0)
    out = np.empty(rows.size * (_digits(rows) + _digits(cols) + widest + 3), np.uint8)
    return out[:_triples(rows, cols, which, table, starts, _PAIRS, _POWERS, out)]
