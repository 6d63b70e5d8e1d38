"""The network as the partitioner reads it: layer patterns on demand, a few resident at a time.

`Layers` gives layer t's pattern, its row weights (nonzeros: a neuron's work) and its classes of
identical rows, the rows that move as one vertex in every layer subproblem (`layer_solve.py`). Its
source is a list of CSR matrices or a `network.LayerFile`; only the source pickles, so a worker
process given a file reads the layers it needs itself, never a pickled network."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from .arrays import first_index, first_of_groups, number_by_first
from .hypergraph import identical_rows
from .volume import layer_capacity


class Layers:
    """W^1..W^L as the partitioner reads them: layer t's matrix `w(t)`, row weights `rw(t)` and
    mergeable rows `classes(t)`, derived on demand and kept for the last KEEP layers only.

    The source is a list of CSR matrices or a `network.LayerFile`, and the source is what pickles:
    a worker process given a file reads the layers it needs itself, never a pickled network."""

    KEEP = 4  # a layer and its neighbours, with room for the one being re-solved

    def __init__(self, source, widths, balance: tuple[int, float] | None = None):
        """`balance` = (K, ε): classes of identical rows heavier than a part's capacity are split
        (`classes`); None keeps every class whole."""
        self.source = source
        self.widths = [int(n) for n in widths]
        self.balance = balance
        self.keep = self.KEEP
        self._cache: OrderedDict[int, dict] = OrderedDict()

    @contextmanager
    def keeping(self, n: int):
        """Keep the last n layers (at least KEEP) meanwhile: for passes that come back to layers."""
        before, self.keep = self.keep, max(self.keep, n)
        try:
            yield self
        finally:
            self.keep = before
            self._trim()

    def _trim(self) -> None:
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self.widths) - 1

    def __iter__(self):
        return (self.w(t) for t in range(1, len(self) + 1))

    def _entry(self, t: int) -> dict:
        entry = self._cache.get(t)
        if entry is None:
            # The pattern only, where the source can read it alone: no method here uses the weights.
            read = getattr(self.source, "pattern", self.source.__getitem__)
            entry = self._cache[t] = {"w": read(t - 1)}
            self._trim()
        else:
            self._cache.move_to_end(t)
        return entry

    def w(self, t: int):
        return self._entry(t)["w"]

    def checked(self, t: int):
        """W^t read whole, weights included, so that the file's checksums of every array of the
        layer are verified (the metrics pass does this once per layer: the solves read patterns
        only, and a corrupted file must still fail the command)."""
        return self.source[t - 1]

    def rw(self, t: int) -> np.ndarray:
        """Row weights of layer t (nnz of each row: the work of that neuron); zeros for the inputs."""
        if t == 0:
            return np.zeros(self.widths[0], np.int64)
        entry = self._entry(t)
        if "rw" not in entry:
            entry["rw"] = np.diff(entry["w"].indptr).astype(np.int64)
        return entry["rw"]

    def classes(self, t: int) -> np.ndarray:
        """Rows of layer t that move as one vertex (`mergeable_rows`). A class heavier than a part
        may carry cannot stay whole in any balanced partition; its rows are grouped further by the
        readers they have in layer t + 1 (identical columns of W^(t+1)), which keeps each piece in
        exactly the same nets, so that the solver, not the row-by-row repair, decides the split.
        (The top base layer of a RadiX-Net with radices 2,4,8 has 8 classes of 128 rows, each four
        times what a part may carry at K = 32; split by the next layer they are the 16-row groups.
        The last layer has no readers: its heavy classes are left to the repair.)"""
        entry = self._entry(t)
        if "classes" not in entry:
            classes = mergeable_rows(entry["w"])
            if self.balance is not None and t < len(self) and classes.size:
                classes = self._split_heavy(t, classes)
            entry["classes"] = classes
        return entry["classes"]

    def _split_heavy(self, t: int, classes: np.ndarray) -> np.ndarray:
        k, epsilon = self.balance
        rw = self.rw(t)
        weight = np.bincount(classes, weights=rw)
        heavy = weight > layer_capacity(rw, k, epsilon)
        if not heavy.any():
            return classes
        readers = identical_rows(self.w(t + 1).T.tocsr())  # neurons of layer t with the same readers
        n = classes.size
        key = np.where(heavy[classes], n + readers.astype(np.int64) * n + classes, classes.astype(np.int64))
        return number_by_first(first_of_groups(key))

    def class_loads(self, t: int) -> np.ndarray:
        """Work of each row class of layer t (its rows' nonzeros): its weight as one vertex."""
        entry = self._entry(t)
        if "class_loads" not in entry:
            entry["class_loads"] = np.bincount(self.classes(t), weights=self.rw(t),
                                               minlength=self.num_classes(t)).astype(np.int64)
        return entry["class_loads"]

    def num_classes(self, t: int) -> int:
        """How many classes of identical rows layer t has (the free vertices of its subproblem)."""
        classes = self.classes(t)
        return int(classes.max()) + 1 if classes.size else 0

    def class_rows(self, t: int):
        """Layer t's pattern with one row per class of identical rows (all rows when none merge)."""
        entry = self._entry(t)
        if "class_rows" not in entry:
            classes, w, n_cls = self.classes(t), entry["w"], self.num_classes(t)
            entry["class_rows"] = w[first_index(classes, n_cls)] if n_cls < w.shape[0] else w
        return entry["class_rows"]

    def __getstate__(self):
        return {"source": self.source, "widths": self.widths, "balance": self.balance}

    def __setstate__(self, state):
        self.__init__(state["source"], state["widths"], state["balance"])


def mergeable_rows(w) -> np.ndarray:
    """Rows that move as one vertex: identical non-empty rows. Empty rows (dead neurons of a pruned
    layer) read nothing, so merging them gains nothing and would tie all their readers together."""
    classes = identical_rows(w)
    empty = np.flatnonzero(np.diff(w.indptr) == 0)
    if empty.size:
        key = classes.copy()
        key[empty] = classes.max() + 1 + np.arange(empty.size)
        classes = number_by_first(first_index(key)[key])
    return classes
