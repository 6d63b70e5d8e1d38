"""The compiled decimal printer against Python's own `str` of each integer, at every digit count."""

from __future__ import annotations

import numpy as np
import pytest

from spdnn.decimal_text import NEWLINE, SPACE, numbers, triples
from spdnn.graphchallenge import format_triples


def edges() -> np.ndarray:
    """0, and 10^k − 1, 10^k, 10^k + 1 for every k an int64 holds, and its largest value."""
    powers = [10**k for k in range(1, 19)]
    return np.array([0, 1, 2, *[x + d for x in powers for d in (-1, 0, 1)], np.iinfo(np.int64).max], np.int64)


def test_numbers_are_pythons_str_at_every_digit_count():
    rng = np.random.default_rng(0)
    values = np.concatenate([edges(), rng.integers(0, np.iinfo(np.int64).max, 5000), rng.integers(0, 1000, 5000)])
    seps = rng.choice(np.array([SPACE, NEWLINE], np.uint8), values.size)
    want = "".join(f"{v}{chr(s)}" for v, s in zip(values.tolist(), seps.tolist())).encode()
    assert numbers(values, seps).tobytes() == want
    assert numbers(values[:3], NEWLINE).tobytes() == b"0\n1\n2\n"
    assert numbers(np.zeros(0, np.int64), NEWLINE).tobytes() == b""


def test_a_negative_number_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        numbers(np.array([3, -1]), SPACE)


def test_triples_are_the_f_string_lines():
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(1, 70000, 3000), rng.integers(1, 10**12, 3000)
    tokens = [b"6.250000e-02", b"-0.3", b"1"]
    which = rng.integers(0, 3, 3000)
    want = "".join(f"{r}\t{c}\t{tokens[t].decode()}\n" for r, c, t in zip(rows.tolist(), cols.tolist(), which.tolist()))
    assert triples(rows, cols, which, tokens).tobytes() == want.encode()
    assert triples(rows[:0], cols[:0], which[:0], []).tobytes() == b""


def test_format_triples_prints_values_in_the_challenge_style():
    """1-based ids; 0.0625 as the challenge's `%e` (six digits exact), other values shortest-exact."""
    got = format_triples(np.array([0, 9]), np.array([99, 0]), np.array([0.0625, 0.0625], np.float32))
    assert got == b"1\t100\t6.250000e-02\n10\t1\t6.250000e-02\n"
    third = np.float32(1 / 3)  # '%.6e' does not give it back: every value printed '%.9g'
    got = format_triples(np.array([0, 1]), np.array([0, 1]), np.array([0.0625, -third], np.float32))
    assert got == f"1\t1\t0.0625\n2\t2\t{-float(third):.9g}\n".encode() and b"-0.333333343" in got
