#!/usr/bin/env bash
# The issue-11 study, in the order that answers the most per CPU-hour. Resumable: every finished run is a JSON in
# benchmarks/results/glue/ and is skipped; an interrupted run continues from its last epoch checkpoint. Run it in
# the background and rerun it after a stop:
#     nohup bash benchmarks/run_study.sh > runs/logs/study.log 2>&1 &
# "SPD default" is spd_paper (preset="paper", the package default). Seeds 0,1,2; the LR grid runs on seed 0 only
# and --tuned_lr then runs each method at its own best rate (equal tuning budget for every method).
set -euo pipefail
cd "$(dirname "$0")/.."
glue() { python benchmarks/glue.py "$@"; }
methods="gmp gmp_kd spd_reference spd_paper"

# 1. Learning-rate grid, seed 0, MRPC and STS-B at 80%.
glue --tasks stsb mrpc --sparsities 0.8 --methods $methods one_shot --learning_rates 1e-4 3e-4 6.4e-4 --seeds 0
# 2. Each method at its own best rate, three seeds: the four tasks at 80%, MRPC and SST-2 at 90%.
glue --tasks stsb mrpc --sparsities 0.8 --methods $methods --tuned_lr --seeds 0 1 2
for task in cola sst2; do
  glue --tasks $task --sparsities 0.8 --methods $methods one_shot --learning_rates 1e-4 3e-4 6.4e-4 --seeds 0
  glue --tasks $task --sparsities 0.8 --methods $methods --tuned_lr --seeds 0 1 2
done
for task in mrpc sst2; do
  glue --tasks $task --sparsities 0.9 --methods $methods one_shot --learning_rates 1e-4 3e-4 6.4e-4 --seeds 0
  glue --tasks $task --sparsities 0.9 --methods $methods --tuned_lr --seeds 0 1 2
done
glue --report_only
