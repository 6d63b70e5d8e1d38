# Stage 4: distributed inference and training under MPI (mpiexec locally, srun on SLURM:
# config key mpi_launcher, set by profiles/slurm).
# Each rule asks for K tasks; `threads` makes the local scheduler count K cores (profiles/slurm
# sets it back to 1 so that SLURM gets K tasks of 1 CPU, not K x K CPUs).


rule infer_run:
    input:
        net="results/{network}/network.h5",
        images=images_file,
        part=partition_file,
        serial="results/{network}/inference/serial-categories.tsv",
    output:
        metrics="results/{network}/runs/infer-{method}-k{k}-{mode}.json",
    threads: mpi_threads
    resources:
        tasks=lambda wc: int(wc.k),
        mpi=mpi_resource,
        mem_mb_per_cpu=run_mem_mb_per_cpu,
        runtime=run_runtime,
    params:
        launch=launch,
        part=lambda wc, input: "" if wc.mode == "data-parallel" else f"--partition {input.part}",
        batch=config["inference"]["batch_size"],
        stream=lambda wc: "--stream-layers " if streamed_inference(wc) else "",
        threads=RUNS["threads_per_rank"],
    log:
        "logs/{network}/runs/infer-{method}-k{k}-{mode}.log",
    benchmark:
        "results/benchmarks/{network}/runs/infer-{method}-k{k}-{mode}.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "OMP_NUM_THREADS={params.threads} {params.launch} "
        "spdnn infer {input.net} {input.images} {params.part} --mode {wildcards.mode} {params.stream}"
        "--batch-size {params.batch} --truth {input.serial} -o {output.metrics}.categories.tsv "
        "--metrics {output.metrics} 2> {log} && rm -f {output.metrics}.categories.tsv"


rule train_run:
    # Trains the recipe's network (README "Training recipe"): for Graph Challenge-style networks the
    # pattern with He-initialised weights (rule trainable), else the network itself. Every value
    # that changes the result is a param, so changing it reruns exactly these jobs.
    input:
        net=train_network,
        part=partition_file,
    output:
        metrics="results/{network}/runs/train-{method}-k{k}-{mode}-b{b}.json",
        trained=temp("results/{network}/runs/train-{method}-k{k}-{mode}-b{b}.h5"),
    threads: mpi_threads
    resources:
        tasks=lambda wc: int(wc.k),
        mpi=mpi_resource,
        mem_mb_per_cpu=run_mem_mb_per_cpu,
        runtime=run_runtime,
    params:
        launch=launch,
        part=lambda wc, input: "" if wc.mode == "data-parallel" else f"--partition {input.part}",
        threads=RUNS["threads_per_rank"],
        epochs=RUNS["epochs"],
        lr=train_lr,
        lr_schedule=RUNS["lr_schedule"],
        seed=RUNS["seed"],
        test_fraction=TEST_FRACTION,
        checkpoint_every=RUNS["checkpoint_every"],
    log:
        "logs/{network}/runs/train-{method}-k{k}-{mode}-b{b}.log",
    benchmark:
        "results/benchmarks/{network}/runs/train-{method}-k{k}-{mode}-b{b}.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "OMP_NUM_THREADS={params.threads} {params.launch} "
        "spdnn train {input.net} {params.part} --mode {wildcards.mode} --dataset digits "
        "--epochs {params.epochs} --batch-size {wildcards.b} --lr {params.lr} --lr-schedule {params.lr_schedule} "
        "--seed {params.seed} --test-fraction {params.test_fraction} --checkpoint-every {params.checkpoint_every} -o {output.trained} "
        "--metrics {output.metrics} 2> {log}"
