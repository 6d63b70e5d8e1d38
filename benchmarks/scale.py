"""Offline stages against network size: seconds, peak RSS of all processes, nonzeros per second.

    python benchmarks/scale.py [--sizes 1024x120,4096x120,16384x120,65536x120] [--k 8] [--jobs 2]
                               [--stages generate,read,export-gc,import-gc,hypergraph,partition,volume,bound,infer,
                                         infer-mpi,infer-mpi-hypergraph,train-mpi,train-mpi-hypergraph]
                               [--work benchmarks/out/scale] [--stage-timeout 3600] [--keep]
                               [--images COUNT] [--train-batch 64]

Every stage is the `spdnn` command a workflow rule runs, in its own process tree; a sampler adds
up the resident memory of the command and all its descendants (the partitioner's worker
processes included) every 0.2 s, so "peak RSS" is that of all processes, not of one. Networks are
generated RadiX-Nets with the Graph Challenge's biases (seed 0); `read` is `spdnn info`, which reads
and checks every layer (the network file's decoding alone: chunks checked and inflated by HDF5 on
2 cores, in threads from 3, `h5_chunks.read_filtered`); `import-gc` reads the challenge
TSV files that `export-gc` wrote; `infer` is serial inference of the digits inputs (`spdnn
images`; `--images 60000` repeats them to the challenge's count), `infer-mpi` the same under
`mpiexec -n 2` with `--stream-layers` on a `block` partition (made before, untimed), and
`infer-mpi-hypergraph` the same on the hypergraph method's K = 2 partition (the `partition` stage's
when --k 2, else made before, untimed, its seconds recorded as `partition_seconds`): what the
partition buys at run time. All write their metrics (compute, exchange and image-reading seconds
apart, words sent) to WORK/rNxL/infer*.json. `train-mpi` and `train-mpi-hypergraph` are the same
comparison for row-wise SGD: one epoch of the digits (`--train-batch`, default 64) under `mpiexec
-n 2` on the network's He-initialised copy (`spdnn reinit`, made before, untimed), on the same two
partitions; their rows carry the median step, the slower rank's compute and exchange and the words
sent (expand and fold). Expected shape: seconds ∝ nonzeros, memory flat in L.

A stage that fails, or runs past --stage-timeout, is recorded with why, and the stages after it
that need its output are skipped. Rows are appended to WORK/scale.jsonl as they finish (a long
run can be stopped and resumed: finished stages are not re-run unless --fresh), then printed as
a table and written to benchmarks/out/scale.csv. Outputs are deleted after each size unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "read", "export-gc", "import-gc", "hypergraph", "partition", "volume", "bound", "infer",
          "infer-mpi", "infer-mpi-hypergraph", "train-mpi", "train-mpi-hypergraph")
NEEDS = {"read": "generate", "export-gc": "generate", "import-gc": "export-gc", "hypergraph": "generate", "partition": "generate",
         "volume": "partition", "bound": "generate", "infer": "generate", "infer-mpi": "generate",
         "infer-mpi-hypergraph": "generate", "train-mpi": "generate", "train-mpi-hypergraph": "generate"}


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(pid, []))
    return total


def run_measured(args, timeout: float, log: Path) -> dict:
    """Run a command; wall seconds, peak RSS of its process tree, exit status."""
    peak = [0]
    with open(log, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=err, text=True)
        done = threading.Event()

        def sample():
            while not done.wait(0.2):
                peak[0] = max(peak[0], tree_rss_bytes(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: spdnn stops its workers and leaves no output
            out, _ = proc.communicate()
            status = f"stopped after {timeout:.0f} s (--stage-timeout)"
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    if status.startswith("failed"):
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        status += ": " + (lines[-1][:160] if lines else "no message")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak[0] / 2**20), "status": status, "stdout": out}


def run_summary(metrics: Path) -> dict:
    """What an inference run's metrics say: images read, survivors, the seconds of its batches (the
    run's clock: compute and exchange, and with --stream-layers the reading of layers; not the
    reading of images), the images' reading, the exchange (the slowest rank's, waits included) and
    the words sent (all ranks, every layer)."""
    m = json.loads(metrics.read_text())
    ranks = m.get("per_rank") or []
    out = {"images": m["images"], "survivors": m["survivors"], "batches_s": round(m["seconds"], 1),
           "read_s": round(m["read_seconds"], 1)}
    if ranks and "comm_seconds" in ranks[0]:
        out["exchange_s"] = round(max(sum(r["comm_seconds"]) for r in ranks), 1)  # waits included
        out["words"] = int(sum(sum(r["words_sent_forward"]) for r in ranks))
        out["words_match_model"] = m.get("words_match_model")
    return out


def train_summary(metrics: Path) -> dict:
    """What a row-wise training run's metrics say: steps, the median step, the slower rank's compute
    and exchange seconds (waits included), the seconds of set-up and of the write, and the words
    sent in the expands and folds (all ranks)."""
    m = json.loads(metrics.read_text())
    ranks = m["per_rank"]
    return {"steps": m["steps_run"], "step_ms": round(1e3 * m["step_seconds"], 1),
            "compute_s": round(max(r["compute_seconds"][0] for r in ranks), 1),
            "exchange_s": round(max(sum(r["comm_seconds"]) for r in ranks), 1),
            "setup_s": round(m["setup_seconds"], 1), "write_s": round(m["write_seconds"], 1),
            "words": int(sum(m["words_forward_counted"]) + sum(m["words_backward_counted"])),
            "words_match_model": m["words_match_model"]}


def stage_command(stage: str, n: int, layers: int, k: int, jobs: int, d: Path, bound_seconds: float = 600,
                  train_batch: int = 64):
    spdnn = BIN / "spdnn"
    net = d / "net.h5"
    return {
        "generate": [spdnn, "generate", "radixnet", "--neurons", n, "--layers", layers, "--seed", 0, "-o", net],
        "read": [spdnn, "info", net],
        "export-gc": [spdnn, "export-gc", net, d / "gc"],
        "import-gc": [spdnn, "import-gc", d / "gc" / f"neuron{n}", "-o", d / "imported.h5"],
        "hypergraph": [spdnn, "hypergraph", net, "-o", d / "net.hgr"],
        "partition": [spdnn, "partition", net, "-k", k, "--method", "hypergraph", "--jobs", jobs, "-o", d / "p.part"],
        "volume": [spdnn, "volume", net, d / "p.part", "-k", k],
        "bound": [spdnn, "bound", net, "-k", k, "--max-seconds", bound_seconds, "--max-memory", 8],
        "infer": [spdnn, "infer", net, d / "images.tsv", "-o", d / "categories.tsv", "--metrics", d / "infer.json"],
        "infer-mpi": [BIN / "mpiexec", "-n", 2, spdnn, "infer", net, d / "images.tsv", "--partition", d / "block2.part",
                      "--stream-layers", "-o", d / "categories-mpi.tsv", "--metrics", d / "infer-mpi.json"],
        "infer-mpi-hypergraph": [BIN / "mpiexec", "-n", 2, spdnn, "infer", net, d / "images.tsv", "--partition",
                                 d / "hypergraph2.part", "--stream-layers", "-o", d / "categories-mpi-hypergraph.tsv",
                                 "--metrics", d / "infer-mpi-hypergraph.json"],
        **{f"train-mpi{tag}": [BIN / "mpiexec", "-n", 2, spdnn, "train", d / "trainable.h5", "--partition", d / part,
                               "--batch-size", train_batch, "--epochs", 1, "--metrics", d / f"train-mpi{tag}.json",
                               "-o", d / f"trained-mpi{tag}.h5"]
           for tag, part in (("", "block2.part"), ("-hypergraph", "hypergraph2.part"))},
    }[stage]


def measure_size(n: int, layers: int, args, done: dict, out: Path) -> None:
    d = Path(args.work) / f"r{n}x{layers}"
    d.mkdir(parents=True, exist_ok=True)
    ok = {s for (size, s), row in done.items() if size == f"{n}x{layers}" and row["status"].startswith("ok")}
    nnz = next((row["nnz"] for (size, _), row in done.items() if size == f"{n}x{layers}"), None)
    for stage in args.stages:
        if (f"{n}x{layers}", stage) in done:
            continue
        need = NEEDS.get(stage)
        if need and need not in ok and not (need == "generate" and (d / "net.h5").exists()):
            row = {"status": f"skipped: {need} did not finish" + ("" if need in args.stages else " (not in --stages)")}
        else:
            if stage.startswith("train") and not (d / "trainable.h5").exists():  # not timed: what training starts from
                subprocess.run([BIN / "spdnn", "reinit", d / "net.h5", "-o", d / "trainable.h5"], check=True,
                               capture_output=True)
            if stage.startswith("infer") and not (d / "images.tsv").exists():
                count = ["--count", str(args.images)] if args.images else []
                subprocess.run([BIN / "spdnn", "images", "--network", d / "net.h5", *count, "-o", d / "images.tsv"],
                               check=True, capture_output=True)
            if stage in ("infer-mpi", "train-mpi") and not (d / "block2.part").exists():  # not timed: a partition to run on
                subprocess.run([BIN / "spdnn", "partition", d / "net.h5", "-k", "2", "--method", "block", "-o",
                                d / "block2.part"], check=True, capture_output=True)
            made = None
            if stage.endswith("mpi-hypergraph") and not (d / "hypergraph2.part").exists():
                stage_part = d / "p.part.json"  # the partition stage's, timed there, if it is at K = 2
                if stage_part.exists() and json.loads(stage_part.read_text()).get("k") == 2:
                    for suffix in ("", ".npy", ".json"):  # the binary after the text: ranks read it, not the text
                        shutil.copy(d / f"p.part{suffix}", d / f"hypergraph2.part{suffix}")
                else:  # not timed with the run, but recorded
                    t0 = time.perf_counter()
                    subprocess.run([BIN / "spdnn", "partition", d / "net.h5", "-k", "2", "--method", "hypergraph",
                                    "--jobs", str(args.jobs), "-o", d / "hypergraph2.part"], check=True, capture_output=True)
                    made = round(time.perf_counter() - t0, 1)
            row = run_measured(stage_command(stage, n, layers, args.k, args.jobs, d, args.bound_seconds, args.train_batch),
                               args.stage_timeout, d / f"{stage}.log")
            if stage == "bound" and row["status"] == "ok":  # null past its budget: say so, and why
                result = json.loads(row["stdout"].strip().splitlines()[-1])
                row["bound"] = result.get("lower_bound_forward")
                if row["bound"] is None:
                    row["status"] = "no bound: " + result.get("reason", "")[:120]
                elif "stopped" in result:
                    row["status"] = "ok (best bound at the time budget)"
            row.pop("stdout")
            if made is not None:
                row["partition_seconds"] = made
            if stage.startswith("infer") and row["status"] == "ok":
                row.update(run_summary(d / f"{stage}.json"))
            if stage.startswith("train") and row["status"] == "ok":
                row.update(train_summary(d / f"{stage}.json"))
        if (stage == "generate" and row["status"] == "ok") or (nnz is None and (d / "net.h5").exists()):
            info = subprocess.run([BIN / "spdnn", "info", "--quick", d / "net.h5"], capture_output=True, text=True)
            nnz = json.loads(info.stdout)["nnz_total"] if info.returncode == 0 else None
        if stage == "hypergraph" and (d / "net.hgr").exists():
            row["output_gb"] = round((d / "net.hgr").stat().st_size / 1e9, 1)
            (d / "net.hgr").unlink()  # the largest output by far: text pins
        row.update({"N": n, "L": layers, "nnz": nnz, "stage": stage})
        if row["status"].startswith("ok"):
            ok.add(stage)
            row["nnz_per_s"] = round(nnz / row["seconds"]) if nnz and row["seconds"] else None
        done[(f"{n}x{layers}", stage)] = row
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  {n}x{layers} {stage}: {row['status']}, {row.get('seconds', '-')} s, "
              f"{row.get('peak_rss_mb', '-')} MB", file=sys.stderr, flush=True)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


def markdown(table) -> str:
    """The README's layout: one row per network, one column per stage (seconds / peak RSS MB)."""
    stages = [s for s in STAGES if s in set(table["stage"])]
    lines = ["| network | nonzeros | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    for (n, layers), rows in table.groupby(["N", "L"], sort=True):
        by = {r.stage: r for r in rows.itertuples()}
        nnz = rows["nnz"].dropna()
        cells = []
        for s in stages:
            r = by.get(s)
            if r is None:
                cells.append("")
            elif r.status.startswith("ok"):
                cells.append(f"{r.seconds:,.0f} s / {r.peak_rss_mb:,.0f} MB")
            else:
                cells.append(r.status.split(":")[0])
        lines.append(f"| {n}×{layers} | {nnz.iloc[0]:.2g} | " + " | ".join(cells) + " |" if len(nnz) else
                     f"| {n}×{layers} | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1024x120,4096x120,16384x120,65536x120")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "scale"))
    ap.add_argument("--stage-timeout", type=float, default=3600)
    ap.add_argument("--bound-seconds", type=float, default=600, help="spdnn bound --max-seconds")
    ap.add_argument("--images", type=int, default=None,
                    help="infer stages: this many input images (default: the 1,797 digits once)")
    ap.add_argument("--train-batch", type=int, default=64, help="train stages: the global batch size")
    ap.add_argument("--keep", action="store_true", help="keep each size's files (several GB at 65536x1920)")
    ap.add_argument("--fresh", action="store_true", help="forget earlier rows in WORK/scale.jsonl")
    ap.add_argument("--markdown", action="store_true", help="also print the README's table")
    args = ap.parse_args()
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stages {sorted(unknown)} (choose from {', '.join(STAGES)})")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    out = Path(args.work) / "scale.jsonl"
    if args.fresh and out.exists():
        out.unlink()
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[(f"{row['N']}x{row['L']}", row["stage"])] = row
    for size in args.sizes.split(","):
        n, layers = (int(x) for x in size.lower().split("x"))
        measure_size(n, layers, args, done, out)
    import pandas as pd

    rows = [row for (size, stage), row in done.items()]
    table = pd.DataFrame(rows)
    extra = [c for c in ("partition_seconds", "images", "survivors", "batches_s", "read_s", "steps", "step_ms",
                         "compute_s", "exchange_s", "setup_s", "write_s", "words") if c in table]
    # Every row skipped (a stage whose inputs did not run): those columns were never filled.
    table = table.reindex(columns=["N", "L", "nnz", "stage", "seconds", "peak_rss_mb", "nnz_per_s", *extra, "status"])
    for c in ("images", "survivors", "steps", "words"):
        if c in table:
            table[c] = table[c].astype("Int64")  # counts, not floats, where other rows have none
    print(table.to_string(index=False))
    if args.markdown:
        print(markdown(table))
    (ROOT / "benchmarks" / "out").mkdir(exist_ok=True)
    table.to_csv(ROOT / "benchmarks" / "out" / "scale.csv", index=False)


if __name__ == "__main__":
    main()
