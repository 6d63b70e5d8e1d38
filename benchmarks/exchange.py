"""Point-to-point vs MPI-3 neighbourhood collectives for the row-wise exchanges, same run.

    python benchmarks/exchange.py [--gc neuron1024.tar.gz] [--k 2]

Inference over 1,797 digits inputs and training steps at batch 16 and 256 on the 1024×120
network (real when given or found in ../shared, else generated), hypergraph partition, both
transports in turn; prints seconds, communication and wait time (slowest rank).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SHARED_GC = HERE.parent.parent / "shared" / "data" / "graphchallenge" / "neuron1024.tar.gz"


def spdnn(*args, mpi=None):
    cmd = ([str(BIN / "mpiexec"), "-n", str(mpi)] if mpi else []) + [str(BIN / "spdnn"), *map(str, args)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gc", default=str(SHARED_GC) if SHARED_GC.exists() else None)
    p.add_argument("--k", type=int, default=2)
    a = p.parse_args()
    d = Path(tempfile.mkdtemp(prefix="spdnn-exchange-"))
    if a.gc:
        spdnn("import-gc", a.gc, "-o", d / "net.h5")
    else:
        spdnn("generate", "radixnet", "--neurons", 1024, "--layers", 120, "--seed", 0, "-o", d / "net.h5")
    spdnn("images", "--neurons", 1024, "-o", d / "im.tsv")
    spdnn("partition", d / "net.h5", "-k", a.k, "--jobs", 2, "-o", d / "p.part")
    spdnn("reinit", d / "net.h5", "-o", d / "he.h5")  # training runs the recipe's weights (README)
    rows = []
    for what, args in [("inference", ["infer", d / "net.h5", d / "im.tsv", "-o", d / "c.tsv", "--batch-size", 1797]),
                       ("train B=16", ["train", d / "he.h5", "--batch-size", 16, "-o", d / "t.h5"]),
                       ("train B=256", ["train", d / "he.h5", "--batch-size", 256, "-o", d / "t.h5"])]:
        for transport in ("p2p", "neighbor"):
            m = d / f"{what}-{transport}.json".replace(" ", "_")
            spdnn(*args, "--partition", d / "p.part", "--exchange", transport, "--metrics", m, mpi=a.k)
            r = json.loads(m.read_text())
            secs = r.get("step_seconds") or r.get("seconds")
            comm = max(sum(x["comm_seconds"]) for x in r["per_rank"])
            wait = max(sum(x["wait_seconds"]) for x in r["per_rank"])
            steps = r.get("steps_run", 1)
            rows.append((what, transport, secs, comm / steps, wait / steps, r["words_match_model"]))
    print(f"K={a.k}, {'real' if a.gc else 'generated'} 1024×120, hypergraph partition")
    print(f"{'run':12} {'transport':9} {'s (step or pass)':>17} {'comm s':>9} {'wait s':>9}  words=model")
    for what, t, s, c, w, ok in rows:
        print(f"{what:12} {t:9} {s:17.4f} {c:9.4f} {w:9.4f}  {ok}")


if __name__ == "__main__":
    main()
