#!/usr/bin/env python
"""Adapt a published sparse (SPD) model to a new task with LoRA, and merge the adapter without losing the sparsity.

Steps: load the SPD checkpoint with a head for the new task -> train a LoRA adapter (plus the new head) with the
plain ``Trainer`` -> evaluate the adapter unmerged, merged densely (peft's ``merge_and_unload``: every pruned weight
comes back) and merged under the sparse mask (``optimum_spd.merge_sparse``) -> save the sparse merge in the
compressed format -> reload it with ``pipeline()``. ``all_results.json`` holds every score, sparsity and size.

Example (README, section "Adapting a sparse model with LoRA"): a MiniLM pruned to 80% on STS-B, adapted to MRPC:

    python examples/lora/run_sparse_lora.py --sparse_model_name_or_path runs/stsb-spd80 --task_name mrpc \
        --data_dir ../shared/data/glue --output_dir runs/lora-mrpc --num_train_epochs 3 --learning_rate 5e-4 \
        --per_device_train_batch_size 32 --eval_strategy no --save_strategy no --report_to none --seed 0
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    pipeline,
    set_seed,
)

from optimum_spd import masked_lora, merge_sparse, sparsity_report
from optimum_spd.tasks import GLUE_TASKS, glue_compute_metrics, load_glue, tokenize_glue
from optimum_spd.utils import write_json_atomically

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    sparse_model_name_or_path: str = field(metadata={"help": "The SPD checkpoint to adapt (folder or Hub repo id)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.1)
    mask_aware: bool = field(
        default=False,
        metadata={
            "help": "Train the adapter through (W + ΔW) ⊙ M (optimum_spd.masked_lora): what the sparse merge keeps."
        },
    )
    lora_target_modules: str = field(
        default="query,key,value,dense",
        metadata={"help": "Comma-separated module names to adapt (BERT: every linear of the blocks and the pooler)."},
    )


@dataclass
class DataArguments:
    task_name: str = field(metadata={"help": f"The new task: one of {sorted(GLUE_TASKS)}."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Local GLUE folder (offline), e.g. ../shared/data/glue."}
    )
    max_seq_length: int = field(default=128)


def folder_megabytes(path: str) -> float:
    """Size on disk of a checkpoint's weight files."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors")) / 1e6


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    if data_args.task_name not in GLUE_TASKS:
        parser.error(f"--task_name {data_args.task_name!r}: choose one of {sorted(GLUE_TASKS)}.")
    task = GLUE_TASKS[data_args.task_name]
    set_seed(training_args.seed)

    tokenizer = AutoTokenizer.from_pretrained(model_args.sparse_model_name_or_path)
    with training_args.main_process_first(desc="tokenising"):
        datasets = tokenize_glue(
            load_glue(data_args.task_name, data_args.data_dir), tokenizer, data_args.max_seq_length
        )
    # A head for the new task: a checkpoint with another label count gets a fresh head (trained with the adapter).
    labels = {"id2label": task.id2label, "label2id": {v: k for k, v in task.id2label.items()}} if task.id2label else {}
    # problem_type too: a checkpoint trained on a regression task would otherwise keep its MSE loss.
    problem_type = "regression" if task.is_regression else "single_label_classification"
    base = AutoModelForSequenceClassification.from_pretrained(
        model_args.sparse_model_name_or_path,
        num_labels=task.num_labels,
        problem_type=problem_type,
        ignore_mismatched_sizes=True,
        **labels,
    )
    base_sparsity = sparsity_report(base).prunable_sparsity
    lora_config = LoraConfig(
        task_type="SEQ_CLS",
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules.split(","),
        modules_to_save=["classifier"],
    )
    peft_model = get_peft_model(base, lora_config)
    peft_model.print_trainable_parameters()

    collator = DataCollatorWithPadding(tokenizer)
    compute_metrics = glue_compute_metrics(data_args.task_name)
    eval_split = datasets["validation"]
    trainer = Trainer(
        model=peft_model,
        args=training_args,
        train_dataset=datasets["train"],
        eval_dataset=eval_split,
        data_collator=collator,
        compute_metrics=compute_metrics,
    )
    with masked_lora(peft_model) if model_args.mask_aware else contextlib.nullcontext():
        train_result = trainer.train()

    def evaluate(model, prefix: str) -> dict[str, float]:
        evaluator = Trainer(model=model, args=training_args, data_collator=collator, compute_metrics=compute_metrics)
        return evaluator.evaluate(eval_split, metric_key_prefix=prefix)

    results = {
        "task": data_args.task_name,
        "sparse_model": model_args.sparse_model_name_or_path,
        "base_prunable_sparsity": base_sparsity,
        "lora": {
            "r": model_args.lora_r,
            "alpha": model_args.lora_alpha,
            "targets": sorted(lora_config.target_modules),
        },
        "mask_aware": model_args.mask_aware,
        "train_steps": train_result.global_step,
        "train_seconds": train_result.metrics["train_runtime"],
    }
    results["unmerged"] = evaluate(peft_model, "unmerged")

    dense = copy.deepcopy(peft_model).merge_and_unload()
    dense_dir = os.path.join(training_args.output_dir, "merged-dense")
    dense.save_pretrained(dense_dir, compressed=False)  # dense now: the compressed format would save nothing
    results["merged_dense"] = {
        **evaluate(dense, "merged_dense"),
        "prunable_sparsity": sparsity_report(dense).prunable_sparsity,
        "saved_mb": folder_megabytes(dense_dir),
    }

    sparse = merge_sparse(peft_model)
    sparse_dir = os.path.join(training_args.output_dir, "merged-sparse")
    sparse.save_pretrained(sparse_dir, overwrite=True)
    tokenizer.save_pretrained(sparse_dir)
    results["merged_sparse"] = {
        **evaluate(sparse, "merged_sparse"),
        "prunable_sparsity": sparsity_report(sparse).prunable_sparsity,
        "saved_mb": folder_megabytes(sparse_dir),
    }

    # The saved sparse model serves like any transformers model (import optimum_spd registers its class).
    classifier = pipeline("text-classification", model=sparse_dir, tokenizer=sparse_dir)
    first = eval_split[0]
    text = tokenizer.decode(first["input_ids"], skip_special_tokens=True)
    results["pipeline_example"] = {"text": text[:200], "prediction": classifier(text)[0]}
    write_json_atomically(results, os.path.join(training_args.output_dir, "all_results.json"), indent=2)
    for name in ("unmerged", "merged_dense", "merged_sparse"):
        logger.info("%s: %s", name, {k: v for k, v in results[name].items() if "runtime" not in k})
    if training_args.push_to_hub:
        sparse.push_to_hub(training_args.hub_model_id or os.path.basename(training_args.output_dir))


if __name__ == "__main__":
    sys.exit(main())
