#!/usr/bin/env python
"""How far do the augmented copies move the teacher? Its predictions on each training row and on its perturbed copy.

    python benchmarks/augmentation_agreement.py --tasks cola mrpc --rates 0.1 0.05

For every task, the cached teacher of ``glue.py`` (``--work_dir/<task>/teacher``, trained there first) predicts the
whole training set and one augmented copy of it per ``--rates`` setting (``augment_dataset`` with ``--seed``, as a
``glue.py --augment_copies 1`` run of that seed builds its transfer data). Classification: how often the teacher's
class stays the same (agreement), the share of rows it calls class 1 (CoLA acceptable, MRPC/QQP equivalent, ...)
before and after, and how often a row it called class 1 becomes another class. Regression: the mean absolute
change of the teacher's score and the Pearson correlation of the two. No student, no dev set: a reading of the
training data only, so it can choose augmentation rates without looking at any evaluation.

Prints one table and writes ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import glue  # noqa: E402  (the sibling benchmark: its teacher cache and task loading)

from optimum_spd.augmentation import AugmentationRates, augment_dataset  # noqa: E402
from optimum_spd.tasks import GLUE_TASKS  # noqa: E402


@torch.inference_mode()
def teacher_outputs(model, dataset, tokenizer, batch_size: int = 128) -> np.ndarray:
    """Class probabilities (classification) or scores (regression) of every row, in order."""
    collate = DataCollatorWithPadding(tokenizer)
    columns = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in dataset.column_names]
    rows = dataset.select_columns(columns)
    outputs = []
    for start in range(0, len(rows), batch_size):
        batch = collate([rows[index] for index in range(start, min(start + batch_size, len(rows)))])
        logits = model(**batch).logits.float()
        outputs.append(logits.squeeze(-1) if logits.shape[-1] == 1 else logits.softmax(-1))
    return torch.cat(outputs).numpy()


def compare(original: np.ndarray, augmented: np.ndarray) -> dict[str, float]:
    """What one augmented copy of every row changes in the teacher's outputs."""
    if original.ndim == 1:  # regression scores
        return {
            "mean_absolute_change": float(np.abs(augmented - original).mean()),
            "pearson": float(np.corrcoef(original, augmented)[0, 1]),
        }
    before, after = original.argmax(-1), augmented.argmax(-1)
    return {
        "agreement": float((before == after).mean()),
        "class_1_share": float((after == 1).mean()),
        "class_1_flipped": float((after[before == 1] != 1).mean()),
        "mean_top_probability": float(augmented.max(-1).mean()),
    }


def cell(result: dict[str, float], key: str) -> str:
    """A table cell: the value, or blank where the task's kind has no such number."""
    return f"{result[key]:.3f}" if key in result else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["cola", "mrpc"], choices=sorted(glue.BUDGETS))
    parser.add_argument("--rates", nargs="+", default=["0.1", "0.05"], help="AugmentationRates.parse settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=os.path.join(HERE, "..", "..", "shared", "data", "glue"))
    parser.add_argument("--work_dir", default="runs/benchmarks", help="glue.py's: its cached teachers")
    parser.add_argument("--model_name_or_path", help="the teacher's base model if it is not cached yet")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "augmentation_agreement.json"))
    cli = parser.parse_args()
    try:
        settings = {text: AugmentationRates.parse(text) for text in cli.rates}
    except ValueError as error:
        parser.error(f"--rates: {error}")
    # What ensure_teacher reads of a glue.py command line when it has to train the teacher first.
    cli.model_name_or_path = cli.model_name_or_path or glue.default_base_model_path()
    cli.bf16, cli.optim, cli.transfer_loss_weight = False, glue.TEACHER_OPTIM, 1.0

    record = {"seed": cli.seed, "machine": glue.machine_facts(), "tasks": {}}
    lines = [
        "| task | teacher | rates | agreement | class-1 share (originals) | class-1 flipped | mean |Δ score| | pearson |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    tokenizer = AutoTokenizer.from_pretrained(cli.model_name_or_path)
    for task in cli.tasks:
        budget = glue.BUDGETS[task]
        datasets = glue.load_task(task, cli.data_dir, tokenizer, budget, glue.TEACHER_SEED)  # glue.py's train rows
        compute_metrics = glue.glue_compute_metrics(task)
        teacher_dir, teacher_record = glue.ensure_teacher(task, budget, datasets, tokenizer, compute_metrics, cli)
        model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
        original = teacher_outputs(model, datasets["train"], tokenizer)
        score = 100 * teacher_record["metrics"][f"eval_{budget.metrics[0]}"]
        record["tasks"][task] = {"teacher": teacher_record["metrics"], "rates": {}}
        regression = GLUE_TASKS[task].is_regression
        originals_share = "" if regression else f"{(original.argmax(-1) == 1).mean():.3f}"
        for text, rates in settings.items():
            copies = augment_dataset(
                datasets["train"], tokenizer, 1, cli.seed, rates, model.get_input_embeddings().weight
            )
            result = compare(original, teacher_outputs(model, copies, tokenizer))
            record["tasks"][task]["rates"][rates.label() or "default (0.1)"] = {**vars(rates), **result}
            share = "" if regression else f"{originals_share} → {cell(result, 'class_1_share')}"
            lines.append(
                f"| {task} | {score:.1f} | {text} | {cell(result, 'agreement')} | {share} | "
                f"{cell(result, 'class_1_flipped')} | {cell(result, 'mean_absolute_change')} | {cell(result, 'pearson')} |"
            )
    glue.write_json_atomically(record, cli.output)
    print("\n".join(lines))
    print(f"\nwrote {cli.output}")


if __name__ == "__main__":
    main()
