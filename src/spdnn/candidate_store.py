"""Candidate layer partitions kept on disk while the hypergraph method chooses among them.

The sweep and the chains make a few candidate partitions of every layer (`chains.py`), and the
candidate sequence needs only two layers' candidates at a time (`candidate_sequence.py`); held in
memory they are the method's largest object, a few bytes per neuron of the whole network. At
65536×1920 (K = 8) they are about 7,600 layer partitions of 64 KB; kept in each worker until its
last chain, then pickled to the parent and again to the candidate sequence's workers, they took
the command's peak to 2,167 MB (1,211 MB with this store, the same partition). Here each process
writes the partitions it makes to a file of its own in a scratch folder and passes on only a
reference (file, offset, length, type); a reader loads the layers it works on. The folder is a
temporary one under TMPDIR (`partition.partition_network`), removed when the command ends, however
it ends short of SIGKILL.
"""

from __future__ import annotations

import os

import numpy as np

Ref = tuple  # (file name in the store's folder, byte offset, entries, numpy type string)


class CandidateStore:
    """A scratch folder of layer partitions: `writer(name)` appends to `name`, `read(ref)` loads one.
    Pickles as its path, so workers in other processes write and read the same files."""

    def __init__(self, folder: str):
        self.folder = str(folder)

    def writer(self, name: str) -> CandidateWriter:
        return CandidateWriter(self.folder, name)

    def read(self, ref: Ref) -> np.ndarray:
        name, offset, count, dtype = ref
        return np.fromfile(os.path.join(self.folder, name), dtype=np.dtype(dtype), count=count, offset=offset)

    def read_all(self, refs) -> list[np.ndarray]:
        return [self.read(ref) for ref in refs]


class CandidateWriter:
    """Writes layer partitions to one new file of the store (one writer a file: names are unique
    per process); `put(part)` → its reference. A context manager: the file is flushed and closed
    on leaving, before anyone reads it."""

    def __init__(self, folder: str, name: str):
        self.name = name
        self._file = open(os.path.join(folder, name), "xb")

    def put(self, part: np.ndarray) -> Ref:
        part = np.ascontiguousarray(part)
        offset = self._file.tell()
        self._file.write(part.tobytes())
        return self.name, offset, part.size, part.dtype.str

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CandidateWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
