"""Data-parallel SGD, the alternative row-wise partitioning is compared with: every rank holds the
whole network, the global batch is split over the ranks, and the gradients of all nonzeros and
biases (M = nnz + Σ n_k words) are summed with one Allreduce per step."""

from __future__ import annotations

import time

import numpy as np

from .collective import peak_rss_mb
from .collective_write import write_network_collective
from .kernels import prepare_training
from .network import Network
from .reference import backpropagate, forward, loss_and_delta, sgd_apply


def allreduce_words_per_rank(k: int, m: int) -> int:
    """Words one rank sends in a bandwidth-optimal allreduce of m words over k ranks (reduce-scatter
    then allgather): 2(k−1)/k·m, rounded to the nearest integer once per step and rank."""
    return round(2 * (k - 1) / k * m)


class DataParallelStepper:
    """Replicated weights; batch split over ranks; one Allreduce of all gradients per step."""

    def __init__(self, comm, net: Network, lr_at, loss: str, num_classes: int, cores: int | None = None):
        self.comm, self.net, self.lr_at, self.loss, self.num_classes = comm, net, lr_at, loss, num_classes
        self.cores = cores  # for the chunk threads of `write` (`collective.node_core_share`)
        self.grad_words = net.nnz + sum(net.widths[1:])
        self.offsets = [0] * net.num_layers  # where layer k's ∂L/∂W, ∂L/∂b start in the Allreduce buffer
        at = 0
        for k in range(net.num_layers, 0, -1):  # layers L..1, as the backward pass gives them
            self.offsets[k - 1] = at
            at += net.layers[k - 1].nnz + net.widths[k]
        self._flat, self._total = np.empty(self.grad_words), np.empty(self.grad_words)  # kept: no new pages a step
        self.compute = 0.0
        self.comm_seconds = 0.0
        self.words_sent = 0
        self.steps = 0

    def prepare(self) -> None:
        prepare_training(self.net.layers)

    def step(self, step: int, x, y):
        size, rank = self.comm.Get_size(), self.comm.Get_rank()
        mine = np.array_split(np.arange(len(y)), size)[rank]
        net = self.net
        t0 = time.perf_counter()
        # Layers from L down to 1, as the backward pass produces them, each ∂L/∂W then ∂L/∂b, written
        # straight into the buffer the Allreduce sends (one copy, not a list joined twice). Summed
        # in float64 and rounded once (sgd_apply): the ranks' partial sums then add up to the serial one.
        flat, offsets = self._flat, self.offsets

        def keep(k, grad_w, grad_b):
            at = offsets[k - 1]
            flat[at:at + grad_w.size] = grad_w
            flat[at + grad_w.size:at + grad_w.size + grad_b.size] = grad_b

        value = 0.0
        if mine.size:  # every layer's slots written
            xs, zs = forward(net, np.ascontiguousarray(x[mine].T, dtype=np.float32))
            value, delta = loss_and_delta(zs[-1], y[mine], self.loss, self.num_classes, denom=len(y))
            backpropagate(net.layers, xs, zs, delta, net.ymax, keep)
        else:  # no samples here: this rank adds nothing to the sum
            flat[:] = 0.0
        t1 = time.perf_counter()
        total = self._total
        self.comm.Allreduce(flat, total)
        t2 = time.perf_counter()
        lr = self.lr_at(step)
        for k, at in enumerate(offsets, start=1):
            w = net.layers[k - 1]
            sgd_apply(w.data, net.biases[k - 1], lr, total[at:at + w.nnz], total[at + w.nnz:at + w.nnz + w.shape[0]])
        self.compute += (t1 - t0) + (time.perf_counter() - t2)
        self.comm_seconds += t2 - t1
        self.words_sent += allreduce_words_per_rank(size, flat.size)
        self.steps += 1
        return self.comm.allreduce(value)

    def verify(self) -> dict:
        """Words the ranks sent (counted from the arrays actually reduced) against the model
        K·steps·round(2(K−1)/K·M), M taken from the network's shapes."""
        k = self.comm.Get_size()
        counted = self.comm.allreduce(self.words_sent)
        model = k * self.steps * allreduce_words_per_rank(k, self.grad_words)
        return {"words_match_model": counted == model, "grad_words_per_step": self.grad_words,
                "words_per_step_per_rank": allreduce_words_per_rank(k, self.grad_words),
                "words_allreduce_counted": counted, "words_allreduce_model": model}

    def accuracy(self, x, y, num_classes):
        from .reference import predict

        return float((predict(self.net, x)[:num_classes].argmax(axis=0) == y).mean())

    def write(self, path, provenance, attrs=None):
        """Collective: rank 0 writes the network (every rank holds the same weights), each rank
        compressing every K-th layer of its replica (`collective_write`)."""
        rank, net = self.comm.Get_rank(), self.net

        def layer_on(k, at):
            return (net.layers[k - 1], net.biases[k - 1]) if rank == at else None

        write_network_collective(self.comm, path, net.widths, net.ymax, provenance, attrs, layer_on, self.cores)

    def report(self):
        return {"compute_seconds": [self.compute], "comm_seconds": [self.comm_seconds],
                "wait_seconds": [self.comm_seconds], "words_sent_allreduce": self.words_sent,
                "peak_rss_mb": peak_rss_mb()}
