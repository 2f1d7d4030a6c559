"""GLUE tasks from local TSV files in the official layout, from the Hub, or from user CSV/JSON files.

The local files must be read with quoting off: SST-2, MRPC and RTE contain unbalanced double quotes, and pandas'
default quoting silently merges rows (see the data folder's README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import evaluate
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Value, load_dataset

METRIC_SCRIPT = str(Path(__file__).with_name("glue_metric.py"))


@dataclass(frozen=True)
class EvalSplit:
    """One dev set of a task: MNLI has two (matched and mismatched), every other task one."""

    name: str  # the split's name in the DatasetDict: "validation" is the one evaluated during training
    file: str  # in the task's folder of the official GLUE download
    hub_split: str  # in the Hub's nyu-mll/glue


DEV_SPLITS = (EvalSplit("validation", "dev.tsv", "validation"),)


@dataclass(frozen=True)
class GlueTask:
    """Where a GLUE task's columns are and how it is scored."""

    folder: str  # directory name in the official GLUE download
    text_columns: tuple[str, ...]
    label_column: str
    num_labels: int  # 1 = regression
    label_names: tuple[str, ...] = ()  # string labels, mapped to their index
    column_names: tuple[str, ...] | None = None  # for files without a header row
    hub_text_columns: tuple[str, ...] | None = None  # column names in the Hub's nyu-mll/glue
    class_names: tuple[str, ...] = ()  # what each class id means (the Hub's nyu-mll/glue names), for id2label
    eval_splits: tuple[EvalSplit, ...] = DEV_SPLITS

    @property
    def id2label(self) -> dict[int, str] | None:
        """``config.id2label`` for a model of this task, so ``pipeline()`` answers with names, not ``LABEL_0``."""
        names = self.class_names or self.label_names
        return dict(enumerate(names)) if names else None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        "CoLA",
        ("sentence",),
        "label",
        2,
        column_names=("source", "label", "orig_label", "sentence"),
        class_names=("unacceptable", "acceptable"),
    ),
    "sst2": GlueTask("SST-2", ("sentence",), "label", 2, class_names=("negative", "positive")),
    "mrpc": GlueTask(
        "MRPC",
        ("#1 String", "#2 String"),
        "Quality",
        2,
        hub_text_columns=("sentence1", "sentence2"),
        class_names=("not_equivalent", "equivalent"),
    ),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2"), "score", 1),
    "rte": GlueTask("RTE", ("sentence1", "sentence2"), "label", 2, label_names=("entailment", "not_entailment")),
    "qqp": GlueTask(
        "QQP",
        ("question1", "question2"),
        "is_duplicate",
        2,
        class_names=("not_duplicate", "duplicate"),
    ),
    # The official files hold many parse columns, and dev has five annotator labels: the consensus is gold_label.
    "mnli": GlueTask(
        "MNLI",
        ("sentence1", "sentence2"),
        "gold_label",
        3,
        label_names=("entailment", "neutral", "contradiction"),
        hub_text_columns=("premise", "hypothesis"),
        eval_splits=(
            EvalSplit("validation", "dev_matched.tsv", "validation_matched"),
            EvalSplit("validation_mismatched", "dev_mismatched.tsv", "validation_mismatched"),
        ),
    ),
    "qnli": GlueTask("QNLI", ("question", "sentence"), "label", 2, label_names=("entailment", "not_entailment")),
    "wnli": GlueTask("WNLI", ("sentence1", "sentence2"), "label", 2, class_names=("not_entailment", "entailment")),
}


def _normalise(dataset: DatasetDict, task: GlueTask, text_columns: tuple[str, ...], label_column: str) -> DatasetDict:
    """Rename to ``sentence1``/``sentence2``/``label`` and give labels their final type."""

    def convert(example):
        row = {f"sentence{i + 1}": example[column] for i, column in enumerate(text_columns)}
        label = example[label_column]
        if task.is_regression:
            row["label"] = float(label)
        elif task.label_names and isinstance(label, str) and not label.isdigit():
            row["label"] = task.label_names.index(label)
        else:
            row["label"] = int(label)
        return row

    converted = DatasetDict(
        {name: split.map(convert, remove_columns=split.column_names) for name, split in dataset.items()}
    )
    label_feature = Value("float32") if task.is_regression else ClassLabel(num_classes=task.num_labels)
    return converted.cast_column("label", label_feature)


def load_glue(task_name: str, data_dir: str | None = None, cache_dir: str | None = None) -> DatasetDict:
    """Load ``train`` and the dev split(s) of a GLUE task, with columns ``sentence1`` (``sentence2``) and ``label``.

    The dev set is ``validation``; MNLI also has ``validation_mismatched`` (``validation`` is its matched set).

    Args:
        task_name: one of :data:`GLUE_TASKS` (``mrpc``, ``sst2``, ``mnli``, ...).
        data_dir: folder holding ``<TASK>/train.tsv`` and ``<TASK>/dev.tsv`` (the official GLUE layout; MNLI:
            ``dev_matched.tsv`` and ``dev_mismatched.tsv``). Without it the task is loaded from the Hub
            (``nyu-mll/glue``), which needs network access.
    """
    if task_name not in GLUE_TASKS:
        raise ValueError(f"task_name={task_name!r} is not a GLUE task; choose one of {sorted(GLUE_TASKS)}.")
    task = GLUE_TASKS[task_name]
    if data_dir is None:
        hub = load_dataset("nyu-mll/glue", task_name, cache_dir=cache_dir)
        dataset = DatasetDict(
            {"train": hub["train"], **{split.name: hub[split.hub_split] for split in task.eval_splits}}
        )
        text_columns = task.hub_text_columns or task.text_columns
        return _normalise(dataset, task, text_columns, "label")
    folder = os.path.join(data_dir, task.folder)
    files = {
        "train": os.path.join(folder, "train.tsv"),
        **{s.name: os.path.join(folder, s.file) for s in task.eval_splits},
    }
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        expected = " and ".join(["train.tsv", *(split.file for split in task.eval_splits)])
        raise FileNotFoundError(
            f"GLUE task {task_name}: missing {missing}; data_dir must hold {task.folder}/{expected}."
        )
    read_options = dict(delimiter="\t", quoting=3, keep_default_na=False, encoding="utf-8-sig")
    if task.column_names:
        read_options["column_names"] = list(task.column_names)
    # One file at a time: MNLI's dev files have more columns than its train file (five annotator labels).
    dataset = DatasetDict(
        {
            split: load_dataset("csv", data_files={split: path}, cache_dir=cache_dir, **read_options)[split]
            for split, path in files.items()
        }
    )
    return _normalise(dataset, task, task.text_columns, task.label_column)


def tokenize_pairs(examples: dict, tokenizer, max_length: int) -> dict:
    """Tokenize ``sentence1`` (and ``sentence2`` when present) without padding: the collator pads per batch."""
    texts = (examples["sentence1"],) if "sentence2" not in examples else (examples["sentence1"], examples["sentence2"])
    return tokenizer(*texts, truncation=True, max_length=max_length)


def tokenize_glue(dataset: Dataset | DatasetDict, tokenizer, max_length: int = 128) -> Dataset | DatasetDict:
    """Tokenize a dataset from :func:`load_glue` (or any with ``sentence1[, sentence2]``), dropping the text columns.

    Nothing is padded: ``DataCollatorWithPadding`` pads each batch to its own longest row.
    """
    columns = next(iter(dataset.values())).column_names if isinstance(dataset, DatasetDict) else dataset.column_names
    text_columns = [column for column in ("sentence1", "sentence2") if column in columns]
    return dataset.map(
        tokenize_pairs,
        batched=True,
        remove_columns=text_columns,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
    )


def load_glue_metric(task_name: str, **kwargs) -> evaluate.EvaluationModule:
    """The GLUE metric of ``task_name`` through the ``evaluate`` API, from a local module (works offline)."""
    return evaluate.load(METRIC_SCRIPT, task_name, **kwargs)


def glue_compute_metrics(task_name: str, is_regression: bool | None = None):
    """A ``compute_metrics`` for ``Trainer`` scoring predictions with the GLUE metric of ``task_name``.

    Classification logits are arg-maxed; a single regression output is squeezed. ``is_regression`` defaults to the
    task's own kind (pass it for custom files scored like a GLUE task).
    """
    if is_regression is None:
        is_regression = GLUE_TASKS[task_name].is_regression
    metric = load_glue_metric(task_name)

    def compute_metrics(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predictions = np.squeeze(logits, axis=-1) if is_regression else np.argmax(logits, axis=-1)
        return metric.compute(predictions=predictions, references=prediction.label_ids)

    return compute_metrics
