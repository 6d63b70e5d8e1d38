"""The `spdnn` command line. Each subcommand is a thin shell over a stage module's core function.

User errors (UserError) print one line `spdnn <command>: error: ...` and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from .atomic import check_outputs
from .errors import UserError, WorkerError
from .progress import every_tenth


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- networks
def cmd_generate(a):
    """Streams: one layer in memory at a time, whatever the size."""
    from .generate import radixnet_stream, random_stream

    other_kind = {"radixnet": {"--widths": a.widths, "--nnz-per-row": a.nnz_per_row, "--init": a.init},
                  "random": {"--neurons": a.neurons, "--layers": a.layers, "--radices": a.radices}}[a.kind]
    ignored = [flag for flag, value in other_kind.items() if value is not None]
    if ignored:  # silently dropping them would give a network other than the one asked for
        raise UserError(f"generate {a.kind} does not take {', '.join(ignored)}")
    if a.kind == "radixnet":
        if a.neurons is None or a.layers is None:
            raise UserError("generate radixnet needs --neurons and --layers")
        stream = radixnet_stream(a.neurons, a.layers, a.seed, bias=a.bias, ymax=a.ymax, radices=a.radices)
    else:
        if a.widths is None or a.nnz_per_row is None:
            raise UserError("generate random needs --widths and --nnz-per-row")
        stream = random_stream(a.widths, a.nnz_per_row, a.seed, bias=a.bias or 0.0,
                               ymax=a.ymax if a.ymax is not None else float("inf"), init=a.init or "he")
    nnz = stream.write(a.output, progress=every_tenth("generate"))
    _log(f"wrote {a.output}: {len(stream.widths) - 1} layers, widths {stream.widths[0]}..{stream.widths[-1]}, {nnz} nonzeros")


def cmd_import_gc(a):
    from .graphchallenge import import_gc_to_file

    t0 = time.perf_counter()
    header = import_gc_to_file(a.src, a.output, layers=a.layers, bias=a.bias, ymax=a.ymax,
                               progress=every_tenth("import-gc", every=64))
    _log(f"imported {len(header['widths']) - 1} layers, {header['nnz']} nonzeros in {time.perf_counter() - t0:.2f} s "
         f"-> {a.output}")


def cmd_export_gc(a):
    from .graphchallenge import export_layers
    from .network import iter_layers, read_header
    from .read_ahead import read_ahead

    h = read_header(a.network)
    layers = ((w, b) for _, w, b in read_ahead(iter_layers(a.network)))  # a layer read while one is written
    sub = export_layers(h.widths, h.ymax, h.activation, h.provenance, layers, a.outdir)
    _log(f"wrote {sub}")


def cmd_fetch_gc(a):
    from .fetch import GC_ROOT, fetch_gc

    digests = fetch_gc(a.neurons, a.layers, a.dir, root=a.root or GC_ROOT)
    print(json.dumps(digests, indent=1))


def cmd_images(a):
    from .datasets import digits_images
    from .images import write_images

    if a.dataset != "digits":
        raise UserError(f"unknown dataset {a.dataset!r} (available: digits)")
    neurons = a.neurons
    if a.network:
        from .network import read_header

        neurons = read_header(a.network).widths[0]
    if neurons is None:
        raise UserError("images needs --neurons N or --network NET.h5")
    if a.count is not None and a.count < 1:
        raise UserError(f"--count must be at least 1 (got {a.count})")
    images = digits_images(neurons, a.threshold)
    count = a.count or images.shape[0]
    write_images(images, a.output, count=count)
    _log(f"wrote {count} images ({images.shape[0]} distinct, {images.nnz} nonzeros among them) -> {a.output}")


def cmd_info(a):
    from .network import describe

    print(json.dumps(describe(a.network, verify=not a.quick), indent=1))


def cmd_infer(a):
    from .inference import infer_main

    infer_main(a)


def cmd_hypergraph(a):
    from .hypergraph import write_hgr_layers
    from .network import iter_layers, read_header
    from .read_ahead import read_ahead

    widths = read_header(a.network).widths
    layers = (w for _, w, _ in read_ahead(iter_layers(a.network)))  # one layer read ahead (its weights too: checked)
    nv, nets, pins = write_hgr_layers(widths, layers, a.output, progress=every_tenth("hypergraph"))
    _log(f"wrote {a.output}: {nv} vertices, {nets} nets, {pins} pins")


def cmd_partition(a):
    from .host import affinity, core_share
    from .network import LayerFile
    from .partition import partition_network
    from .partition_io import write_partition

    # Read a layer at a time, here and in the `jobs` worker processes, which share the cores.
    mask = affinity()
    layers = LayerFile(a.network, cores=core_share(mask, [mask] * a.jobs))
    part, metrics = partition_network(layers, layers.widths, a.k, a.method, a.epsilon, a.seed,
                                      passes=a.passes, preset=a.preset, threads=a.threads, verbose=True,
                                      jobs=a.jobs, backend=a.backend)
    metrics["network"] = str(a.network)
    write_partition(part, a.output, sidecar=metrics, k=a.k)
    _log(f"{a.method} K={a.k}: volume {metrics['volume_forward']}, max layer imbalance "
         f"{metrics['imbalance_max']:.3f}, {metrics['seconds']:.1f} s -> {a.output}")


def cmd_volume(a):
    from .network import iter_layers, read_header
    from .partition import check_k
    from .partition_io import read_partition
    from .read_ahead import read_ahead
    from .volume import check_partition, partition_metrics

    header = read_header(a.network)
    part = read_partition(a.partition)  # a vector of Σ n_k ids; the network is streamed below
    k = a.k
    if k is None:  # said aloud: an id of 5 silently meaning K = 6 would hide a wrong file
        k = int(part.max()) + 1 if part.size else 1
        _log(f"volume: K = {k} inferred from the largest part id in {a.partition} (give -k to check it)")
    check_partition(part, header.widths, k, a.partition)
    check_k(header.widths, k)
    layers = (w for _, w, _ in read_ahead(iter_layers(a.network)))  # one layer read ahead (its weights too: checked)
    print(json.dumps(partition_metrics(layers, header.widths, part, k, a.epsilon), indent=1))


def cmd_bound(a):
    from .bound import BoundBudget, add_semidefinite, find_certificate, volume_lower_bound
    from .host import usable_cores
    from .network import LayerFile
    from .partition import check_k

    layers = LayerFile(a.network)  # one pass over the layers per K, one layer in memory at a time
    for k in a.k:
        check_k(layers.widths, k)
    if a.certificate and not a.semidefinite:
        raise UserError("--certificate and --no-semidefinite contradict each other: give one")
    certificate = None  # the semidefinite one: found once, at the first K ≥ 2, it serves every K
    if a.certificate:
        from .certificate_file import read_certificate

        certificate = read_certificate(a.certificate, _patterns(layers), layers.widths, a.epsilon)
    for k in a.k:
        start = time.perf_counter()

        # total: both passes' layers (without and with alignment prices)
        progress = every_tenth(f"bound K={k}", noun="layer tables")
        try:
            result = volume_lower_bound(layers, layers.widths, k, a.epsilon, a.iterations, progress=progress,
                                        max_seconds=a.max_seconds, max_memory_gb=a.max_memory, semidefinite=False,
                                        prices=a.prices, threads=a.threads or usable_cores())
        except BoundBudget as e:  # not an error: the workflow goes on, the tables show no bound
            result = {"k": k, "epsilon": a.epsilon, "lower_bound_forward": None, "reason": str(e)}
            _log(f"bound K={k}: none within the budget ({e})")
        else:
            if a.semidefinite and k >= 2:
                if certificate is None:
                    deadline = None if a.max_seconds is None else start + a.max_seconds
                    certificate = find_certificate(layers, layers.widths, a.epsilon, deadline, a.max_memory,
                                                   note=lambda line, k=k: _log(f"  bound K={k}: {line}"))
                add_semidefinite(result, certificate, k)
                result["seconds"] = time.perf_counter() - start
            _log(f"bound K={k}: {result['lower_bound_forward']} words per sample, {result['seconds']:.1f} s"
                 + (f" (stopped at the {result['stopped']})" if "stopped" in result else ""))
        result["network"] = str(a.network)
        print(json.dumps(result), flush=True)


def _patterns(layers):
    return (layers.pattern(i) for i in range(len(layers)))


def cmd_certificate(a):
    from .bound import find_certificate
    from .certificate_file import pattern_digest, write_certificate
    from .network import LayerFile

    layers = LayerFile(a.network)
    digest, _ = pattern_digest(_patterns(layers), layers.widths)
    start = time.perf_counter()
    deadline = None if a.max_seconds is None else start + a.max_seconds
    found = find_certificate(layers, layers.widths, a.epsilon, deadline, a.max_memory,
                             note=lambda line: _log(f"  certificate: {line}"))
    write_certificate(a.output, found, str(a.network), digest, a.epsilon)
    if isinstance(found, str):
        _log(f"certificate: none within the budget ({found}) -> {a.output}")
    else:
        _log(f"certificate: {found.bound(2)} words per sample at K = 2, λ_max {found.lambda_max:.5g} "
             f"({'proved' if found.lambda_verified else 'Lanczos only'}), {found.seconds:.1f} s -> {a.output}")


def cmd_train(a):
    from .train import run_train

    run_train(a)


def cmd_reinit(a):
    from .training import reinitialise

    prov = reinitialise(a.network, a.output, a.init, a.seed)
    _log(f"{a.output}: pattern of {a.network}, {prov['init']}-initialised weights (seed {a.seed}), zero biases")


def cmd_aggregate(a):
    from .results import inference_table, partition_table, run_table, write_csv

    write_csv(partition_table(a.partitions, a.bounds), a.partitions_out)
    write_csv(run_table(a.runs), a.runs_out)
    if a.inference_out:
        write_csv(inference_table(a.inference), a.inference_out)
    _log(f"{len(a.partitions)} partitions, {len(a.runs)} runs -> {a.partitions_out}, {a.runs_out}")


def cmd_costmodel(a):
    import pandas as pd

    from .atomic import write_text_atomic
    from .costmodel import CostParams, params_to_json, predict_table
    from .results import write_csv

    names = ("gamma_block", "gamma_scattered", "alpha", "beta", "delta", "mu")
    values = {name: getattr(a, name) for name in names}
    given = None
    if any(v is not None for v in values.values()):  # a cluster's measured values: both rates needed
        if values["gamma_block"] is None or values["gamma_scattered"] is None:
            raise UserError("cost model values given without both --gamma-block and --gamma-scattered "
                            "(seconds per multiply-add in a dense block and in a CSR row)")
        given = CostParams(**{name: v or 0.0 for name, v in values.items()})
    runs = pd.read_csv(a.runs)
    params, pred, n_fit = predict_table(runs, a.partitions, a.batch_sizes, a.max_fit_k, given)
    write_csv(pred, a.output)
    write_text_atomic(a.params, params_to_json(params, "config" if given else "fitted", n_fit))
    values = ", ".join(f"{k}={float(v):.3g}" for k, v in vars(params).items())
    _log(f"cost model ({'config' if given else f'fitted on {n_fit} runs'}): {values} -> {a.output}")


def cmd_plots(a):
    from .plots import make_figures

    make_figures(a.partitions, a.runs, a.predictions, a.results, a.outdir)
    _log(f"figures -> {a.outdir}")


def cmd_train_dense(a):
    from .network import write_network
    from .prune import train_dense

    net = train_dense(a.widths, a.dataset, a.data, a.epochs, a.seed, lr=a.lr, batch=a.batch_size)
    write_network(net, a.output)
    _log(f"dense {net.widths}: test accuracy {net.provenance['test_accuracy']:.4f} -> {a.output}")


def cmd_prune(a):
    from .network import read_network, write_network
    from .prune import file_sha256, prune

    dense = read_network(a.dense)
    net = prune(dense, a.density, a.scope, a.schedule, a.finetune_epochs, a.steps, a.dataset, a.data, a.seed,
                lr=a.lr, source=f"{a.dense} sha256:{file_sha256(a.dense)}")
    write_network(net, a.output)
    acc = net.provenance["test_accuracy"]
    _log(f"pruned to density {a.density} ({net.nnz} weights)" + (f", test accuracy {acc:.4f}" if acc is not None else "")
         + f" -> {a.output}")


def cmd_import_npz(a):
    from .network import write_network
    from .prune import import_npz

    net = import_npz(a.npz, a.transpose)
    write_network(net, a.output)
    _log(f"imported {net.num_layers} layers, widths {net.widths}, {net.nnz} nonzeros -> {a.output}")


def cmd_import_mtx(a):
    from .network import write_network
    from .prune import import_mtx

    net = import_mtx(a.mtx, a.transpose)
    write_network(net, a.output)
    _log(f"imported {net.num_layers} layers, widths {net.widths}, {net.nnz} nonzeros -> {a.output}")


def cmd_evaluate(a):
    if a.partition:
        from .train import run_evaluate

        run_evaluate(a)
        return
    from .datasets import load_dataset
    from .network import read_network
    from .reference import predict
    from .training import accuracy, check_classes

    net = read_network(a.network)
    data = load_dataset(a.dataset, a.data, net.widths[0], a.seed, a.test_fraction)
    check_classes(net.widths[-1], data.num_classes)
    print(json.dumps({"test_accuracy": accuracy(predict(net, data.x_test), data.y_test, data.num_classes),
                      "test_samples": int(data.y_test.size)}))


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spdnn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for group in (_network_commands, _infer_commands, _partition_commands, _train_commands, _prune_commands,
                  _results_commands):
        group(sub)
    return p


def _network_commands(sub) -> None:
    """Stage 1: networks and inputs."""
    g = sub.add_parser("generate", help="generate a network (radixnet | random)")
    g.add_argument("kind", choices=["radixnet", "random"])
    g.add_argument("--neurons", type=int, help="radixnet: neurons per layer, 16·2^m")
    g.add_argument("--layers", type=int, help="radixnet: number of layers")
    g.add_argument("--radices", type=_ints, default=None,
                   help="radixnet: butterfly bases b_1,...,b_m, product N/16 (default 2,2,...: the Graph Challenge's)")
    g.add_argument("--widths", type=_ints, help="random: comma-separated layer widths n_0,n_1,...,n_L")
    g.add_argument("--nnz-per-row", type=int, help="random: nonzeros per row")
    g.add_argument("--init", default=None, choices=["he", "constant"], help="random: weight initialisation (default he)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--bias", type=float, default=None,
                   help="bias of every neuron (radixnet: Graph Challenge value for N in 1024..65536, else -0.3; random: 0)")
    g.add_argument("--ymax", type=float, default=None, help="activation cap (radixnet default 32; random: none)")
    g.add_argument("-o", "--output", required=True)
    g.set_defaults(func=cmd_generate, post=_radix_defaults)

    i = sub.add_parser("import-gc", help="import Graph Challenge layer TSVs (directory or neuron{N}.tar.gz)")
    i.add_argument("src")
    i.add_argument("--layers", type=int, default=None)
    i.add_argument("--bias", type=float, default=None)
    i.add_argument("--ymax", type=float, default=None)
    i.add_argument("-o", "--output", required=True)
    i.set_defaults(func=cmd_import_gc)

    e = sub.add_parser("export-gc", help="export a network in the Graph Challenge layout")
    e.add_argument("network")
    e.add_argument("outdir")
    e.set_defaults(func=cmd_export_gc)

    f = sub.add_parser("fetch-gc", help="download the official Graph Challenge files")
    f.add_argument("--neurons", type=int, required=True)
    f.add_argument("--layers", type=int, required=True)
    f.add_argument("--root", default=None, help="alternative URL root (mirror or file://)")
    f.add_argument("dir")
    f.set_defaults(func=cmd_fetch_gc)

    im = sub.add_parser("images", help="MNIST-like inputs in the Graph Challenge format")
    im.add_argument("--dataset", default="digits")
    im.add_argument("--neurons", type=int, default=None, help="input width N (a square)")
    im.add_argument("--network", default=None, help="take N from this network's input layer")
    im.add_argument("--threshold", type=float, default=0.9,
                    help="binarisation threshold on pixel intensity in [0,1); 0.9 lets about 38%% of digits survive a RadiX-Net")
    im.add_argument("--count", type=int, default=None,
                    help="write this many images, the 1,797 digits repeated in turn (the challenge has 60,000); "
                         "written a batch at a time")
    im.add_argument("-o", "--output", required=True)
    im.set_defaults(func=cmd_images)

    n = sub.add_parser("info", help="print layers, widths, nnz and provenance")
    n.add_argument("network")
    n.add_argument("--quick", action="store_true", help="shapes only: do not read the layers to verify checksums")
    n.set_defaults(func=cmd_info)



def _infer_commands(sub) -> None:
    """Inference (serial and under MPI)."""
    inf = sub.add_parser("infer", help="Graph Challenge inference (serial, or under mpiexec with --partition)")
    inf.add_argument("network")
    inf.add_argument("images")
    inf.add_argument("-o", "--output", required=True, help="categories TSV (1-based ids of surviving images)")
    inf.add_argument("--activations", default=None, help="also write final activations to this HDF5 file")
    inf.add_argument("--partition", default=None)
    inf.add_argument("--mode", default="row-wise", choices=["row-wise", "data-parallel"],
                     help="data-parallel: every rank holds the whole network and takes 1/K of each batch's images")
    inf.add_argument("--batch-size", type=int, default=4096, help="images read and sent at a time (all ranks work on each)")
    inf.add_argument("--exchange", default="p2p", choices=["p2p", "neighbor"],
                     help="row-wise transport: non-blocking point-to-point or MPI-3 neighbourhood collectives")
    inf.add_argument("--stream-layers", action="store_true",
                     help="row-wise: read each layer's rows when the pass reaches it and drop them after "
                          "(a rank holds two layers at most, not its share of the network; the file is read once per batch "
                          "and the reading is timed; serial inference always reads one layer at a time)")
    inf.add_argument("--metrics", default=None)
    inf.add_argument("--truth", default=None, help="categories file to compare against")
    inf.set_defaults(func=cmd_infer, checks_own_outputs=True)



def _partition_commands(sub) -> None:
    """Stages 2-3: hypergraph, partitions, volume, bound."""
    h = sub.add_parser("hypergraph", help="write the hypergraph model in hMETIS format")
    h.add_argument("network")
    h.add_argument("-o", "--output", required=True)
    h.set_defaults(func=cmd_hypergraph)

    from .partition import METHODS
    from .partitioner import BACKENDS, PRESETS

    pa = sub.add_parser("partition", help="row-wise partition balanced in every layer")
    pa.add_argument("network")
    pa.add_argument("-k", type=int, required=True, help="number of processes K")
    pa.add_argument("--method", default="hypergraph", choices=METHODS)
    pa.add_argument("--epsilon", type=float, default=0.03, help="allowed imbalance per layer (default 0.03)")
    pa.add_argument("--seed", type=int, default=0)
    pa.add_argument("--passes", type=int, default=1, help="hypergraph: refinement passes over the layers")
    pa.add_argument("--preset", default="quality", choices=PRESETS,
                    help="Mt-KaHyPar preset for the per-layer subproblems (quality: as fast as default here, ~1%% less volume)")
    pa.add_argument("--backend", default="mtkahypar", choices=BACKENDS,
                    help="partitioner of the per-layer subproblems (kahypar: slower, spdnn's configuration file)")
    pa.add_argument("--threads", type=int, default=1, help="Mt-KaHyPar threads (deterministic preset: same result)")
    pa.add_argument("--jobs", type=int, default=1,
                    help="hypergraph: processes for the sweep, candidates and refinement (same jobs, same result)")
    pa.add_argument("-o", "--output", required=True, help="partition file; metrics go to OUTPUT.json")
    pa.set_defaults(func=cmd_partition)

    v = sub.add_parser("volume", help="communication volume and balance of a partition (JSON)")
    v.add_argument("network")
    v.add_argument("partition")
    v.add_argument("-k", type=int, default=None, help="number of parts (default: max id + 1, said on stderr)")
    v.add_argument("--epsilon", type=float, default=0.03)
    v.set_defaults(func=cmd_volume)

    b = sub.add_parser("bound", help="lower bound on the forward volume of any per-layer balanced partition")
    b.add_argument("network")
    b.add_argument("-k", type=_ints, required=True, help="number(s) of processes, e.g. 8 or 2,8,32")
    b.add_argument("--epsilon", type=float, default=0.03)
    b.add_argument("--iterations", type=int, default=300, help="subgradient steps on the coverage multipliers")
    b.add_argument("--max-seconds", type=float, default=None,
                   help="per K: past it while building tables, report null and why (exit 0); in the steps, the best so far")
    b.add_argument("--max-memory", type=float, default=None,
                   help="GB per K, of DP tables and of the process's resident memory (checked after each "
                        "layer): past it, report null and why (exit 0)")
    b.add_argument("--semidefinite", action=argparse.BooleanOptionalAction, default=True,
                   help="also the semidefinite bound (README, \"Lower bound\"): found once, at the first K, in what is "
                        "left of its budgets; the larger of the two is reported")
    b.add_argument("--certificate", default=None,
                   help="read the semidefinite certificate from this file (`spdnn certificate`) instead of finding it")
    b.add_argument("--prices", action=argparse.BooleanOptionalAction, default=True,
                   help="also the class-count bound with alignment prices (a second pass over the layer tables; "
                        "the larger is reported); --no-prices: the first pass only, half the time")
    b.add_argument("--threads", type=_positive_int, default=None,
                   help="threads for the layer tables (default: the CPUs this process may use); the same bound "
                        "on any number")
    b.set_defaults(func=cmd_bound)

    c = sub.add_parser("certificate", help="the semidefinite bound's certificate, found once for every K (JSON file)")
    c.add_argument("network")
    c.add_argument("--epsilon", type=float, default=0.03, help="the balance its multipliers are tuned for")
    c.add_argument("--max-seconds", type=float, default=None,
                   help="past it, the file holds the reason instead of a certificate (exit 0)")
    c.add_argument("--max-memory", type=float, default=None, help="GB of resident memory, checked after each layer")
    c.add_argument("-o", "--output", required=True)
    c.set_defaults(func=cmd_certificate)



def _train_commands(sub) -> None:
    """Stage 4: training under MPI, and the recipe's trainable network."""
    t = sub.add_parser("train", help="SGD under mpiexec: row-wise (--partition) or --mode data-parallel")
    t.add_argument("network")
    t.add_argument("--partition", default=None)
    t.add_argument("--mode", default="row-wise", choices=["row-wise", "data-parallel"])
    t.add_argument("--dataset", default="digits")
    t.add_argument("--data", default=None, help=".npz with X (samples × input width) and y")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=32, help="global batch size")
    t.add_argument("--lr", type=float, default=0.01, help="learning rate (the peak, with --lr-schedule cosine)")
    t.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                   help="cosine: linear warm-up over 5%% of the steps, then cosine decay to 0 (the recipe)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--loss", default="cross-entropy", choices=["cross-entropy", "mse"])
    t.add_argument("--test-fraction", type=_fraction, default=None,
                   help="of the samples, held out as the test set (default 0.2: datasets.TEST_FRACTION)")
    t.add_argument("--exchange", default="p2p", choices=["p2p", "neighbor"],
                   help="row-wise transport: non-blocking point-to-point or MPI-3 neighbourhood collectives")
    t.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (OUTPUT.ckpt.h5)")
    t.add_argument("--stop-after", type=int, default=0,
                   help="stop after this many steps, as a time limit would, leaving a checkpoint to resume from")
    t.add_argument("--max-memory", type=float, default=None,
                   help="GiB per rank the run may use (default: the node's available memory / its ranks); "
                        "a run whose activations would not fit stops up front")
    t.add_argument("--metrics", default=None)
    t.add_argument("-o", "--output", required=True)
    t.set_defaults(func=cmd_train, checks_own_outputs=True, post=_held_out_default)

    ri = sub.add_parser("reinit", help="the training recipe's network: same pattern, He-initialised weights, zero biases")
    ri.add_argument("network")
    ri.add_argument("--init", default="he", choices=["he"])
    ri.add_argument("--seed", type=int, default=0)
    ri.add_argument("-o", "--output", required=True)
    ri.set_defaults(func=cmd_reinit)


def _prune_commands(sub) -> None:
    """The pruning stage and your own models."""
    td = sub.add_parser("train-dense", help="train a dense MLP (NumPy) to prune later")
    td.add_argument("--dataset", default="digits")
    td.add_argument("--data", default=None, help=".npz with X, y")
    td.add_argument("--widths", type=_ints, required=True, help="e.g. 64,512,512,512,10")
    td.add_argument("--epochs", type=int, default=30)
    td.add_argument("--batch-size", type=int, default=32)
    td.add_argument("--lr", type=float, default=0.05)
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("-o", "--output", required=True)
    td.set_defaults(func=cmd_train_dense)

    pr = sub.add_parser("prune", help="magnitude pruning with fine-tuning (pattern fixed)")
    pr.add_argument("dense")
    pr.add_argument("--density", type=float, required=True, help="fraction of weights kept, in (0, 1]")
    pr.add_argument("--scope", default="layer", choices=["layer", "global"])
    pr.add_argument("--schedule", default="iterative", choices=["oneshot", "iterative"])
    pr.add_argument("--steps", type=int, default=4, help="iterative: pruning rounds")
    pr.add_argument("--finetune-epochs", type=int, default=5, help="epochs of fine-tuning after each round")
    pr.add_argument("--lr", type=float, default=0.02)
    pr.add_argument("--dataset", default=None, help="default: the dense file's recorded dataset")
    pr.add_argument("--data", default=None)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("-o", "--output", required=True)
    pr.set_defaults(func=cmd_prune)

    nz = sub.add_parser("import-npz", help="your own model: W1..WL (+ b1..bL) from an .npz")
    nz.add_argument("npz")
    nz.add_argument("--transpose", action="store_true", help="arrays are (in × out), e.g. Keras kernels")
    nz.add_argument("-o", "--output", required=True)
    nz.set_defaults(func=cmd_import_npz)

    mx = sub.add_parser("import-mtx", help="your own model: one Matrix Market file per layer")
    mx.add_argument("mtx", nargs="+")
    mx.add_argument("--transpose", action="store_true")
    mx.add_argument("-o", "--output", required=True)
    mx.set_defaults(func=cmd_import_mtx)

    ev = sub.add_parser("evaluate", help="test accuracy (serial, or under mpiexec with --partition)")
    ev.add_argument("network")
    ev.add_argument("--dataset", default="digits")
    ev.add_argument("--data", default=None)
    ev.add_argument("--partition", default=None)
    ev.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    ev.add_argument("--test-fraction", type=_fraction, default=None, help="as in the training run (its test set)")
    ev.set_defaults(func=cmd_evaluate, checks_own_outputs=True, post=_held_out_default)



def _results_commands(sub) -> None:
    """Stage 5: tables, cost model, figures."""
    ag = sub.add_parser("aggregate", help="per-partition and per-run JSON → CSV tables")
    ag.add_argument("--partitions", nargs="*", default=[])
    ag.add_argument("--bounds", nargs="*", default=[], help="`spdnn bound` outputs (results/NET/bounds/kK.json)")
    ag.add_argument("--runs", nargs="*", default=[])
    ag.add_argument("--inference", nargs="*", default=[], help="serial inference metrics (results/NET/inference/serial.json)")
    ag.add_argument("--inference-out", default=None)
    ag.add_argument("--partitions-out", required=True)
    ag.add_argument("--runs-out", required=True)
    ag.set_defaults(func=cmd_aggregate)

    cm = sub.add_parser("costmodel", help="fit the latency-bandwidth model and predict step times")
    cm.add_argument("runs", help="runs.csv")
    cm.add_argument("--partitions", nargs="*", default=[])
    cm.add_argument("--batch-sizes", type=_ints, default=[1, 16, 256])
    cm.add_argument("--max-fit-k", type=int, default=2, help="fit on runs with K up to this (timings mean something)")
    for name in ("gamma-block", "gamma-scattered", "alpha", "beta", "delta", "mu"):
        cm.add_argument(f"--{name}", type=float, default=None, help="use this value instead of fitting")
    cm.add_argument("--params", required=True, help="JSON with the parameters used")
    cm.add_argument("-o", "--output", required=True)
    cm.set_defaults(func=cmd_costmodel)

    pl = sub.add_parser("plots", help="figures from the results tables")
    pl.add_argument("--partitions", required=True)
    pl.add_argument("--runs", required=True)
    pl.add_argument("--predictions", required=True)
    pl.add_argument("--results", default="results")
    pl.add_argument("outdir")
    pl.set_defaults(func=cmd_plots)


def _held_out_default(a):
    """The default test fraction, resolved before the run: a checkpoint's run key and the metrics
    carry the number, so a run that gives the default and one that does not are the same run."""
    if a.test_fraction is None:
        from .datasets import TEST_FRACTION

        a.test_fraction = TEST_FRACTION


def _radix_defaults(a):
    if a.kind == "radixnet" and a.ymax is None:
        a.ymax = 32.0


# The file outputs a command may be given; checked writable before its work (`atomic.output_error`).
# The MPI commands (checks_own_outputs) check theirs themselves: every rank must agree
# (`collective.agree_outputs`; serial `infer` too).
OUTPUT_ARGS = ("output", "metrics", "activations")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "post", None):
        args.post(args)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from .host import reuse_freed_memory

    reuse_freed_memory()  # large temporaries from the heap, not fresh page-faulting mappings
    # SIGTERM (Snakemake or SLURM cancelling a job) unwinds like Ctrl-C: `finally` blocks stop worker
    # processes and remove temporary outputs. MPI commands replace this with their own handling.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if not getattr(args, "checks_own_outputs", False):
            check_outputs(*(getattr(args, name, None) for name in OUTPUT_ARGS))
        args.func(args)
    except UserError as e:
        if _rank() == 0:  # under MPI every rank raises the same error; one line is enough
            print(f"spdnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spdnn {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    except WorkerError as e:
        print(f"spdnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _rank() -> int:
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi.COMM_WORLD.Get_rank() if mpi is not None else 0


if __name__ == "__main__":
    sys.exit(main())
