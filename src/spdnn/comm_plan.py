"""Communication plan of one layer for row-wise parallel SGD, built once, used every step.

Rank p owns rows R_p of W^k and neurons O_p of layer k−1. Its *extended* input vector is
[x_{O_p} | entries received from rank q1 | from q2 | …]; the local matrix's columns are
renumbered into that vector. `forward` (expand) sends each needed x^{k−1}_j once from its owner
to every rank that reads it; `backward` (fold) sends the partial sums of (W^k)^T δ^k for those
same entries back to the owner, which adds them. One message per neighbour per direction per
mini-batch, the B samples batched (rows of an (n × B) array are contiguous).

Two transports move the same words: `p2p` (Irecv/Isend to each neighbour, then Waitall) and
`neighbor` (MPI-3 Neighbor_alltoallv). The neighbour transport uses one distributed-graph
communicator for all layers and both directions, over the union of the ranks this rank exchanges
with in any layer (zero counts for those a layer does not involve): a communicator per layer and
direction would exceed MPICH's limit of about 2,000 communicators at L ≈ 1,000.
`benchmarks/exchange.py` measures both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .arrays import distinct
from .kernels import add_rows


@dataclass
class ExchangeStats:
    words_sent: int = 0
    messages_sent: int = 0
    comm_seconds: float = 0.0  # pack + post + complete
    wait_seconds: float = 0.0  # blocked in Waitall

    def add(self, words, messages, comm, wait):
        self.words_sent += int(words)
        self.messages_sent += int(messages)
        self.comm_seconds += comm
        self.wait_seconds += wait


@dataclass
class CommPlan:
    layer: int
    n_owned: int  # |O_p|
    send_ranks: list[int]  # forward: ranks that read my entries
    send_idx: list[np.ndarray]  # positions in x_{O_p} they read, sorted by global id
    recv_ranks: list[int]  # forward: owners of entries I read
    recv_slices: list[slice]  # where their entries land in the extended vector
    ext_len: int
    forward_stats: ExchangeStats = field(default_factory=ExchangeStats)
    backward_stats: ExchangeStats = field(default_factory=ExchangeStats)
    transport: str = "p2p"
    graphs: object = None  # the shared dist-graph communicator for `neighbor`

    def use_graph(self, graph, neighbours: np.ndarray) -> None:
        """Exchange through `graph`, a dist-graph communicator whose sources and destinations are
        both `neighbours` (sorted): per-neighbour counts of this layer, zero where it sends nothing."""
        self.graphs, self.transport = graph, "neighbor"
        self._send_all = np.concatenate(self.send_idx) if self.send_idx else np.zeros(0, np.int64)
        pos = {int(q): i for i, q in enumerate(neighbours)}
        self._send_counts = np.zeros(len(neighbours), np.int64)
        self._recv_counts = np.zeros(len(neighbours), np.int64)
        for q, idx in zip(self.send_ranks, self.send_idx):
            self._send_counts[pos[q]] = idx.size
        for q, sl in zip(self.recv_ranks, self.recv_slices):
            self._recv_counts[pos[q]] = sl.stop - sl.start

    def extended_block(self, b: int) -> np.ndarray:
        """An empty (ext_len × B) float32 extended vector: the previous layer's product can be
        written into its first n_owned rows (`forward(…, ext=)`), a C-contiguous block."""
        return np.empty((self.ext_len, b), np.float32)

    def forward(self, comm, x_owned: np.ndarray, ext: np.ndarray | None = None) -> np.ndarray:
        """Expand: (n_owned × B) owned activations → (ext_len × B) extended vector. Given `ext`
        (`extended_block`) whose first n_owned rows are x_owned already, only the entries of
        other ranks are filled in: no copy of the owned block."""
        b = x_owned.shape[1]
        if ext is None:
            ext = np.empty((self.ext_len, b), dtype=x_owned.dtype)
            ext[: self.n_owned] = x_owned
        elif (ext.shape != (self.ext_len, b) or not ext.flags.c_contiguous
              or x_owned.shape != (self.n_owned, b) or x_owned.ctypes.data != ext.ctypes.data):
            raise ValueError(f"layer {self.layer}: ext must be a C-contiguous ({self.ext_len} × {b}) block "
                             "holding x_owned in its first rows")
        if self.transport == "neighbor":
            t0 = time.perf_counter()
            send = np.ascontiguousarray(x_owned[self._send_all])
            t1 = time.perf_counter()
            self.graphs.Neighbor_alltoallv([send, (self._send_counts * b, _displs(self._send_counts * b))],
                                           [ext[self.n_owned:], (self._recv_counts * b, _displs(self._recv_counts * b))])
            t2 = time.perf_counter()
            self.forward_stats.add(send.size, len(self.send_idx), t2 - t0, t2 - t1)
            return ext
        t0 = time.perf_counter()
        reqs = [comm.Irecv(ext[s], source=q, tag=2 * self.layer) for q, s in zip(self.recv_ranks, self.recv_slices)]
        bufs = [np.ascontiguousarray(x_owned[idx]) for idx in self.send_idx]
        reqs += [comm.Isend(buf, dest=q, tag=2 * self.layer) for q, buf in zip(self.send_ranks, bufs)]
        t1 = time.perf_counter()
        _waitall(reqs)
        t2 = time.perf_counter()
        self.forward_stats.add(sum(buf.size for buf in bufs), len(bufs), t2 - t0, t2 - t1)
        return ext

    def backward(self, comm, y_ext: np.ndarray) -> np.ndarray:
        """Fold: (ext_len × B) partial sums → (n_owned × B) summed for my owned entries. In place:
        the result is y_ext's first n_owned rows (y_ext is the backward product, a temporary of the
        caller's), the received sums added by `kernels.add_rows`: 0.17 ms on 8192 × 64 float64 rows,
        where copying them out and NumPy's fancy += took 0.18 + 0.6 ms."""
        y_ext = np.ascontiguousarray(y_ext)
        b = y_ext.shape[1]
        out = y_ext[: self.n_owned]
        if self.transport == "neighbor":
            t0 = time.perf_counter()
            send = np.ascontiguousarray(y_ext[self.n_owned:])
            recv = np.empty((self._send_all.size, b), dtype=y_ext.dtype)
            t1 = time.perf_counter()
            self.graphs.Neighbor_alltoallv([send, (self._recv_counts * b, _displs(self._recv_counts * b))],
                                           [recv, (self._send_counts * b, _displs(self._send_counts * b))])
            t2 = time.perf_counter()
            add_rows(out, self._send_all, recv)  # segments in send_ranks order, each added in turn
            self.backward_stats.add(send.size, len(self.recv_ranks), time.perf_counter() - t0, t2 - t1)
            return out
        t0 = time.perf_counter()
        bufs = [np.empty((idx.size, b), dtype=y_ext.dtype) for idx in self.send_idx]
        reqs = [comm.Irecv(buf, source=q, tag=2 * self.layer + 1) for q, buf in zip(self.send_ranks, bufs)]
        sends = [np.ascontiguousarray(y_ext[s]) for s in self.recv_slices]
        reqs += [comm.Isend(buf, dest=q, tag=2 * self.layer + 1) for q, buf in zip(self.recv_ranks, sends)]
        t1 = time.perf_counter()
        _waitall(reqs)
        t2 = time.perf_counter()
        for idx, buf in zip(self.send_idx, bufs):
            add_rows(out, idx, buf)
        self.backward_stats.add(sum(s.size for s in sends), len(sends), time.perf_counter() - t0, t2 - t1)
        return out


def _waitall(reqs):
    from mpi4py import MPI

    MPI.Request.Waitall(reqs)


def use_neighbor_collectives(comm, plans) -> None:
    """Collective: one dist-graph communicator over the union of every plan's neighbours (both
    directions), shared by all layers. The relation is symmetric (if I send to q in some layer's
    expand, q sends to me in that layer's fold), so sources = destinations = the union."""
    neighbours = sorted({q for plan in plans for q in (*plan.send_ranks, *plan.recv_ranks)})
    graph = comm.Create_dist_graph_adjacent(neighbours, neighbours, reorder=False)
    arr = np.array(neighbours, np.int64)
    for plan in plans:
        plan.use_graph(graph, arr)


def build_plan(comm, layer: int, owned_in: np.ndarray, part_in: np.ndarray, columns: np.ndarray):
    """Collective. `owned_in`: sorted global ids of my layer-(k−1) neurons; `part_in`: owners of
    layer k−1; `columns`: global column ids of my rows' nonzeros. Returns (plan, local column ids).

    Each rank knows what it reads; an all-to-all of the request lists tells each owner what to send.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    n_in = part_in.size
    # Per layer at N = 65536 (10⁶ columns a rank): a bitmap and lookup tables of n_in entries, not
    # np.unique's hash path (82 ms) and searchsorted (2 × 44 ms); a streamed run builds its plans
    # inside the timed pass.
    needed = distinct(columns, n_in)  # sorted
    owner = part_in[needed]
    remote = needed[owner != rank]
    remote_owner = owner[owner != rank]
    order = np.argsort(remote_owner, kind="stable")  # by owner, ascending ids within each
    remote, remote_owner = remote[order], remote_owner[order]
    counts = np.bincount(remote_owner, minlength=size).astype(np.int64)
    their_counts = np.empty(size, np.int64)
    comm.Alltoall(counts, their_counts)
    requests = np.empty(int(their_counts.sum()), np.int64)
    comm.Alltoallv([remote, (counts, _displs(counts))], [requests, (their_counts, _displs(their_counts))])
    where = np.empty(n_in, np.int64)  # global id → position among my owned entries, then in the extended vector
    where[owned_in] = np.arange(owned_in.size)
    send_ranks, send_idx = [], []
    for q, lo in zip(range(size), _displs(their_counts)):
        if their_counts[q]:
            send_ranks.append(q)
            send_idx.append(where[requests[lo:lo + their_counts[q]]])
    recv_ranks, recv_slices = [], []
    pos = owned_in.size
    for q in range(size):
        if counts[q]:
            recv_ranks.append(q)
            recv_slices.append(slice(pos, pos + int(counts[q])))
            pos += int(counts[q])
    where[remote] = np.arange(owned_in.size, pos)  # remote entries follow the owned ones, by owner
    local_cols = where[columns]
    plan = CommPlan(layer, int(owned_in.size), send_ranks, send_idx, recv_ranks, recv_slices, int(pos))
    return plan, local_cols


def _displs(counts: np.ndarray) -> np.ndarray:
    """Exclusive prefix sum (same length as counts, also when empty)."""
    return (np.cumsum(counts) - counts).astype(np.int64)
