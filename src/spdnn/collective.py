"""What every MPI command shares: agreeing on user errors, aborting on crashes, clocks, memory.

MPI is imported lazily (inside functions): serial commands never load an MPI library.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import traceback

import numpy as np

from .atomic import outputs_error
from .errors import UserError
from .host import affinity, core_share


def mpi():
    from mpi4py import MPI

    return MPI


def wtime() -> float:
    return mpi().Wtime()


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def agree(comm, error: str | None) -> None:
    """Collective: if any rank found a user error, every rank raises the first one (rank order)."""
    errors = comm.allgather(error)
    first = next((e for e in errors if e), None)
    if first:
        raise UserError(first)


def agree_outputs(comm, *paths) -> None:
    """Collective: rank 0 asks whether `paths` can be written (`atomic.outputs_error`; it alone
    writes them) and every rank raises its answer: a rank that raised alone would leave the others
    waiting in the next collective."""
    agree(comm, outputs_error(*paths) if comm.Get_rank() == 0 else None)


def _node_cpu_sets(comm) -> list[list[int]]:
    """Collective: the affinity set (`host.affinity`) of every rank of `comm` on this rank's node."""
    node = comm.Split_type(mpi().COMM_TYPE_SHARED)
    try:
        return node.allgather(sorted(affinity()))
    finally:
        node.Free()


def node_core_share(comm) -> int:
    """Collective: the cores this rank's helper threads (a network file's chunk threads) may count
    on, `host.core_share` over the ranks of `comm` on its node: under `mpiexec` without binding
    every rank sees all the node's cores, and K ranks each starting threads for all of them would
    oversubscribe the node K times."""
    return core_share(affinity(), _node_cpu_sets(comm))


def cores_per_rank(comm) -> float:
    """Collective: the CPUs the ranks of a node may run on (the union of their affinity sets) over
    the ranks on it, the smallest over the nodes. Under 1 the ranks share cores and a rank that
    waits (MPICH polls) slows one that computes: the run's seconds do not show what K buys."""
    node = _node_cpu_sets(comm)
    return comm.allreduce(len(frozenset().union(*map(frozenset, node))) / len(node), op=mpi().MIN)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def read_on_root(comm, read):
    """Collective: `read()` on rank 0 only (None elsewhere); a user error there stops every rank."""
    error, value = None, None
    if comm.Get_rank() == 0:
        try:
            value = read()
        except UserError as e:
            error = str(e)
    agree(comm, error)
    return value


def scatter_columns(comm, x, owned0):
    """Collective: rank 0 holds the samples x (samples × n_0, dense or CSR); every rank gets the
    columns of its own input neurons `owned0`. No other rank reads or holds the whole data."""
    return send_columns(comm, x, comm.gather(owned0, root=0))


def send_columns(comm, x, columns):
    """Collective: rank 0 sends rank r the columns `columns[r]` of x (both rank 0's; None on the
    other ranks); every rank returns its own. One piece at a time, as arrays (no pickles of ~10⁸
    values at N = 65536): rank 0 holds x and one piece beyond its own."""
    rank, size = comm.Get_rank(), comm.Get_size()
    pieces = comm.Dup()  # a context of its own: these messages match nothing else
    try:
        if rank != 0:
            return _recv_block(pieces, 0)
        for r in range(1, size):
            _send_block(pieces, _columns_of(x, columns[r]), r)
        return _columns_of(x, columns[0])
    finally:
        pieces.Free()


def _columns_of(x, cols):
    # np.take: one contiguous copy (x[:, cols] is strided, and made contiguous a second copy)
    return x[:, cols] if hasattr(x, "tocsr") else np.take(x, cols, axis=1)


def _send_block(comm, block, dest: int) -> None:
    """A dense array or a CSR matrix to `dest`: its kind, shape and dtypes, then its arrays."""
    arrays = (block.indptr, block.indices, block.data) if hasattr(block, "tocsr") else (block,)
    comm.send((block.shape, [(a.shape, a.dtype.str) for a in arrays]), dest=dest)
    for a in arrays:
        comm.Send(np.ascontiguousarray(a), dest=dest)


def _recv_block(comm, source: int):
    """What `_send_block` sent."""
    import scipy.sparse as sp

    shape, layout = comm.recv(source=source)
    arrays = [np.empty(n, dt) for n, dt in layout]
    for a in arrays:
        comm.Recv(a, source=source)
    if len(arrays) == 1:
        return arrays[0]
    indptr, indices, data = arrays
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def scatter_from_root(comm, items, split):
    """Collective generator: rank 0 takes each item of `items` (an iterator; None on the other
    ranks) and sends `split(item)[r]` to rank r; every rank yields its piece, until rank 0's items
    end. A user error while rank 0 makes an item (a malformed line in the middle of a file)
    stops every rank with it, as `read_on_root` does. Nothing of an item but the rank's own piece
    stays referenced here while the caller works on it."""
    size = comm.Get_size()
    while True:
        kind, piece = comm.scatter(_next_message(items, split, size) if comm.Get_rank() == 0 else None, root=0)
        if kind == "error":
            raise UserError(piece)
        if kind == "end":
            return
        yield piece


def _next_message(items, split, size: int) -> list:
    try:
        item = next(items, None)
        return [("end", None)] * size if item is None else [("piece", p) for p in split(item)]
    except UserError as e:
        return [("error", str(e))] * size


def scatter_csr_columns(comm, batches, columns):
    """Collective generator: rank 0 takes each (lo, CSR) of `batches` (None on the other ranks)
    and sends rank r the columns `columns[r]` (rank 0's list; None elsewhere) by `send_columns`;
    every rank yields (lo, its columns). Rank 0 drops the batch before yielding. User errors in
    reading stop every rank as in `scatter_from_root`."""
    pending = []  # rank 0: the batch whose first image was just announced

    def announce(batch):
        pending.append(batch)
        return [batch[0]] * comm.Get_size()

    for lo in scatter_from_root(comm, batches, announce):
        mine = [send_columns(comm, pending.pop()[1] if pending else None, columns)]
        yield lo, mine.pop()  # popped as it is yielded: the caller alone holds it


def _exit_on_signal(rank: int) -> None:
    """SIGTERM or SIGINT (Snakemake, SLURM or Ctrl-C cancelling the job): one line from rank 0,
    then every rank leaves at once.

    Python runs signal handlers only when the main thread returns from C, and a rank blocked in
    an MPI wait never does. But Python's C-level handler writes the signal number to the wake-up
    fd at once, from whatever thread received it: a thread blocked reading that pipe does the
    exit. No MPI_Finalize (other ranks may be blocked in a collective and never join it) and no
    exception unwinding through MPI calls (a backtrace per rank). Outputs are written under
    temporary names, so nothing half-written is left looking complete."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: None)  # the wake-up fd does the work
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def wait():
        signum = os.read(r, 1)[0]
        if rank == 0:
            os.write(2, f"spdnn: interrupted by {signal.Signals(signum).name}; no output written\n".encode())
        os._exit(128 + signum)

    threading.Thread(target=wait, name="spdnn-signals", daemon=True).start()


def run_collective(comm, fn, *args):
    """Run fn on every rank. A user error exits every rank with status 2 (all ranks raise it); a
    crash on one rank aborts the job so that the others do not wait forever; a cancelled job
    (SIGTERM/SIGINT) leaves one line, not a backtrace per rank."""
    _exit_on_signal(comm.Get_rank())
    try:
        return fn(comm, *args)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 — a bug on one rank must not leave the others waiting forever
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
