"""`spdnn train` and `spdnn evaluate --partition`: the drivers of distributed training under MPI.

A run is a schedule of global mini-batches (`training.batch_schedule`, the same on every rank and
in the serial reference) stepped by a row-wise model (`rowwise`) or a data-parallel one
(`data_parallel`), with checkpoints that a rerun of the same command resumes from, a guard that
stops a diverging run, and a metrics JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .atomic import write_text_atomic
from .collective import (
    agree,
    agree_outputs,
    cores_per_rank,
    mpi,
    node_core_share,
    read_on_root,
    run_collective,
    scatter_columns,
    wtime,
)
from .data_parallel import DataParallelStepper
from .datasets import Dataset, load_dataset
from .errors import UserError
from .kernels import prepare_training
from .network import read_header, read_network
from .rowwise import RowWiseModel, load_partition_collective, verify_words
from .training import LOSSES, DivergenceGuard, batch_schedule, check_classes, learning_rate


class RowWiseStepper:
    """Row-wise SGD: inputs arrive already sliced to this rank's input neurons (`scatter_columns`)."""

    def __init__(self, model: RowWiseModel, a, lr_at, num_classes: int):
        self.model, self.a, self.lr_at, self.num_classes = model, a, lr_at, num_classes

    def step(self, step, x_mine, y):
        x0 = np.ascontiguousarray(x_mine.T, dtype=np.float32)
        return self.model.sgd_step(x0, y, self.lr_at(step), self.a.loss, self.num_classes)

    def prepare(self) -> None:
        prepare_training([layer.w for layer in self.model.layers])

    def verify(self):
        m = self.model
        return {**verify_words(m.comm, m, training=True), "allreduce_words": m.allreduce_words}

    def accuracy(self, x_mine, y, num_classes):
        logits = self.model.class_logits(np.ascontiguousarray(x_mine.T, dtype=np.float32), num_classes)
        return self.model.comm.bcast(None if logits is None else float((logits.argmax(axis=0) == y).mean()), root=0)

    def write(self, path, provenance, attrs=None):
        self.model.write_network(path, provenance, attrs)

    def report(self):
        return self.model.exchange_report()


def load_data_collective(comm, a, width: int, owned0: np.ndarray | None, test_fraction: float):
    """The dataset read once, on rank 0; labels broadcast; samples sent whole (data-parallel) or
    as each rank's input columns (row-wise, `owned0`). A user error on rank 0 stops every rank."""
    data = read_on_root(comm, lambda: load_dataset(a.dataset, a.data, width, a.seed, test_fraction))
    labels = comm.bcast(None if data is None else (data.y_train, data.y_test, data.name), root=0)
    if owned0 is None:
        xs = comm.bcast(None if data is None else (data.x_train, data.x_test), root=0)
    else:
        xs = (scatter_columns(comm, None if data is None else data.x_train, owned0),
              scatter_columns(comm, None if data is None else data.x_test, owned0))
    return Dataset(xs[0], labels[0], xs[1], labels[1], labels[2])


def check_memory(comm, need: int, what: str, limit_gib: float | None = None) -> None:
    """Refuse a run that would not fit, up front and in one line, instead of being killed later:
    `need` bytes on this rank against `limit_gib` per rank, or else the memory available on its
    node (MemAvailable) shared by its ranks there."""
    node = comm.Split_type(mpi().COMM_TYPE_SHARED)
    local_ranks = node.Get_size()
    node.Free()
    if limit_gib is not None:
        per_rank, where = limit_gib * 2**30, f"--max-memory {limit_gib:g} GiB per rank"
    else:
        available = _available_bytes()
        per_rank = None if available is None else available / local_ranks
        where = f"{(available or 0) / 2**30:.1f} GiB available for {local_ranks} ranks on this node"
    error = None
    if per_rank is not None and need > per_rank:
        error = (f"{what} needs {need / 2**30:.3g} GiB per rank, beyond {where}: use more ranks (nodes), a "
                 f"smaller batch, or fewer layers")
    agree(comm, error)


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_key(a) -> str:
    """Identifies a training run: a checkpoint is resumed only by the same run (settings and the
    partition's bytes, read in blocks: never the whole file in memory)."""
    h = hashlib.sha256()
    for item in (a.network, a.mode, a.dataset, a.data, a.epochs, a.batch_size, a.lr, a.lr_schedule, a.seed, a.loss,
                 a.test_fraction):
        h.update(repr(item).encode())
    if a.partition:
        with open(a.partition, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def write_checkpoint(stepper, provenance, ckpt: Path, key: str, step: int) -> None:
    stepper.write(ckpt, provenance, attrs={"run_key": key, "step": step})


PROGRESS_SECONDS = 30.0


def run_train(a) -> None:
    run_collective(mpi().COMM_WORLD, _train, a)


def _train(comm, a):
    rank, size = comm.Get_rank(), comm.Get_size()
    if a.loss not in LOSSES:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}")
    if a.mode == "data-parallel" and a.partition:
        raise UserError("--mode data-parallel replicates the network: do not give --partition")
    if a.mode == "row-wise" and not a.partition:
        raise UserError("row-wise training needs --partition PART (K = number of ranks)")
    if a.lr <= 0:
        raise UserError(f"--lr must be positive (got {a.lr})")
    agree_outputs(comm, a.output, a.metrics)  # before the training, not after
    started = wtime()
    header = read_header(a.network)
    ckpt = Path(str(a.output) + ".ckpt.h5")
    start_step, source, key = 0, a.network, None
    if rank == 0:
        key = run_key(a)
        if ckpt.exists():
            with h5py.File(ckpt, "r") as f:
                if f.attrs.get("run_key") == key:
                    start_step, source = int(f.attrs["step"]), str(ckpt)
    start_step, source, key = comm.bcast((start_step, source, key), root=0)
    if a.mode == "row-wise":
        partition = load_partition_collective(comm, header, a.partition)
        model = RowWiseModel(comm, source, partition, header, a.exchange)
        data = load_data_collective(comm, a, header.widths[0], model.owned0, a.test_fraction)
        batch = min(a.batch_size, len(data.y_train))
        check_memory(comm, model.activation_bytes(batch), f"training at B={batch} (activations of "
                     f"{header.num_layers} layers kept for the backward pass)", a.max_memory)
    else:
        data = load_data_collective(comm, a, header.widths[0], None, a.test_fraction)
    check_classes(header.widths[-1], data.num_classes)
    schedule = list(batch_schedule(len(data.y_train), a.batch_size, a.epochs, a.seed))
    learning_rate(0, len(schedule), a.lr, a.lr_schedule)  # validates the schedule name

    def lr_at(step):
        return learning_rate(step, len(schedule), a.lr, a.lr_schedule)

    if a.mode == "row-wise":
        stepper = RowWiseStepper(model, a, lr_at, data.num_classes)
    else:
        cores = node_core_share(comm)  # every rank reads the whole network at once
        stepper = DataParallelStepper(comm, read_network(source, cores), lr_at, a.loss, data.num_classes, cores)
    if start_step and rank == 0:
        print(f"resuming from {ckpt} at step {start_step}", file=sys.stderr, flush=True)
    provenance = {"generator": "train", "source": str(a.network), "mode": a.mode, "ranks": size,
                  "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "lr_schedule": a.lr_schedule,
                  "seed": a.seed, "loss": a.loss, "dataset": data.name, "spdnn_version": __version__}
    guard = DivergenceGuard()
    cores = cores_per_rank(comm)
    stepper.prepare()
    setup_seconds = wtime() - started  # reading the network, the partition and the data; the plans; the kernels
    losses, samples, step_times, steps_run = [], 0, [], 0
    last_step, last_line = start_step, wtime()
    for step, epoch, ids in schedule:
        if step < start_step:
            continue
        t0 = wtime()
        losses.append(stepper.step(step, data.x_train[ids], data.y_train[ids]))
        step_times.append(wtime() - t0)
        samples += len(ids)
        steps_run += 1
        last_step = step + 1
        epoch_done = last_step == len(schedule) or schedule[last_step][1] != epoch
        guard.check(step, epoch, losses[-1], epoch_done)
        # Progress: a line at the end of every epoch, and within one at most every PROGRESS_SECONDS
        # (an epoch of the digits at 65536x120, K = 2, takes 200 s)
        if rank == 0 and (epoch_done or wtime() - last_line >= PROGRESS_SECONDS):
            last_line = wtime()
            print(f"{'epoch' if epoch_done else '  in epoch'} {epoch + 1}/{a.epochs}: step {last_step}/{len(schedule)}, "
                  f"loss {losses[-1]:.4f}, lr {lr_at(step):.3g}, {1e3 * float(np.median(step_times)):.2f} ms/step",
                  file=sys.stderr, flush=True)
        stopping = bool(a.stop_after) and steps_run >= a.stop_after and last_step < len(schedule)
        if last_step < len(schedule) and (stopping or (a.checkpoint_every and last_step % a.checkpoint_every == 0)):
            write_checkpoint(stepper, provenance, ckpt, key, last_step)
        if stopping:
            if rank == 0:
                print(f"stopped after step {last_step} of {len(schedule)} (--stop-after); checkpoint {ckpt}: "
                      "rerun the same command to resume", file=sys.stderr, flush=True)
            raise SystemExit(3)
    words = stepper.verify()
    reports = comm.gather(stepper.report(), root=0)  # before evaluation adds its own exchanges
    t0 = wtime()
    acc = stepper.accuracy(data.x_test, data.y_test, data.num_classes)
    t1 = wtime()
    stepper.write(a.output, provenance)
    t2 = wtime()  # rank 0 stores the last layer: its clock sees the whole write
    if rank != 0:
        return
    if ckpt.exists():
        ckpt.unlink()
    # Median: the first steps pay one-off costs (page faults, lazy initialisation) that a mean of
    # a short run (6 steps at B=256 on digits) would carry into the cost model.
    step_time = float(np.median(step_times)) if step_times else None
    metrics = {
        "command": "train", "mode": a.mode, "exchange": a.exchange, "ranks": size, "network": str(a.network),
        "partition": a.partition,
        "dataset": data.name, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
        "lr_schedule": a.lr_schedule, "seed": a.seed, "test_fraction": a.test_fraction, "num_classes": data.num_classes,
        "steps": len(schedule), "steps_run": steps_run, "resumed_from_step": start_step,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "test_accuracy": acc, "step_seconds": step_time,
        "step_seconds_mean": float(np.mean(step_times)) if step_times else None,
        "samples_per_second": samples / sum(step_times) if step_times else None,
        "setup_seconds": setup_seconds, "evaluate_seconds": t1 - t0, "write_seconds": t2 - t1,
        "cores_per_rank": cores,  # under 1: ranks shared cores (collective.cores_per_rank)
        **words, "per_rank": reports, "spdnn_version": __version__,
    }
    write_text_atomic(a.metrics or str(a.output) + ".metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(f"{a.mode} K={size}: {len(schedule)} steps, loss {metrics['loss_last']:.4f}, test accuracy {acc:.3f}, "
          f"{step_time * 1e3:.2f} ms/step", file=sys.stderr)


# ---------------------------------------------------------------- evaluation
def run_evaluate(a) -> None:
    run_collective(mpi().COMM_WORLD, _evaluate, a)


def _evaluate(comm, a):
    header = read_header(a.network)
    partition = load_partition_collective(comm, header, a.partition)
    model = RowWiseModel(comm, a.network, partition, header)
    data = load_data_collective(comm, a, header.widths[0], model.owned0, a.test_fraction)
    check_classes(header.widths[-1], data.num_classes)
    logits = model.class_logits(np.ascontiguousarray(data.x_test.T, dtype=np.float32), data.num_classes)
    if comm.Get_rank() == 0:
        acc = float((logits.argmax(axis=0) == data.y_test).mean())
        print(json.dumps({"test_accuracy": acc, "test_samples": int(data.y_test.size), "ranks": comm.Get_size()}))
