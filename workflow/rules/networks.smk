# Stage 1: networks (generated or imported) and MNIST-like inputs.


rule network:
    input:
        network_source,
    output:
        "results/{network}/network.h5",
    params:
        args=network_args,
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
        archive="resources/{network}/neuron{n}.tar.gz",
        images="resources/{network}/sparse-images-{n}.tsv.gz",
    params:
        fetch=lambda wc: net_cfg(wc.network)["fetch"],
    log:
        "logs/{network}/fetch-{n}.log",
    shell:
        "spdnn fetch-gc --neurons {wildcards.n} --layers {params.fetch[layers]} --root {params.fetch[root]} "
        "resources/{wildcards.network} > {log} 2>&1"


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


rule serial_inference:
    input:
        net="results/{network}/network.h5",
        images=images_file,
    output:
        categories="results/{network}/inference/serial-categories.tsv",
        metrics="results/{network}/inference/serial.json",
    log:
        "logs/{network}/serial_inference.log",
    benchmark:
        "results/benchmarks/{network}/serial_inference.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn infer {input.net} {input.images} -o {output.categories} --metrics {output.metrics} 2> {log}"
