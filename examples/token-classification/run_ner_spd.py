#!/usr/bin/env python
"""Prune a named-entity tagger with Sparse Progressive Distillation, from CoNLL files (WNUT-17, CoNLL-2003...).

In the style of transformers' ``examples/pytorch/token-classification/run_ner.py``: three argument dataclasses
(model, data, ``SparseDistillConfig``), ``HfArgumentParser``, last-checkpoint detection. Steps: read the CoNLL
files -> fine-tune the dense teacher (unless ``--teacher_model_name_or_path`` gives one) -> SPD to
``--target_sparsity`` -> entity precision / recall / F1 on the validation file -> compressed save, model card,
``all_results.json``.

    python examples/token-classification/run_ner_spd.py --train_file ../shared/data/ner/wnut17/wnut17train.conll \
        --validation_file ../shared/data/ner/wnut17/emerging.dev.conll --dataset_name wnut_17 \
        --output_dir runs/wnut17-spd80 --target_sparsity 0.8 --num_train_epochs 6 --learning_rate 1e-4 \
        --per_device_train_batch_size 32 --eval_strategy epoch --save_strategy epoch --save_total_limit 1 \
        --report_to none

CoNLL-2003 is for research use only: never commit or ship its text (or a model card quoting it).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    HfArgumentParser,
    set_seed,
)

from optimum_spd import SparseDistillConfig, SPDTrainer, last_resumable_checkpoint, sparsity_report
from optimum_spd.tasks import (
    DEFAULT_BASE_MODEL_ID,
    default_base_model_path,
    fine_tune_teacher,
    teacher_training_arguments,
)
from optimum_spd.tasks.ner import label_list, ner_compute_metrics, read_conll, tokenize_and_align
from optimum_spd.utils import write_json_atomically

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained model to fine-tune as the dense teacher (default: MiniLM-L6)."}
    )
    teacher_num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs of dense teacher fine-tuning."})
    teacher_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the teacher fine-tune."})
    base_model_id: str | None = field(default=None, metadata={"help": "Hub id of the pretrained model, for the card."})


@dataclass
class DataArguments:
    train_file: str = field(metadata={"help": "CoNLL file: token<TAB>tag per line, blank line between sentences."})
    validation_file: str = field(metadata={"help": "CoNLL file scored with entity F1."})
    dataset_name: str | None = field(default=None, metadata={"help": "Name on the card, e.g. wnut_17."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate longer sentences (in word pieces)."})


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, SparseDistillConfig))
    model_args, data_args, spd_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(spd_args.seed)
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = default_base_model_path()
        model_args.base_model_id = model_args.base_model_id or DEFAULT_BASE_MODEL_ID

    raw_train, raw_validation = read_conll(data_args.train_file), read_conll(data_args.validation_file)
    labels = label_list(raw_train, raw_validation)
    label_to_id = {label: i for i, label in enumerate(labels)}
    id2label = dict(enumerate(labels))
    tokenizer = AutoTokenizer.from_pretrained(spd_args.teacher_model_name_or_path or model_args.model_name_or_path)
    with spd_args.main_process_first(desc="tokenisation"):
        train = tokenize_and_align(raw_train, tokenizer, label_to_id, data_args.max_seq_length)
        validation = tokenize_and_align(raw_validation, tokenizer, label_to_id, data_args.max_seq_length)
    collator = DataCollatorForTokenClassification(tokenizer)
    compute_metrics = ner_compute_metrics(labels)

    last_checkpoint = last_resumable_checkpoint(spd_args.output_dir)
    resume_from = spd_args.resume_from_checkpoint or last_checkpoint
    teacher_dir = spd_args.teacher_model_name_or_path or os.path.join(spd_args.output_dir, "teacher")
    teacher_metrics = None
    if not os.path.isfile(os.path.join(teacher_dir, "config.json")) and not spd_args.teacher_model_name_or_path:
        teacher = AutoModelForTokenClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(labels), id2label=id2label, label2id=label_to_id
        )
        teacher_args = teacher_training_arguments(
            spd_args, teacher_dir, model_args.teacher_learning_rate, model_args.teacher_num_train_epochs
        )
        teacher_metrics = fine_tune_teacher(
            teacher,
            teacher_args,
            train_dataset=train,
            eval_dataset=validation,
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
        )
    # The student starts as an exact copy of the fine-tuned teacher.
    student = AutoModelForTokenClassification.from_pretrained(teacher_dir)
    trainer = SPDTrainer(
        model=student,
        args=spd_args,
        teacher_model=AutoModelForTokenClassification.from_pretrained(teacher_dir),
        train_dataset=train,
        eval_dataset=validation,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    if teacher_metrics is None:
        teacher_metrics = trainer.evaluate_teacher()
    else:
        trainer.set_teacher_metrics(teacher_metrics)
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    student_metrics = trainer.evaluate()
    trainer.save_model()
    trainer.save_state()
    card_facts = dict(
        dataset=data_args.dataset_name or os.path.basename(data_args.train_file),
        tasks="token-classification",
        finetuned_from=model_args.base_model_id,
    )
    trainer.create_model_card(**card_facts)
    results = {
        "teacher": teacher_metrics,
        "student": student_metrics,
        "labels": labels,
        "train_rows": train.num_rows,
        "sparsity": sparsity_report(student, targets=trainer.masks.parameters).to_dict(),
        "train_seconds": train_result.metrics.get("train_runtime"),
    }
    write_json_atomically(results, os.path.join(spd_args.output_dir, "all_results.json"), indent=2)
    logger.info("teacher %s | student %s", teacher_metrics, student_metrics)
    if spd_args.push_to_hub:
        trainer.push_to_hub(**card_facts)


if __name__ == "__main__":
    sys.exit(main())
