# Stage 1: networks (generated or imported) and MNIST-like inputs.


rule network:
    input:
        network_source,
    output:
        "results/{network}/network.h5",
    params:
        args=network_args,
    resources:
        mem_mb=network_mem_mb,
        runtime=network_runtime,
    log:
        "logs/{network}/network.log",
    benchmark:
        "results/benchmarks/{network}/network.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn {params.args} -o {output} 2> {log}"


rule fetch_gc:
    # The official Graph Challenge files for a network configured with `fetch:` (needs internet,
    # or a mirror / file:// root): resumable, gzip-checked, sha256 in provenance.json.
    output:
        archive="resources/{network}/neuron{n}-l{layers}/neuron{n}.tar.gz",
        images="resources/{network}/neuron{n}-l{layers}/sparse-images-{n}.tsv.gz",
        categories="resources/{network}/neuron{n}-l{layers}/neuron{n}-l{layers}-categories.tsv",
    params:
        fetch=lambda wc: net_cfg(wc.network)["fetch"],
    log:
        "logs/{network}/fetch-{n}-l{layers}.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn fetch-gc --neurons {wildcards.n} --layers {wildcards.layers} --root {params.fetch[root]} "
        "resources/{wildcards.network}/neuron{wildcards.n}-l{wildcards.layers} > {log} 2>&1"


rule train_dense:
    # The dense source of pruned networks, trained once per spec (digits, NumPy).
    output:
        "results/dense/{dense}.h5",
    params:
        cfg=lambda wc: dense_targets()[wc.dense],
    log:
        "logs/dense/{dense}.log",
    benchmark:
        "results/benchmarks/dense/{dense}.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn train-dense --dataset digits --widths {params.cfg[dense_widths_csv]} "
        "--epochs {params.cfg[dense_epochs]} --seed {params.cfg[seed]} -o {output} 2> {log}"


rule images:
    input:
        "results/{network}/network.h5",
    output:
        "results/{network}/images.tsv",
    params:
        threshold=config["inference"]["threshold"],
    log:
        "logs/{network}/images.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn images --dataset digits --network {input} --threshold {params.threshold} -o {output} 2> {log}"


rule trainable:
    # The training recipe's starting point (README "Training recipe"): the network's pattern with
    # He-initialised weights and zero biases. Partitions of the network apply unchanged.
    input:
        "results/{network}/network.h5",
    output:
        "results/{network}/trainable-{init}.h5",
    wildcard_constraints:
        init="he",
    params:
        seed=RUNS["seed"],
    log:
        "logs/{network}/trainable-{init}.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn reinit {input} --init {wildcards.init} --seed {params.seed} -o {output} 2> {log}"


rule serial_inference:
    # With the official images, the official categories must come out (--truth): a mismatch fails
    # the job; the table results/tables/inference.csv says which networks were checked.
    input:
        unpack(serial_inference_inputs),
    output:
        categories="results/{network}/inference/serial-categories.tsv",
        metrics="results/{network}/inference/serial.json",
    log:
        "logs/{network}/serial_inference.log",
    benchmark:
        "results/benchmarks/{network}/serial_inference.tsv"
    conda:
        "../../envs/spdnn.yaml"
    resources:
        mem_mb=inference_mem_mb,
        runtime=inference_runtime,
    params:
        truth=truth_arg,
        batch=config["inference"]["batch_size"],  # inputs per batch: sets the activations' memory
    shell:
        "spdnn infer {input.net} {input.images} {params.truth} --batch-size {params.batch} "
        "-o {output.categories} --metrics {output.metrics} 2> {log}"
