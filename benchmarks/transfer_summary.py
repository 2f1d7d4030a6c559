#!/usr/bin/env python
"""Issue 16's two goals, pooled over every results folder: what augmented transfer data gains SPD (and GMP+KD), and
SPD + augmentation against GMP+KD + augmentation, per task and as the mean over tasks.

    python benchmarks/transfer_summary.py              # every results folder: benchmarks/results and its subfolders
    python benchmarks/transfer_summary.py FOLDER ...   # only these

Every difference is paired: the two runs share a seed, a teacher, a precision and a budget (``glue.py``'s groups),
so a folder whose teacher was rebuilt on another machine adds its own pairs and is never paired with another's.
Per task, the differences of every teacher are pooled (mean ± standard error over all of them); the mean over tasks
weighs each task once, its standard error ``sqrt(sum of the tasks' squared standard errors) / number of tasks``
(left blank while a task has a single difference). Reads the run JSONs only (no training); prints one table and
writes ``--output`` (JSON) and the same table beside it (``.md``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import glue  # noqa: E402  (the sibling benchmark: its run groups and pairing rules)

TASK_ORDER = ("mrpc", "rte", "stsb", "cola")
RESULTS_ROOT = os.path.join(HERE, "results")


def default_results_dirs(root: str = RESULTS_ROOT) -> list[str]:
    """``root`` and each of its subfolders that holds ``glue/`` run JSONs (every ``glue.py --results_dir`` so far).

    Pooling them all is safe: runs pair only within one teacher, seed, precision and budget, so a folder without
    augmented runs (the archived first study, the H100 grids of issue 11) adds no pair.
    """
    subfolders = sorted(
        os.path.join(root, name) for name in os.listdir(root) if os.path.isdir(os.path.join(root, name, "glue"))
    )
    return [root] + subfolders if os.path.isdir(os.path.join(root, "glue")) else subfolders


def pooled(differences: list[float]) -> dict[str, float | int | None]:
    """Mean and standard error of pooled differences, in percent points."""
    mean, error = glue.mean_and_standard_error(differences)
    return {"n": len(differences), "mean": 100 * mean, "standard_error": None if error is None else 100 * error}


def comparison_pairs(
    results: list[dict], sparsity: float, augment_copies: int, augment_rates: str = ""
) -> dict[str, list[tuple[glue.RunGroup, list[dict], list[dict]]]]:
    """(group, base runs, other runs) of each comparison at this sparsity and transfer data (weight 1, budget 1);
    ``augment_rates`` is `AugmentationRates.label()` ("" for the default rates)."""

    def wanted(group: glue.RunGroup) -> bool:
        return (
            group.sparsity == sparsity
            and group.augment_copies == augment_copies
            and group.augment_rates == augment_rates
            and group.transfer_loss_weight == 1
            and group.budget_scale == 1
        )

    augmentation_pairs = [pair for pair in glue.augmentation_pairs(results) if wanted(pair[0])]

    def gains_of(method: str) -> list:
        return [pair for pair in augmentation_pairs if pair[0].method == method]

    return {
        "SPD default: with − without augmentation": gains_of(glue.SPD_DEFAULT_METHOD),
        "GMP+KD: with − without augmentation": gains_of(glue.BASELINE_METHOD),
        "SPD default − GMP+KD, both with augmentation": [
            pair for pair in glue.baseline_pairs(results) if wanted(pair[0])
        ],
    }


def summarize(results: list[dict], sparsity: float, augment_copies: int, augment_rates: str = "") -> dict[str, dict]:
    """Per comparison: per task, each teacher's paired differences and their pool; then the mean over tasks."""
    summary = {}
    for comparison, pairs in comparison_pairs(results, sparsity, augment_copies, augment_rates).items():
        tasks: dict[str, dict] = {}
        for group, base_runs, other_runs in pairs:
            differences = glue.seed_differences(base_runs, other_runs, group.task)
            if not differences:
                continue
            task = tasks.setdefault(group.task, {"teachers": [], "differences": []})
            task["teachers"].append(
                {
                    "teacher": round(100 * group.teacher_score, 1),
                    "precision": group.precision,
                    "learning_rates": [base_runs[0].get("learning_rate"), other_runs[0].get("learning_rate")],
                    # Four decimals, not two: the markdown prints one, and 2.349 stored as 2.35 would print +2.4.
                    "differences_by_seed": {seed: round(100 * value, 4) for seed, value in differences.items()},
                }
            )
            task["differences"] += list(differences.values())
        ordered = {name: tasks[name] for name in sorted(tasks, key=lambda t: (TASK_ORDER + (t,)).index(t))}
        for task in ordered.values():
            task.update(pooled(task.pop("differences")))
        means = [task["mean"] for task in ordered.values()]
        errors = [task["standard_error"] for task in ordered.values()]
        summary[comparison] = {
            "tasks": ordered,
            "mean_over_tasks": statistics.fmean(means) if means else None,
            "standard_error_over_tasks": (
                sum(error**2 for error in errors) ** 0.5 / len(errors) if errors and None not in errors else None
            ),
        }
    return summary


def summary_table(summary: dict[str, dict]) -> str:
    """Markdown: one row per comparison and task (per-teacher differences, pooled mean ± s.e.), then the task mean."""
    lines = [
        "| comparison | task (metric) | teacher: paired differences by seed | pooled mean ± s.e. | pairs |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for comparison, result in summary.items():
        for name, task in result["tasks"].items():
            teachers = "; ".join(
                f"{teacher['teacher']}: "
                + ", ".join(f"{value:+.1f}" for value in teacher["differences_by_seed"].values())
                for teacher in task["teachers"]
            )
            lines.append(
                f"| {comparison} | {name} ({glue.BUDGETS[name].metrics[0]}) | {teachers} | "
                f"{glue.mean_error_cell(task['mean'], task['standard_error'])} | {task['n']} |"
            )
        if result["tasks"]:
            lines.append(
                f"| {comparison} | **mean over {len(result['tasks'])} tasks** | | "
                f"**{glue.mean_error_cell(result['mean_over_tasks'], result['standard_error_over_tasks'])}** | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results_dirs",
        nargs="*",
        help="folders holding glue/<run>.json (each glue.py --results_dir); default: benchmarks/results and every "
        "subfolder of it that has a glue/ folder",
    )
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--augment_copies", type=int, default=1)
    parser.add_argument(
        "--augment_rates",
        type=glue.augment_rates_label,
        default="",
        help="the augmented runs' glue.py --augment_rates (default: the default rates)",
    )
    parser.add_argument("--output", default=os.path.join(RESULTS_ROOT, "transfer_summary.json"))
    cli = parser.parse_args()
    cli.results_dirs = cli.results_dirs or default_results_dirs()
    results = []
    for results_dir in cli.results_dirs:
        runs_dir = os.path.join(results_dir, "glue")
        if not os.path.isdir(runs_dir):
            parser.error(f"results_dirs: {runs_dir} does not exist (pass folders that glue.py --results_dir wrote)")
        results += glue.load_results(runs_dir)
    summary = summarize(results, cli.sparsity, cli.augment_copies, cli.augment_rates)
    table = summary_table(summary)
    record = {
        "results_dirs": [os.path.relpath(path, os.path.join(HERE, "..")) for path in cli.results_dirs],
        "sparsity": cli.sparsity,
        "augment_copies": cli.augment_copies,
        "augment_rates": cli.augment_rates or "default",
        "headline": "last evaluation, percent points",
        "comparisons": summary,
    }
    glue.write_json_atomically(record, cli.output)
    with open(os.path.splitext(cli.output)[0] + ".md", "w") as handle:
        rates = f", augmentation rates {cli.augment_rates}" if cli.augment_rates else ""
        handle.write(
            f"# Transfer data at {cli.sparsity:.0%}, {cli.augment_copies} augmented copy/row{rates}, pooled\n\n"
        )
        handle.write(table + "\n")
    print(table)
    print(f"\nwrote {cli.output} and its .md")


if __name__ == "__main__":
    main()
