"""Structure recovery: sweep and hypergraph methods against the best bit partition built by hand.

    python benchmarks/structure.py [--nets 1024x24,1024x120,4096x24,1024x24r4.4.4,...] [--ks 2,8,32] [--jobs 2]

Networks: RadiX-Nets whose every layer's neurons (inputs included) are renamed at random (seed 1),
so the structure is in the connections only; NxL is radix 2 (the Graph Challenge construction),
NxLrB1.B2... has butterfly bases B1, B2, ... (`generate radixnet --radices`). Reference:
`tests/radixnet_reference.py` (`best_bit_partition`: dynamic programming over which log2 K bits
of a group index name a group's part, layer by layer, with the exact cost of changing them),
evaluated by spdnn's own volume code; the methods never see it. K = 32 on 4096-wide networks is left out by default: the reference's
DP has 6,720 states there (5 minutes). Prints one table; writes benchmarks/out/structure.csv.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the reference lives with the tests that use it

from radixnet_reference import best_bit_partition, neuron_partition, relabelled_radixnet  # noqa: E402

from spdnn.partition import partition_network  # noqa: E402
from spdnn.volume import partition_metrics  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="1024x24,1024x120,4096x24,1024x24r4.4.4,1024x24r2.4.8,1024x24r8.8,"
                                      "1024x120r4.4.4,1024x120r2.4.8")
    p.add_argument("--ks", default="2,8,32")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--big-k", action="store_true", help="also K = 32 on 4096-wide networks (slow reference)")
    a = p.parse_args()
    rows = []
    for spec in a.nets.split(","):
        size, _, bases = spec.partition("r")
        neurons, n_layers = (int(x) for x in size.split("x"))
        radices = [int(b) for b in bases.split(".")] if bases else None
        layers, widths, groups = relabelled_radixnet(neurons, n_layers, seed=1, radices=radices)
        for k in (int(x) for x in a.ks.split(",")):
            if k >= 32 and neurons > 1024 and not a.big_k:
                continue
            t0 = time.perf_counter()
            words, group_parts = best_bit_partition(neurons, n_layers, k, radices)
            ref_seconds = time.perf_counter() - t0
            check = partition_metrics(layers, widths, neuron_partition(group_parts, groups, layers, k), k, 0.03)
            assert check["volume_forward"] == words and check["balanced"], "the reference's cost model is wrong"
            row = {"network": f"{neurons}x{n_layers}", "radices": ",".join(map(str, radices or [2])), "k": k,
                   "reference": words, "reference s": round(ref_seconds, 1)}
            for method in ("sweep", "hypergraph"):
                t0 = time.perf_counter()
                _, m = partition_network(layers, widths, k, method, 0.03, 0, jobs=a.jobs)
                row[method] = m["volume_forward"]
                row[f"{method} / reference"] = round(m["volume_forward"] / words, 3)
                row[f"{method} s"] = round(time.perf_counter() - t0, 1)
                if method == "hypergraph":
                    row["window"] = m["window"]
            rows.append(row)
            print(" ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    with open(out / "structure.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"CSV: {out / 'structure.csv'}")


if __name__ == "__main__":
    main()
