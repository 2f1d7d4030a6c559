"""Model card and Hub upload for :class:`~optimum_spd.SPDTrainer` (Trainer's public card/push methods)."""

from __future__ import annotations

import os
import tempfile

from transformers import PreTrainedModel, Trainer

from .card import license_of, render_model_card, write_run_info
from .push import checked_repo_id, push_folder


class SPDHubMixin:
    """Mixed into SPDTrainer: evaluate the teacher, write the card, push the compressed student.

    It needs these attributes of the trainer it is mixed into (``SPDTrainer.__init__`` sets each one), besides
    Trainer's own (``args``, ``state``, datasets, collator, ``compute_metrics``, ``save_model``):
    """

    teacher_model: PreTrainedModel  # the frozen dense teacher
    teacher_metrics: dict[str, float] | None  # the teacher's evaluation, shown on the card; None until measured
    stage_seconds: dict[str, float]  # training wall time per SPD stage, shown on the card
    merged_adapters: dict[str, dict]  # LoRA adapters merged into the model / teacher before pruning (lora.py)

    def set_teacher_metrics(self, metrics: dict[str, float] | None) -> None:
        """Record the dense teacher's evaluation (e.g. from its own fine-tune) for the card, instead of re-evaluating."""
        self.teacher_metrics = dict(metrics) if metrics is not None else None

    def evaluate_teacher(self, eval_dataset=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate the dense teacher with this trainer's data, collator and metrics (for the card's comparison).

        The result is recorded for the card (:meth:`set_teacher_metrics`) and returned.
        """
        evaluator = Trainer(
            model=self.teacher_model,
            args=self.args,
            data_collator=self.data_collator,
            eval_dataset=eval_dataset if eval_dataset is not None else self.eval_dataset,
            compute_metrics=self.compute_metrics,
            processing_class=self.processing_class,
        )
        self.set_teacher_metrics(evaluator.evaluate(metric_key_prefix=metric_key_prefix))
        return self.teacher_metrics

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        output_dir: str | None = None,
    ) -> None:
        """Write ``README.md`` (and the training plot) for the compressed checkpoint saved in ``output_dir``.

        The card is generated from the files in that folder plus ``spd_run.json`` written here (teacher, dataset,
        stage timings), so it states only what the folder holds. Same arguments as ``Trainer.create_model_card``.
        """
        if not self.is_world_process_zero():
            return
        folder = output_dir or self.args.output_dir
        first = lambda value: value[0] if isinstance(value, list) else value  # noqa: E731
        # Any logged evaluation: Trainer.evaluate's (with eval_loss) or metrics computed outside it (SQuAD EM/F1).
        evaluations = [entry for entry in self.state.log_history if any(key.startswith("eval_") for key in entry)]
        write_run_info(
            folder,
            {
                "model_name": model_name,
                "base_model": finetuned_from
                or next(
                    (record["base_model"] for record in self.merged_adapters.values() if record["base_model"]), None
                ),
                "teacher_model": getattr(self.teacher_model, "name_or_path", None),
                "teacher_metrics": self.teacher_metrics,
                "student_metrics": evaluations[-1] if evaluations else None,
                "stage_seconds": self.stage_seconds,
                "merged_adapters": self.merged_adapters,
                "license": license or license_of(getattr(self.teacher_model, "name_or_path", None)),
                "dataset": {
                    "name": first(dataset),
                    "type": first(dataset_tags) or first(dataset),
                    "config": first(dataset_args),
                    "split": "validation",
                    "task_type": first(tasks) or "text-classification",
                }
                if dataset
                else {},
            },
        )
        self.state.save_to_json(os.path.join(folder, "trainer_state.json"))
        render_model_card(
            folder,
            license=license,
            language=language,
            tags=[tags] if isinstance(tags, str) else tags,
            repo_id=model_name,
        )

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        **kwargs,
    ) -> str:
        """Upload the compressed student, tokenizer, recipe, curves and card to ``args.hub_model_id`` in one commit.

        Everything is staged in a temporary folder: the local output directory is never touched, so a failed push
        (clear :class:`~optimum_spd.hub.HubPushError`) can simply be run again. ``kwargs`` go to
        :meth:`create_model_card` (``dataset``, ``dataset_args``, ``license``, ``finetuned_from``, ``tags``...).
        """
        if not blocking:
            raise ValueError(
                "push_to_hub(blocking=False) is not supported: the push uploads one commit synchronously (so a failure "
                "is reported to you). Call it with blocking=True, e.g. in a thread of your own."
            )
        repo_id = checked_repo_id(self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir)))
        if not self.is_world_process_zero():
            return ""
        with tempfile.TemporaryDirectory() as staging:
            folder = os.path.join(staging, repo_id.split("/")[-1])
            self.save_model(folder)
            self.create_model_card(output_dir=folder, model_name=kwargs.pop("model_name", repo_id), **kwargs)
            return push_folder(
                folder,
                repo_id,
                token=token or self.args.hub_token,
                private=self.args.hub_private_repo,
                revision=revision or self.args.hub_revision,
                commit_message=commit_message or "End of training",
            )
