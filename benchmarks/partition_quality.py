"""Partition quality on the 1024×120 network and scaling with N and L (run via `run.py --partitions [--big]`).

Quality: forward words per sample, worst per-layer imbalance and seconds for random, sweep and
hypergraph at each K (ε = 0.03), next to the lower bound of `spdnn bound` (no balanced partition
sends less). Scaling: the hypergraph method on generated RadiX-Nets with
N = 1024 and 4096 (and 16384 with --big) at L = 120, and N = 1024 at L = 480, each in its own process for peak RSS
(which includes the children of the parallel refinement only as far as the parent holds memory).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from spdnn.bound import volume_lower_bound
from spdnn.partition import partition_network


def quality(net, ks, methods=("random", "sweep", "hypergraph")):
    rows = []
    for k in ks:
        for method in methods:
            t0 = time.perf_counter()
            _, m = partition_network(net.layers, net.widths, k, method, epsilon=0.03, seed=0, jobs=2)
            rows.append({"K": k, "method": method, "volume": m["volume_forward"],
                         "max layer imbalance": round(m["imbalance_max"], 4), "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  K={k} {method}: {m['volume_forward']} words, imbalance {m['imbalance_max']:.4f}, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        b = volume_lower_bound(net.layers, net.widths, k, epsilon=0.03)  # no partition can send less
        rows.append({"K": k, "method": "lower bound", "volume": b["lower_bound_forward"],
                     "max layer imbalance": None, "seconds": round(b["seconds"], 1)})
    return pd.DataFrame(rows)


def scaling_one(neurons, layers, k):
    from spdnn.generate import radixnet

    net = radixnet(neurons, layers, seed=0)
    t0 = time.perf_counter()
    _, m = partition_network(net.layers, net.widths, k, "hypergraph", seed=0, jobs=2)
    print(json.dumps({"N": neurons, "L": layers, "K": k, "nnz": net.nnz, "volume": m["volume_forward"],
                      "max layer imbalance": round(m["imbalance_max"], 4), "seconds": round(time.perf_counter() - t0, 1),
                      "peak MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def run(net, name, ks, out: Path, sizes=((1024, 120), (1024, 480), (4096, 120)), scaling_k=8, big=False):
    sizes = tuple(sizes) + (((16384, 120),) if big else ())
    print(f"Partition quality on {name} (forward words per sample, ε = 0.03)")
    q = quality(net, ks)
    print(q.pivot(index="method", columns="K", values="volume").to_string(), "\n")
    print(q.to_string(index=False), "\n")
    q.to_csv(out / "partition_quality.csv", index=False)
    rows = []
    for n, layers in sizes:
        proc = subprocess.run([sys.executable, __file__, str(n), str(layers), str(scaling_k)], capture_output=True, text=True)
        if proc.returncode == 0:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            rows.append({"N": n, "L": layers, "K": scaling_k, "error": proc.stderr.strip().splitlines()[-1]})
    s = pd.DataFrame(rows)
    print(f"Scaling of the hypergraph method (generated RadiX-Net, K={scaling_k})")
    print(s.to_string(index=False))
    s.to_csv(out / "partition_scaling.csv", index=False)


if __name__ == "__main__":
    scaling_one(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
