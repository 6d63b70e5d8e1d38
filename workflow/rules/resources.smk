# Cluster resources per job, from the network's size in the config (a dry run has no files yet).
# mem_mb is the peak RSS of all the job's processes that benchmarks/scale.py measured for that stage,
# as a function of the size, with a margin; runtime (minutes) likewise from the measured rates of a
# 2-core machine. Locally these matter only with --resources; on SLURM they become --mem / -t
# (README "Running on a SLURM cluster", where the measurements are).

GC_NNZ_PER_ROW = 32  # RadiX-Net / Graph Challenge layers: 32 nonzeros per row at every N
BYTES_PER_NNZ = 12  # CSR in memory: int32 index + float32 value, amortised int64 row offsets
MB = 1e6


def network_size(network):
    """(widths, nonzeros) of a configured network, estimated from the config alone."""
    cfg = net_cfg(network)
    gen = cfg["generator"]
    if gen == "radixnet":
        widths = [cfg["neurons"]] * (cfg["layers"] + 1)
        return widths, GC_NNZ_PER_ROW * cfg["neurons"] * cfg["layers"]
    if gen == "random":
        return cfg["widths"], cfg["nnz_per_row"] * sum(cfg["widths"][1:])
    if gen == "pruned":
        w = cfg["dense_widths"]
        return w, int(cfg["density"] * sum(a * b for a, b in zip(w[:-1], w[1:])))
    shape = cfg.get("fetch") or {"neurons": cfg.get("neurons", 1024), "layers": cfg.get("layers", 120)}
    widths = [shape["neurons"]] * (shape["layers"] + 1)
    return widths, GC_NNZ_PER_ROW * shape["neurons"] * shape["layers"]


def _layer_mb(network):
    """One layer's CSR in memory (the largest, taken as the mean: layers are alike here), MB."""
    widths, nnz = network_size(network)
    return BYTES_PER_NNZ * nnz / (len(widths) - 1) / MB


def _minutes(seconds):
    return max(10, math.ceil(2 * seconds / 60))  # twice the measured time: slower nodes, shared disks


def network_mem_mb(wildcards):
    # generate 65536x1920 (4.0e9 nonzeros): 332 MB measured; import-gc holds one layer's text too
    return math.ceil(1000 + 8 * _layer_mb(wildcards.network))


def network_runtime(wildcards):
    return _minutes(network_size(wildcards.network)[1] / 2e6)  # import-gc ~3e6, generate ~7e6 nnz/s


def partition_mem_mb(wildcards):
    """Parent and `jobs` workers, each with a few layers and a subproblem resident; the parent also
    the layer partition (1 byte per neuron at K <= 256) and the copies of it that the refinement's
    and metrics' shares pickle to the workers. The candidates are on disk under TMPDIR
    (`candidate_store.py`; 8 bytes per neuron were counted while they were in memory). Measured at
    65536x1920, K = 8, jobs 2: 1,211 MB (README "Scale"), against 4.7 GB asked."""
    widths, _ = network_size(wildcards.network)
    procs = 1 + PART["jobs"]
    per_neuron = 4 * (1 if int(wildcards.k) <= 256 else 2)
    return math.ceil(procs * (400 + 40 * _layer_mb(wildcards.network)) + per_neuron * sum(widths) / MB)


def partition_runtime(wildcards):
    # hypergraph: ~5 layer solves per layer (sweep, 3 candidates, refinement), the last four shared
    # by `jobs` processes; ~0.9 s per solve of a 2.1e6-nonzero layer at K = 8 (measured over the
    # 1920 layers of 65536x1920; more with K)
    widths, nnz = network_size(wildcards.network)
    L = len(widths) - 1
    per_solve = 0.1 + 0.8 * (nnz / L) / 2.1e6 * max(1.0, math.log2(int(wildcards.k)) / 3)
    solves = L * (1 + 4 / PART["jobs"]) if wildcards.method in ("hypergraph", "sweep") else L * 0.1
    return _minutes(solves * per_solve + 0.2 * L)


def bound_mem_mb(wildcards):
    return math.ceil(1000 * PART["bound_max_memory_gb"] + 3000 + 20 * _layer_mb(wildcards.network))


def bound_runtime(wildcards):
    return _minutes(PART["bound_max_seconds"] + 0.2 * (len(network_size(wildcards.network)[0]) - 1))


def inference_mem_mb(wildcards):
    """Serial inference: one layer, and the activations of a batch (input, output, clip) in float32."""
    widths, _ = network_size(wildcards.network)
    batch = inference_batch(wildcards.network)
    return math.ceil(800 + 4 * _layer_mb(wildcards.network) + 4 * 4 * batch * max(widths) / MB)


DIGITS_IMAGES = 1797  # what the images job writes: scikit-learn's digits, each once
CHALLENGE_IMAGES = 60000  # the Graph Challenge's input files


def inference_inputs(network) -> int:
    """Images an inference run reads: the digits when generated, else the challenge's count (the
    official files hold that many; a user's own file is taken to be no larger)."""
    cfg = net_cfg(network)
    return DIGITS_IMAGES if not uses_fetch(network) and "images" not in cfg else CHALLENGE_IMAGES


def inference_batch(network) -> int:
    """Images in an inference run's largest batch: the configured batch, or all the images where
    there are fewer (the generated digits are one batch of the default 4,096)."""
    return min(config["inference"]["batch_size"], inference_inputs(network))


# Serial inference's multiply-adds a second on one core, measured with the 1,797 digits (the rates
# of the multiply-adds done): RadiX-Net and challenge layers go through dense blocks of rows that share
# their columns (kernels.py; 3.1-4.7e9 at N = 4096..65536), random and pruned layers through the CSR
# product with scattered columns (1.6e9 at 65536x120, 1.8-1.9e9 at 16384x30).
BLOCK_MADDS_PER_SECOND = 3e9
SCATTERED_MADDS_PER_SECOND = 1e9
# A sample leaves once all its activations are zero (reference.drop_dead). With the challenge's
# negative biases the dying is over within ~16 layers and the rest survive to the end: the
# multiply-adds done were 0.30-0.41 of every input through every layer (digits, N = 1024..65536, 120
# and 1920 layers); the official MNIST inputs survive less (1,812 of 60,000 at 1024x120). Without a
# negative bias nothing dies.
CHALLENGE_WORK_DONE = 0.5


def dense_blocks(network, method=None) -> bool:
    """Whether the layers, or a rank's rows of them, go through the dense-block kernel: RadiX-Net and
    challenge layers, unless a `random` partition splits their row groups (5-9 % of a RadiX-Net's
    entries stay in blocks at K = 2..8, README "Cost model") or an external one may (structure unknown)."""
    blocks = net_cfg(network)["generator"] in ("radixnet", "graphchallenge")
    return blocks and method not in ("random", "external")


def _inference_seconds(network, method=None) -> float:
    """One core's seconds for every input through the network, less the work of the samples that die."""
    # generated RadiX-Nets take the challenge's (negative) bias unless the config gives one
    dies = dense_blocks(network) and net_cfg(network).get("bias", -1) < 0
    madds = inference_inputs(network) * network_size(network)[1] * (CHALLENGE_WORK_DONE if dies else 1)
    return madds / (BLOCK_MADDS_PER_SECOND if dense_blocks(network, method) else SCATTERED_MADDS_PER_SECOND)


def inference_runtime(wildcards):
    return _minutes(_inference_seconds(wildcards.network))


# A rank's multiply-adds a second in a row-wise training step, exchanges included (K = 2, B = 64,
# 3 x nnz x B / K a step, on 2 cores; README "Running on a SLURM cluster"): dense blocks 2.6e9 at
# 16384x120, 2.8e9 at 65536x120 (RadiX-Net); CSR rows 0.93-1.08e9 at 16384x120 (random, 32 a row).
TRAIN_BLOCK_MADDS_PER_SECOND = 2.5e9
TRAIN_SCATTERED_MADDS_PER_SECOND = 0.8e9
TRAIN_DIGITS = DIGITS_IMAGES - round(TEST_FRACTION * DIGITS_IMAGES)  # the runs' training set (datasets.load_dataset)


def run_runtime(wildcards):
    """An MPI run's minutes. Training: each step 3 x nnz x B multiply-adds (the forward product, the
    two backward ones) shared by the K ranks, data-parallel also allreducing the gradient (nnz
    float32, ~2 GB/s), plus reading, evaluating and writing the network, about a microsecond per
    nonzero a rank (measured: 29 s at 16384x120, K = 2); inference: serial inference's seconds, over
    K > 1 ranks at half the efficiency (K = 2 on 2 cores, streamed, block partition, was no faster than
    one process: 1,354 s of compute against 1,248 at 65536x120 with 60,000 inputs), plus reading,
    0.1 us per nonzero a rank (data-parallel: every rank reads the whole network)."""
    _, nnz = network_size(wildcards.network)
    k = int(wildcards.k)
    if not hasattr(wildcards, "b"):
        efficiency = 1 if k == 1 else 0.5
        read = nnz / (1 if wildcards.mode == "data-parallel" else k) / 1e7
        return _minutes(_inference_seconds(wildcards.network, wildcards.method) / (efficiency * k) + read)
    b = int(wildcards.b)
    rate = TRAIN_BLOCK_MADDS_PER_SECOND if dense_blocks(wildcards.network, wildcards.method) \
        else TRAIN_SCATTERED_MADDS_PER_SECOND
    step = 3 * nnz * b / k / rate + (4 * nnz / 1e9 if wildcards.mode == "data-parallel" else 0)
    return _minutes(RUNS["epochs"] * math.ceil(TRAIN_DIGITS / b) * step + nnz / k / 1e6)


def streamed_inference(wildcards) -> bool:
    """A row-wise inference run that reads its layers as it goes (inference.stream_layers)."""
    return (config["inference"]["stream_layers"] and not hasattr(wildcards, "b")
            and wildcards.mode == "row-wise")


def run_mem_mb_per_cpu(wildcards):
    """Per MPI rank: its share of the network (1/K; streamed inference: one layer; data-parallel:
    the whole network, and in training its gradient), and, in training, the activations it keeps
    for the backward pass (L x (received + owned) x B float32; data-parallel: B/K samples, the same).
    Training, K = 2, B = 64, measured a rank: 1,330 MB at 16384x120 (asks 2,449), 4,730 MB at
    65536x120 (asks 7,394); tests/test_workflow.py keeps the request within 1-2x of those."""
    widths, nnz = network_size(wildcards.network)
    k = int(wildcards.k)
    if wildcards.mode == "data-parallel":
        # A replica of the whole network on every rank, at any K; training adds its gradient twice
        # (float64: the send buffer and the allreduced sum) and a layer's parts. Measured a rank at
        # K = 2, 16384x120: training (B = 64) 3,033 MB (random, 32 a row), 2,608 MB (RadiX-Net);
        # inference of the random one (4,096 digits in one batch on one rank) 1,543 MB. The
        # row-wise 1/K share asked 2,449 for training, and fell below the replica from K = 4 in inference.
        share = (4 if hasattr(wildcards, "b") else 1) * BYTES_PER_NNZ * nnz / MB
    elif streamed_inference(wildcards):
        share = 3 * _layer_mb(wildcards.network)  # the layer read, the rank's rows, the plan
    else:
        share = 3 * BYTES_PER_NNZ * nnz / k / MB  # weights, gradient and the update's work space
    batch = int(getattr(wildcards, "b", 0) or inference_batch(wildcards.network))
    kept = (len(widths) - 1) * 2 * max(widths) / k * batch * 4 / MB if hasattr(wildcards, "b") else 0
    # A data-parallel rank runs its B/K samples through every layer; a row-wise rank all B through
    # its rows, whose inputs may span the whole layer. Measured, data-parallel inference of 4,096
    # images (16384x8 random, 32 a row): the busiest rank (rank 0: it also reads the images)
    # 776 MB at K = 2, 663 MB at K = 4; the whole batch's activations asked 1,656 at both.
    held = math.ceil(batch / k) if wildcards.mode == "data-parallel" else batch
    return math.ceil(800 + share + kept + 3 * 4 * held * max(widths) / MB)


def hypergraph_mem_mb(wildcards):
    widths, _ = network_size(wildcards.network)
    return math.ceil(600 + 8 * sum(widths) / MB + 20 * _layer_mb(wildcards.network))
