#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment (from a copy of this file, so not relative to
# it). The workflow exports SPDNN_WORKFLOW_DIR (workflow/rules/common.smk): install spdnn from that
# checkout, editable, so the environment runs the code of the workflow that made it.
set -euo pipefail
: "${SPDNN_WORKFLOW_DIR:?set by the spdnn Snakefile; run this through snakemake --use-conda}"
python -m pip install --no-deps -e "$SPDNN_WORKFLOW_DIR"
