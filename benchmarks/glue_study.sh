#!/usr/bin/env bash
# The seeded GLUE study of issue 11: every method gets the same tuning budget. Each run is one `benchmarks/glue.py`
# process; a finished run's JSON is reused and an interrupted one resumes, so rerun the script after a stop:
#
#   nohup bash benchmarks/glue_study.sh stsb:0.8 mrpc:0.8 cola:0.8 sst2:0.8 mrpc:0.9 sst2:0.9 > runs/logs/study.log 2>&1 &
#   JOBS=18 OMP_NUM_THREADS=1 bash benchmarks/glue_study.sh stsb:0.8 -- --results_dir benchmarks/results/glue_h100
#
# Arguments: <task>:<sparsity> pairs, then optionally `--` and glue.py options for every run. JOBS runs at a time
# (default 1: on 2 CPU cores one run fills the machine; on a GPU the model is too small to fill it, so runs share).
# Per pair, phases wait for each other: (1) the teacher and the one-shot floor; (2) the learning-rate grid on seed 0,
# every method at every rate; (3) seeds 1 and 2 at each method's best grid rate (--tuned_lr) and, with
# BF16_PARITY=1 (the default), the bf16 parity runs of issue 12 (SPD paper, seeds 0-2, at its fp32 rate); then the
# report. "SPD default" is spd_reference (preset="reference", the package default since issue 11); the bf16 parity
# runs keep spd_paper, the default when issue 12 measured them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pairs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do pairs+=("$1") && shift; done
[ $# -gt 0 ] && shift  # the `--`
[ ${#pairs[@]} -gt 0 ] || { echo "usage: glue_study.sh <task>:<sparsity> ... [-- glue.py options]" >&2; exit 2; }
python=${PYTHON:-python}
jobs=${JOBS:-1}
methods=${METHODS:-"gmp gmp_kd spd_paper spd_reference spd_p08_all_params_gold spd_p08_kd"}
learning_rates=${LEARNING_RATES:-"3e-4 6.4e-4 1e-3"}
# Several processes share the machine's cores: one full thread pool each would oversubscribe them.
if [ "$jobs" -gt 1 ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}; fi

shared_options="$*"  # passed to every run
glue() { "$python" "$here/glue.py" "$@" $shared_options; }
export -f glue
export here python shared_options

run_in_parallel() {  # one run's own glue.py options per input line; its log lines go to stdout, prefixed by them
    # A failed run must not stop the others: it is reported, and the next invocation retries (resumes) it.
    xargs -P "$jobs" -I{} bash -c 'glue {} 2>&1 | sed -u "s|^|[{}] |"; exit ${PIPESTATUS[0]}' ||
        echo "[glue_study] some runs failed: see their lines above"
}

for pair in "${pairs[@]}"; do
    at="--tasks ${pair%%:*} --sparsities ${pair##*:}"
    glue $at --methods one_shot
    for method in $methods; do
        for rate in $learning_rates; do echo "$at --methods $method --learning_rates $rate --seeds 0"; done
    done | run_in_parallel
    {
        for method in $methods; do
            for seed in 1 2; do echo "$at --methods $method --tuned_lr --tuning_seed 0 --seeds $seed"; done
        done
        if [ "${BF16_PARITY:-1}" = 1 ]; then
            for seed in 0 1 2; do echo "$at --methods spd_paper --tuned_lr --tuning_seed 0 --seeds $seed --bf16"; done
        fi
    } | run_in_parallel
done
glue --report_only
