# Stage 5: tables, cost model, figures; all captioned for `snakemake --report report.html`.


rule aggregate:
    input:
        partitions=partition_jsons(),
        bounds=bound_targets(),
        runs=run_targets(),
        inference=serial_inference_metrics(),
    output:
        partitions=report("results/tables/partitions.csv", caption="../report/partitions.rst", category="Tables"),
        runs=report("results/tables/runs.csv", caption="../report/runs.rst", category="Tables"),
        inference=report("results/tables/inference.csv", caption="../report/inference.rst", category="Tables"),
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn aggregate --partitions {input.partitions} --bounds {input.bounds} --runs {input.runs} "
        "--inference {input.inference} --partitions-out {output.partitions} --runs-out {output.runs} "
        "--inference-out {output.inference} 2> {log}"


rule costmodel:
    input:
        runs="results/tables/runs.csv",
        partitions=partition_targets() + [f"results/{n}/partitions/trivial-k1.part" for n in NETWORKS],
        networks=expand("results/{network}/network.h5", network=NETWORKS),
    output:
        predictions=report("results/tables/predictions.csv", caption="../report/predictions.rst", category="Cost model"),
        params=report("results/tables/costmodel.json", caption="../report/costmodel.rst", category="Cost model"),
    params:
        given=costmodel_args(),
        batch_sizes=",".join(str(b) for b in sorted(set([1] + RUNS["batch_sizes"]))),
        max_fit_k=(config.get("costmodel") or {}).get("max_fit_k", 2),
    log:
        "logs/costmodel.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn costmodel {input.runs} --partitions {input.partitions} --batch-sizes {params.batch_sizes} "
        "--max-fit-k {params.max_fit_k} {params.given} --params {output.params} -o {output.predictions} 2> {log}"


rule figures:
    input:
        partitions="results/tables/partitions.csv",
        runs="results/tables/runs.csv",
        predictions="results/tables/predictions.csv",
    output:
        volume=report("results/figures/volume_vs_k.png", caption="../report/volume_vs_k.rst", category="Figures"),
        per_layer=report(
            expand("results/figures/per_layer_{network}.png", network=NETWORKS),
            caption="../report/per_layer.rst",
            category="Figures",
        ),
        speedup=report("results/figures/speedup.png", caption="../report/speedup.rst", category="Figures"),
        breakdown=report("results/figures/time_breakdown.png", caption="../report/time_breakdown.rst", category="Figures"),
        crossover=report("results/figures/crossover.png", caption="../report/crossover.rst", category="Figures"),
        predicted=report("results/figures/predicted_vs_k.png", caption="../report/predicted_vs_k.rst", category="Cost model"),
    log:
        "logs/figures.log",
    conda:
        "../../envs/spdnn.yaml"
    shell:
        "spdnn plots --partitions {input.partitions} --runs {input.runs} --predictions {input.predictions} "
        "--results results results/figures 2> {log}"
