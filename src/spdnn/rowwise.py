"""Row-wise parallel SGD and inference: this rank's rows of every layer and their communication plans.

Rank p owns the rows R_p^k of W^k (a partition, `partition_io`), reads only those rows from the
network file (`network.iter_layer_rows`), and builds one `CommPlan` per layer once. A mini-batch
is then a chain of local SpMMs with one expand (forward) and one fold (backward) exchange per
layer: `reference.forward_layers` and `reference.backpropagate` with the plans as their exchange
hooks, so the arithmetic is the serial reference's. The words actually sent are counted and, at
the end of a run, checked against the model volume computed independently from the network and
the partition (`volume.layer_traffic`); a mismatch aborts the run.

Streamed (`stream=True`, inference only: `spdnn infer --stream-layers`): nothing is read up front;
each pass over the layers reads a layer's rows and builds its plan when the pass reaches it (one
layer ahead, so that a product is written straight into the next layer's input block), and drops
both after it, so a rank holds two layers' rows at most and the activations, not its share of the
network (the file is read once per batch, and not at all past the layer where every sample died).
"""

from __future__ import annotations

import sys
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .arrays import distinct, ranges
from .collective import agree, mpi, node_core_share, peak_rss_mb
from .collective_write import write_network_collective
from .comm_plan import CommPlan, ExchangeStats, _displs, build_plan, use_neighbor_collectives
from .errors import UserError
from .kernels import layer_kernels, prepare_inference
from .network import open_network, read_layer
from .partition import check_k
from .partition_io import PartitionReader
from .reference import backpropagate, class_loss, drop_dead, forward_layers, sgd_update


@dataclass
class LocalLayer:
    k: int
    rows: np.ndarray  # global ids of my rows of W^k (sorted)
    w: sp.csr_matrix  # my rows; columns renumbered into the plan's extended vector
    bias: np.ndarray
    plan: CommPlan
    ext_ids: np.ndarray  # global layer-(k−1) id of each extended-vector position


def scatter_layer_rows(comm, f, path, header, k: int, part_k: np.ndarray, rows: np.ndarray):
    """Collective: rank (k−1) mod K reads layer k and sends every rank its rows (Scatterv); the
    others read nothing of it. Returns (my rows of W^k as CSR, my biases, bytes of the file I read).

    One reader per layer rather than a hyperslab read per rank: the layer's arrays are stored in
    compressed chunks, and a rank's rows are scattered over the layer (a partition is not a
    contiguous split), so every rank would decompress nearly every chunk. With one reader, the
    file is read once in all and each rank reads ≈ 1/K of it; on a parallel file system the K
    readers of consecutive layers read different files regions at the same time."""
    size, rank = comm.Get_size(), comm.Get_rank()
    reader = (k - 1) % size
    n_in = header.widths[k - 1]
    stored = 0
    sends = (None, None, None, None)
    nnz_per_rank = None
    error = None
    if rank == reader:
        try:
            w, bias, stored = read_layer(f, path, header, k)
        except UserError as e:  # a damaged layer: every rank must hear it, not wait for its rows
            error = str(e)
        else:
            lens = np.diff(w.indptr).astype(np.int64)  # the receivers' dtypes (below)
            nnz_per_rank = np.bincount(part_k, weights=lens, minlength=size).astype(np.int64)
            indices, data = w.indices.astype(np.int32, copy=False), w.data.astype(np.float32, copy=False)
            if np.all(part_k[:-1] <= part_k[1:]):  # contiguous (block): the arrays go as they are
                sends = (lens, indices, data, bias.astype(np.float32))
            else:  # rows grouped by rank, ascending ids within each (a quarter of the reader's time)
                order = np.argsort(part_k, kind="stable")
                take = ranges(w.indptr[:-1][order], lens[order])
                sends = (lens[order], indices[take], data[take], bias[order].astype(np.float32))
    error, nnz_per_rank = comm.bcast((error, nnz_per_rank), root=reader)
    if error:
        raise UserError(error)
    rows_per_rank = np.bincount(part_k, minlength=size).astype(np.int64)
    nnz_mine = int(nnz_per_rank[rank])
    lens = np.empty(rows.size, np.int64)
    indices = np.empty(nnz_mine, np.int32)
    data = np.empty(nnz_mine, np.float32)
    bias = np.empty(rows.size, np.float32)
    for send, recv, counts in ((sends[0], lens, rows_per_rank), (sends[1], indices, nnz_per_rank),
                               (sends[2], data, nnz_per_rank), (sends[3], bias, rows_per_rank)):
        sendspec = [send, (counts, _displs(counts))] if rank == reader else None
        comm.Scatterv(sendspec, recv, root=reader)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(rows.size, n_in)), bias, stored


def received_words(columns: np.ndarray, part_in: np.ndarray, rank: int) -> int:
    """Words per sample this rank receives in a layer's expand, modelled from the partition: the
    distinct columns its rows read that another rank owns (Σ over ranks = V_k)."""
    needed = distinct(columns, part_in.size)
    return int(np.count_nonzero(part_in[needed] != rank))


class RowWiseModel:
    """This rank's share of the network plus the per-layer communication plans.

    Memory: this rank's rows, the plans, and two layers' slices of the partition at a time while
    loading (streamed: two layers' rows and plans at most); nothing of the whole network.
    `bytes_read` counts the network and partition bytes this rank read."""

    def __init__(self, comm, path, partition: PartitionReader, header, transport: str = "p2p",
                 stream: bool = False):
        rank = comm.Get_rank()
        self.comm = comm
        self.ymax = header.ymax
        self.widths = header.widths
        self.stream = stream
        self._path, self._partition, self._header = path, partition, header
        self.cores = node_core_share(comm)  # for the threads of the network file read and written here
        self.owned0 = np.flatnonzero(partition.layer(0) == rank)
        self.final_rows = np.flatnonzero(partition.layer(header.num_layers) == rank)  # my output neurons
        n = header.num_layers
        self.samples_per_layer = np.zeros(n, np.int64)  # samples each expand carried
        self.model_recv_words = np.zeros(n, np.int64)  # per sample, from the partition
        self.compute_seconds = 0.0
        self.allreduce_words = 0  # softmax max/sum, loss, alive flags: counted apart from the model volume
        self.bytes_read = 0  # network file, this rank
        # What the report needs of each layer, kept here rather than on its LocalLayer: a streamed
        # layer is dropped after its pass, and every plan of layer k (one per pass) counts into the
        # same ExchangeStats, so the counts sum over the batches' passes.
        self._rows_per_layer = np.zeros(n, np.int64)
        self._nnz_per_layer = np.zeros(n, np.int64)
        self._forward_stats = [ExchangeStats() for _ in range(n)]
        self._backward_stats = [ExchangeStats() for _ in range(n)]
        self._graph = None
        if stream and transport == "neighbor":
            # A streamed layer's neighbours are not known in advance: one graph over every other
            # rank serves all layers (zero counts where a layer exchanges nothing).
            others = [q for q in range(comm.Get_size()) if q != rank]
            self._graph = (comm.Create_dist_graph_adjacent(others, others, reorder=False), np.array(others, np.int64))
        self.layers: list[LocalLayer] = [] if stream else list(self._read_layers())
        if not stream and transport == "neighbor":
            use_neighbor_collectives(comm, [layer.plan for layer in self.layers])

    @property
    def bytes_read_partition(self) -> int:
        return self._partition.bytes_read  # its checks and the slices read here

    def _read_layers(self):
        """Collective generator: this rank's rows of each layer in turn, with the layer's plan
        (its rows scattered by one reader rank, `scatter_layer_rows`)."""
        comm, rank = self.comm, self.comm.Get_rank()
        part_prev = self._partition.layer(0)
        owned_prev = np.flatnonzero(part_prev == rank)
        with open_network(self._path, self.cores) as (f, h):
            for k in range(1, self._header.num_layers + 1):
                part_k = self._partition.layer(k)
                rows = np.flatnonzero(part_k == rank)
                w, b, stored = scatter_layer_rows(comm, f, self._path, h, k, part_k, rows)
                self.bytes_read += stored
                columns = w.indices.astype(np.int64)
                self.model_recv_words[k - 1] = received_words(columns, part_prev, rank)
                plan, local_cols = build_plan(comm, k, owned_prev, part_prev, columns)
                plan.forward_stats, plan.backward_stats = self._forward_stats[k - 1], self._backward_stats[k - 1]
                if self._graph is not None:
                    plan.use_graph(*self._graph)
                ext_ids = np.empty(plan.ext_len, np.int64)
                ext_ids[local_cols] = w.indices
                ext_ids[: plan.n_owned] = owned_prev
                # Entries keep their order within each row, so each row's sum is the serial one's.
                w_local = sp.csr_matrix((w.data.astype(np.float32), local_cols.astype(np.int32), w.indptr),
                                        shape=(w.shape[0], plan.ext_len))
                self._rows_per_layer[k - 1], self._nnz_per_layer[k - 1] = rows.size, w.nnz
                yield LocalLayer(k, rows, w_local, b.astype(np.float32), plan, ext_ids)
                part_prev, owned_prev = part_k, rows

    def prepare_kernels(self) -> None:
        """Prepare every layer's kernels (`kernels.layer_kernels`) and load their compiled passes
        now, as part of the setup, rather than inside the first timed batch (streamed: the compiled
        passes only)."""
        prepare_inference([layer.w for layer in self.layers])

    @property
    def num_layers(self) -> int:
        return self._header.num_layers

    def _comm_seconds(self) -> float:
        return sum(f.comm_seconds + b.comm_seconds for f, b in zip(self._forward_stats, self._backward_stats))

    def _expand(self, k, x):
        self.samples_per_layer[k - 1] += x.shape[1]
        return self.layers[k - 1].plan.forward(self.comm, x)

    def _fold(self, k, y_ext):
        return self.layers[k - 1].plan.backward(self.comm, y_ext)

    def _allreduce(self, a, op):
        out = np.empty_like(a)
        self.comm.Allreduce(np.ascontiguousarray(a), out, op=mpi().MAX if op == "max" else mpi().SUM)
        self.allreduce_words += a.size
        return out

    # -- inference with Graph Challenge semantics
    def gc_forward(self, x0_owned: np.ndarray, ids: np.ndarray, compact_every: int = 4):
        """Forward pass of a batch; every `compact_every` layers the ranks agree (Allreduce of B
        booleans, counted apart) on which samples died and drop them; once none is alive on any
        rank, the remaining layers exchange nothing (streamed: are not read). Returns (x_L owned, ids)."""
        x, ext = x0_owned, None
        with closing(self._read_layers()) if self.stream else nullcontext(iter(self.layers)) as layers:
            layer = next(layers, None)
            while layer is not None:
                self.samples_per_layer[layer.k - 1] += x.shape[1]
                ext = layer.plan.forward(self.comm, x, ext)
                check = layer.k % compact_every == 0 and layer.k < self.num_layers and ids.size
                # The next layer (streamed: read now) before this one's product, which is then
                # written straight into the head of the next extended block: one activation block
                # less to copy and to hold. Not where the ranks check for dead samples: a streamed
                # run reads no layer past the one where its batch died.
                after = None if check else next(layers, None)
                out = None if after is None else after.plan.extended_block(ext.shape[1])
                t0 = time.perf_counter()
                x, alive_here = layer_kernels(layer.w).gc(layer.bias, ext, self.ymax,
                                                          None if out is None else out[: after.plan.n_owned])
                self.compute_seconds += time.perf_counter() - t0
                ext = out
                if check:
                    x, ids = drop_dead(x, ids, self.alive(x, ids.size, alive_here))
                    if not ids.size:  # every rank agrees: the flags were allreduced
                        return np.zeros((self.final_rows.size, 0), np.float32), ids
                    after = next(layers, None)
                layer = after
        return x, ids

    def alive(self, x, batch: int, local=None) -> np.ndarray:
        """Collective: which of the batch's samples has a nonzero activation on any rank (`local`:
        this rank's answer, when the kernel already knows it)."""
        if local is None:
            local = x.any(axis=0) if x.shape[0] else np.zeros(batch, bool)
        out = np.empty_like(local)
        self.comm.Allreduce(local, out, op=mpi().LOR)
        self.allreduce_words += batch
        return out

    # -- training
    def forward(self, x0_owned, keep: bool = True):
        return forward_layers([layer.w for layer in self.layers], [layer.bias for layer in self.layers], x0_owned,
                              self.ymax, self._expand, keep)

    def sgd_step(self, x0_owned, y, lr: float, loss: str, num_classes: int) -> float:
        """One SGD step of the global batch (all ranks hold all B samples of their rows)."""
        t0, comm0 = time.perf_counter(), self._comm_seconds()
        xs, zs = self.forward(x0_owned)
        value, delta = class_loss(zs[-1], self.layers[-1].rows, y, loss, num_classes, len(y), self._allreduce)
        ws, bs = [layer.w for layer in self.layers], [layer.bias for layer in self.layers]
        backpropagate(ws, xs, zs, delta, self.ymax, sgd_update(ws, bs, lr), fold=self._fold)
        self.compute_seconds += (time.perf_counter() - t0) - (self._comm_seconds() - comm0)
        return value

    def class_logits(self, x0_owned, num_classes: int):
        """Logits of the class outputs (0..C−1) gathered on rank 0 (None elsewhere)."""
        _, zs = self.forward(x0_owned, keep=False)  # no backward pass: one layer's activations at a time
        rows = self.layers[-1].rows
        sel = rows < num_classes
        got = self.comm.gather((rows[sel], zs[-1][sel]), root=0)
        if self.comm.Get_rank() != 0:
            return None
        out = np.zeros((num_classes, x0_owned.shape[1]), np.float32)
        for r, z in got:
            out[r] = z
        return out

    def write_network(self, path, provenance: dict, attrs: dict | None = None) -> None:
        """Collective: the trained network, written by rank 0 (atomic like every output), each
        layer put together from its owners' rows and compressed by one rank in turn
        (`collective_write`): no rank holds the network."""
        write_network_collective(self.comm, path, self.widths, self.ymax, provenance, attrs,
                                 lambda k, at: self._layer_at(self.layers[k - 1], at), self.cores)

    def _layer_at(self, layer: LocalLayer, at: int):
        """Collective: (w, bias) of `layer` whole on rank `at`, from its owners' rows (None
        elsewhere)."""
        coo = layer.w.tocoo()
        got = self.comm.gather((layer.rows[coo.row], layer.ext_ids[coo.col], coo.data, layer.rows, layer.bias), root=at)
        if got is None:
            return None
        shape = (self.widths[layer.k], self.widths[layer.k - 1])
        r, c, v = (np.concatenate([g[i] for g in got]) for i in range(3))
        bias = np.zeros(shape[0], np.float32)
        for g in got:
            bias[g[3]] = g[4]
        w = sp.csr_matrix((v.astype(np.float32), (r, c)), shape=shape)
        w.sort_indices()
        return w, bias

    def activation_bytes(self, batch: int) -> int:
        """Training keeps, per layer, the extended input block and the pre-activations until the
        backward pass: Σ_k (ext_k + rows_k) · B float32 values on this rank, ≈ L · (n/K) · B · 4 ·
        (1 + remote share), plus float64 temporaries of one layer in the backward pass."""
        held = sum((layer.plan.ext_len + layer.rows.size) * batch * 4 for layer in self.layers)
        one_layer = max((layer.plan.ext_len + layer.rows.size) * batch * 8 for layer in self.layers) if self.layers else 0
        return int(held + 2 * one_layer)

    def exchange_report(self) -> dict:
        """Per-layer words/messages/times this rank recorded (forward and backward)."""
        f, b = self._forward_stats, self._backward_stats
        return {
            "compute_seconds": [self.compute_seconds],
            "comm_seconds": [x.comm_seconds + y.comm_seconds for x, y in zip(f, b)],
            "wait_seconds": [x.wait_seconds + y.wait_seconds for x, y in zip(f, b)],
            "words_sent_forward": [x.words_sent for x in f],
            "words_sent_backward": [y.words_sent for y in b],
            "messages_sent_forward": [x.messages_sent for x in f],
            "messages_sent_backward": [y.messages_sent for y in b],
            "rows_per_layer": self._rows_per_layer.tolist(),
            "nnz_local": int(self._nnz_per_layer.sum()),
            "bytes_read": int(self.bytes_read),
            "bytes_read_partition": int(self.bytes_read_partition),
            "peak_rss_mb": peak_rss_mb(),
        }


def load_partition_collective(comm, header, partition) -> PartitionReader:
    """Open PART on every rank and check it against the network's `header`, a layer slice at a
    time (binary PART.npy when current; the text form otherwise): length, ids in [0, K),
    K = number of ranks, K ≤ every layer's rows. Each rank reads the ids of every K-th layer
    (a 1/K share of the file, not all of it) and the ranges are combined, so every rank reaches
    the same verdict: the first negative id of the file, or its K against the ranks."""
    MPI, none = mpi(), np.iinfo(np.int64).max  # `none`: no negative id (the reduction is a MIN)
    rank, size = comm.Get_rank(), comm.Get_size()
    error, reader, top, negative = None, None, 0, 0
    try:
        reader = PartitionReader(partition, header.widths)
        reader.check_length()
        top, negative = reader.id_range(range(rank, len(header.widths), size))
    except UserError as e:
        error = str(e)
    agree(comm, error)
    top = comm.allreduce(top, op=MPI.MAX)
    negative = comm.allreduce(negative or none, op=MPI.MIN)
    try:
        if negative != none:
            raise UserError(f"{partition}: line {negative}: negative part id")
        if top != size:
            raise UserError(f"{partition}: partition has K = {top} parts, but the job runs {size} ranks")
        check_k(header.widths, size)
    except UserError as e:
        error = str(e)
    agree(comm, error)
    return reader


def verify_words(comm, model: RowWiseModel, training: bool) -> dict:
    """Counted words vs samples × model volume, per layer, abort on any difference. Two independent
    computations, both O(network/K) per rank and combined by one Allreduce each: counted = words
    the ranks' plans actually sent; model = Σ over ranks of the distinct remote columns each rank's
    rows read (from its rows and the partition, `received_words`), Σ_ranks = V_k.

    samples = the samples each layer's expand carried (inference drops dead samples on the way);
    in training every forwarded sample is also folded back (layers ≥ 2).
    """
    samples = model.samples_per_layer
    rep = model.exchange_report()
    fwd = np.array(comm.allreduce(np.array(rep["words_sent_forward"], np.int64)))
    bwd = np.array(comm.allreduce(np.array(rep["words_sent_backward"], np.int64)))
    vol = np.array(comm.allreduce(model.model_recv_words))
    exp_f = samples * vol
    exp_b = samples * vol if training else np.zeros_like(vol)
    if training:
        exp_b[0] = 0
    bad = np.flatnonzero((fwd != exp_f) | (bwd != exp_b))
    if bad.size:
        if comm.Get_rank() == 0:
            k = int(bad[0]) + 1
            print(f"spdnn: FATAL: layer {k}: counted {fwd[k - 1]}+{bwd[k - 1]} words, model predicts "
                  f"{exp_f[k - 1]}+{exp_b[k - 1]}", file=sys.stderr, flush=True)
        comm.Abort(3)
    return {"volume_per_layer_model": vol.tolist(), "samples_per_layer": samples.tolist(),
            "words_forward_counted": fwd.tolist(), "words_backward_counted": bwd.tolist(),
            "words_forward_model": exp_f.tolist(), "words_backward_model": exp_b.tolist(),
            "words_match_model": True}
