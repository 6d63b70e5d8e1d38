# spdnn: partition-and-train experiments on sparse DNNs.
# network -> hypergraph -> partition -> (MPI) runs -> tables, figures, cost model, report.
import os

from snakemake.utils import min_version

min_version("9.0")

# The default config, unless the user gave --configfile (configs given there replace it rather
# than merge into it, so a small test config does not inherit the default networks).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/networks.smk"
include: "workflow/rules/partition.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/results.smk"


rule all:
    input:
        all_outputs(),
