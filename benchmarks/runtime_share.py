"""Per-rank memory and bytes read of the MPI runtime against K (issue: each rank holds 1/K).

    python benchmarks/runtime_share.py [--neurons 16384 --layers 480] [--ks 1,2,4,8] [--images 128]
                                       [--gc neuron1024.tar.gz] [--train-steps 2] [--stream]

For a generated RadiX-Net (and the real Graph Challenge 1024×120 when given, or found in ../shared),
runs row-wise inference (the first --images digits inputs) and a few training steps (B=16, the
recipe's re-initialised weights) at each K under mpiexec, and prints per-rank peak RSS and bytes
read (max over ranks) next to the network file's size / K. K > 2 oversubscribes a 2-core machine:
memory and bytes are meaningful, times are not. Partitions are `block` (memory and bytes hardly
depend on the method; the hypergraph method at this size takes long, see the README). --stream:
also row-wise inference with `--stream-layers` (a rank holds one layer's rows at a time).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def sh(*args, timeout=3600):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 3):  # 3: stopped by --stop-after, as asked
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc


def measure(name, net, trainable, images, ks, train_steps, work, stream=False):
    rows = []
    size = net.stat().st_size
    for k in ks:
        part = work / f"{name}-k{k}.part"
        if not part.exists():
            sh(BIN / "spdnn", "partition", net, "-k", k, "--method", "block", "-o", part)
        launch = [BIN / "mpiexec", "-n", k, BIN / "spdnn"]
        t0 = time.time()
        sh(*launch, "infer", net, images, "--partition", part, "-o", work / "c.tsv", "--metrics", work / "m.json")
        m = json.loads((work / "m.json").read_text())
        rows.append((name, k, "infer", time.time() - t0, m["per_rank"], size))
        if stream:
            t0 = time.time()
            sh(*launch, "infer", net, images, "--partition", part, "-o", work / "c.tsv", "--stream-layers",
               "--metrics", work / "m.json")
            m = json.loads((work / "m.json").read_text())
            rows.append((name, k, "infer, --stream-layers", time.time() - t0, m["per_rank"], size))
        if train_steps:
            t0 = time.time()
            out = work / f"t-{name}-{k}.h5"
            sh(*launch, "train", trainable, "--partition", part, "--data", work / f"{name}.npz", "--test-fraction", 0.2,
               "--epochs", 1, "--batch-size", 16, "--lr", 0.001, "--metrics", work / "mt.json", "-o", out)
            m = json.loads((work / "mt.json").read_text())
            rows.append((name, k, f"train {m['steps']} steps B=16 + write", time.time() - t0, m["per_rank"], size))
            out.unlink()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, default=16384)
    ap.add_argument("--layers", type=int, default=480)
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--gc", default=None)
    ap.add_argument("--stream", action="store_true", help="also streamed row-wise inference (--stream-layers)")
    a = ap.parse_args()
    ks = [int(k) for k in a.ks.split(",")]
    gc = Path(a.gc) if a.gc else ROOT.parent / "shared" / "data" / "graphchallenge" / "neuron1024.tar.gz"
    (ROOT / "benchmarks" / "out").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks" / "out") as tmp:
        work = Path(tmp)
        nets = []
        if gc.exists():
            sh(BIN / "spdnn", "import-gc", gc, "-o", work / "gc.h5")
            nets.append(("gc1024x120", work / "gc.h5"))
        sh(BIN / "spdnn", "generate", "radixnet", "--neurons", a.neurons, "--layers", a.layers, "-o", work / "radix.h5")
        nets.append((f"radix{a.neurons}x{a.layers}", work / "radix.h5"))
        rows = []
        for name, net in nets:
            width = json.loads(sh(BIN / "spdnn", "info", net, "--quick").stdout)["widths"][0]
            full = work / f"im{width}.tsv"
            sh(BIN / "spdnn", "images", "--neurons", width, "-o", full)
            images = work / f"im{width}-{a.images}.tsv"
            with open(full) as src, open(images, "w") as dst:  # the first --images inputs
                for line in src:
                    if int(line.split("\t", 1)[0]) > a.images:
                        break
                    dst.write(line)
            trainable = work / f"{name}-he.h5"
            if a.train_steps:
                import numpy as np

                from spdnn.datasets import digits_raw, upsample_square

                sh(BIN / "spdnn", "reinit", net, "-o", trainable)
                x, y = digits_raw()
                n = 20 * a.train_steps  # 16 per step for training, 4 for the test split
                np.savez(work / f"{name}.npz", X=upsample_square(x[:n], width), y=y[:n])
            rows += measure(name, net, trainable, images, ks, a.train_steps, work, a.stream)
    print(f"{'network':<20} {'K':>3} {'run':<28} {'file/K MB':>10} {'bytes read MB (max rank)':>25} "
          f"{'partition MB':>13} {'peak RSS MB (max rank)':>23} {'seconds':>8}")
    for name, k, what, secs, ranks, size in rows:
        if ranks:
            read = max(r["bytes_read"] for r in ranks) / 1e6
            part = max(r["bytes_read_partition"] for r in ranks) / 1e6
            rss = max(r["peak_rss_mb"] for r in ranks)
            print(f"{name:<20} {k:>3} {what:<28} {size / k / 1e6:>10.1f} {read:>25.1f} {part:>13.2f} {rss:>23.0f} {secs:>8.1f}")
        else:
            print(f"{name:<20} {k:>3} {what:<28} {size / k / 1e6:>10.1f} {'':>25} {'':>13} {'':>23} {secs:>8.1f}")


if __name__ == "__main__":
    main()
