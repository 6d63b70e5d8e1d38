"""`spdnn infer`: Graph Challenge inference, serial or row-wise/data-parallel under MPI."""

from __future__ import annotations

import json
import sys
import time

import h5py
import numpy as np

from .atomic import atomic_path, write_text_atomic
from .errors import UserError
from .graphchallenge import read_categories, read_images, write_categories
from .network import read_network


def write_activations(path, activations: np.ndarray) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("activations", data=activations, track_times=False, compression="gzip",
                         compression_opts=1, chunks=True)


def infer_main(a) -> None:
    if a.partition is not None or a.mode == "data-parallel":
        from .runtime import run_infer

        run_infer(a)
        return
    t0 = time.perf_counter()
    net = read_network(a.network)
    images = read_images(a.images, net.widths[0])
    t_read = time.perf_counter() - t0
    from .reference import gc_infer

    t0 = time.perf_counter()
    cats, act = gc_infer(net, images, batch=a.batch_size)
    seconds = time.perf_counter() - t0
    write_categories(cats, a.output)
    if a.activations:
        write_activations(a.activations, act)
    edges = images.shape[0] * net.nnz
    metrics = {"mode": "serial", "ranks": 1, "images": images.shape[0], "survivors": int(cats.size),
               "seconds": seconds, "read_seconds": t_read, "edges_per_second": edges / seconds if seconds else None}
    if a.truth:
        metrics["matches_truth"] = bool(np.array_equal(read_categories(a.truth), cats))
        if not metrics["matches_truth"]:
            raise UserError(f"categories differ from {a.truth}")
    if a.metrics:
        write_text_atomic(a.metrics, json.dumps(metrics, indent=1) + "\n")
    print(f"{cats.size} of {images.shape[0]} images survive; {seconds:.3f} s, {metrics['edges_per_second']:.3g} edges/s",
          file=sys.stderr)
