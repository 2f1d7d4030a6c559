#!/usr/bin/env bash
# The seeded GLUE study of issue 11 on one machine, several runs at a time (on a GPU the model is too small to fill
# it, so runs share it). Every run is one `benchmarks/glue.py` process; a finished run's JSON is reused, so the
# script resumes where it stopped.
#
#   JOBS=8 bash benchmarks/glue_study.sh stsb [glue.py options: --work_dir, --results_dir, --data_dir, ...]
#
# Phases, each waiting for the one before: (1) the teacher and the one-shot floor; (2) the learning-rate grid on
# seed 0, every method at every rate; (3) seeds 1 and 2 at each method's best grid rate (--tuned_lr), and the bf16
# parity runs of issue 12 (SPD paper, seeds 0-2, at its fp32 rate); (4) the report.
set -euo pipefail
task=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
jobs=${JOBS:-4}
sparsity=${SPARSITY:-0.8}
methods=${METHODS:-"gmp gmp_kd spd_paper spd_reference spd_p08_all_params_gold spd_p08_kd"}
learning_rates=${LEARNING_RATES:-"3e-4 6.4e-4 1e-3 2e-3"}
# Several processes share the machine's cores: one thread pool each would oversubscribe them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

shared_options="$*"  # the options given after the task, passed to every run
glue() { "$python" "$here/glue.py" --tasks "$task" --sparsities "$sparsity" "$@" $shared_options; }
export -f glue
export here python task sparsity shared_options

run_in_parallel() {  # one run's own glue.py options per input line; its log lines go to stdout, prefixed by them
    # A failed run must not stop the others: it is reported, and the next invocation retries (resumes) it.
    xargs -P "$jobs" -I{} bash -c 'glue {} 2>&1 | sed -u "s|^|[{}] |"; exit ${PIPESTATUS[0]}' ||
        echo "[glue_study] some runs failed: see their lines above"
}

glue --methods one_shot
for method in $methods; do
    for rate in $learning_rates; do echo "--methods $method --learning_rates $rate --seeds 0"; done
done | run_in_parallel
{
    for method in $methods; do
        for seed in 1 2; do echo "--methods $method --tuned_lr --tuning_seed 0 --seeds $seed"; done
    done
    for seed in 0 1 2; do echo "--methods spd_paper --tuned_lr --tuning_seed 0 --seeds $seed --bf16"; done
} | run_in_parallel
glue --report_only
