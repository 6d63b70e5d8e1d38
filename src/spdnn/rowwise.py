"""Row-wise parallel SGD and inference: this rank's rows of every layer and their communication plans.

Rank p owns the rows R_p^k of W^k (a partition, `partition_io`), reads only those rows from the
network file (`network.iter_layer_rows`), and builds one `CommPlan` per layer once. A mini-batch
is then a chain of local SpMMs with one expand (forward) and one fold (backward) exchange per
layer: `reference.forward_layers` and `reference.backpropagate` with the plans as their exchange
hooks, so the arithmetic is the serial reference's. The words actually sent are counted and, at
the end of a run, checked against the model volume computed independently from the network and
the partition (`volume.layer_traffic`); a mismatch aborts the run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .collective import agree, mpi, peak_rss_mb
from .comm_plan import CommPlan, build_plan
from .errors import UserError
from .network import Network, iter_layer_rows, read_header, read_layer_pattern
from .partition_io import read_partition
from .reference import backpropagate, class_loss, drop_dead, forward_layers, gc_layer, sgd_update
from .volume import check_partition, layer_traffic, split_by_layer


@dataclass
class LocalLayer:
    k: int
    rows: np.ndarray  # global ids of my rows of W^k (sorted)
    w: sp.csr_matrix  # my rows; columns renumbered into the plan's extended vector
    bias: np.ndarray
    plan: CommPlan
    ext_ids: np.ndarray  # global layer-(k−1) id of each extended-vector position


class RowWiseModel:
    """This rank's share of the network plus the per-layer communication plans."""

    def __init__(self, comm, path, parts: list[np.ndarray], header, transport: str = "p2p"):
        rank = comm.Get_rank()
        self.comm = comm
        self.ymax = header.ymax
        self.widths = header.widths
        self.owned = [np.flatnonzero(p == rank) for p in parts]
        self.layers: list[LocalLayer] = []
        self.samples_per_layer = np.zeros(header.num_layers, np.int64)  # samples each expand carried
        self.compute_seconds = 0.0
        self.allreduce_words = 0  # softmax max/sum, loss, alive flags: counted apart from the model volume
        for k, w, b in iter_layer_rows(path, self.owned[1:]):
            plan, local_cols = build_plan(comm, k, self.owned[k - 1], parts[k - 1], w.indices.astype(np.int64))
            if transport == "neighbor":
                plan.use_neighbor_collectives(comm)
            ext_ids = np.empty(plan.ext_len, np.int64)
            ext_ids[local_cols] = w.indices
            ext_ids[: plan.n_owned] = self.owned[k - 1]
            # Entries keep their order within each row, so each row's sum is the serial one's.
            w_local = sp.csr_matrix((w.data.astype(np.float32), local_cols.astype(np.int32), w.indptr),
                                    shape=(w.shape[0], plan.ext_len))
            self.layers.append(LocalLayer(k, self.owned[k], w_local, b.astype(np.float32), plan, ext_ids))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _comm_seconds(self) -> float:
        return sum(l.plan.forward_stats.comm_seconds + l.plan.backward_stats.comm_seconds for l in self.layers)

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
        booleans, counted apart) on which samples died and drop them. Returns (x_L owned, ids)."""
        x = x0_owned
        for layer in self.layers:
            ext = self._expand(layer.k, x)
            t0 = time.perf_counter()
            x = gc_layer(layer.w, layer.bias, ext, self.ymax)
            self.compute_seconds += time.perf_counter() - t0
            if layer.k % compact_every == 0 and layer.k < self.num_layers and ids.size:
                x, ids = drop_dead(x, ids, self.alive(x, ids.size))
        return x, ids

    def alive(self, x, batch: int) -> np.ndarray:
        """Collective: which of the batch's samples has a nonzero activation on any rank."""
        local = x.any(axis=0) if x.shape[0] else np.zeros(batch, bool)
        out = np.empty_like(local)
        self.comm.Allreduce(local, out, op=mpi().LOR)
        self.allreduce_words += batch
        return out

    # -- training
    def forward(self, x0_owned):
        return forward_layers([l.w for l in self.layers], [l.bias for l in self.layers], x0_owned, self.ymax,
                              self._expand)

    def sgd_step(self, x0_owned, y, lr: float, loss: str, num_classes: int) -> float:
        """One SGD step of the global batch (all ranks hold all B samples of their rows)."""
        t0, comm0 = time.perf_counter(), self._comm_seconds()
        xs, zs = self.forward(x0_owned)
        value, delta = class_loss(zs[-1], self.layers[-1].rows, y, loss, num_classes, len(y), self._allreduce)
        ws, bs = [l.w for l in self.layers], [l.bias for l in self.layers]
        backpropagate(ws, xs, zs, delta, self.ymax, sgd_update(ws, bs, lr), fold=self._fold)
        self.compute_seconds += (time.perf_counter() - t0) - (self._comm_seconds() - comm0)
        return value

    def class_logits(self, x0_owned, num_classes: int):
        """Logits of the class outputs (0..C−1) gathered on rank 0 (None elsewhere)."""
        _, zs = self.forward(x0_owned)
        rows = self.layers[-1].rows
        sel = rows < num_classes
        got = self.comm.gather((rows[sel], zs[-1][sel]), root=0)
        if self.comm.Get_rank() != 0:
            return None
        out = np.zeros((num_classes, x0_owned.shape[1]), np.float32)
        for r, z in got:
            out[r] = z
        return out

    def gather_network(self, provenance: dict) -> Network | None:
        """Assemble the whole network on rank 0, one layer at a time (checkpoint / final output)."""
        layers, biases = [], []
        for layer in self.layers:
            coo = layer.w.tocoo()
            piece = (layer.rows[coo.row], layer.ext_ids[coo.col], coo.data, layer.rows, layer.bias)
            got = self.comm.gather(piece, root=0)
            if self.comm.Get_rank() == 0:
                r = np.concatenate([g[0] for g in got])
                c = np.concatenate([g[1] for g in got])
                v = np.concatenate([g[2] for g in got])
                shape = (self.widths[layer.k], self.widths[layer.k - 1])
                layers.append(sp.csr_matrix((v, (r, c)), shape=shape))
                bias = np.zeros(shape[0], np.float32)
                for g in got:
                    bias[g[3]] = g[4]
                biases.append(bias)
        if self.comm.Get_rank() != 0:
            return None
        return Network(layers, biases, ymax=self.ymax, provenance=provenance)

    def exchange_report(self) -> dict:
        """Per-layer words/messages/times this rank recorded (forward and backward)."""
        f = [layer.plan.forward_stats for layer in self.layers]
        b = [layer.plan.backward_stats for layer in self.layers]
        return {
            "compute_seconds": [self.compute_seconds],
            "comm_seconds": [x.comm_seconds + y.comm_seconds for x, y in zip(f, b)],
            "wait_seconds": [x.wait_seconds + y.wait_seconds for x, y in zip(f, b)],
            "words_sent_forward": [x.words_sent for x in f],
            "words_sent_backward": [y.words_sent for y in b],
            "messages_sent_forward": [x.messages_sent for x in f],
            "messages_sent_backward": [y.messages_sent for y in b],
            "rows_per_layer": [int(layer.rows.size) for layer in self.layers],
            "nnz_local": int(sum(layer.w.nnz for layer in self.layers)),
            "peak_rss_mb": peak_rss_mb(),
        }


def load_partition_collective(comm, network, partition):
    """Read and validate PART on every rank (same checks → same verdict on every rank)."""
    header = read_header(network)
    error, parts = None, None
    try:
        part = read_partition(partition)
        k_file = int(part.max()) + 1 if part.size else 0
        check_partition(part, header.widths, max(k_file, 1), str(partition))  # length, negative ids
        if k_file != comm.Get_size():
            raise UserError(f"{partition}: partition has K = {k_file} parts, but the job runs {comm.Get_size()} ranks")
        parts = split_by_layer(part.astype(np.int32), header.widths)
    except UserError as e:
        error = str(e)
    agree(comm, error)
    return header, parts


def model_volume(network, parts, k_parts: int) -> list[int]:
    """V_k per layer from the network file and the partition, one layer in memory at a time."""
    return [int(layer_traffic(read_layer_pattern(network, k), parts[k - 1], parts[k], k_parts)[0].size)
            for k in range(1, len(parts))]


def verify_words(comm, model: RowWiseModel, network, parts, training: bool) -> dict:
    """Counted words (all ranks) vs samples × model volume, per layer; abort on any difference.

    samples = the samples each layer's expand carried (inference drops dead samples on the way);
    in training every forwarded sample is also folded back (layers ≥ 2).
    """
    samples = model.samples_per_layer
    rep = model.exchange_report()
    fwd = np.array(comm.allreduce(np.array(rep["words_sent_forward"], np.int64)))
    bwd = np.array(comm.allreduce(np.array(rep["words_sent_backward"], np.int64)))
    result = None
    if comm.Get_rank() == 0:
        vol = np.array(model_volume(network, parts, comm.Get_size()), np.int64)
        exp_f = samples * vol
        exp_b = samples * vol if training else np.zeros_like(vol)
        if training:
            exp_b[0] = 0
        bad = np.flatnonzero((fwd != exp_f) | (bwd != exp_b))
        result = {"volume_per_layer_model": vol.tolist(), "samples_per_layer": samples.tolist(),
                  "words_forward_counted": fwd.tolist(),
                  "words_backward_counted": bwd.tolist(), "words_forward_model": exp_f.tolist(),
                  "words_backward_model": exp_b.tolist(), "words_match_model": bool(bad.size == 0)}
        if bad.size:
            k = int(bad[0]) + 1
            print(f"spdnn: FATAL: layer {k}: counted {fwd[k - 1]}+{bwd[k - 1]} words, model predicts "
                  f"{exp_f[k - 1]}+{exp_b[k - 1]}", file=sys.stderr, flush=True)
            comm.Abort(3)
    return comm.bcast(result, root=0)
