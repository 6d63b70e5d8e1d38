"""Distributed training and inference under MPI (mpi4py): row-wise and data-parallel.

Row-wise (DESIGN.md §1): rank p reads only its rows of every layer (`iter_layer_rows`), builds a
`CommPlan` per layer once, and runs every mini-batch as a chain of local SpMMs with one expand
(forward) and one fold (backward) exchange per layer. The words it actually sends are counted
and checked against the model volume computed independently from the network and partition
(`volume.layer_traffic`); a mismatch aborts the run.

Data-parallel: every rank holds the whole network, the batch is split over ranks, and gradients
of all nonzeros and biases are summed with one Allreduce per step.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from . import __version__
from .atomic import write_text_atomic
from .comm_plan import CommPlan, build_plan
from .datasets import load_dataset
from .errors import UserError
from .network import Network, describe, iter_layer_rows, read_header, read_layer_pattern, read_network, write_network
from .partition_io import read_partition
from .reference import activation, activation_grad, drop_dead, gc_layer, loss_and_delta, pattern_grad
from .training import LOSSES, batch_schedule, check_classes
from .volume import check_partition, layer_traffic, split_by_layer


def _mpi():
    from mpi4py import MPI

    return MPI


def agree(comm, error: str | None) -> None:
    """Collective: if any rank found a user error, every rank raises the first one (rank order)."""
    errors = comm.allgather(error)
    first = next((e for e in errors if e), None)
    if first:
        raise UserError(first)


def run_collective(comm, fn, *args):
    """Run fn on every rank; a user error exits every rank with status 2, a crash aborts the job."""
    try:
        return fn(comm, *args)
    except UserError:
        raise
    except Exception:  # a bug on one rank must not leave the others waiting forever
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- row-wise model
@dataclass
class LocalLayer:
    k: int
    rows: np.ndarray  # global ids of my rows of W^k (sorted)
    w: sp.csr_matrix  # my rows; columns renumbered into the plan's extended vector
    bias: np.ndarray
    plan: CommPlan
    ext_ids: np.ndarray  # global layer-(k−1) id of each extended-vector position
    compute_seconds: float = 0.0


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
        for k, w, b in iter_layer_rows(path, self.owned[1:]):
            plan, local_cols = build_plan(comm, k, self.owned[k - 1], parts[k - 1], w.indices.astype(np.int64))
            if transport == "neighbor":
                plan.use_neighbor_collectives(comm)
            ext_ids = np.empty(plan.ext_len, np.int64)
            ext_ids[local_cols] = w.indices
            ext_ids[: plan.n_owned] = self.owned[k - 1]
            w_local = sp.csr_matrix((w.data.astype(np.float32), local_cols.astype(np.int32), w.indptr),
                                    shape=(w.shape[0], plan.ext_len))
            self.layers.append(LocalLayer(k, self.owned[k], w_local, b.astype(np.float32), plan, ext_ids))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # -- inference with Graph Challenge semantics
    def gc_forward(self, x0_owned: np.ndarray, ids: np.ndarray, counters: dict, compact_every: int = 4):
        """Forward pass of a batch; every `compact_every` layers the ranks agree (Allreduce of B
        booleans, counted apart) on which samples died and drop them. Returns (x_L owned, ids)."""
        x = x0_owned
        for layer in self.layers:
            self.samples_per_layer[layer.k - 1] += x.shape[1]
            ext = layer.plan.forward(self.comm, x)
            t0 = time.perf_counter()
            x = gc_layer(layer.w, layer.bias, ext, self.ymax)
            layer.compute_seconds += time.perf_counter() - t0
            if layer.k % compact_every == 0 and layer.k < self.num_layers and ids.size:
                local = x.any(axis=0) if x.shape[0] else np.zeros(ids.size, bool)
                alive = np.empty_like(local)
                self.comm.Allreduce(local, alive, op=_mpi().LOR)
                counters["allreduce_words"] += ids.size
                x, ids = drop_dead(x, ids, alive)
        return x, ids

    # -- training
    def forward(self, x0_owned):
        exts, zs, x = [], [], x0_owned
        for layer in self.layers:
            self.samples_per_layer[layer.k - 1] += x.shape[1]
            ext = layer.plan.forward(self.comm, x)
            t0 = time.perf_counter()
            z = layer.w @ ext + layer.bias[:, None]
            x = activation(z, self.ymax) if layer.k < self.num_layers else z
            layer.compute_seconds += time.perf_counter() - t0
            exts.append(ext)
            zs.append(z)
        return exts, zs

    def sgd_step(self, x0_owned, y, lr: float, loss: str, counters: dict) -> float:
        exts, zs = self.forward(x0_owned)
        value, delta = self.distributed_loss(zs[-1], y, loss, counters)
        for layer in reversed(self.layers):
            t0 = time.perf_counter()
            grad_w = pattern_grad(layer.w, delta, exts[layer.k - 1])
            grad_b = delta.sum(axis=1)
            if layer.k > 1:  # δ^0 is never needed: no fold for layer 1
                y_ext = layer.w.T @ delta
                layer.compute_seconds += time.perf_counter() - t0
                folded = layer.plan.backward(self.comm, y_ext)
                t0 = time.perf_counter()
                delta = folded * activation_grad(zs[layer.k - 2], self.ymax)
            layer.w.data -= lr * grad_w
            layer.bias -= lr * grad_b
            layer.compute_seconds += time.perf_counter() - t0
        return value

    def distributed_loss(self, logits, y, loss: str, counters: dict):
        """Loss over output rows spread across ranks. Softmax: Allreduce of 2·B scalars (max, Σexp)."""
        MPI = _mpi()
        rows = self.layers[-1].rows
        b = logits.shape[1]
        mine = np.searchsorted(rows, y)
        mine_ok = (mine < rows.size) & (rows[np.minimum(mine, max(rows.size - 1, 0))] == y) if rows.size else np.zeros(b, bool)
        cols = np.flatnonzero(mine_ok)
        if loss == "cross-entropy":
            local_max = logits.max(axis=0) if rows.size else np.full(b, -np.inf, np.float32)
            gmax = np.empty_like(local_max)
            self.comm.Allreduce(local_max, gmax, op=MPI.MAX)
            e = np.exp(logits - gmax[None, :])
            local_sum = e.sum(axis=0).astype(np.float32)
            gsum = np.empty_like(local_sum)
            self.comm.Allreduce(local_sum, gsum, op=MPI.SUM)
            p = e / gsum[None, :]
            part = float(-np.log(np.maximum(p[mine[cols], cols], 1e-30)).sum())
            delta = p
            delta[mine[cols], cols] -= 1.0
            counters["allreduce_words"] += 2 * b + 1
        else:
            delta = logits.copy()
            delta[mine[cols], cols] -= 1.0
            part = float(0.5 * (delta**2).sum())
            counters["allreduce_words"] += 1
        value = self.comm.allreduce(part, op=MPI.SUM) / b
        return value, (delta / b).astype(np.float32)

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
            "compute_seconds": [layer.compute_seconds for layer in self.layers],
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


# ---------------------------------------------------------------- inference
def run_infer(a) -> None:
    run_collective(_mpi().COMM_WORLD, _infer, a)


def _infer(comm, a):
    from .graphchallenge import read_categories, read_images, write_categories
    from .inference import write_activations

    rank, size = comm.Get_rank(), comm.Get_size()
    if a.mode == "data-parallel" and a.partition:
        raise UserError("--mode data-parallel replicates the network: do not give --partition")
    if a.mode == "row-wise" and not a.partition:
        raise UserError("row-wise inference needs --partition PART (K = number of ranks)")
    header = read_header(a.network)
    images = read_images(a.images, header.widths[0])
    n_images = images.shape[0]
    comm.Barrier()
    t_start = MPI_time()
    if a.mode == "row-wise":
        header, parts = load_partition_collective(comm, a.network, a.partition)
        t0 = MPI_time()
        model = RowWiseModel(comm, a.network, parts, header, a.exchange)
        setup = MPI_time() - t0
        alive = np.zeros(n_images, bool)
        final_rows = model.layers[-1].rows
        final = np.zeros((n_images, header.widths[-1]), np.float32) if (a.activations and rank == 0) else None
        comm.Barrier()
        t0 = MPI_time()
        counters = {"allreduce_words": 0}
        cols0 = model.owned[0]
        for lo in range(0, n_images, a.batch_size):
            hi = min(n_images, lo + a.batch_size)
            x0 = np.ascontiguousarray(images[lo:hi][:, cols0].toarray().T, dtype=np.float32)
            x, ids = model.gc_forward(x0, np.arange(lo, hi), counters)
            local = x.any(axis=0) if x.shape[0] else np.zeros(ids.size, bool)
            survived = np.empty_like(local)
            comm.Allreduce(local, survived, op=_mpi().LOR)
            counters["allreduce_words"] += ids.size
            alive[ids] = survived
            if a.activations:
                got = comm.gather((final_rows, x), root=0)
                if rank == 0:
                    for r, v in got:
                        final[ids[:, None], r[None, :]] = v.T
        seconds = MPI_time() - t0
        reduce_words = counters["allreduce_words"]
        words = verify_words(comm, model, a.network, parts, training=False)
        rep = model.exchange_report()
    else:
        net = read_network(a.network)
        from .reference import gc_infer

        setup = 0.0
        mine = np.array_split(np.arange(n_images), size)[rank]
        comm.Barrier()
        t0 = MPI_time()
        cats_local, act_local = gc_infer(net, images[mine], batch=a.batch_size)
        seconds_local = MPI_time() - t0
        got = comm.gather((mine, cats_local, act_local if a.activations else None), root=0)
        seconds = comm.allreduce(seconds_local, op=_mpi().MAX)
        alive = np.zeros(n_images, bool)
        final = None
        if rank == 0:
            final = np.zeros((n_images, header.widths[-1]), np.float32) if a.activations else None
            for ids, cats, act in got:
                alive[ids[cats]] = True
                if final is not None:
                    final[ids] = act
        words, reduce_words = {"words_match_model": None}, 0
        rep = {"compute_seconds": [seconds_local], "peak_rss_mb": peak_rss_mb()}
    reports = comm.gather(rep, root=0)
    if rank != 0:
        return
    cats = np.flatnonzero(alive)
    nnz = describe(a.network)["nnz_total"]  # dataset shapes only, no layer data read
    metrics = {
        "command": "infer", "mode": a.mode, "exchange": a.exchange, "ranks": size, "network": str(a.network),
        "partition": a.partition,
        "images": n_images, "survivors": int(cats.size), "batch_size": a.batch_size,
        "seconds": seconds, "setup_seconds": setup, "wall_seconds": MPI_time() - t_start,
        "edges_per_second": n_images * nnz / seconds if seconds > 0 else None,
        "allreduce_words": reduce_words, **words, "per_rank": reports, "spdnn_version": __version__,
    }
    if a.truth:
        metrics["matches_truth"] = bool(np.array_equal(read_categories(a.truth), cats))
    write_categories(cats, a.output)
    if a.activations:
        write_activations(a.activations, final)
    write_text_atomic(a.metrics or str(a.output) + ".metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(f"{cats.size} of {n_images} images survive; {size} ranks {a.mode}: {seconds:.3f} s, "
          f"{metrics['edges_per_second']:.3g} edges/s", file=sys.stderr)


def MPI_time() -> float:
    return _mpi().Wtime()


# ---------------------------------------------------------------- evaluation
def run_evaluate(a) -> None:
    run_collective(_mpi().COMM_WORLD, _evaluate, a)


def _evaluate(comm, a):
    header, parts = load_partition_collective(comm, a.network, a.partition)
    data = load_dataset(a.dataset, a.data, header.widths[0], a.seed)
    check_classes(header.widths[-1], data.num_classes)
    model = RowWiseModel(comm, a.network, parts, header)
    logits = model.class_logits(np.ascontiguousarray(data.x_test[:, model.owned[0]].T, dtype=np.float32),
                                data.num_classes)
    if comm.Get_rank() == 0:
        acc = float((logits.argmax(axis=0) == data.y_test).mean())
        print(json.dumps({"test_accuracy": acc, "test_samples": int(data.y_test.size), "ranks": comm.Get_size()}))


# ---------------------------------------------------------------- training
def run_train(a) -> None:
    run_collective(_mpi().COMM_WORLD, _train, a)


def run_key(a, partition_bytes: bytes | None) -> str:
    """Identifies a training run: a checkpoint is resumed only by the same run."""
    h = hashlib.sha256()
    for item in (a.network, a.mode, a.dataset, a.data, a.epochs, a.batch_size, a.lr, a.seed, a.loss, a.test_fraction):
        h.update(repr(item).encode())
    h.update(partition_bytes or b"")
    return h.hexdigest()


def _train(comm, a):
    rank, size = comm.Get_rank(), comm.Get_size()
    if a.loss not in LOSSES:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}")
    if a.mode == "data-parallel" and a.partition:
        raise UserError("--mode data-parallel replicates the network: do not give --partition")
    if a.mode == "row-wise" and not a.partition:
        raise UserError("row-wise training needs --partition PART (K = number of ranks)")
    header = read_header(a.network)
    data = load_dataset(a.dataset, a.data, header.widths[0], a.seed, a.test_fraction)
    check_classes(header.widths[-1], data.num_classes)
    ckpt = Path(str(a.output) + ".ckpt.h5")
    key = run_key(a, Path(a.partition).read_bytes() if a.partition else None)
    start_step, source = 0, a.network
    if ckpt.exists():
        with h5py.File(ckpt, "r") as f:
            if f.attrs.get("run_key") == key:
                start_step, source = int(f.attrs["step"]), str(ckpt)
    start_step = comm.bcast(start_step, root=0)
    source = comm.bcast(source, root=0)
    counters = {"allreduce_words": 0}
    if a.mode == "row-wise":
        header, parts = load_partition_collective(comm, a.network, a.partition)
        model = RowWiseModel(comm, source, parts, header, a.exchange)
        stepper = RowWiseStepper(model, a, counters, parts)
    else:
        stepper = DataParallelStepper(comm, read_network(source), a, counters)
    if start_step and rank == 0:
        print(f"resuming from {ckpt} at step {start_step}", file=sys.stderr, flush=True)
    losses, samples, step_times, steps_run = [], 0, [], 0
    last_step = start_step
    schedule = list(batch_schedule(len(data.y_train), a.batch_size, a.epochs, a.seed))
    provenance = {"generator": "train", "source": str(a.network), "mode": a.mode, "ranks": size,
                  "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed, "loss": a.loss,
                  "dataset": data.name, "spdnn_version": __version__}
    for step, epoch, ids in schedule:
        if step < start_step:
            continue
        x = data.x_train[ids]
        y = data.y_train[ids]
        t0 = MPI_time()
        losses.append(stepper.step(x, y))
        step_times.append(MPI_time() - t0)
        samples += len(ids)
        steps_run += 1
        last_step = step + 1
        if rank == 0 and (last_step == len(schedule) or schedule[last_step][1] != epoch):  # progress
            print(f"epoch {epoch + 1}/{a.epochs}: step {last_step}/{len(schedule)}, loss {losses[-1]:.4f}, "
                  f"{1e3 * float(np.median(step_times)):.2f} ms/step", file=sys.stderr, flush=True)
        if a.checkpoint_every and last_step % a.checkpoint_every == 0 and last_step < len(schedule):
            net = stepper.gather(provenance)
            if rank == 0:
                write_network(net, ckpt)
                with h5py.File(ckpt, "a") as f:
                    f.attrs["run_key"] = key
                    f.attrs["step"] = last_step
        if a.stop_after and steps_run >= a.stop_after and last_step < len(schedule):
            if rank == 0:
                print(f"stopped after step {last_step} of {len(schedule)} (--stop-after); rerun to resume",
                      file=sys.stderr, flush=True)
            raise SystemExit(3)
    words = stepper.verify()
    reports = comm.gather(stepper.report(), root=0)  # before evaluation adds its own exchanges
    acc = stepper.accuracy(data.x_test, data.y_test, data.num_classes)
    net = stepper.gather(provenance)
    if rank != 0:
        return
    write_network(net, a.output)
    if ckpt.exists():
        ckpt.unlink()
    # Median: the first steps pay one-off costs (page faults, lazy initialisation) that a mean of
    # a short run (6 steps at B=256 on digits) would carry into the cost model.
    step_time = float(np.median(step_times)) if step_times else None
    metrics = {
        "command": "train", "mode": a.mode, "exchange": a.exchange, "ranks": size, "network": str(a.network),
        "partition": a.partition,
        "dataset": data.name, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed,
        "steps": len(schedule), "steps_run": steps_run, "resumed_from_step": start_step,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "test_accuracy": acc, "step_seconds": step_time,
        "step_seconds_mean": float(np.mean(step_times)) if step_times else None,
        "samples_per_second": samples / sum(step_times) if step_times else None,
        "allreduce_words": counters["allreduce_words"], **words, "per_rank": reports,
        "spdnn_version": __version__,
    }
    write_text_atomic(a.metrics or str(a.output) + ".metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(f"{a.mode} K={size}: {len(schedule)} steps, loss {metrics['loss_last']:.4f}, test accuracy {acc:.3f}, "
          f"{step_time * 1e3:.2f} ms/step", file=sys.stderr)


class RowWiseStepper:
    def __init__(self, model: RowWiseModel, a, counters, parts):
        self.model, self.a, self.counters, self.parts = model, a, counters, parts

    def step(self, x, y):
        x0 = np.ascontiguousarray(x[:, self.model.owned[0]].T, dtype=np.float32)
        return self.model.sgd_step(x0, y, self.a.lr, self.a.loss, self.counters)

    def verify(self):
        m = self.model
        return verify_words(m.comm, m, self.a.network, self.parts, training=True)

    def accuracy(self, x, y, num_classes):
        logits = self.model.class_logits(np.ascontiguousarray(x[:, self.model.owned[0]].T, dtype=np.float32),
                                         num_classes)
        return self.model.comm.bcast(None if logits is None else float((logits.argmax(axis=0) == y).mean()), root=0)

    def gather(self, provenance):
        return self.model.gather_network(provenance)

    def report(self):
        return self.model.exchange_report()


class DataParallelStepper:
    """Replicated weights; batch split over ranks; one Allreduce of all gradients per step."""

    def __init__(self, comm, net: Network, a, counters):
        self.comm, self.net, self.a, self.counters = comm, net, a, counters
        self.grad_words = net.nnz + sum(net.widths[1:])
        self.compute = 0.0
        self.comm_seconds = 0.0
        self.words_sent = 0  # bandwidth-optimal allreduce: 2(K−1)/K · M words per rank

    def step(self, x, y):
        from .reference import forward

        size, rank = self.comm.Get_size(), self.comm.Get_rank()
        mine = np.array_split(np.arange(len(y)), size)[rank]
        t0 = time.perf_counter()
        xs, zs = forward(self.net, np.ascontiguousarray(x[mine].T, dtype=np.float32))
        value, delta = loss_and_delta(zs[-1], y[mine], self.a.loss, denom=len(y)) if mine.size else (0.0, None)
        grads = []
        for k in range(self.net.num_layers, 0, -1):
            w = self.net.layers[k - 1]
            if mine.size:
                grads.append((pattern_grad(w, delta, xs[k - 1]), delta.sum(axis=1)))
                if k > 1:
                    delta = (w.T @ delta) * activation_grad(zs[k - 2], self.net.ymax)
            else:
                grads.append((np.zeros(w.nnz, np.float32), np.zeros(w.shape[0], np.float32)))
        flat = np.concatenate([np.concatenate(g) for g in grads]).astype(np.float32)
        t1 = time.perf_counter()
        total = np.empty_like(flat)
        self.comm.Allreduce(flat, total)
        t2 = time.perf_counter()
        pos = 0
        for k in range(self.net.num_layers, 0, -1):
            w = self.net.layers[k - 1]
            w.data -= self.a.lr * total[pos:pos + w.nnz]
            pos += w.nnz
            self.net.biases[k - 1] -= self.a.lr * total[pos:pos + w.shape[0]]
            pos += w.shape[0]
        self.compute += (t1 - t0) + (time.perf_counter() - t2)
        self.comm_seconds += t2 - t1
        self.words_sent += int(round(2 * (size - 1) / size * flat.size))
        return self.comm.allreduce(value)

    def verify(self):
        return {"words_match_model": None, "grad_words_per_step": self.grad_words,
                "words_per_step_per_rank": 2 * (self.comm.Get_size() - 1) / self.comm.Get_size() * self.grad_words}

    def accuracy(self, x, y, num_classes):
        from .reference import predict

        return float((predict(self.net, x)[:num_classes].argmax(axis=0) == y).mean())

    def gather(self, provenance):
        if self.comm.Get_rank() != 0:
            return None
        net = self.net
        return Network([w.copy() for w in net.layers], [b.copy() for b in net.biases], ymax=net.ymax,
                       provenance=provenance)

    def report(self):
        return {"compute_seconds": [self.compute], "comm_seconds": [self.comm_seconds], "wait_seconds": [self.comm_seconds],
                "words_sent_allreduce": self.words_sent, "peak_rss_mb": peak_rss_mb()}
