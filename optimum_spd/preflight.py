"""Checks run before any training step, so that bad input fails in seconds instead of hours into a run."""

from __future__ import annotations

import os
import shutil
import tempfile

from torch import nn
from transformers import PreTrainedModel

from .architectures import find_layer_list
from .pruning.schedules import StageSteps

# A Trainer checkpoint holds the model, the AdamW moments (2x) and the masks: budget 4x the model's bytes.
CHECKPOINT_SIZE_FACTOR = 4


def check_distributed_mode(args) -> None:
    """SPD keeps masks beside full parameters: sharded engines would update copies the masks do not see."""
    if args.fsdp:
        raise NotImplementedError(
            f"SPDTrainer does not support FSDP (fsdp={args.fsdp!r}): it shards parameters, and SPD's masks must see "
            "whole weights after every optimizer step. Use DDP (torchrun or accelerate launch --multi_gpu), which "
            "SPD supports on any number of GPUs and nodes."
        )
    if args.deepspeed:
        raise NotImplementedError(
            "SPDTrainer does not support DeepSpeed: its engine owns the optimizer step and (ZeRO-3) shards parameters, "
            "so SPD could not mask gradients and weights around it. Use DDP (torchrun or accelerate launch --multi_gpu)."
        )


def check_output_dir(output_dir: str, model: nn.Module, save_steps_enabled: bool) -> None:
    """The output directory must be writable and have room for a checkpoint, checked before the first step."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".spd-write-test-"):
            pass
    except OSError as error:
        raise PermissionError(
            f"output_dir={output_dir!r} is not writable ({error.strerror or error}); checkpoints and the final model "
            "could not be saved. Choose another output_dir or fix its permissions."
        ) from None
    model_bytes = sum(param.numel() * param.element_size() for param in model.parameters())
    needed = model_bytes * (CHECKPOINT_SIZE_FACTOR if save_steps_enabled else 1)
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise OSError(
            f"output_dir={output_dir!r} has {free / 1e6:,.0f} MB free, but saving this run needs about "
            f"{needed / 1e6:,.0f} MB (model, optimizer state and masks). Free some space or choose another output_dir."
        )


def check_train_dataset(
    dataset, num_labels: int, gold_labels_needed_by: str | None = None, problem_type: str | None = None
) -> None:
    """Refuse an empty dataset, labels outside ``[0, num_labels)``, non-numeric regression targets, and a dataset
    without labels when a loss term needs them (``gold_labels_needed_by`` names the config field that does)."""
    if dataset is None:
        raise ValueError("SPDTrainer.train() needs a train_dataset.")
    try:
        rows = len(dataset)
    except TypeError:
        return  # iterable datasets: nothing to check up front
    if rows == 0:
        raise ValueError("train_dataset is empty: SPD needs training rows to distil on.")
    columns = getattr(dataset, "column_names", None)
    if columns is not None and "input_ids" not in columns and "inputs_embeds" not in columns:
        raise ValueError(
            f"train_dataset has no 'input_ids' column (columns: {columns}): it is not tokenised. Map it through the "
            "model's tokenizer first, e.g. dataset.map(lambda row: tokenizer(row['text'], truncation=True))."
        )
    column = next((name for name in ("labels", "label") if name in getattr(dataset, "column_names", [])), None)
    if column is None:
        if gold_labels_needed_by is not None and getattr(dataset, "column_names", None) is not None:
            raise ValueError(
                f"train_dataset has no 'labels' or 'label' column, but {gold_labels_needed_by} needs the gold labels "
                "(without them that term would silently be 0). Add the labels, or turn that term off."
            )
        return
    labels = dataset[column]
    if problem_type == "multi_label_classification":
        for row, label in enumerate(labels):
            if not isinstance(label, (list, tuple)) or len(label) != num_labels:
                raise ValueError(
                    f"train_dataset[{row}][{column!r}] = {label!r} is not a list of {num_labels} floats, as "
                    "problem_type='multi_label_classification' needs (one 0/1 target per label)."
                )
        return
    if num_labels == 1:
        for row, label in enumerate(labels):
            if isinstance(label, bool) or not isinstance(label, (int, float)):
                raise ValueError(
                    f"train_dataset[{row}][{column!r}] = {label!r} is not a number, but the model has num_labels=1 "
                    "(regression). Convert the scores to float, or load the model with the right num_labels."
                )
        return
    for row, label in enumerate(labels):
        if isinstance(label, (list, tuple)):  # token classification: a class id per token, -100 where ignored
            bad = next(
                (
                    value
                    for value in label
                    if value != -100
                    and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < num_labels)
                ),
                None,
            )
            if bad is not None:
                raise ValueError(
                    f"train_dataset[{row}][{column!r}] holds {bad!r}, not a class id in [0, {num_labels - 1}] or "
                    f"-100 (ignored), with the model's num_labels={num_labels}. Fix the labels or num_labels."
                )
            continue
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_labels:
            raise ValueError(
                f"train_dataset[{row}][{column!r}] = {label!r} is not a class id in [0, {num_labels - 1}] "
                f"(the model has num_labels={num_labels}). Fix the labels or the model's num_labels."
            )


def check_span_dataset(dataset, gold_labels_needed_by: str | None = None) -> None:
    """Question answering: tokenised rows, and answer positions inside each row when a term needs gold spans."""
    if dataset is None:
        raise ValueError("SPDTrainer.train() needs a train_dataset.")
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        return  # iterable datasets: nothing to check up front
    if len(dataset) == 0:
        raise ValueError("train_dataset is empty: SPD needs training rows to distil on.")
    if "input_ids" not in columns:
        raise ValueError(f"train_dataset has no 'input_ids' column (columns: {columns}): tokenise it first.")
    missing = [name for name in ("start_positions", "end_positions") if name not in columns]
    if missing and gold_labels_needed_by is not None:
        raise ValueError(
            f"train_dataset has no {missing} column(s), but {gold_labels_needed_by} needs the gold answer spans of a "
            "question-answering model. Add them (token positions of the answer), or turn that term off."
        )
    if missing:
        return
    for row, (ids, start, end) in enumerate(
        zip(dataset["input_ids"], dataset["start_positions"], dataset["end_positions"])
    ):
        if not 0 <= start <= end < len(ids):
            raise ValueError(
                f"train_dataset[{row}]: start_positions={start}, end_positions={end} is not a span inside its "
                f"{len(ids)} tokens (need 0 <= start <= end < length; point unanswerable windows at [CLS], 0)."
            )


def check_transfer_dataset(dataset, args):
    """An unlabelled, tokenised, non-empty transfer set, and a recipe with a teacher term to distil it with."""
    if dataset is None:
        return None
    columns = getattr(dataset, "column_names", None)
    if columns is None or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"transfer_dataset must be a datasets.Dataset of tokenised rows, got {type(dataset).__name__}."
        )
    if len(dataset) == 0:
        raise ValueError("transfer_dataset is empty; pass None to train without transfer data.")
    if "input_ids" not in columns:
        raise ValueError(f"transfer_dataset has no 'input_ids' column (columns: {columns}): tokenise it first.")
    labelled = [name for name in ("labels", "label") if name in columns]
    if labelled:
        raise ValueError(
            f"transfer_dataset has a {labelled[0]!r} column: transfer rows are unlabelled and only distilled from the "
            f"teacher. Put labelled rows in train_dataset, or drop it: transfer_dataset.remove_columns({labelled})."
        )
    if not args.needs_teacher_outputs:
        raise ValueError(
            "transfer_dataset is distilled with the teacher terms only, but hidden_distill_weight, "
            "attention_distill_weight and logit_distill_weight are all 0 (a gold-label-only recipe such as GMP): "
            "turn a teacher term on, or pass transfer_dataset=None."
        )
    return dataset


def check_token_ids(dataset, vocab_size: int | None, name: str) -> None:
    """Refuse token ids outside the embedding table before training (else an IndexError deep inside torch)."""
    if dataset is None or vocab_size is None or "input_ids" not in (getattr(dataset, "column_names", None) or []):
        return
    for row, ids in enumerate(dataset["input_ids"]):
        bad = next((token for token in ids if not 0 <= token < vocab_size), None)
        if bad is not None:
            raise ValueError(
                f"{name}[{row}]['input_ids'] holds token id {bad}, outside the model's vocabulary [0, {vocab_size - 1}]:"
                " the data was tokenised with another tokenizer. Tokenise with the model's own tokenizer."
            )


def check_schedule_fits(steps: StageSteps, num_pruning_events: int) -> None:
    """Each pruning event needs its own optimizer step, or the cubic schedule collapses into one cut."""
    window = steps.pruning_end - steps.pruning_start
    if window < num_pruning_events:
        raise ValueError(
            f"this run has {steps.total_steps} optimizer steps, so its pruning window (pruning_start to pruning_end) "
            f"holds {window} steps, fewer than num_pruning_events={num_pruning_events}. Train longer (more rows, "
            "epochs or max_steps), or lower num_pruning_events."
        )


def check_teacher_matches_student(student: PreTrainedModel, teacher: PreTrainedModel) -> None:
    """Grafting swaps layers one to one, so the two models must agree on every shape that crosses a layer."""
    student_config, teacher_config = student.config, teacher.config

    def both(name: str) -> tuple:
        return getattr(student_config, name, None), getattr(teacher_config, name, None)

    checks = {
        "model class (task head)": (type(student).__name__, type(teacher).__name__),
        "model_type": (student_config.model_type, teacher_config.model_type),
        "vocab_size": both("vocab_size"),
        "hidden_size": both("hidden_size"),
        "num_attention_heads": both("num_attention_heads"),
        "intermediate_size": both("intermediate_size"),
        "number of layers": (len(find_layer_list(student)[1]), len(find_layer_list(teacher)[1])),
        "num_labels": both("num_labels"),
        "problem_type": both("problem_type"),
        "dtype of the weights": (next(student.parameters()).dtype, next(teacher.parameters()).dtype),
    }
    for what, (student_value, teacher_value) in checks.items():
        if student_value != teacher_value:
            raise ValueError(
                f"teacher and student differ in {what} (student {student_value}, teacher {teacher_value}). SPD "
                "grafts student layer i into teacher position i, so the teacher must be the dense fine-tuned "
                "version of the same architecture and head, in the same dtype (load both in float32 and let bf16=True "
                "handle mixed precision): pass teacher_model=None to use a copy of the student."
            )


# Recipe fields that fix what a resumed run computes: a resumed run with another value would silently continue the
# old schedule with the new one (masks, stages and losses computed from both), so it is refused.
RESUME_FIXED_FIELDS = (
    "target_sparsity",
    "sparsity_schedule",
    "pruning_start",
    "pruning_end",
    "stage_1_end",
    "stage_2_end",
    "num_pruning_events",
    "replacing_rate",
    "replacing_schedule",
    "step_unsampled_layers",
    "lr_restart",
    "pruning_targets",
    "temperature",
    "hidden_distill_weight",
    "attention_distill_weight",
    "logit_distill_weight",
    "regression_distill_target",
    "hard_label_weight",
    "train_embeddings_and_head",
)


def check_resumed_recipe(args, checkpoint: str) -> None:
    """Refuse to resume ``checkpoint`` with a recipe that differs from the one it was saved with."""
    from .configuration import SPD_CONFIG_NAME

    path = os.path.join(checkpoint, SPD_CONFIG_NAME)
    if not os.path.isfile(path):
        return  # checkpoints of older versions carry no recipe; the masks' own checks still apply
    saved = type(args).load_recipe(path)
    changed = [
        f"{name}={getattr(args, name)!r} (checkpoint: {saved[name]!r})"
        for name in RESUME_FIXED_FIELDS
        if name in saved and _as_json(getattr(args, name)) != _as_json(saved[name])
    ]
    if changed:
        raise ValueError(
            f"cannot resume {checkpoint}: the recipe differs from the one it was saved with: {'; '.join(changed)}. "
            "Resume with the checkpoint's values, or start a new run in another output_dir."
        )


def _as_json(value):
    return list(value) if isinstance(value, tuple) else value
