"""The Snakemake workflow on a tiny config: end to end, incremental reruns, report, profiles."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from conftest import BIN, env

ROOT = Path(__file__).resolve().parents[1]


def smk(workdir, *args, check=True, timeout=600):
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def planned_jobs(proc) -> list[str]:
    return re.findall(r"^rule (\w+):", proc.stdout + proc.stderr, flags=re.M)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf")
    smk(d, "--configfile", ROOT / "config" / "test.yaml", "--cores", 2)
    return d


def test_tiny_workflow_outputs(tiny):
    parts = pd.read_csv(tiny / "results/tables/partitions.csv")
    assert set(parts["method"]) == {"random", "hypergraph"} and set(parts["k"]) == {2, 3}
    assert (parts["imbalance_max"] <= 1.2).all()
    runs = pd.read_csv(tiny / "results/tables/runs.csv")
    rw = runs[runs["mode"] == "row-wise"]
    assert rw["words_match_model"].all()
    assert (rw["words_per_step_counted"] == rw["words_per_step_model"]).all()
    assert set(runs["kind"]) == {"infer", "train"} and set(runs["k"]) == {1, 2}
    pred = pd.read_csv(tiny / "results/tables/predictions.csv")
    assert pred["predicted_step_seconds"].notna().all()
    assert set(parts["network"]) == {"tiny", "tinypruned"}
    for fig in ("volume_vs_k", "per_layer_tiny", "per_layer_tinypruned", "speedup", "time_breakdown", "crossover", "predicted_vs_k"):
        assert (tiny / f"results/figures/{fig}.png").stat().st_size > 5000
    for log in (tiny / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(), log


def test_rerun_does_nothing_and_deletion_redoes_only_dependents(tiny):
    proc = smk(tiny, "--configfile", ROOT / "config" / "test.yaml", "--cores", 2, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    (tiny / "results/tiny/runs/train-hypergraph-k2-row-wise-b32.json").unlink()
    proc = smk(tiny, "--configfile", ROOT / "config" / "test.yaml", "--cores", 2, "-n")
    assert sorted(planned_jobs(proc)) == ["aggregate", "all", "costmodel", "figures", "train_run"]


def test_report(tiny):
    smk(tiny, "--configfile", ROOT / "config" / "test.yaml", "--report", tiny / "report.html")
    html = (tiny / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "partitions.csv" in html


def test_config_failing_the_schema_is_one_line(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["partition"]["k"] = [1]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = smk(tmp_path, "--configfile", tmp_path / "bad.yaml", "--cores", 1, "-n", check=False)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if "config error" in l]
    assert len(lines) == 1 and "partition.k.0" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_config_dry_run(tmp_path):
    proc = smk(tmp_path, "--cores", 2, "-n")
    jobs = planned_jobs(proc)
    assert jobs.count("partition") == 3 * 4 * 3 and "train_run" in jobs and jobs.count("train_dense") == 1


class _Resources(SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


def test_slurm_profile(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    proc = smk(tmp_path, "--configfile", ROOT / "config" / "test.yaml", "--profile", ROOT / "profiles" / "slurm", "-n")
    text = proc.stdout + proc.stderr
    blocks = re.findall(r"rule (train_run|infer_run):\n(.*?)(?=\n\[|\Z)", text, flags=re.S)
    assert blocks
    seen = set()
    for rule, body in blocks:
        k = int(re.search(r"k=(\d+)", body).group(1))
        res = dict(re.findall(r"(\w+)=([^,\n]*)", re.search(r"resources: (.*)", body).group(1)))
        threads = int(re.search(r"threads: (\d+)", body).group(1)) if "threads:" in body else 1
        job = SimpleNamespace(threads=threads, resources=_Resources(
            tasks=int(res["tasks"]), mpi=res.get("mpi", ""), runtime=int(res["runtime"]),
            mem_mb_per_cpu=int(res["mem_mb_per_cpu"])))
        params = dict(run_uuid="x", slurm_logfile="log", comment_str="c", account="", partition="", workdir=".")
        sbatch = get_submit_command(job, params)
        assert f"--ntasks={k}" in sbatch and "--cpus-per-task=1" in sbatch, sbatch
        assert res.get("mpi", "") == ("srun" if k > 1 else "")
        seen.add(k)
    assert seen == {1, 2}


def test_graphchallenge_network_fetched_from_a_url(tmp_path):
    """config: fetch: downloads the official layout (here from a file:// mirror) and runs on it."""
    import gzip
    import tarfile

    from spdnn.generate import radixnet
    from spdnn.graphchallenge import export_gc, write_images
    from spdnn.datasets import digits_images

    mirror = tmp_path / "mirror"
    (mirror / "dnn").mkdir(parents=True)
    (mirror / "mnist").mkdir()
    export_gc(radixnet(64, 3, seed=1), tmp_path / "exp")
    with tarfile.open(mirror / "dnn" / "neuron64.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "exp" / "neuron64", arcname="neuron64")
    (mirror / "dnn" / "neuron64-l3-categories.tsv").write_text("1\n")
    write_images(digits_images(64, 0.5), tmp_path / "im.tsv")
    (mirror / "mnist" / "sparse-images-64.tsv.gz").write_bytes(gzip.compress((tmp_path / "im.tsv").read_bytes()))
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["networks"] = {"gc": {"generator": "graphchallenge",
                              "fetch": {"root": mirror.as_uri() + "/", "neurons": 64, "layers": 3}}}
    cfg["runs"].update(k=[2], modes=["row-wise"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "w"
    smk(work, "--configfile", tmp_path / "c.yaml", "--cores", 2)
    assert (work / "resources/gc/provenance.json").exists()
    runs = pd.read_csv(work / "results/tables/runs.csv")
    assert set(runs["network"]) == {"gc"} and runs["words_match_model"].all()
