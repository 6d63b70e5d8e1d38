"""spdnn against its peers, measured in one run on the same inputs (one core unless stated).

    python benchmarks/run.py [--gc PATH/neuron1024.tar.gz] [--steps 3] [--out benchmarks/out] [--inference-only]
    python benchmarks/run.py --partitions [--ks 2,8,32] [--partition-file F]   # partitioners table (minutes)

Tables (printed, and written as CSV under --out):
  inference: Graph Challenge semantics on the 1024×120 network (the real one from --gc or
             ../shared when present, else a generated RadiX-Net), 1,797 digits inputs binarised
             at 0.9 (a real fraction dies); edges/s = inputs × Σ nnz / seconds; every row must give
             the same categories and final activations as spdnn serial. The same on a random
             network of its shape and nonzeros (32 a row, He weights, bias 0: spdnn's CSR path,
             and no sample dies).
  training:  step time (forward + backward + update) at batch 16, 256: spdnn vs PyTorch sparse
             autograd (optional: pip install torch==2.13.0), same start weights and data, on the
             inference network (dense blocks) and on a random network of its shape and nonzeros
             (32 a row: spdnn's CSR path); each row's first update checked against spdnn's.
  machine:   memory bandwidth and float32 FMA rate of this core, and how far the kernel is from them.
Each row runs in its own process, so peak RSS is that row's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from scale import run_measured

HERE = Path(__file__).resolve().parent
SHARED_GC = HERE.parent.parent / "shared" / "data" / "graphchallenge" / "neuron1024.tar.gz"
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- inference implementations
# Each implementation is (prepare, run): prepare converts formats (not timed), run is timed and
# returns (categories, final activations as images × n_L). "Fair" peers do spdnn's algorithmic
# work: dead samples dropped as they die, bias only on nonzeros, clip in place, one thread.
def _dense_inputs(images):
    return np.ascontiguousarray(images.toarray().T, dtype=np.float32)  # (n_0, B)


def _finish(n_images, n_out, ids, x):
    act = np.zeros((n_images, n_out), np.float32)
    act[ids] = x.T
    return np.flatnonzero(act.any(axis=1)), act


def prep_spdnn(net, images):
    from spdnn.kernels import SparseLayer

    return [SparseLayer(w) for w in net.layers], _dense_inputs(images)


def run_spdnn(net, state):
    """spdnn's kernel (kernels.SparseLayer.gc): fused SpMM + bias + clip + alive flags, rows of a group together."""
    from spdnn.reference import drop_dead

    kernels, x = state
    n_images = x.shape[1]
    ids = np.arange(n_images)
    for kernel, b in zip(kernels, net.biases):
        x, alive = kernel.gc(b, x, net.ymax)
        x, ids = drop_dead(x, ids, alive)
        if not ids.size:
            break
    return _finish(n_images, net.widths[-1], ids, x)


def prep_scipy(net, images):
    return [w.astype(np.float32) for w in net.layers], _dense_inputs(images)


def run_scipy(net, state, drop=True):
    """scipy CSR × dense, as a user would write it: in-place bias on nonzeros and clip, dead samples dropped."""
    layers, x = state
    n_images = x.shape[1]
    ids = np.arange(n_images)
    for w, b in zip(layers, net.biases):
        z = w @ x
        np.add(z, b[:, None], out=z, where=z != 0)
        np.clip(z, 0.0, net.ymax, out=z)
        if drop:
            alive = z.any(axis=0)
            if not alive.all():
                z, ids = np.ascontiguousarray(z[:, alive]), ids[alive]
            if not ids.size:
                x = z
                break
        x = z
    return _finish(n_images, net.widths[-1], ids, x)


def run_scipy_naive(net, state):
    """The same without dropping dead samples (every layer computes all inputs)."""
    return run_scipy(net, state, drop=False)


def prep_scipy_csr_csr(net, images):
    import scipy.sparse as sp

    return [w.T.tocsr().astype(np.float32) for w in net.layers], sp.csr_matrix(images, dtype=np.float32)


def run_scipy_csr_csr(net, state):
    """The challenge algorithm as written: sparse Y (images × N) times sparse W_tsv (dead rows are empty)."""
    wts, y = state
    for w, b in zip(wts, net.biases):
        z = y @ w
        z.data += b[z.indices]
        z.data = np.minimum(z.data, net.ymax)
        z.data[z.data < 0] = 0
        z.eliminate_zeros()
        y = z
    act = y.toarray()
    return np.flatnonzero(act.any(axis=1)), act


def prep_graphblas(net, images):
    import graphblas as gb

    gb.ss.config["nthreads"] = 1
    coo = images.tocoo()
    y = gb.Matrix.from_coo(coo.row, coo.col, coo.data.astype(np.float32), nrows=images.shape[0], ncols=images.shape[1])
    ws = []
    for w, b in zip(net.layers, net.biases):
        if not np.all(b == b[0]):
            raise RuntimeError("the GraphBLAS peer takes one bias per layer (the challenge's networks)")
        c = w.T.tocoo()
        ws.append(gb.Matrix.from_coo(c.row, c.col, c.data.astype(np.float32), nrows=c.shape[0], ncols=c.shape[1]))
    return ws, y


def run_graphblas(net, state):
    """SuiteSparse:GraphBLAS (python-graphblas): Y = Y·W (plus_times), then in-place apply/select/apply on
    the stored entries only; a dead sample is an empty row of Y and costs nothing."""
    from graphblas import binary, select, semiring

    ws, y = state
    for w, b in zip(ws, net.biases):
        y = y.mxm(w, semiring.plus_times).new()
        y << y.apply(binary.plus, right=float(b[0]))
        y << y.select(select.valuegt, 0)
        y << y.apply(binary.min, right=float(net.ymax))
    r, c, v = y.to_coo()
    act = np.zeros((y.nrows, y.ncols), np.float32)
    act[r, c] = v
    return np.flatnonzero(act.any(axis=1)), act


def prep_torch(net, images):
    import torch

    torch.set_num_threads(1)
    ws = [torch.sparse_csr_tensor(torch.from_numpy(w.indptr.astype(np.int64)), torch.from_numpy(w.indices.astype(np.int64)),
                                  torch.from_numpy(w.data.astype(np.float32)), size=w.shape) for w in net.layers]
    bs = [torch.from_numpy(b.astype(np.float32))[:, None] for b in net.biases]
    return ws, bs, torch.from_numpy(_dense_inputs(images))


def run_torch(net, state, drop=True):
    """PyTorch sparse CSR × dense (MKL/native), in place: bias added, zeros put back, clamp_; dead samples dropped."""
    import torch

    ws, bs, x = state
    n_images = x.shape[1]
    ids = torch.arange(n_images)
    with torch.no_grad():
        for w, b in zip(ws, bs):
            z = w @ x
            zero = z == 0
            z.add_(b).masked_fill_(zero, 0.0).clamp_(0.0, float(net.ymax))
            if drop:
                alive = z.any(dim=0)
                if not bool(alive.all()):
                    z, ids = z[:, alive].contiguous(), ids[alive]
                if not ids.numel():
                    x = z
                    break
            x = z
    return _finish(n_images, net.widths[-1], ids.numpy(), x.numpy())


def run_torch_naive(net, state):
    return run_torch(net, state, drop=False)


# name: (prepare, run, fair?)
INFER = {
    "spdnn serial": (prep_spdnn, run_spdnn, True),
    "scipy CSR × dense": (prep_scipy, run_scipy, True),
    "PyTorch sparse CSR × dense": (prep_torch, run_torch, True),
    "python-graphblas (SuiteSparse)": (prep_graphblas, run_graphblas, True),
    "naive: scipy CSR×CSR (challenge algorithm)": (prep_scipy_csr_csr, run_scipy_csr_csr, False),
    "naive: scipy CSR × dense, no dead-sample drop": (prep_scipy, run_scipy_naive, False),
    "naive: PyTorch CSR × dense, no dead-sample drop": (prep_torch, run_torch_naive, False),
}


# ---------------------------------------------------------------- training implementations
# Each trainer returns (seconds of the timed steps, weights after the first step, weights after
# the last): the first step, from the same start weights for every row, is where a row's arithmetic
# is checked (see `training_rows`); the last is compared too, for information.
def train_spdnn(net, x, y, batch, steps, lr):
    from spdnn.reference import sgd_step

    def step(xb, yb):
        sgd_step(net, xb, yb, lr)

    return _timed_steps(step, lambda xb, yb: (xb, yb), lambda: [w.data.copy() for w in net.layers], x, y, batch, steps)


def _timed_steps(step, convert, weights, x, y, batch, steps):
    """Time `step(xb, yb)` (steps + 1 calls, the first a warm-up, untimed), each batch converted by
    `convert(xb, yb)` outside the timer; `weights()` snapshots the values after the first and the last."""
    times, first = [], None
    for s in range(steps + 1):
        ids = np.arange(s * batch, (s + 1) * batch) % len(y)
        xb, yb = convert(np.ascontiguousarray(x[ids].T), y[ids])
        t0 = time.perf_counter()
        step(xb, yb)
        times.append(time.perf_counter() - t0)
        if s == 0:
            first = weights()
    return times[1:], first, weights()


def _torch_loop(step, weights, x, y, batch, steps):
    """`_timed_steps` with PyTorch tensors (labels int64)."""
    import torch

    return _timed_steps(step, lambda xb, yb: (torch.from_numpy(xb), torch.from_numpy(yb.astype(np.int64))), weights,
                        x, y, batch, steps)


def _torch_logits_loss(h, yb):
    import torch

    return torch.nn.functional.cross_entropy(h.T, yb)  # mean over the batch: spdnn's loss / B


def train_torch_coo(net, x, y, batch, steps, lr, densify=False):
    """PyTorch autograd through torch.sparse.mm on COO weights: the gradient of a sparse weight is
    a sparse tensor on its pattern; its values update the weight's values directly (densify=True:
    the naive path, the gradient scattered into a dense matrix and gathered back)."""
    import torch

    torch.set_num_threads(1)
    coos = [w.tocoo() for w in net.layers]
    idx = [torch.from_numpy(np.vstack([c.row, c.col]).astype(np.int64)) for c in coos]
    vals = [torch.from_numpy(c.data.astype(np.float32).copy()) for c in coos]
    biases = [torch.from_numpy(b.astype(np.float32).copy()) for b in net.biases]
    ymax = float(net.ymax)

    def step(xb, yb):
        params = [torch.sparse_coo_tensor(i, v, w.shape, is_coalesced=True).requires_grad_(True)
                  for i, v, w in zip(idx, vals, net.layers)]
        bs = [b.requires_grad_(True) for b in biases]
        h = xb
        for k, (w, b) in enumerate(zip(params, bs)):
            z = torch.sparse.mm(w, h) + b[:, None]
            h = z.clamp(0, ymax) if k < len(params) - 1 else z
        _torch_logits_loss(h, yb).backward()
        with torch.no_grad():
            for k, w in enumerate(params):
                g = w.grad.coalesce()
                if densify:
                    vals[k] -= lr * g.to_dense()[tuple(idx[k])]
                else:
                    assert torch.equal(g.indices(), idx[k])  # same pattern, same order: values line up
                    vals[k] -= lr * g.values()
            for b in bs:
                b -= lr * b.grad
                b.grad = None

    return _torch_loop(step, lambda: [v.numpy().copy() for v in vals], x, y, batch, steps)


def train_torch_coo_dense(net, x, y, batch, steps, lr):
    return train_torch_coo(net, x, y, batch, steps, lr, densify=True)


def train_torch_csr(net, x, y, batch, steps, lr):
    """PyTorch by hand on CSR weights: forward W @ h (CSR × dense), backward δ_{k−1} = Wᵀ δ_k
    (a CSR of Wᵀ whose values are gathered from W's each step), weight gradient only on the
    pattern with torch.sparse.sampled_addmm (an SDDMM), in place on W's values."""
    import scipy.sparse as sp
    import torch

    torch.set_num_threads(1)
    ymax = float(net.ymax)
    crow = [torch.from_numpy(w.indptr.astype(np.int64)) for w in net.layers]
    col = [torch.from_numpy(w.indices.astype(np.int64)) for w in net.layers]
    vals = [torch.from_numpy(w.data.astype(np.float32).copy()) for w in net.layers]
    biases = [torch.from_numpy(b.astype(np.float32).copy()) for b in net.biases]
    transposed = []  # (crow, col, position in W's values) of Wᵀ: conversions, not timed
    for w in net.layers:
        t = sp.csr_matrix((np.arange(w.nnz, dtype=np.float64) + 1, w.indices, w.indptr), shape=w.shape).T.tocsr()
        transposed.append((torch.from_numpy(t.indptr.astype(np.int64)), torch.from_numpy(t.indices.astype(np.int64)),
                           torch.from_numpy(t.data.astype(np.int64) - 1)))
    last = len(net.layers) - 1

    def step(xb, yb):
        with torch.no_grad():
            hs, zs, h = [], [], xb
            for k, w in enumerate(net.layers):
                z = torch.sparse_csr_tensor(crow[k], col[k], vals[k], size=w.shape) @ h
                z.add_(biases[k][:, None])
                hs.append(h)
                zs.append(z)
                h = z.clamp(0, ymax) if k < last else z
        logits = h.requires_grad_(True)
        _torch_logits_loss(logits, yb).backward()
        delta = logits.grad
        with torch.no_grad():
            for k in range(last, -1, -1):
                w = net.layers[k]
                pattern = torch.sparse_csr_tensor(crow[k], col[k], vals[k], size=w.shape)
                grad = torch.sparse.sampled_addmm(pattern, delta, hs[k].T, beta=0.0)
                grad_b = delta.sum(dim=1)
                if k > 0:
                    tc, ti, tp = transposed[k]
                    wt = torch.sparse_csr_tensor(tc, ti, vals[k][tp], size=(w.shape[1], w.shape[0]))
                    z = zs[k - 1]
                    delta = (wt @ delta).mul_(((z > 0) & (z < ymax)).to(delta.dtype))
                vals[k] -= lr * grad.values()
                biases[k] -= lr * grad_b

    return _torch_loop(step, lambda: [v.numpy().copy() for v in vals], x, y, batch, steps)


def train_torch_masked_dense(net, x, y, batch, steps, lr):
    """PyTorch autograd on dense weights times a fixed 0/1 mask (dense GEMMs; the gradient is masked)."""
    import torch

    torch.set_num_threads(1)
    ws = [torch.from_numpy(w.toarray().astype(np.float32)).requires_grad_(True) for w in net.layers]
    masks = [torch.from_numpy(_pattern_dense(w).astype(np.float32)) for w in net.layers]
    biases = [torch.from_numpy(b.astype(np.float32).copy()).requires_grad_(True) for b in net.biases]
    ymax = float(net.ymax)

    def step(xb, yb):
        h = xb
        for k, (w, m, b) in enumerate(zip(ws, masks, biases)):
            z = (w * m) @ h + b[:, None]
            h = z.clamp(0, ymax) if k < len(ws) - 1 else z
        _torch_logits_loss(h, yb).backward()
        with torch.no_grad():
            for p in ws + biases:
                p -= lr * p.grad
                p.grad = None

    return _torch_loop(step, lambda: [_on_pattern(w.detach().numpy(), ref) for w, ref in zip(ws, net.layers)],
                       x, y, batch, steps)


def _pattern_dense(w):
    p = np.zeros(w.shape, bool)
    p[np.repeat(np.arange(w.shape[0]), np.diff(w.indptr)), w.indices] = True
    return p


def _on_pattern(dense, w):
    """Values of a dense matrix at w's stored entries, in w's CSR order."""
    return dense[np.repeat(np.arange(w.shape[0]), np.diff(w.indptr)), w.indices].copy()


TRAIN = {"spdnn serial": (train_spdnn, True),
         "PyTorch CSR, sampled_addmm gradient (by hand)": (train_torch_csr, True),
         "PyTorch sparse COO autograd": (train_torch_coo, True),
         "PyTorch masked dense weight": (train_torch_masked_dense, True),
         "naive: PyTorch COO, gradient densified": (train_torch_coo_dense, False)}


# ---------------------------------------------------------------- one row, in its own process
def run_one(kind, name, args):
    from spdnn.host import reuse_freed_memory

    reuse_freed_memory()  # every row, peers included: the same allocator behaviour as spdnn's commands

    from spdnn.datasets import digits_images, load_dataset
    from spdnn.network import read_network

    net = read_network(args.net)
    out = {"name": name}
    if kind == "infer":
        images = digits_images(net.widths[0], 0.9)
        prepare, run, _ = INFER[name]
        t0 = time.perf_counter()
        state = prepare(net, images)
        out["prepare_seconds"] = time.perf_counter() - t0
        run(net, state)  # warm-up (compilation, caches), not timed
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cats, act = run(net, state)
            times.append(time.perf_counter() - t0)
        out["seconds"] = float(np.median(times))
        np.savez(args.result, cats=cats, act=act)
        out["edges_per_second"] = images.shape[0] * net.nnz / out["seconds"]
        out["survivors"] = int(cats.size)
    else:
        data = load_dataset("digits", None, net.widths[0], 0)
        start = [w.data.copy() for w in net.layers]
        times, first, last = TRAIN[name][0](net, data.x_train, data.y_train, args.batch, args.steps, 0.01)
        out["step_seconds"] = float(np.median(times))
        np.savez(args.result, **{f"{tag}{i}": w for tag, ws in (("start", start), ("first", first), ("last", last))
                                 for i, w in enumerate(ws)})
    print(json.dumps(out))


def spawn(kind, name, net_path, tmp, **extra):
    result = Path(tmp) / f"{kind}-{net_path.stem}-{abs(hash((name, tuple(extra.items()))))}.npz"
    cmd = [sys.executable, __file__, "--one", kind, name, "--net", str(net_path), "--result", str(result)]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    # Peak RSS sampled from outside (scale.run_measured): the child's own ru_maxrss would start at
    # this process's RSS, which Linux carries across fork and exec
    run = run_measured(cmd, 24 * 3600, result.with_suffix(".log"))
    if run["status"] != "ok":
        return None, run["status"]
    return {**json.loads(run["stdout"].strip().splitlines()[-1]), "peak_rss_mb": run["peak_rss_mb"]}, result


def spawn_mpi(k, net_path, images_path, part_path, tmp):
    """`spdnn infer` under mpiexec -n k: row-wise on `part_path`, or data-parallel when it is None."""
    tag = f"{net_path.stem}-mpi{k}{'' if part_path else '-dp'}"
    out, metrics, act = Path(tmp) / f"cats-{tag}.tsv", Path(tmp) / f"{tag}.json", Path(tmp) / f"act-{tag}.h5"
    mode = ["--partition", str(part_path)] if part_path else ["--mode", "data-parallel"]
    cmd = [str(BIN / "mpiexec"), "-n", str(k), str(BIN / "spdnn"), "infer", str(net_path), str(images_path), *mode,
           "-o", str(out), "--metrics", str(metrics), "--activations", str(act), "--batch-size", "1797"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1]
    m = json.loads(metrics.read_text())
    import h5py

    from spdnn.graphchallenge import read_categories

    with h5py.File(act) as f:
        a = f["activations"][:]
    res = Path(tmp) / f"{tag}.npz"
    np.savez(res, cats=read_categories(out), act=a)
    return {"seconds": m["seconds"], "edges_per_second": m["edges_per_second"],
            "survivors": m["survivors"], "peak_rss_mb": sum(r["peak_rss_mb"] for r in m["per_rank"])}, res


def useful_work(net, images) -> dict:
    """The work every fair row does: Σ over layers of nnz × samples alive entering the layer, and
    the bytes of activation blocks read and written (float32), from one pass of spdnn's kernel."""
    from spdnn.kernels import SparseLayer

    x = np.ascontiguousarray(images.toarray().T, dtype=np.float32)
    edge_samples = act_bytes = 0
    for w, b in zip(net.layers, net.biases):
        edge_samples += w.nnz * x.shape[1]
        act_bytes += 4 * x.shape[1] * (w.shape[0] + w.shape[1])
        x, alive = SparseLayer(w).gc(b, x, net.ymax)
        x = np.ascontiguousarray(x[:, alive])
        if not x.shape[1]:
            break
    return {"edge_samples": edge_samples, "activation_bytes": act_bytes}


# ---------------------------------------------------------------- machine limits
def machine_limits():
    a = np.ones(64 * 2**20 // 4, np.float32)  # 64 MiB, beyond the caches
    b = np.empty_like(a)
    t = min(_timed(lambda: np.copyto(b, a)) for _ in range(5))
    bandwidth = 2 * a.nbytes / t  # read + write
    m = np.ones((1024, 1024), np.float32)
    t = min(_timed(lambda: m @ m) for _ in range(3))
    flops = 2 * 1024**3 / t
    return bandwidth, flops


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def table(rows, cols):
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    print(line + "\n" + "-" * len(line))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
    print()


def fmt(x, spec=".3g"):
    return "" if x is None else format(x, spec)


# ---------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gc", default=None, help="neuron1024.tar.gz (default: ../shared copy if present, else generated)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per batch size (after one warm-up)")
    p.add_argument("--out", default=str(HERE / "out"))
    p.add_argument("--partitions", action="store_true", help="run the partition quality table instead")
    p.add_argument("--ks", default="2,8,32")
    p.add_argument("--big", action="store_true", help="--partitions: also N=16384 in the scaling table")
    p.add_argument("--no-scaling", action="store_true", help="--partitions: the partitioners table only")
    p.add_argument("--partition-file", help="--partitions: also evaluate this partition file (yours) at each K it fits")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5, help="timed inference runs per row (median), after a warm-up")
    p.add_argument("--inference-only", action="store_true", help="the inference tables only (about 7 minutes)")
    args = p.parse_args()
    if args.one:
        run_one(*args.one, args)
        return
    import pandas as pd

    from spdnn.datasets import digits_images
    from spdnn.generate import radixnet
    from spdnn.graphchallenge import import_gc
    from spdnn.images import write_images
    from spdnn.network import write_network

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="spdnn-bench-")
    gc = args.gc or (str(SHARED_GC) if SHARED_GC.exists() else None)
    net = import_gc(gc) if gc else radixnet(1024, 120, seed=0)
    net_name = "Graph Challenge 1024×120 (real)" if gc else "RadiX-Net 1024×120 (generated, seed 0)"
    net_path = Path(tmp) / "net.h5"
    write_network(net, net_path)
    if args.partitions:
        from partition_quality import run as run_partitions

        run_partitions(net, net_name, net_path, [int(k) for k in args.ks.split(",")], out, big=args.big,
                       partition_file=args.partition_file, **({"sizes": ()} if args.no_scaling else {}))
        return
    print(f"network: {net_name}, {net.nnz} weights; inputs: 1,797 digits binarised at 0.9\n")
    # A random network of the same shape and nonzeros (32 a row, He weights, bias 0, no cap): its
    # layers take spdnn's CSR path (kernels.py), the GC network's the dense-block one; no sample
    # dies in it, so every layer does the whole batch's work.
    from spdnn.generate import random_sparse

    rnd = random_sparse(net.widths, 32, seed=0, init="he")
    rnd_path = Path(tmp) / "random.h5"
    write_network(rnd, rnd_path)
    networks = ((net_name, net, net_path), ("random, same shape, 32 a row", rnd, rnd_path))
    images_path = Path(tmp) / "images.tsv"
    write_images(digits_images(1024, 0.9), images_path)
    bw, flops = machine_limits()
    rows, notes = [], []
    for label, infer_net, path in networks:
        here, note = inference_rows(label, infer_net, path, images_path, tmp, args.repeats, bw, flops)
        rows += here
        notes.append(note)
    print("Inference (Graph Challenge semantics, one core per process; median of "
          f"{args.repeats} runs after a warm-up, MPI rows of {args.repeats} commands; prep = format conversion, not "
          "timed; peak MB of MPI rows: sum over ranks, the largest run's)")
    print("\n".join(notes))
    table(rows, ["network", "name", "fair", "seconds", "× best fair peer", "GFLOP/s", "% FMA", "% bandwidth", "prep s",
                 "survivors", "peak MB", "check"])
    print(f"Machine (one core): copy bandwidth {bw / 1e9:.1f} GB/s, float32 matmul {flops / 1e9:.1f} GFLOP/s. "
          "GFLOP/s counts 2 flops per edge and *alive* sample (the work every fair row does); % bandwidth: "
          "reading each layer's input block and writing its output block once, at the copy bandwidth.\n")
    pd.DataFrame(rows).to_csv(out / "inference.csv", index=False)
    if args.inference_only:
        print(f"CSV: {out}/inference.csv")
        return

    trows = []
    for label, train_net, path in networks:
        trows += training_rows(label, train_net, path, tmp, args.steps, flops)
    print(f"Training step (forward + backward + update, one process, one thread, {args.steps} timed steps after a "
          "warm-up, median; same start weights and data; check: the first step's update against spdnn's, "
          "the final weights for information)")
    table(trows, ["network", "batch", "name", "fair", "step ms", "samples/s", "× best fair peer", "GFLOP/s", "% FMA",
                  "peak MB", "check"])
    print("GFLOP/s counts 2 flops per weight and sample for each of W x, the weight gradient and Wᵀδ.")
    pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in trows]).to_csv(out / "training.csv", index=False)
    print(f"CSV: {out}/inference.csv, {out}/training.csv")


def inference_rows(label, net, net_path, images_path, tmp, repeats, bw, flops):
    """Every INFER row and spdnn under mpiexec -n 1, 2 (hypergraph partitions) on one network:
    (rows, a line naming the best fair peer and the work)."""
    from spdnn.datasets import digits_images
    from spdnn.partition import partition_network
    from spdnn.partition_io import write_partition

    work = useful_work(net, digits_images(net.widths[0], 0.9))
    rows, ref = [], None
    for name in INFER:
        res, path = spawn("infer", name, net_path, tmp, repeats=repeats)
        rows.append(_check(res, path, name, ref))
        rows[-1]["fair"] = INFER[name][2]
        if name == "spdnn serial" and res:
            ref = np.load(path)
    for k, method in ((1, "hypergraph"), (2, "hypergraph"), (2, None)):
        part_path = None
        if method:
            part_path = Path(tmp) / f"{net_path.stem}-k{k}.part"
            write_partition(partition_network(net.layers, net.widths, k, method, seed=0)[0], part_path)
        name = f"spdnn mpiexec -n {k} ({'row-wise' if method else 'data-parallel'})"
        # A command each time (MPI start-up and set-up are not timed; the first touch of its pages
        # is): the median of `repeats`, as the in-process rows', each run's outputs checked.
        runs = [_check(*spawn_mpi(k, net_path, images_path, part_path, tmp), name, ref) for _ in range(repeats)]
        bad = [r for r in runs if not r.get("seconds") or r["check"] not in ("reference", "same categories, activations")]
        row = bad[0] if bad else {**runs[0], "seconds": float(np.median([r["seconds"] for r in runs])),
                                  "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
        rows.append({**row, "name": name, "fair": True})
    fair_peers = [r for r in rows if r.get("seconds") and r["fair"] and not r["name"].startswith("spdnn")]
    best = min(fair_peers, key=lambda r: r["seconds"], default=None)
    best_seconds = best["seconds"] if best else None  # before the rows' seconds are formatted
    for r in rows:
        r["network"] = label
        if r.get("seconds"):
            if best_seconds:
                r["× best fair peer"] = fmt(best_seconds / r["seconds"], ".2f")
            r["GFLOP/s"] = fmt(2 * work["edge_samples"] / r["seconds"] / 1e9, ".2f")
            r["% FMA"] = fmt(100 * 2 * work["edge_samples"] / r["seconds"] / flops, ".1f")
            r["% bandwidth"] = fmt(100 * work["activation_bytes"] / r["seconds"] / bw, ".1f")
        r["seconds"] = fmt(r.get("seconds"), ".4f")
        r["prep s"] = fmt(r.get("prepare_seconds"), ".3f")
        r["peak MB"] = fmt(r.get("peak_rss_mb"), ".0f")
        r["fair"] = "yes" if r.get("fair") else "no (naive)"
    note = (f"{label}: best fair peer {best['name'] if best else '—'}; work {work['edge_samples']:.3g} edge-samples "
            f"(Σ_layers nnz × samples still alive), activation traffic ≥ {work['activation_bytes'] / 1e9:.2f} GB")
    return rows, note


def training_rows(label, net, net_path, tmp, steps, flops_peak) -> list[dict]:
    """Training-step rows of every TRAIN implementation on one network, batches 16 and 256."""
    trows = []
    for batch in (16, 256):
        ref_w = None
        for name, (_, fair) in TRAIN.items():
            res, path = spawn("train", name, net_path, tmp, batch=batch, steps=steps)
            if res is None:
                trows.append({"network": label, "batch": batch, "name": name, "check": f"skipped: {path}"})
                continue
            saved = np.load(path)
            ws = {tag: [saved[f"{tag}{i}"] for i in range(len(net.layers))] for tag in ("start", "first", "last")}
            ok = "reference" if ref_w is None else weights_check(ws, ref_w, steps + 1)
            ref_w = ref_w or ws
            flops = 2 * batch * (3 * net.nnz - net.layers[0].nnz)  # W x, δ xᵀ on the pattern, Wᵀ δ (not layer 1)
            trows.append({"network": label, "batch": batch, "name": name, "fair": "yes" if fair else "no (naive)",
                          "step ms": fmt(1e3 * res["step_seconds"], ".2f"),
                          "GFLOP/s": fmt(flops / res["step_seconds"] / 1e9, ".2f"),
                          "% FMA": fmt(100 * flops / res["step_seconds"] / flops_peak, ".1f"),
                          "samples/s": fmt(batch / res["step_seconds"], ".4g"), "peak MB": fmt(res["peak_rss_mb"], ".0f"),
                          "check": ok, "_s": res["step_seconds"], "_fair": fair})
        here = [r for r in trows if r["batch"] == batch and r.get("_s")]
        peers = [r for r in here if r["_fair"] and not r["name"].startswith("spdnn")]
        if peers:
            best = min(peers, key=lambda r: r["_s"])
            for r in here:
                r["× best fair peer"] = fmt(best["_s"] / r["_s"], ".2f")
    return trows


def _norm(arrays) -> float:
    return float(np.sqrt(sum(np.square(a, dtype=np.float64).sum() for a in arrays)))


def weights_check(ws, ref, n_steps) -> str:
    """A training row against spdnn's, as "first update a off, after n steps b apart": a is the
    distance of the row's first update (from the same start weights) to spdnn's, b that of the final
    weights, both relative to the norm of spdnn's update. The row fails (DIFFERENT) when a > 1 %.

    Why not 0: summed in another order, a pre-activation within rounding of 0 lands on ReLU's other
    side, which changes δ of every layer below it; on a random network at B = 256 a dense-weight
    forward disagrees with spdnn's in 5 signs of 3.1·10⁷ in the first step (0.1–0.2 % of the update),
    and later steps compound it (README.md, "Benchmarks"). A wrong gradient, mask,
    scale or learning rate is off by O(1)."""
    update = [f.astype(np.float64) - s for f, s in zip(ref["first"], ref["start"])]
    moved = _norm(b.astype(np.float64) - s for b, s in zip(ref["last"], ref["start"]))
    first = _norm(f - s - u for f, s, u in zip(ws["first"], ws["start"], update)) / _norm(update)
    last = _norm(a.astype(np.float64) - b for a, b in zip(ws["last"], ref["last"])) / moved
    verdict = "DIFFERENT: " if first > 1e-2 else ""
    return f"{verdict}first update {_percent(first)} off, after {n_steps} steps {_percent(last)} apart"


def _percent(x) -> str:
    return f"{100 * x:.2g} %" if x >= 1e-4 else "<0.01 %"


def _check(res, path, name, ref):
    if res is None:
        return {"name": name, "check": f"skipped: {path}"}
    if ref is None:
        res["check"] = "reference"
        return res
    got = np.load(path)
    same_cats = np.array_equal(got["cats"], ref["cats"])
    close = np.allclose(got["act"], ref["act"], rtol=1e-4, atol=1e-4)
    res["check"] = "same categories, activations" if same_cats and close else (
        "same categories" if same_cats else "DIFFERENT categories")
    return res


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
