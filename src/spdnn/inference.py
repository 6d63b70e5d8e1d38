"""`spdnn infer`: Graph Challenge inference, serial, or row-wise / data-parallel under MPI."""

from __future__ import annotations

import itertools
import json
import sys
import time
from contextlib import ExitStack

import h5py
import numpy as np

from . import __version__
from .atomic import atomic_path, check_outputs, write_text_atomic
from .collective import peak_rss_mb
from .errors import UserError
from .graphchallenge import read_categories, write_categories
from .images import iter_image_batches
from .network import describe, read_header, read_network


class FinalActivations:
    """--activations: the last layer's activations, images × n_L float32 (HDF5 dataset
    `activations`), written a batch of images at a time under a temporary name and renamed when
    the run succeeds: no run holds all images' activations (60,000 × 65536 would be 15.7 GB).
    Without a path, a sink that writes nothing."""

    def __init__(self, path, n_out: int):
        self.path, self.n_out = path, n_out
        self._stack = ExitStack()
        self._dataset = None

    def __enter__(self):
        if self.path:
            tmp = self._stack.enter_context(atomic_path(self.path))
            f = self._stack.enter_context(h5py.File(tmp, "w", track_order=False))
            self._dataset = f.create_dataset("activations", shape=(0, self.n_out), maxshape=(None, self.n_out),
                                             dtype=np.float32, track_times=False, compression="gzip",
                                             compression_opts=1, chunks=True)
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)  # closes the file first, then renames it (or removes it)

    def put(self, lo: int, n: int, pieces) -> None:
        """The rows of images lo .. lo + n − 1 (batches in any order). `pieces`: (ids of surviving
        images, their output neurons or None for all, activations as neurons × ids); all other
        entries are zeros. A piece without ids is skipped: its block may be of an earlier layer
        (a batch that died there) and of another height."""
        if self._dataset is None:
            return
        rows = np.zeros((n, self.n_out), np.float32)
        for ids, neurons, x in pieces:
            if not ids.size:
                continue
            if neurons is None:
                rows[ids - lo] = x.T
            else:
                rows[(ids - lo)[:, None], neurons[None, :]] = x.T
        if lo + n > self._dataset.shape[0]:
            self._dataset.resize(lo + n, axis=0)
        self._dataset[lo:lo + n] = rows


class Stopwatch:
    """Seconds spent getting the items of an iterator (reading the images, say), apart from the
    work done on them."""

    def __init__(self):
        self.seconds = 0.0

    def items(self, it):
        it = iter(it)
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            self.seconds += time.perf_counter() - t0
            if item is None:
                return
            yield item


class Progress:
    """A line on stderr at most every `every` seconds: images done, survivors so far (a run over
    the challenge's 60,000 images takes many minutes)."""

    def __init__(self, every: float = 10.0):
        self.t0 = self.last = time.perf_counter()
        self.every = every

    def __call__(self, images: int, survivors: list) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            alive = sum(ids.size for ids in survivors)
            print(f"  infer: {images} images, {alive} survive so far ({now - self.t0:.0f} s)", file=sys.stderr,
                  flush=True)


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


def write_outputs(a, cats, metrics) -> None:
    """Categories and metrics; called inside the `FinalActivations` block, so that a categories
    mismatch (--truth) leaves no activations file either."""
    check_truth(a, cats, metrics)  # before anything is written: a mismatch leaves no output
    write_categories(cats, a.output)
    if a.metrics:
        write_text_atomic(a.metrics, json.dumps(metrics, indent=1) + "\n")


def infer_main(a) -> None:
    if a.partition is not None or a.mode == "data-parallel":
        from .collective import mpi, run_collective

        run_collective(mpi().COMM_WORLD, _infer_distributed, a)
        return
    check_outputs(a.output, a.metrics, a.activations)
    from .kernels import load_gc_passes
    from .network import iter_layers
    from .read_ahead import read_ahead
    from .reference import gc_infer_batch

    load_gc_passes()  # before the clock, as a distributed run's setup does
    header = read_header(a.network)
    nnz = describe(a.network)["nnz_total"]
    reading = Stopwatch()
    batches = reading.items(iter_image_batches(a.images, header.widths[0], a.batch_size))
    survivors, n_images, seconds, progress = [], 0, 0.0, Progress()
    with FinalActivations(a.activations, header.widths[-1]) as final:
        for lo, images in batches:
            t0 = time.perf_counter()
            # One layer of weights in memory at a time (read from the file as the layers are
            # applied): the time includes reading the network, as a streaming run must.
            ids, x = gc_infer_batch(((w, b) for _, w, b in read_ahead(iter_layers(a.network))), header.ymax, images, lo)
            seconds += time.perf_counter() - t0
            n_images = lo + images.shape[0]
            survivors.append(ids)
            final.put(lo, images.shape[0], [(ids, None, x)])
            progress(n_images, survivors)
        cats = np.concatenate(survivors) if survivors else np.zeros(0, np.int64)
        metrics = {"command": "infer", "mode": "serial", "ranks": 1, "network": str(a.network), "images": n_images,
                   "survivors": int(cats.size), "seconds": seconds, "read_seconds": reading.seconds,
                   "samples_per_second": n_images / seconds if seconds else None,
                   "edges_per_second": n_images * nnz / seconds if seconds else None, "peak_rss_mb": peak_rss_mb(),
                   "spdnn_version": __version__}
        write_outputs(a, cats, metrics)
    print(f"{cats.size} of {n_images} images survive; {seconds:.3f} s, {metrics['edges_per_second']:.3g} edges/s"
          + (", categories match the truth file" if a.truth else ""), file=sys.stderr)


def _infer_distributed(comm, a):
    from .collective import agree_outputs, cores_per_rank, read_on_root

    if a.mode == "data-parallel" and a.partition:
        raise UserError("--mode data-parallel replicates the network: do not give --partition")
    if a.mode == "row-wise" and not a.partition:
        raise UserError("row-wise inference needs --partition PART (K = number of ranks)")
    if a.mode == "data-parallel" and a.stream_layers:
        raise UserError("--stream-layers is for row-wise inference (--mode data-parallel holds the whole network)")
    agree_outputs(comm, a.output, a.metrics, a.activations)
    cores = cores_per_rank(comm)
    header = read_header(a.network)
    # Rank 0 reads the images, a batch at a time, and hands each rank what it needs of each batch.
    reading = Stopwatch()
    batches = read_on_root(comm, lambda: reading.items(iter_image_batches(a.images, header.widths[0], a.batch_size)))
    run = _row_wise if a.mode == "row-wise" else _data_parallel
    with FinalActivations(a.activations if comm.Get_rank() == 0 else None, header.widths[-1]) as final:
        result = run(comm, a, header, batches, final)
        if comm.Get_rank() == 0:
            _report(a, header, result, reading.seconds, comm.Get_size(), cores)


def _row_wise(comm, a, header, batches, final):
    """Every rank holds its rows of every layer (or one layer at a time, --stream-layers) and gets,
    for each batch, the pixels of its own input neurons."""
    from .collective import scatter_csr_columns, wtime
    from .reference import samples_as_columns
    from .rowwise import RowWiseModel, load_partition_collective, verify_words

    partition = load_partition_collective(comm, header, a.partition)
    t0 = wtime()
    model = RowWiseModel(comm, a.network, partition, header, a.exchange, stream=a.stream_layers)
    model.prepare_kernels()
    setup = wtime() - t0
    wanted = comm.gather(model.owned0, root=0)
    survivors, n_images, seconds, progress = [], 0, 0.0, Progress()
    t_start = wtime()
    for lo, images in scatter_csr_columns(comm, batches, wanted):
        comm.Barrier()  # the clock runs from when every rank has its batch: reading is not compute
        t0 = wtime()
        n = images.shape[0]
        x0, images = samples_as_columns(images), None  # the dense block is all the layers read
        x, ids = model.gc_forward(x0, np.arange(lo, lo + n))
        alive = model.alive(x, ids.size)
        seconds += wtime() - t0
        n_images = lo + n
        survivors.append(ids[alive])
        if a.activations:  # rank 0 writes; every rank sends its output rows
            got = comm.gather((ids, model.final_rows, x), root=0)
            if got:
                final.put(lo, n, got)
        if comm.Get_rank() == 0:
            progress(n_images, survivors)
    words = verify_words(comm, model, training=False)
    words["allreduce_words"] = model.allreduce_words
    reports = comm.gather(model.exchange_report(), root=0)
    return {"survivors": survivors, "images": n_images, "seconds": seconds, "setup_seconds": setup,  # rank 0's
            "wall_seconds": wtime() - t_start, "words": words, "per_rank": reports}


def _data_parallel(comm, a, header, batches, final):
    """Every rank holds the whole network; rank 0 splits each batch into K slices of consecutive
    images, one for each rank, as data-parallel training splits its batch (dealing whole batches
    in turn left all ranks but one idle when the inputs made fewer batches than ranks: the 1,797
    digits are one batch of the default 4,096)."""
    from .collective import mpi, node_core_share, scatter_from_root, wtime
    from .kernels import prepare_inference
    from .reference import gc_infer_batch

    t_setup = wtime()
    net = read_network(a.network, node_core_share(comm))  # every rank reads the whole network at once
    prepare_inference(net.layers)  # before the clock, as a row-wise run's layers are
    survivors, n_images, seconds, mine, mine_images, progress = [], 0, 0.0, 0.0, 0, Progress()
    comm.Barrier()
    t_start = wtime()
    setup = comm.allreduce(t_start - t_setup, op=mpi().MAX)
    for lo, images in scatter_from_root(comm, batches, lambda batch: _slices(*batch, comm.Get_size())):
        t0 = wtime()
        ids, x = gc_infer_batch(zip(net.layers, net.biases), net.ymax, images, lo)
        elapsed = wtime() - t0
        mine, mine_images = mine + elapsed, mine_images + images.shape[0]
        got = comm.gather((lo, images.shape[0], ids, x if a.activations else None, elapsed), root=0)
        if got:  # rank 0: the slices in order
            seconds += max(g[4] for g in got)  # a batch is done when its slowest slice is
            n = sum(g[1] for g in got)
            n_images = got[0][0] + n
            survivors += [g[2] for g in got]
            final.put(got[0][0], n, [(g[2], None, g[3]) for g in got])
            progress(n_images, survivors)
    # Data-parallel inference sends no activations: nothing to count, nothing to model.
    reports = comm.gather({"compute_seconds": [mine], "images": mine_images, "peak_rss_mb": peak_rss_mb()}, root=0)
    return {"survivors": survivors, "images": n_images, "seconds": seconds, "setup_seconds": setup,  # rank 0's
            "wall_seconds": wtime() - t_start, "words": {"words_match_model": True, "allreduce_words": 0},
            "per_rank": reports}


def _slices(lo: int, images, size: int) -> list:
    """A batch (lo, images) as `size` pieces of consecutive images, sizes within one of each other
    (empty pieces when the batch has fewer images than ranks)."""
    bounds = np.linspace(0, images.shape[0], size + 1).round().astype(np.int64)
    return [(lo + int(s), images[s:e]) for s, e in itertools.pairwise(bounds)]


def _report(a, header, result, read_seconds: float, size: int, cores: float) -> None:
    """Rank 0: categories and metrics (inside the activations block: see `write_outputs`)."""
    cats = np.sort(np.concatenate(result["survivors"])) if result["survivors"] else np.zeros(0, np.int64)
    n_images, seconds = result["images"], result["seconds"]
    nnz = describe(a.network)["nnz_total"]  # dataset shapes only, no layer data read
    metrics = {
        "command": "infer", "mode": a.mode, "exchange": a.exchange, "ranks": size, "network": str(a.network),
        "partition": a.partition, "stream_layers": bool(a.stream_layers),  # streamed: seconds include reading
        "images": n_images, "survivors": int(cats.size), "batch_size": a.batch_size,
        "seconds": seconds, "read_seconds": read_seconds, "setup_seconds": result["setup_seconds"],
        "wall_seconds": result["wall_seconds"], "cores_per_rank": cores,  # under 1: ranks shared cores
        "samples_per_second": n_images / seconds if seconds > 0 else None,
        "edges_per_second": n_images * nnz / seconds if seconds > 0 else None,
        **result["words"], "per_rank": result["per_rank"], "spdnn_version": __version__,
    }
    a.metrics = a.metrics or str(a.output) + ".metrics.json"
    write_outputs(a, cats, metrics)
    print(f"{cats.size} of {n_images} images survive; {size} ranks {a.mode}: {seconds:.3f} s, "
          f"{metrics['edges_per_second']:.3g} edges/s", file=sys.stderr)
