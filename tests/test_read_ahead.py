"""`read_ahead`: the same items in the same order, errors where they happened, a source closed when
the caller stops early, and never more than `depth` items produced ahead."""

from __future__ import annotations

import threading
import time

import pytest

from spdnn.read_ahead import read_ahead


def test_same_items_in_order():
    assert list(read_ahead(range(1000))) == list(range(1000))
    assert list(read_ahead([])) == []
    assert list(read_ahead(iter("abc"), depth=3)) == ["a", "b", "c"]


def test_an_error_while_producing_comes_where_its_item_would_have():
    def source():
        yield 1
        yield 2
        raise ValueError("layer 3: corrupt")

    items = read_ahead(source())
    assert next(items) == 1 and next(items) == 2  # the items before the error arrive
    with pytest.raises(ValueError, match="layer 3: corrupt"):
        next(items)


def test_stopping_early_closes_the_source_and_the_thread():
    closed = threading.Event()
    produced = []

    def source():
        try:
            for i in range(100):
                produced.append(i)
                yield i
        finally:
            closed.set()  # where iter_layers closes its file

    items = read_ahead(source(), depth=1)
    assert next(items) == 0
    time.sleep(0.3)  # time for the thread to run as far ahead as it may
    assert len(produced) <= 3  # the one taken, one waiting, one being offered
    items.close()
    assert closed.is_set()
    assert not any(t.name == "spdnn-read-ahead" for t in threading.enumerate())


def test_an_error_in_the_callers_loop_stops_the_thread():
    closed = threading.Event()

    def source():
        try:
            yield from range(100)
        finally:
            closed.set()

    def consume():
        for x in read_ahead(source()):
            if x == 5:
                raise KeyError(x)

    with pytest.raises(KeyError):
        consume()
    assert closed.is_set()
    assert not any(t.name == "spdnn-read-ahead" for t in threading.enumerate())
