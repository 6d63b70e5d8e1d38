"""`spdnn infer`: Graph Challenge inference, serial, or row-wise / data-parallel under MPI."""

from __future__ import annotations

import json
import sys
import time

import h5py
import numpy as np

from . import __version__
from .atomic import atomic_path, write_text_atomic
from .errors import UserError
from .graphchallenge import read_categories, read_images, write_categories
from .network import describe, read_header, read_network


def write_activations(path, activations: np.ndarray) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("activations", data=activations, track_times=False, compression="gzip",
                         compression_opts=1, chunks=True)


def check_truth(a, cats: np.ndarray, metrics: dict) -> None:
    """With --truth, the categories must equal the given file's (e.g. the official categories)."""
    if not a.truth:
        return
    truth = read_categories(a.truth)
    metrics["truth"] = str(a.truth)
    metrics["matches_truth"] = bool(np.array_equal(truth, cats))
    if not metrics["matches_truth"]:
        raise UserError(f"categories differ from {a.truth}: {cats.size} survivors here, {truth.size} there, "
                        f"{np.setxor1d(truth, cats).size} ids differ")


def write_outputs(a, cats, activations, metrics) -> None:
    check_truth(a, cats, metrics)  # before anything is written: a mismatch leaves no output
    write_categories(cats, a.output)
    if a.activations:
        write_activations(a.activations, activations)
    if a.metrics:
        write_text_atomic(a.metrics, json.dumps(metrics, indent=1) + "\n")


def infer_main(a) -> None:
    if a.partition is not None or a.mode == "data-parallel":
        from .collective import mpi, run_collective

        run_collective(mpi().COMM_WORLD, _infer_distributed, a)
        return
    from .network import iter_layers
    from .reference import gc_infer_layers

    t0 = time.perf_counter()
    header = read_header(a.network)
    images = read_images(a.images, header.widths[0])
    t_read = time.perf_counter() - t0
    nnz = describe(a.network)["nnz_total"]
    t0 = time.perf_counter()
    # One layer of weights in memory at a time (read from the file as the layers are applied):
    # the time includes reading the network, as a streaming run must.
    cats, act = gc_infer_layers(lambda: ((w, b) for _, w, b in iter_layers(a.network)), header.widths[-1],
                                header.ymax, images, batch=a.batch_size)
    seconds = time.perf_counter() - t0
    n_images = images.shape[0]
    metrics = {"command": "infer", "mode": "serial", "ranks": 1, "network": str(a.network), "images": n_images,
               "survivors": int(cats.size), "seconds": seconds, "read_seconds": t_read,
               "samples_per_second": n_images / seconds if seconds else None,
               "edges_per_second": n_images * nnz / seconds if seconds else None, "spdnn_version": __version__}
    write_outputs(a, cats, act, metrics)
    print(f"{cats.size} of {n_images} images survive; {seconds:.3f} s, {metrics['edges_per_second']:.3g} edges/s"
          + (", categories match the truth file" if a.truth else ""), file=sys.stderr)


def _infer_distributed(comm, a):
    from .collective import mpi, peak_rss_mb, read_on_root, scatter_columns, wtime
    from .reference import samples_as_columns
    from .rowwise import RowWiseModel, load_partition_collective, verify_words

    rank, size = comm.Get_rank(), comm.Get_size()
    if a.mode == "data-parallel" and a.partition:
        raise UserError("--mode data-parallel replicates the network: do not give --partition")
    if a.mode == "row-wise" and not a.partition:
        raise UserError("row-wise inference needs --partition PART (K = number of ranks)")
    if a.mode == "data-parallel" and a.stream_layers:
        raise UserError("--stream-layers is for row-wise inference (--mode data-parallel holds the whole network)")
    header = read_header(a.network)
    if a.mode == "row-wise":
        partition = load_partition_collective(comm, header, a.partition)
        t0 = wtime()
        model = RowWiseModel(comm, a.network, partition, header, a.exchange, stream=a.stream_layers)
        model.prepare_kernels()
        setup = wtime() - t0
        # Rank 0 reads the images once; each rank gets the pixels of its own input neurons.
        images = scatter_columns(comm, read_on_root(comm, lambda: read_images(a.images, header.widths[0])),
                                 model.owned0)
        n_images = images.shape[0]
        alive = np.zeros(n_images, bool)
        final_rows = model.final_rows
        final = np.zeros((n_images, header.widths[-1]), np.float32) if (a.activations and rank == 0) else None
        comm.Barrier()
        t_start = t0 = wtime()
        for lo in range(0, n_images, a.batch_size):
            hi = min(n_images, lo + a.batch_size)
            x0 = samples_as_columns(images[lo:hi])
            x, ids = model.gc_forward(x0, np.arange(lo, hi))
            alive[ids] = model.alive(x, ids.size)
            if a.activations:
                got = comm.gather((final_rows, x), root=0)
                if rank == 0:
                    for r, v in got:
                        final[ids[:, None], r[None, :]] = v.T
        seconds = wtime() - t0
        words = verify_words(comm, model, training=False)
        words["allreduce_words"] = model.allreduce_words
        rep = model.exchange_report()
    else:
        net = read_network(a.network)
        images = read_images(a.images, header.widths[0])
        n_images = images.shape[0]
        from .reference import gc_infer

        t_start = wtime()
        setup = 0.0
        mine = np.array_split(np.arange(n_images), size)[rank]
        comm.Barrier()
        t0 = wtime()
        cats_local, act_local = gc_infer(net, images[mine], batch=a.batch_size)
        seconds_local = wtime() - t0
        got = comm.gather((mine, cats_local, act_local if a.activations else None), root=0)
        seconds = comm.allreduce(seconds_local, op=mpi().MAX)
        alive = np.zeros(n_images, bool)
        final = None
        if rank == 0:
            final = np.zeros((n_images, header.widths[-1]), np.float32) if a.activations else None
            for ids, cats, act in got:
                alive[ids[cats]] = True
                if final is not None:
                    final[ids] = act
        # Data-parallel inference sends no activations: nothing to count, nothing to model.
        words = {"words_match_model": True, "allreduce_words": 0}
        rep = {"compute_seconds": [seconds_local], "peak_rss_mb": peak_rss_mb()}
    reports = comm.gather(rep, root=0)
    if rank != 0:
        return
    cats = np.flatnonzero(alive)
    nnz = describe(a.network)["nnz_total"]  # dataset shapes only, no layer data read
    metrics = {
        "command": "infer", "mode": a.mode, "exchange": a.exchange, "ranks": size, "network": str(a.network),
        "partition": a.partition, "stream_layers": bool(a.stream_layers),  # streamed: seconds include reading
        "images": n_images, "survivors": int(cats.size), "batch_size": a.batch_size,
        "seconds": seconds, "setup_seconds": setup, "wall_seconds": wtime() - t_start,
        "samples_per_second": n_images / seconds if seconds > 0 else None,
        "edges_per_second": n_images * nnz / seconds if seconds > 0 else None,
        **words, "per_rank": reports, "spdnn_version": __version__,
    }
    a.metrics = a.metrics or str(a.output) + ".metrics.json"
    write_outputs(a, cats, final, metrics)
    print(f"{cats.size} of {n_images} images survive; {size} ranks {a.mode}: {seconds:.3f} s, "
          f"{metrics['edges_per_second']:.3g} edges/s", file=sys.stderr)
