#!/usr/bin/env python
"""Prune an extractive question-answering model with Sparse Progressive Distillation, on SQuAD v1.1 files.

In the style of transformers' ``examples/pytorch/question-answering/run_qa.py``: ``HfArgumentParser`` dataclasses,
overlapping windows over long contexts (``--doc_stride``), the standard post-processing of start/end logits over
all windows of a question, SQuAD exact match and F1. Offline only the dev file exists, so the questions of its first
``--train_articles`` articles train and the rest evaluate (an article-level split; not comparable with published
dev scores). Steps: fine-tune the dense teacher (unless given) -> SPD -> EM/F1 of teacher and student ->
compressed save, model card, ``all_results.json``.

    python examples/question-answering/run_qa_spd.py --squad_file ../shared/data/qa/squad_v1.1/dev-v1.1.json \
        --train_articles 38 --output_dir runs/squad-spd80 --target_sparsity 0.8 --num_train_epochs 1 \
        --per_device_train_batch_size 16 --per_device_eval_batch_size 64 --train_sampling_strategy group_by_length \
        --save_strategy steps --save_steps 50 --save_total_limit 1 --logging_steps 20 --report_to none --seed 0
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import (
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    DataCollatorWithPadding,
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
from optimum_spd.tasks.squad import (
    load_squad,
    postprocess_predictions,
    predict_span_logits,
    prepare_eval_features,
    prepare_train_features,
    split_by_article,
    squad_scores,
)
from optimum_spd.utils import write_json_atomically

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained model to fine-tune as the dense teacher (default: MiniLM-L6)."}
    )
    teacher_num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs of dense teacher fine-tuning."})
    teacher_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the teacher fine-tune."})
    base_model_id: str | None = field(default=None, metadata={"help": "Hub id of the pretrained model, for the card."})


@dataclass
class DataArguments:
    squad_file: str = field(metadata={"help": "A SQuAD v1.1 JSON file (offline: the dev file, split by article)."})
    train_articles: int = field(default=38, metadata={"help": "Articles (in file order) whose questions train."})
    max_seq_length: int = field(default=384, metadata={"help": "Window length in tokens."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a context."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N questions."})


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, SparseDistillConfig))
    model_args, data_args, spd_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(spd_args.seed)
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = default_base_model_path()
        model_args.base_model_id = model_args.base_model_id or DEFAULT_BASE_MODEL_ID

    train_examples, eval_examples = split_by_article(load_squad(data_args.squad_file), data_args.train_articles)
    if data_args.max_eval_samples is not None:
        eval_examples = eval_examples.select(range(min(data_args.max_eval_samples, len(eval_examples))))
    tokenizer = AutoTokenizer.from_pretrained(spd_args.teacher_model_name_or_path or model_args.model_name_or_path)
    window = {"tokenizer": tokenizer, "max_length": data_args.max_seq_length, "stride": data_args.doc_stride}
    with spd_args.main_process_first(desc="windows"):
        train = train_examples.map(
            prepare_train_features, batched=True, remove_columns=train_examples.column_names, fn_kwargs=window
        )
        eval_features = eval_examples.map(
            prepare_eval_features, batched=True, remove_columns=eval_examples.column_names, fn_kwargs=window
        )
    model_inputs = eval_features.remove_columns(["example_id", "offset_mapping"])
    collator = DataCollatorWithPadding(tokenizer)

    def evaluate(model) -> dict[str, float]:
        """EM/F1 of a model on the evaluation questions (windows predicted, then the best span per question)."""
        start_logits, end_logits = predict_span_logits(model, spd_args, model_inputs, collator)
        predictions = postprocess_predictions(eval_examples, eval_features, start_logits, end_logits)
        return squad_scores(predictions, eval_examples)

    last_checkpoint = last_resumable_checkpoint(spd_args.output_dir)
    resume_from = spd_args.resume_from_checkpoint or last_checkpoint
    teacher_dir = spd_args.teacher_model_name_or_path or os.path.join(spd_args.output_dir, "teacher")
    if not os.path.isfile(os.path.join(teacher_dir, "config.json")):
        teacher = AutoModelForQuestionAnswering.from_pretrained(model_args.model_name_or_path)
        teacher_args = teacher_training_arguments(
            spd_args,
            teacher_dir,
            model_args.teacher_learning_rate,
            model_args.teacher_num_train_epochs,
            eval_strategy="no",
        )
        fine_tune_teacher(
            teacher, teacher_args, train_dataset=train, data_collator=collator, processing_class=tokenizer
        )
    teacher = AutoModelForQuestionAnswering.from_pretrained(teacher_dir)
    teacher_metrics = evaluate(teacher)
    student = AutoModelForQuestionAnswering.from_pretrained(teacher_dir)  # the student starts as the teacher
    trainer = SPDTrainer(
        model=student,
        args=spd_args,
        teacher_model=teacher,
        train_dataset=train,
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.set_teacher_metrics(teacher_metrics)
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    student_metrics = evaluate(student)
    trainer.log({f"eval_{key}": value for key, value in student_metrics.items()})  # on the card and in the curves
    trainer.save_model()
    trainer.save_state()
    card_facts = dict(
        dataset="squad (article-level split of the v1.1 dev file)",
        dataset_tags="rajpurkar/squad",
        tasks="question-answering",
        finetuned_from=model_args.base_model_id,
    )
    trainer.create_model_card(**card_facts)
    results = {
        "teacher": teacher_metrics,
        "student": student_metrics,
        "train_questions": len(train_examples),
        "eval_questions": len(eval_examples),
        "train_windows": train.num_rows,
        "sparsity": sparsity_report(student, targets=trainer.masks.parameters).to_dict(),
        "train_seconds": train_result.metrics.get("train_runtime"),
    }
    write_json_atomically(results, os.path.join(spd_args.output_dir, "all_results.json"), indent=2)
    logger.info("teacher %s | student %s", teacher_metrics, student_metrics)
    if spd_args.push_to_hub:
        trainer.push_to_hub(**card_facts)


if __name__ == "__main__":
    sys.exit(main())
