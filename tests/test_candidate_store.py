"""The hypergraph method's candidates on disk (`candidate_store.py`): what is written is read back,
type included, and the scratch folder goes when the command ends, however it ends."""

import pickle
import tempfile

import numpy as np
import pytest

from spdnn.candidate_store import CandidateStore
from spdnn.generate import radixnet
from spdnn.partition import partition_network


def test_partitions_read_back_as_written_from_several_writers(tmp_path):
    store = pickle.loads(pickle.dumps(CandidateStore(tmp_path)))  # workers get it pickled
    rng = np.random.default_rng(0)
    written = []
    with store.writer("a") as a, store.writer("b") as b:
        for i in range(6):
            part = rng.integers(0, 200, size=17 + 5 * i).astype((np.uint8, np.uint16, np.int64)[i % 3])
            written.append(((a, b)[i % 2].put(part), part))
    for ref, part in written:
        back = store.read(ref)
        assert back.dtype == part.dtype and np.array_equal(back, part)
    assert [p.tolist() for p in store.read_all([r for r, _ in written])] == [p.tolist() for _, p in written]


def test_a_writer_never_appends_to_another_ones_file(tmp_path):
    store = CandidateStore(tmp_path)
    with store.writer("candidates-0") as w:
        w.put(np.arange(4, dtype=np.uint8))
    with pytest.raises(FileExistsError):
        store.writer("candidates-0")


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_hypergraph_method_leaves_no_scratch_behind(tmp_path, monkeypatch, jobs):
    """The candidates go to a folder under TMPDIR (here tmp_path), gone when the method returns
    (stopped or failing part-way: `test_partition.py`'s signal tests)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    net = radixnet(256, 8, seed=3)
    _, metrics = partition_network(net.layers, net.widths, 4, "hypergraph", seed=1, jobs=jobs)
    assert metrics["balanced"] and metrics["volume_forward"] > 0
    assert not list(tmp_path.iterdir())
