"""Partitioners side by side on one network (run via `run.py --partitions [--big] [--partition-file F]`).

One table, same network, same ε = 0.03, every row evaluated by the same code (`volume`):
forward words per sample, worst per-layer imbalance over the hidden layers, seconds, peak RSS
(each row in its own process; the peak of the sum over its process tree, workers included, sampled
from outside by `scale.run_measured`: a child's own ru_maxrss would start at its parent's RSS, which
Linux carries across fork and exec), next to the lower bound of `spdnn bound` (no partition balanced in every layer
sends less). Rows:

- spdnn's methods: random, block, sweep, hypergraph (per-layer subproblems by Mt-KaHyPar, the
  default, and by KaHyPar: `--backend kahypar`), `--jobs 2`;
- KaHyPar on the whole model: the hypergraph of `spdnn hypergraph` (km1 = the volume), k-way km1
  with spdnn's KaHyPar configuration and ONE balance constraint (the total load): it is free to
  put whole layers on one process, which the per-layer imbalance column shows;
- METIS (`gpmetis`, optional: the OS package `metis`) on the neuron graph (an edge per weight),
  objective communication volume (`-objtype=vol`), one balance constraint per layer
  (multi-constraint; pymetis cannot pass several constraints);
- a partition file the user brings (`--partition-file`).

Scaling: the hypergraph method on generated RadiX-Nets with N = 1024 and 4096 (and 16384 with
--big) at L = 120, and N = 1024 at L = 480.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scale import run_measured

from spdnn.bound import volume_lower_bound
from spdnn.network import read_network
from spdnn.partition import partition_network
from spdnn.partition_io import read_partition, write_partition
from spdnn.semidefinite_bound import semidefinite_certificate
from spdnn.volume import partition_metrics

EPSILON = 0.03
ROW_TIMEOUT = 600  # seconds per row and K (a peer that takes longer gets a note instead)
ROWS = ("random", "block", "sweep", "hypergraph", "hypergraph --backend kahypar", "KaHyPar whole model",
        "METIS multi-constraint")


# ---------------------------------------------------------------- the peers that are not spdnn methods
def kahypar_whole_model(net, k, seed=0):
    """k-way km1 on the model's hypergraph, one balance constraint on the total load."""
    from spdnn.hypergraph import build_hypergraph
    from spdnn.partitioner import kahypar_partition

    hg = build_hypergraph(net.layers, net.widths)
    res = kahypar_partition(hg.num_vertices, hg.net_indptr, hg.pins, k, EPSILON, seed, hg.vertex_weights)
    return res.partition


def metis_multi_constraint(net, k, seed=0, work=None):
    """gpmetis on the neuron graph: an edge v_j^{k−1} — v_i^k per weight; constraint c = layer c's
    load (row nonzeros; the inputs: 1 each); objective: communication volume."""
    gpmetis = shutil.which("gpmetis")
    if gpmetis is None:
        raise RuntimeError("gpmetis not found (install the OS package metis)")
    widths = net.widths
    offsets = np.concatenate([[0], np.cumsum(widths)])
    n, ncon = int(offsets[-1]), len(widths)
    src, dst = [], []
    for t, w in enumerate(net.layers, start=1):
        rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr)) + offsets[t]
        src.append(rows)
        dst.append(w.indices.astype(np.int64) + offsets[t - 1])
    src, dst = np.concatenate(src), np.concatenate(dst)
    import scipy.sparse as sp

    adj = sp.csr_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(n, n))
    adj = ((adj + adj.T) > 0).tocsr()  # undirected, duplicates merged
    layer_of = np.repeat(np.arange(ncon), widths)
    load = np.concatenate([np.ones(widths[0], np.int64)] + [np.diff(w.indptr) for w in net.layers])
    weights = np.zeros((n, ncon), np.int64)
    weights[np.arange(n), layer_of] = load
    path = Path(work or tempfile.mkdtemp()) / "neurons.graph"
    with open(path, "w") as f:
        f.write(f"{n} {adj.nnz // 2} 010 {ncon}\n")
        for v in range(n):
            nb = adj.indices[adj.indptr[v]:adj.indptr[v + 1]] + 1
            f.write(" ".join(map(str, weights[v])) + " " + " ".join(map(str, nb)) + "\n")
    ufactor = round(1000 * EPSILON)
    proc = subprocess.run([gpmetis, "-objtype=vol", "-ptype=kway", f"-ufactor={ufactor}", f"-seed={seed}",
                           str(path), str(k)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gpmetis failed: {(proc.stdout + proc.stderr).strip().splitlines()[-1:]}")
    return np.loadtxt(f"{path}.part.{k}", dtype=np.int64)


# ---------------------------------------------------------------- one row, in its own process
def one(row: str, k: int, net_path: str, out: str):
    net = read_network(net_path)
    t0 = time.perf_counter()
    if row == "KaHyPar whole model":
        part = kahypar_whole_model(net, k)
    elif row == "METIS multi-constraint":
        part = metis_multi_constraint(net, k, work=Path(out).parent)
    else:
        method, *rest = row.split()
        backend = rest[-1] if rest else "mtkahypar"
        part, _ = partition_network(net.layers, net.widths, k, method, epsilon=EPSILON, seed=0, jobs=2,
                                    backend=backend)
    seconds = time.perf_counter() - t0
    write_partition(np.asarray(part), out, k=k)
    print(json.dumps({"seconds": round(seconds, 1)}))


def evaluate(net, part, k) -> dict:
    """Volume and worst per-layer imbalance over the hidden layers (same code for every row)."""
    m = partition_metrics(net.layers, net.widths, part, k, EPSILON)
    hidden = m["imbalance_per_layer"][:-1]  # the output layer (10 rows at most K here) excluded
    return {"volume": m["volume_forward"], "max imbalance (hidden layers)": round(max(hidden, default=1.0), 3),
            "balanced (ε)": m["balanced"]}


def quality(net, net_path, ks, work: Path, partition_file=None):
    rows = []
    t0 = time.perf_counter()
    certificate = semidefinite_certificate(net.layers, net.widths, EPSILON)  # one serves every K
    certificate_seconds = time.perf_counter() - t0
    for k in ks:
        for row in ROWS:
            out = work / f"{row.replace(' ', '_')}.k{k}.part"
            run = run_measured([sys.executable, __file__, "--one", row, str(k), str(net_path), str(out)],
                               ROW_TIMEOUT, out.with_suffix(".log"))
            if run["status"] != "ok":
                status = run["status"]
                note = (status if status.startswith("stopped") else "skipped: " + status.split(": ", 1)[-1])[:160]
                rows.append({"K": k, "method": row, "note": note})
                print(f"  K={k} {row}: {note}", file=sys.stderr, flush=True)
                continue
            res = {**json.loads(run["stdout"].strip().splitlines()[-1]), "peak MB": run["peak_rss_mb"]}
            part = read_partition(out)
            rows.append({"K": k, "method": row, **evaluate(net, part, k), **res})
            print(f"  K={k} {row}: {rows[-1]['volume']} words, {res['seconds']} s", file=sys.stderr, flush=True)
        if partition_file:
            part = read_partition(partition_file)
            if int(part.max()) < k:
                rows.append({"K": k, "method": f"file {Path(partition_file).name}", **evaluate(net, part, k)})
        b = volume_lower_bound(net.layers, net.widths, k, epsilon=EPSILON, semidefinite=certificate)
        rows.append({"K": k, "method": "lower bound (any partition balanced in every layer)",
                     "volume": b["lower_bound_forward"], "seconds": round(b["seconds"] + certificate_seconds, 1),
                     "note": f"class-count {b['lower_bound_classes']}, semidefinite {b['semidefinite']['lower_bound_forward']}"})
    return pd.DataFrame(rows)


def scaling_one(neurons, layers, k):
    from spdnn.generate import radixnet

    net = radixnet(neurons, layers, seed=0)
    t0 = time.perf_counter()
    _, m = partition_network(net.layers, net.widths, k, "hypergraph", seed=0, jobs=2)
    print(json.dumps({"N": neurons, "L": layers, "K": k, "nnz": net.nnz, "volume": m["volume_forward"],
                      "max layer imbalance": round(m["imbalance_max"], 4), "seconds": round(time.perf_counter() - t0, 1)}))


def run(net, name, net_path, ks, out: Path, sizes=((1024, 120), (1024, 480), (4096, 120)), scaling_k=8, big=False,
        partition_file=None):
    sizes = tuple(sizes) + (((16384, 120),) if big else ())
    print(f"Partitioners on {name} (forward words per sample, ε = {EPSILON}, 2 cores)")
    with tempfile.TemporaryDirectory(prefix="spdnn-partitions-") as work:
        q = quality(net, net_path, ks, Path(work), partition_file)
    print(q.pivot_table(index="method", columns="K", values="volume", sort=False).to_string(), "\n")
    print(q.to_string(index=False), "\n")
    q.to_csv(out / "partition_quality.csv", index=False)
    if not sizes:
        return
    rows = []
    for n, layers in sizes:
        with tempfile.TemporaryDirectory(prefix="spdnn-scaling-") as work:
            run = run_measured([sys.executable, __file__, "--scaling", str(n), str(layers), str(scaling_k)],
                               24 * 3600, Path(work) / "scaling.log")
        if run["status"] == "ok":
            rows.append({**json.loads(run["stdout"].strip().splitlines()[-1]), "peak MB": run["peak_rss_mb"]})
        else:
            rows.append({"N": n, "L": layers, "K": scaling_k, "error": run["status"]})
    s = pd.DataFrame(rows)
    print(f"Scaling of the hypergraph method (generated RadiX-Net, K={scaling_k})")
    print(s.to_string(index=False))
    s.to_csv(out / "partition_scaling.csv", index=False)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        one(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        scaling_one(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
