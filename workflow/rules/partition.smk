# Stages 2-3: the hypergraph (interchange artifact) and partitions per (method, K).


rule hypergraph:
    input:
        "results/{network}/network.h5",
    output:
        "results/{network}/network.hgr",
    resources:
        mem_mb=hypergraph_mem_mb,
        runtime=network_runtime,
    log:
        "logs/{network}/hypergraph.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn hypergraph {input} -o {output} 2> {log}"


rule partition:
    input:
        "results/{network}/network.h5",
    output:
        part="results/{network}/partitions/{method}-k{k}.part",
        metrics="results/{network}/partitions/{method}-k{k}.part.json",
        binary="results/{network}/partitions/{method}-k{k}.part.npy",  # what the MPI ranks read, by layer slices
    wildcard_constraints:
        method="hypergraph|sweep|random|block",
    threads: PART["jobs"]
    resources:
        mem_mb=partition_mem_mb,
        runtime=partition_runtime,
    params:
        epsilon=PART["epsilon"],
        seed=PART["seed"],
        # A fixed number of refinement processes (not {threads}): the partition must not depend
        # on --cores. Same seed and jobs, same bytes.
        jobs=PART["jobs"],
    log:
        "logs/{network}/partition-{method}-k{k}.log",
    benchmark:
        "results/benchmarks/{network}/partition-{method}-k{k}.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn partition {input} -k {wildcards.k} --method {wildcards.method} --epsilon {params.epsilon} "
        "--seed {params.seed} --jobs {params.jobs} -o {output.part} 2> {log}"


rule certificate:
    # The semidefinite bound's certificate (src/spdnn/semidefinite_bound.py): one serves every K, so
    # it is found once per network here and each K's bound job reads it. Past a budget the file
    # holds the reason and the bounds report the class-count bound alone.
    input:
        "results/{network}/network.h5",
    output:
        "results/{network}/bounds/certificate.json",
    resources:
        mem_mb=bound_mem_mb,
        runtime=bound_runtime,
    params:
        epsilon=PART["epsilon"],
        max_seconds=PART["bound_max_seconds"],
        max_memory=PART["bound_max_memory_gb"],
    log:
        "logs/{network}/certificate.log",
    benchmark:
        "results/benchmarks/{network}/certificate.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn certificate {input} --epsilon {params.epsilon} --max-seconds {params.max_seconds} "
        "--max-memory {params.max_memory} -o {output} 2> {log}"


rule bound:
    # What no partition balanced in every layer can beat (src/spdnn/bound.py, and the semidefinite
    # bound of src/spdnn/semidefinite_bound.py beside it, from the network's certificate): the
    # reference line for the partitions' volumes.
    input:
        net="results/{network}/network.h5",
        certificate="results/{network}/bounds/certificate.json",
    output:
        "results/{network}/bounds/k{k}.json",
    threads: PART["bound_threads"]
    resources:
        mem_mb=bound_mem_mb,
        runtime=bound_runtime,
    params:
        epsilon=PART["epsilon"],
        # A parameter too (not only {threads}, which --cores may lower): the bound is the same on
        # any number of threads, but how many layers fit in max_seconds is not.
        threads=PART["bound_threads"],
        # Past either budget the rule writes "lower_bound_forward": null with the reason: the
        # workflow goes on and the tables show no bound for that (network, K).
        max_seconds=PART["bound_max_seconds"],
        max_memory=PART["bound_max_memory_gb"],
    log:
        "logs/{network}/bound-k{k}.log",
    benchmark:
        "results/benchmarks/{network}/bound-k{k}.tsv"
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn bound {input.net} -k {wildcards.k} --certificate {input.certificate} --epsilon {params.epsilon} "
        "--max-seconds {params.max_seconds} --max-memory {params.max_memory} --threads {params.threads} "
        "> {output}.tmp 2> {log} "
        "&& mv {output}.tmp {output}"


rule trivial_partition:
    input:
        "results/{network}/network.h5",
    output:
        part="results/{network}/partitions/trivial-k1.part",
        metrics="results/{network}/partitions/trivial-k1.part.json",
        binary="results/{network}/partitions/trivial-k1.part.npy",
    log:
        "logs/{network}/partition-trivial.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn partition {input} -k 1 --method block -o {output.part} 2> {log}"


rule external_partition:
    # A partition the user brings (hMETIS/KaHyPar/PaToH format): validated, then used like the others.
    input:
        net="results/{network}/network.h5",
        part=lambda wc: external_partitions(wc.network)[int(wc.k)],
    output:
        part="results/{network}/partitions/external-k{k}.part",
        metrics="results/{network}/partitions/external-k{k}.part.json",
    log:
        "logs/{network}/partition-external-k{k}.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn volume {input.net} {input.part} -k {wildcards.k} > {output.metrics}.tmp 2> {log} "
        "&& cp {input.part} {output.part} && mv {output.metrics}.tmp {output.metrics}"
