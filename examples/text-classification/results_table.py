#!/usr/bin/env python
"""Print the Markdown results table of one or more `run_glue_spd.py` output folders (from their all_results.json).

python examples/text-classification/results_table.py runs/mrpc-spd80-e16 runs/mrpc-spd90-e16
"""

import json
import os
import sys


def main(run_dirs: list[str]) -> None:
    print(
        "| run | preset | epochs | lr | target | prunable sparsity | global sparsity | teacher acc / F1 | "
        "student acc / F1 | stage I / II / III (s) | SPD training time |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "all_results.json")) as handle:
            results = json.load(handle)
        with open(os.path.join(run_dir, "spd_config.json")) as handle:
            recipe = json.load(handle)
        with open(os.path.join(run_dir, "training_args.json")) as handle:
            arguments = json.load(handle)
        teacher, student, sparsity = results["teacher"], results["student"], results["sparsity"]
        stages = results["spd_stage_seconds"]

        def score(metrics):
            return f"{100 * metrics['eval_accuracy']:.1f} / {100 * metrics['eval_f1']:.1f}"

        print(
            f"| {os.path.basename(run_dir)} | {recipe['preset']} | {arguments['num_train_epochs']:g} | "
            f"{arguments['learning_rate']:g} | {recipe['target_sparsity']:.2f} | {sparsity['prunable_sparsity']:.4f} | "
            f"{sparsity['global_sparsity']:.4f} | {score(teacher)} | {score(student)} | "
            f"{stages.get('stage_1', 0):.0f} / {stages.get('stage_2', 0):.0f} / {stages.get('stage_3', 0):.0f} | "
            f"{results['spd_train']['train_runtime']:.0f} s |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
