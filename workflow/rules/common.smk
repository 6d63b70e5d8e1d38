# Config validation and the named input functions every stage uses.
import math
import os
import re
import sys

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
# The conda environment's post-deploy script installs spdnn from here (envs/spdnn.post-deploy.sh):
# Snakemake copies the env file elsewhere, so a path relative to it would not find this checkout.
os.environ.update(SPDNN_WORKFLOW_DIR=workflow.basedir)

CONFIG_EXIT_STATUS = 2  # a user error, as every spdnn command's


def _set(cfg, path, value):
    for key in path[:-1]:
        cfg = cfg[key]
    cfg[path[-1]] = value


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def coerce_overrides(cfg, validator):
    """`--config key='{a: [4]}'` reaches the config as strings inside nested values (Snakemake
    parses them with YAML's BaseLoader). Where the schema wants a number or a boolean and finds a
    string, read that string as YAML, and as a decimal number where YAML leaves one a string
    (`1e-10`, in a config file too); anything else is left for the schema to report."""
    for _ in range(1000):  # each pass fixes at least one value
        fixed = False
        for error in validator.iter_errors(cfg):
            wanted = error.validator_value if error.validator == "type" else None
            wanted = [wanted] if isinstance(wanted, str) else (wanted or [])
            if isinstance(error.instance, str) and {"integer", "number", "boolean"} & set(wanted):
                try:
                    value = yaml.safe_load(error.instance)
                except yaml.YAMLError:
                    continue
                if isinstance(value, str) and "number" in wanted and NUMBER.fullmatch(value):
                    value = float(value)  # YAML 1.1 reads 1e-10 (no dot) as a string
                if isinstance(value, (int, float, bool)) and value != error.instance:
                    _set(cfg, list(error.absolute_path), value)
                    fixed = True
                    break
        if not fixed:
            return


def check_config(cfg, schema_path):
    """One line naming the offending key, exit status 2 (no traceback): a user error, not a crash."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    coerce_overrides(cfg, validator)
    error = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        print(f"spdnn workflow: config error at {key}: {error.message}", file=sys.stderr)
        sys.exit(CONFIG_EXIT_STATUS)


check_config(config, SCHEMA)
validate(config, SCHEMA)  # fills in the schema's defaults

NETWORKS = config["networks"]
PART = config["partition"]
RUNS = config["runs"]


wildcard_constraints:
    network="[A-Za-z0-9_.-]+",
    method="[a-z]+",
    k=r"\d+",
    mode="row-wise|data-parallel",
    b=r"\d+",


def net_cfg(network):
    return NETWORKS[network]


def partition_ks(network):
    """K list of a network (its own list, else the global one)."""
    return net_cfg(network).get("k", PART["k"])


def partition_methods(network):
    return net_cfg(network).get("methods", PART["methods"])


def external_partitions(network):
    """{K: path} of partition files the user brings for this network (e.g. from PaToH)."""
    return {int(k): path for k, path in net_cfg(network).get("external", {}).items()}


def partition_targets():
    out = []
    for network in NETWORKS:
        for k in partition_ks(network):
            for method in partition_methods(network):
                out.append(f"results/{network}/partitions/{method}-k{k}.part")
        for k in external_partitions(network):
            out.append(f"results/{network}/partitions/external-k{k}.part")
    return out


def bound_targets():
    """One volume lower bound per (network, K) when partition.bound is on."""
    if not PART.get("bound", True):
        return []
    return [f"results/{network}/bounds/k{k}.json" for network in NETWORKS for k in partition_ks(network)]


def run_targets():
    """One training run per (network, method, K, mode, batch), one inference run per (network, method, K, mode)."""
    out = []
    for network in NETWORKS:
        methods = [m for m in RUNS["methods"] if m in partition_methods(network) or m == "external"]
        for k in RUNS["k"]:
            rowwise = ["none"] if k == 1 else methods  # K = 1: the serial run, no partition needed
            for method in rowwise:
                out.append(f"results/{network}/runs/infer-{method}-k{k}-row-wise.json")
                for b in RUNS["batch_sizes"] if RUNS["train"] else []:
                    out.append(f"results/{network}/runs/train-{method}-k{k}-row-wise-b{b}.json")
            if "data-parallel" in RUNS["modes"] and k > 1:
                out.append(f"results/{network}/runs/infer-none-k{k}-data-parallel.json")
                for b in RUNS["batch_sizes"] if RUNS["train"] else []:
                    out.append(f"results/{network}/runs/train-none-k{k}-data-parallel-b{b}.json")
    return out


def all_outputs():
    out = partition_targets() + run_targets()
    out += [f"results/{n}/inference/serial-categories.tsv" for n in NETWORKS]
    out += ["results/tables/partitions.csv", "results/tables/runs.csv", "results/tables/predictions.csv",
            "results/figures/volume_vs_k.png"]
    return out


def partition_file(wildcards):
    """The partition a run uses; K = 1 runs use the trivial one."""
    if wildcards.method == "none":
        return f"results/{wildcards.network}/partitions/trivial-k1.part"
    return f"results/{wildcards.network}/partitions/{wildcards.method}-k{wildcards.k}.part"


def uses_fetch(network):
    """The archive comes from `fetch:` unless `source:` points at a local copy (offline)."""
    cfg = net_cfg(network)
    return "fetch" in cfg and "source" not in cfg


def fetch_dir(network):
    """Where rule fetch_gc puts a network's official files (spdnn fetch-gc names them)."""
    f = net_cfg(network)["fetch"]
    return f"resources/{network}/neuron{f['neurons']}-l{f['layers']}"


def images_file(wildcards):
    """The official inputs when fetched, a user's file, or MNIST-like digits."""
    cfg = net_cfg(wildcards.network)
    if uses_fetch(wildcards.network) and "images" not in cfg:
        return f"{fetch_dir(wildcards.network)}/sparse-images-{cfg['fetch']['neurons']}.tsv.gz"
    return cfg.get("images", f"results/{wildcards.network}/images.tsv")


def categories_file(network):
    """The official categories that serial inference must reproduce: fetched with the official
    images, or given with `categories:` beside `images:`; None for generated inputs."""
    cfg = net_cfg(network)
    if "categories" in cfg:
        return cfg["categories"]
    if uses_fetch(network) and "images" not in cfg:
        f = cfg["fetch"]
        return f"{fetch_dir(network)}/neuron{f['neurons']}-l{f['layers']}-categories.tsv"
    return None


def serial_inference_inputs(wildcards):
    inputs = {"net": f"results/{wildcards.network}/network.h5", "images": images_file(wildcards)}
    truth = categories_file(wildcards.network)
    if truth:
        inputs["truth"] = truth
    return inputs


def truth_arg(wildcards, input):
    return f"--truth {input.truth}" if "truth" in input.keys() else ""


# The training runs hold out this fraction of the digits as their test set (spdnn train --test-fraction).
TEST_FRACTION = 0.2
TRAIN_INIT_DEFAULT = {"radixnet": "he", "graphchallenge": "he", "random": "keep", "pruned": "keep"}


def train_init(network):
    """The recipe's starting weights: `he` (pattern kept, weights re-drawn: challenge networks)
    or `keep` (the network's own weights: a random He-initialised or a pruned trained network)."""
    cfg = net_cfg(network)
    return cfg.get("train_init", TRAIN_INIT_DEFAULT[cfg["generator"]])


def train_network(wildcards):
    """The network a training run starts from (inference always uses the network itself)."""
    if train_init(wildcards.network) == "keep":
        return f"results/{wildcards.network}/network.h5"
    return f"results/{wildcards.network}/trainable-{train_init(wildcards.network)}.h5"


def train_lr(wildcards):
    """Peak learning rate for batch size B: the network's `lr` (else runs.lr) at
    runs.lr_reference_batch, scaled by sqrt(B / reference) (larger batches average more samples,
    so they take larger steps). Deep networks need a smaller lr than shallow ones."""
    base = net_cfg(wildcards.network).get("lr", RUNS["lr"])
    return base * math.sqrt(int(wildcards.b) / RUNS["lr_reference_batch"])


def dense_id(cfg):
    """Pruned networks that share a dense spec share one trained dense network."""
    widths = "-".join(str(w) for w in cfg["dense_widths"])
    return f"w{widths}_e{cfg.get('dense_epochs', 30)}_s{cfg.get('seed', 0)}"


def dense_targets():
    """{dense id: its training parameters} for every pruned network's dense source."""
    return {
        dense_id(c): {"dense_widths_csv": ",".join(str(w) for w in c["dense_widths"]),
                      "dense_epochs": c.get("dense_epochs", 30), "seed": c.get("seed", 0)}
        for c in NETWORKS.values() if c["generator"] == "pruned"
    }


def gc_source(network):
    """A Graph Challenge network's archive: a local path (`source:`), or where the fetch rule puts it."""
    cfg = net_cfg(network)
    if uses_fetch(network):
        return f"{fetch_dir(network)}/neuron{cfg['fetch']['neurons']}.tar.gz"
    return cfg["source"]


def network_source(wildcards):
    """Input files of the network rule (an import reads its source, a pruned network its dense one)."""
    cfg = net_cfg(wildcards.network)
    if cfg["generator"] == "graphchallenge":
        return [gc_source(wildcards.network)]
    if cfg["generator"] == "pruned":
        return [f"results/dense/{dense_id(cfg)}.h5"]
    return []


def network_args(wildcards):
    cfg = net_cfg(wildcards.network)
    gen = cfg["generator"]
    if gen == "radixnet":
        args = f"generate radixnet --neurons {cfg['neurons']} --layers {cfg['layers']} --seed {cfg.get('seed', 0)}"
        if "radices" in cfg:
            args += " --radices " + ",".join(str(b) for b in cfg["radices"])
    elif gen == "random":
        widths = ",".join(str(w) for w in cfg["widths"])
        args = f"generate random --widths {widths} --nnz-per-row {cfg['nnz_per_row']} --seed {cfg.get('seed', 0)}"
    elif gen == "pruned":
        args = (f"prune results/dense/{dense_id(cfg)}.h5 --density {cfg['density']} --scope {cfg.get('scope', 'layer')} "
                f"--schedule {cfg.get('schedule', 'iterative')} --finetune-epochs {cfg.get('finetune_epochs', 5)} "
                f"--seed {cfg.get('seed', 0)}")
    else:
        args = f"import-gc {gc_source(wildcards.network)}" + (f" --layers {cfg['layers']}" if "layers" in cfg else "")
    if "bias" in cfg and gen in ("radixnet", "random"):
        args += f" --bias {cfg['bias']}"
    return args


MPI_LAUNCHER = config.get("mpi_launcher", "mpiexec")


def mpi_threads(wildcards):
    """Locally a run takes all of --cores (at least K): runs never share cores with other jobs, so
    their timings mean something (the cost model is fitted on them). profiles/slurm sets 1 per task."""
    try:
        cores = workflow.cores
    except WorkflowError:  # --report or a dry run without --cores: nothing is scheduled
        cores = 1
    return max(int(wildcards.k), cores or 1)


def machine_cpus() -> int:
    """The CPUs this process may run on (its affinity: a taskset, a SLURM allocation; macOS has none).
    `spdnn.host.affinity` again, not imported: Snakemake's own environment need not have spdnn
    (under `--use-conda` only the rules' environment does), so the workflow imports none of it."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shared_core_ks() -> list[int]:
    """The configured run K above this machine's CPUs: run here (not on a cluster), their ranks share
    cores, and their seconds show the sharing, not the method (runs record cores_per_rank)."""
    if not workflow.local_exec:
        return []
    return sorted(k for k in set(RUNS["k"]) if k > machine_cpus())


onstart:
    if shared_core_ks():
        print(f"spdnn workflow: the runs at K = {', '.join(map(str, shared_core_ks()))} start more ranks than "
              f"this machine's {machine_cpus()} CPUs: they share cores, run slower, and are "
              "marked (runs.csv cores_per_rank < 1, hollow in the figures) and left out of the cost model's fit",
              file=sys.stderr)


def mpi_resource(wildcards):
    """The launcher for K > 1. K = 1 runs are plain processes (mpi4py initialises a singleton):
    the SLURM executor rejects MPI jobs with tasks=1."""
    return MPI_LAUNCHER if int(wildcards.k) > 1 else ""


def launch(wildcards, resources):
    return f"{resources.mpi} -n {resources.tasks}" if resources.mpi else ""


def partition_jsons():
    return [f"{p}.json" for p in partition_targets()]


def costmodel_args():
    cm = config.get("costmodel") or {}
    names = ("gamma_block", "gamma_scattered", "alpha", "beta", "delta", "mu")
    given = [f"--{k.replace('_', '-')} {cm[k]}" for k in names if cm.get(k) is not None]
    return " ".join(given)


def serial_inference_metrics():
    return [f"results/{n}/inference/serial.json" for n in NETWORKS]
