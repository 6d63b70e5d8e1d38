"""`read_ahead(items)`: the next item produced by a thread while the caller works on this one.

The offline stages stream a network one layer at a time: read it (HDF5 with gzip: decoding is a
third of the hypergraph stage), then transpose and print it (compiled loops). HDF5's decoding and
the compiled loops both run without Python's GIL, so a thread that reads layer k + 1 while layer k
is being written overlaps the two on two cores (and `generate` and `reinit` make layer k + 1
while layer k is compressed). Memory: at most `depth` + 2 items at a time (the one
in use, `depth` waiting, one being produced): still O(layer).
"""

from __future__ import annotations

import queue
import threading

_END = object()


def _offer(box: queue.Queue, entry, stop: threading.Event) -> bool:
    """Put `entry` in the box unless the consumer has gone (then False)."""
    while not stop.is_set():
        try:
            box.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def read_ahead(items, depth: int = 1):
    """Yield the items of `items` in order, produced by a background thread at most `depth` items
    ahead. An exception raised while producing an item is raised here, where that item would have
    come. Closing this generator (or an exception in the caller's loop) stops the thread and closes
    the source, so a file it holds open is closed."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    source = iter(items)

    def produce():
        try:
            for item in source:
                if not _offer(box, (item, None), stop):
                    return
            _offer(box, (_END, None), stop)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there (else it would wait forever)
            _offer(box, (None, e), stop)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="spdnn-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()  # at most the item being produced: the source is closed when this returns
