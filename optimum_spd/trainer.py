"""``SPDTrainer``: Sparse Progressive Distillation on top of ``transformers.Trainer``.

The training loop is Trainer's own; SPD plugs in through public hooks only:

* ``compute_loss``: teacher forward, grafted student forward, distillation loss (eval runs the pure student);
* ``create_scheduler``: the learning-rate schedule with its restart at stage II;
* ``SPDCallback``: gradient masking before the optimizer step, weight re-masking after it, mask updates on the
  pruning schedule, masks saved beside every checkpoint;
* ``log``: sparsity, grafting rate, stage and every loss term at each logging step;
* ``train``: reloads the masks of the checkpoint being resumed.

This module is the only place that knows about stages; everything it computes per step comes from the pure
functions in :mod:`optimum_spd.pruning.schedules`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .architectures import find_layer_list, prunable_parameters
from .configuration import SparseDistillConfig
from .distillation import LossWeights, distillation_loss
from .grafting import draw_grafting_decisions, grafted
from .hub.trainer_mixin import SPDHubMixin
from .lora import find_adapter_config, is_peft_model, load_lora_model, merge_dense
from .modeling.compressed import save_compressed
from .preflight import (
    check_distributed_mode,
    check_output_dir,
    check_resumed_recipe,
    check_schedule_fits,
    check_span_dataset,
    check_teacher_matches_student,
    check_token_ids,
    check_train_dataset,
    check_transfer_dataset,
)
from .pruning.masks import PruningMasks
from .pruning.schedules import StageSteps, lr_multiplier_at, replacing_rate_at, target_sparsity_at
from .serialization import replace_pickled_training_arguments
from .utils import looks_like_a_local_path, write_atomically

logger = logging.getLogger(__name__)

MASKS_NAME = "spd_masks.safetensors"
# Model-class suffixes whose output SPD distils: one `logits` tensor per example (or per token).
TRAINABLE_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


class SparsityInvariantError(RuntimeError):
    """A pruned weight is not exactly zero after an optimizer step."""


def _install_output_capturing_hooks(model: nn.Module) -> None:
    """Hook a model for ``output_hidden_states``/``output_attentions`` before any grafting happens.

    transformers 5 records hidden states and attentions with forward hooks that it installs lazily, on the modules
    present at a model's first forward. The student's first forward must not be a grafted one, or the swapped-in
    teacher layers would be hooked twice and the student's own layers not at all; hooking both models up front
    makes each layer carry exactly its own hook, wherever it runs.
    """
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # models that collect outputs by hand need no hooks
        return
    base = getattr(model, "base_model", model)
    if isinstance(base, PreTrainedModel):
        maybe_install_capturing_hooks(base)


class SPDCallback(TrainerCallback):
    """Applies the masks around every optimizer step and grows them on the pruning schedule."""

    def __init__(self, trainer: SPDTrainer):
        self.trainer = trainer
        self._step_started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        trainer.stage_steps = trainer.resolve_stage_steps(state.max_steps)
        check_schedule_fits(trainer.stage_steps, args.num_pruning_events)
        # Fresh run: masks start at the schedule's value for step 0. Resumed run: `train` loaded the saved masks,
        # which already hold the schedule's value at the checkpoint's step.
        trainer.update_masks(state.global_step)
        trainer.masks.apply_to_weights()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()
        if args.check_sparsity_invariant:
            # Checked on the weights this step's forward will use: anything that touched them since the last
            # re-masking (a callback, a sharded optimizer updating copies we do not hold, a bad load) shows here.
            violations = self.trainer.masks.violations()
            if violations:
                raise SparsityInvariantError(
                    f"before optimizer step {state.global_step + 1}, pruned weights are not zero: {violations}."
                )

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.check_gradients_are_finite(state.global_step + 1)
        if args.step_unsampled_layers:
            self.trainer.give_zero_gradients_to_idle_parameters()
        self.trainer.masks.apply_to_gradients()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.masks.apply_to_weights()

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        stage = f"stage_{trainer.stage_steps.stage_at(state.global_step - 1)}"
        trainer.stage_seconds[stage] = trainer.stage_seconds.get(stage, 0.0) + time.perf_counter() - self._step_started
        trainer.update_masks(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        expected = trainer.masks.sparsity
        measured = trainer.masks.measured_sparsity()
        # Each matrix holds exactly its keep count of non-zeros; a weight that is zero by itself can only add zeros.
        if measured + 1e-9 < expected:
            raise SparsityInvariantError(f"training ended at prunable sparsity {measured:.6f} < {expected:.6f}.")


def last_resumable_checkpoint(output_dir: str) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` whose save finished (its masks and Trainer state are there).

    ``transformers.trainer_utils.get_last_checkpoint`` returns the newest folder even when a kill cut its save short;
    resuming from that fails, while the previous checkpoint, still complete, would have continued the run.
    """
    if not os.path.isdir(output_dir):
        return None
    numbered = []
    for name in os.listdir(output_dir):
        prefix, _, number = name.partition("-")
        if prefix == PREFIX_CHECKPOINT_DIR and number.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            numbered.append((int(number), os.path.join(output_dir, name)))
    incomplete = []
    for _, checkpoint in sorted(numbered, reverse=True):
        if all(os.path.isfile(os.path.join(checkpoint, name)) for name in (MASKS_NAME, TRAINER_STATE_NAME)):
            if incomplete:
                logger.warning(f"resuming from {checkpoint}: the save of {', '.join(incomplete)} did not finish")
            return checkpoint
        incomplete.append(os.path.basename(checkpoint))
    return None


class SPDTrainer(SPDHubMixin, Trainer):
    """Prune a fine-tuned model to ``args.target_sparsity`` by Sparse Progressive Distillation.

    Args:
        model: the dense fine-tuned model; it becomes the sparse student (pruned and trained in place). A
            ``peft.PeftModel`` with a LoRA adapter is merged into its base first (``merge_and_unload``, in place).
        args: a :class:`SparseDistillConfig`.
        teacher_model: the dense teacher: a ``PreTrainedModel``, a LoRA ``PeftModel`` (merged into a dense copy),
            a path or Hub id of a model or of a LoRA adapter (loaded on the base its ``adapter_config.json`` names,
            then merged), or ``None`` for a frozen copy of ``model`` taken before training
            (``args.teacher_model_name_or_path`` is used when set). The card records a merged adapter.
        transfer_dataset: optional unlabelled, tokenised rows (``input_ids``...; e.g. from
            :func:`optimum_spd.augmentation.augment_dataset`). Each training step adds ``args.transfer_ratio`` of
            them per labelled row, as a second batch through the same grafted student, distilled with the teacher
            terms only; its loss, times ``args.transfer_loss_weight``, is added to the labelled batch's. Epochs,
            steps and the stage schedule stay defined on ``train_dataset``.
        **kwargs: every other ``Trainer`` argument (datasets, ``compute_metrics``, ``data_collator``, callbacks...).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        args: SparseDistillConfig,
        teacher_model: PreTrainedModel | str | None = None,
        transfer_dataset=None,
        **kwargs,
    ):
        if not isinstance(args, SparseDistillConfig):
            raise TypeError(f"SPDTrainer needs args=SparseDistillConfig(...), got {type(args).__name__}.")
        if is_peft_model(model):  # a model fine-tuned with LoRA: SPD prunes its merged dense weights
            model = merge_dense(model)
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"SPDTrainer needs a transformers PreTrainedModel as model, got {type(model).__name__}.")
        check_distributed_mode(args)
        if not type(model).__name__.endswith(TRAINABLE_HEADS):
            raise ValueError(
                f"SPDTrainer does not train {type(model).__name__}: its distillation terms need a classification "
                f"(per example or per token) or extractive question-answering head, i.e. one of "
                f"{', '.join(TRAINABLE_HEADS)}. Load the model with one of those heads (e.g. AutoModelFor"
                "SequenceClassification); seq2seq and causal-LM heads are not supported."
            )
        if any(param.is_meta for param in model.parameters()):
            raise ValueError(
                "the model has weights on the meta device (loaded without materialising them, e.g. with "
                "device_map='meta' or init_empty_weights): SPD needs real weights to prune and to copy into the "
                "teacher. Load it with from_pretrained(path) and no device_map, or call model.to_empty() and load them."
            )
        teacher = self._load_teacher(
            model, teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        )
        if args.is_attention_distilled:
            # Only the eager attention returns attention probabilities; SDPA and flash attention do not.
            model.set_attn_implementation("eager")
            teacher.set_attn_implementation("eager")
        check_teacher_matches_student(model, teacher)

        # As in the reference code, only the Transformer blocks train by default: embeddings and head stay the
        # teacher's, so a grafted layer always sees and feeds the representation it was trained for.
        layer_list_name, self.student_layers = find_layer_list(model)
        if not args.train_embeddings_and_head:
            for name, param in model.named_parameters():
                if not name.startswith(f"{layer_list_name}."):
                    param.requires_grad_(False)
        self.masks = PruningMasks(prunable_parameters(model, args.pruning_targets))
        trainable = [param for param in self.masks.parameters.values() if param.requires_grad]
        if not trainable:
            raise ValueError(
                "none of the pruned weights is trainable (requires_grad=False everywhere): unfreeze them."
            )

        self.transfer_dataset = check_transfer_dataset(transfer_dataset, args)
        self._transfer_permutations: dict[int, torch.Tensor] = {}
        self._transfer_draw = (-1, 0)  # (optimizer step, micro-batch index within it) of the last transfer draw
        if args.should_save:
            check_output_dir(args.output_dir, model, args.save_strategy != "no")
        super().__init__(model=model, args=args, **kwargs)
        # The distillation loss is a mean over the batch: Trainer must scale it for gradient accumulation itself.
        self.model_accepts_loss_kwargs = False
        self.teacher_model = teacher.to(self.args.device).eval().requires_grad_(False)
        # LoRA adapters merged above (rank, targets, base), for the model card.
        self.merged_adapters = {
            role: record
            for role, record in (
                ("model", getattr(model, "spd_merged_adapter", None)),
                ("teacher", getattr(teacher, "spd_merged_adapter", None)),
            )
            if record is not None
        }
        _, self.teacher_layers = find_layer_list(self.teacher_model)
        _install_output_capturing_hooks(self.model)
        _install_output_capturing_hooks(self.teacher_model)
        self.loss_weights = LossWeights(
            hidden=args.hidden_distill_weight,
            attention=args.attention_distill_weight,
            logit=args.logit_distill_weight,
            hard_label=args.hard_label_weight,
        )
        self.stage_steps: StageSteps | None = None
        self.stage_seconds: dict[str, float] = {}  # training wall time per stage (evaluation excluded)
        self.teacher_metrics: dict[str, float] | None = None  # filled by evaluate_teacher(), shown on the card
        self.grafting_decisions: list[bool] = []
        self.transfer_rows_drawn: list[int] | None = None
        self._loss_term_sums: dict[str, torch.Tensor] = {}  # on the loss's device: read once per logging step
        self._loss_term_count = 0
        self.add_callback(SPDCallback(self))

    @staticmethod
    def _load_teacher(model: PreTrainedModel, teacher: PreTrainedModel | str | None) -> PreTrainedModel:
        if teacher is None:
            return copy.deepcopy(model)
        if is_peft_model(teacher):  # a LoRA-fine-tuned teacher: merged into a dense copy, the user's model untouched
            return merge_dense(copy.deepcopy(teacher))
        if isinstance(teacher, PreTrainedModel):
            if teacher is model:
                raise ValueError("teacher_model is the student itself; pass None to use a frozen copy of it instead.")
            return teacher
        if isinstance(teacher, (str, os.PathLike)):
            path = str(teacher)
            if not os.path.isdir(path) and looks_like_a_local_path(path):
                raise FileNotFoundError(
                    f"teacher_model_name_or_path={path!r}: no such directory. Give the folder of the dense fine-tuned "
                    "teacher (or a Hub repo id 'user/name'), or None to use a frozen copy of the model."
                )
            if find_adapter_config(path) is not None:  # base model + LoRA adapter: merged densely
                return merge_dense(load_lora_model(path, type(model), num_labels=model.config.num_labels))
            return type(model).from_pretrained(path)
        raise TypeError(
            f"teacher_model must be a PreTrainedModel, a peft LoRA model, a path or Hub id, or None; got {type(teacher).__name__}."
        )

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Trainer's repo creation for ``push_to_hub=True``, with time-outs and an error that says what to do."""
        from .hub.push import HubPushError, ensure_hub_timeouts

        ensure_hub_timeouts()
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as error:  # connection refused, DNS, time-out, HTTP errors: the same advice applies
            raise HubPushError(
                f"push_to_hub=True: the Hub repo {self.args.hub_model_id or self.args.output_dir!r} could not be "
                f"created or reached ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                "Nothing was trained yet. Check HF_ENDPOINT, your network and token, or set push_to_hub=False and "
                "push later with trainer.push_to_hub() or `optimum-spd push`."
            ) from None

    # --- schedules ---------------------------------------------------------------------------------------------

    def resolve_stage_steps(self, total_steps: int) -> StageSteps:
        """Stage boundaries of this run in optimizer steps."""
        args = self.args
        return StageSteps.from_fractions(
            total_steps, args.pruning_start, args.pruning_end, args.stage_1_end, args.stage_2_end
        )

    def replacing_rate(self, step: int) -> float:
        return replacing_rate_at(step, self.stage_steps, self.args.replacing_rate, self.args.replacing_schedule)

    def update_masks(self, step: int) -> None:
        """Grow the masks to the schedule's sparsity after ``step`` optimizer steps, if it moved."""
        args = self.args
        target = target_sparsity_at(
            step, self.stage_steps, args.target_sparsity, args.sparsity_schedule, args.num_pruning_events
        )
        if target > self.masks.sparsity:
            self.masks.update(target)
            if self.optimizer is not None:
                self.masks.apply_to_optimizer_state(self.optimizer)

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """Linear/cosine/constant decay in stage I, then a restart at the peak for stages II and III."""
        if self.lr_scheduler is None:
            steps = self.resolve_stage_steps(num_training_steps)
            warmup = self.args.get_warmup_steps(steps.stage_1_end if self.args.lr_restart else num_training_steps)
            shape, restart = self.args.lr_scheduler_shape, self.args.lr_restart
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer if optimizer is not None else self.optimizer,
                lambda step: lr_multiplier_at(step, steps, warmup, shape, restart),
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def check_gradients_are_finite(self, step: int) -> None:
        """Stop before the optimizer step if a gradient is NaN or infinite (a finite loss does not rule that out)."""
        gradients = [param.grad for param in self.model.parameters() if param.grad is not None]
        if not gradients or bool(torch.isfinite(torch.stack(torch._foreach_norm(gradients))).all()):
            return
        raise FloatingPointError(
            f"non-finite gradients at optimizer step {step} although the loss was finite; training stopped before "
            "the optimizer step, so no weight was changed and the last saved checkpoint is intact. Usual causes: "
            f"temperature={self.args.temperature} too small (1.0 is the reference), learning_rate="
            f"{self.args.learning_rate} too high, or max_grad_norm={self.args.max_grad_norm} (keep it > 0). Fix the "
            "field, then resume from that checkpoint."
        )

    def give_zero_gradients_to_idle_parameters(self) -> None:
        """A zero gradient for each parameter the optimizer has stepped before but that got none in this step.

        The reference (torch 1.x) zeroed gradients in place, so a student layer that was not grafted in a step still
        held a zero tensor and AdamW moved it on its momentum; torch 2 clears gradients to ``None`` and AdamW skips
        such parameters. Parameters without optimizer state never had a gradient (in the reference they are ``None``
        too), so they are left alone: the step is then exactly the reference's, weight decay included.
        """
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps the torch optimizer
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None and param in optimizer.state:
                    param.grad = torch.zeros_like(param)

    # --- loss ----------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Distillation loss on the grafted student while training; the pure student's task loss in evaluation."""
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.get("labels")
        features = {key: value for key, value in inputs.items() if key != "labels"}
        weights = self.loss_weights
        output_flags = {
            "output_hidden_states": bool(weights.hidden),
            "output_attentions": bool(weights.attention),
            "return_dict": True,
        }
        teacher_outputs = None
        if self.args.needs_teacher_outputs:  # gold-label-only runs (the GMP baseline) skip the teacher forward
            with torch.no_grad():
                teacher_outputs = self.teacher_model(**features, **output_flags)
        step = self.state.global_step
        rate = self.replacing_rate(step)
        decisions = draw_grafting_decisions(len(self.student_layers), rate, self.args.seed, step)
        self.grafting_decisions = decisions  # the draws this step used (inspected by the distributed tests)
        self.transfer_rows_drawn = None  # the transfer rows this step used, if any (likewise)
        if any(decisions):
            with grafted(self.student_layers, self.teacher_layers, decisions):
                student_outputs = model(**features, **output_flags)
        else:
            # Every layer drew the teacher: no student weight takes part in the loss (with step_unsampled_layers,
            # AdamW still moves them on their momentum, as in the reference). Running the unwrapped model without grad keeps DDP out of it: a DDP forward whose
            # backward reaches no parameter would leave its reducer waiting. The draws agree on every process.
            with torch.no_grad(), grafted(self.student_layers, self.teacher_layers, decisions):
                student_outputs = self.accelerator.unwrap_model(model)(**features, **output_flags)
        self._check_recorded_outputs(student_outputs)
        loss, terms = distillation_loss(
            student_outputs,
            teacher_outputs,
            weights,
            self.args.temperature,
            features.get("attention_mask"),
            labels,
            self.args.regression_distill_target,
        )
        if self.transfer_dataset is not None and self.args.transfer_ratio and any(decisions):
            transfer_rows = max(1, round(self.args.transfer_ratio * len(features["input_ids"])))
            terms["transfer"] = self._transfer_loss(model, decisions, output_flags, step, transfer_rows)
            loss = loss + self.args.transfer_loss_weight * terms["transfer"]
            terms["transfer"] = terms["transfer"].detach()
        if not torch.isfinite(loss):
            values = {name: float(value) for name, value in terms.items()}
            raise FloatingPointError(
                f"the SPD loss is {float(loss.detach())} at optimizer step {step + 1} (terms {values}); training stopped before "
                "this step updated any weight, so the last saved checkpoint is intact. Lower "
                f"learning_rate={self.args.learning_rate}, keep max_grad_norm={self.args.max_grad_norm} > 0, check "
                f"temperature={self.args.temperature} and the loss weights of the non-finite terms, or the inputs of "
                "this batch, then resume from that checkpoint."
            )
        if not loss.requires_grad:  # the all-teacher step above: backward is a no-op
            loss.requires_grad_(True)
        for name, value in terms.items():
            self._loss_term_sums[name] = self._loss_term_sums.get(name, 0) + value.double()
        self._loss_term_count += 1
        return (loss, student_outputs) if return_outputs else loss

    def _transfer_loss(self, model, decisions: list[bool], output_flags: dict, step: int, rows: int) -> torch.Tensor:
        """The teacher terms on ``rows`` transfer rows, through the student grafted as in this step's batch."""
        self.transfer_rows_drawn = self._transfer_rows(step, rows)
        batch = self._prepare_inputs(self.data_collator([self.transfer_dataset[i] for i in self.transfer_rows_drawn]))
        with torch.no_grad():
            teacher_outputs = self.teacher_model(**batch, **output_flags)
        # Under DDP, the transfer forward goes through the unwrapped model: the wrapper's forward would re-arm its
        # reducer on this batch's outputs alone (another unused-parameter search, another buffer broadcast). This
        # step's grafting makes both forwards use the same parameters, and one backward sums both batches' gradients
        # into each parameter before DDP's per-parameter hook all-reduces it, once.
        with grafted(self.student_layers, self.teacher_layers, decisions):
            student_outputs = self.accelerator.unwrap_model(model)(**batch, **output_flags)
        # No gold labels here: the hard-label term is off and a regression head is matched to the teacher.
        weights = dataclasses.replace(self.loss_weights, hard_label=0.0)
        loss, _ = distillation_loss(
            student_outputs,
            teacher_outputs,
            weights,
            self.args.temperature,
            batch.get("attention_mask"),
            None,
            "teacher",
        )
        return loss

    def _transfer_rows(self, step: int, rows: int) -> list[int]:
        """Which transfer rows this micro-batch uses: a function of seed, step, micro-batch and process only.

        The transfer set is walked in a seeded permutation per pass (every row is used once per pass), so a run
        resumed from a checkpoint draws exactly the rows the uninterrupted run would have.
        """
        micro = self._transfer_draw[1] + 1 if self._transfer_draw[0] == step else 0
        self._transfer_draw = (step, micro)
        draw = (step * self.args.gradient_accumulation_steps + micro) * self.args.world_size + self.args.process_index
        size = len(self.transfer_dataset)
        indices = []
        for position in range(draw * rows, (draw + 1) * rows):
            epoch = position // size
            if epoch not in self._transfer_permutations:
                generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + epoch)
                self._transfer_permutations = {epoch: torch.randperm(size, generator=generator)}
            indices.append(int(self._transfer_permutations[epoch][position % size]))
        return indices

    def _field_needing_gold_labels(self, num_labels: int) -> str | None:
        """The config field whose loss term reads gold labels, if any (it must not silently train on nothing)."""
        if self.args.hard_label_weight:
            return f"hard_label_weight={self.args.hard_label_weight}"
        if num_labels == 1 and self.args.logit_distill_weight and self.args.regression_distill_target == "gold":
            return "regression_distill_target='gold' (the regression logit term)"
        return None

    def _check_recorded_outputs(self, outputs) -> None:
        expected_layers = len(self.student_layers)
        if self.loss_weights.hidden and len(outputs.hidden_states) != expected_layers + 1:
            raise RuntimeError(
                f"the grafted forward recorded {len(outputs.hidden_states)} hidden states instead of "
                f"{expected_layers + 1}: this transformers version records outputs differently; please report it."
            )
        if self.loss_weights.attention and len(outputs.attentions) != expected_layers:
            raise RuntimeError(
                f"the grafted forward recorded {len(outputs.attentions)} attention maps instead of {expected_layers}."
            )

    # --- logging and checkpoints ---------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``prunable_sparsity``, ``replacing_rate``, ``spd_stage`` and the mean loss terms to training logs."""
        if "loss" in logs and self.stage_steps is not None:
            step = self.state.global_step
            logs["prunable_sparsity"] = round(self.masks.measured_sparsity(), 6)
            logs["target_sparsity"] = round(self.masks.sparsity, 6)
            logs["replacing_rate"] = round(self.replacing_rate(max(0, step - 1)), 6)
            logs["spd_stage"] = self.stage_steps.stage_at(max(0, step - 1))
            if self._loss_term_count:
                for name, total in self._loss_term_sums.items():
                    logs[f"loss_{name}"] = round(float(total) / self._loss_term_count, 6)
            self._loss_term_sums.clear()
            self._loss_term_count = 0
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the student, after checking that every pruned weight is zero, with its recipe (spd_config.json).

        A call from user code writes the compressed sparse checkpoint (``args.save_compressed``) and asserts the
        promised sparsity; Trainer's own checkpoints stay in its dense format, which resuming reads back.
        """
        violations = self.masks.violations()
        if violations:
            raise SparsityInvariantError(f"refusing to save: pruned weights are not zero: {violations}.")
        non_finite = [name for name, param in self.model.named_parameters() if not bool(torch.isfinite(param).all())]
        if non_finite:
            raise FloatingPointError(
                f"refusing to save: {len(non_finite)} parameter(s) hold NaN or inf ({', '.join(non_finite[:3])}); the "
                "earlier checkpoints are kept as they are. Lower learning_rate and resume from the last one."
            )
        directory = output_dir if output_dir is not None else self.args.output_dir
        if _internal_call or not self.args.save_compressed:
            super().save_model(directory, _internal_call)
            if self.args.should_save:
                self._write_run_files(directory)
                if os.path.basename(os.path.normpath(directory)).startswith(PREFIX_CHECKPOINT_DIR):
                    # Here, with the weights: Trainer writes its state next and only then deletes older checkpoints
                    # (save_total_limit), so a checkpoint is complete before the one it replaces is gone.
                    self.save_masks(directory)
            return
        if self.args.should_save:
            save_compressed(
                self.accelerator.unwrap_model(self.model),
                directory,
                targets=set(self.masks.parameters),
                storage_dtype=self.args.compressed_storage_dtype,
                min_prunable_sparsity=self.masks.sparsity,
                add_files=self._write_run_files,
                overwrite=True,  # the run's own output_dir: Trainer writes there too; only model files are replaced
            )

    def _write_run_files(self, directory: str) -> None:
        """Tokenizer, recipe and training arguments beside the weights (JSON: we ship no pickle)."""
        if self.processing_class is not None:
            self.processing_class.save_pretrained(directory)
        self.args.save_pretrained(directory)
        replace_pickled_training_arguments(directory, self.args)  # Trainer's own save pickles its arguments

    def save_masks(self, directory: str) -> str:
        """Write the masks as packed bits to ``directory/spd_masks.safetensors`` (atomically)."""
        state = self.masks.state_dict()
        metadata = {"format": "pt", "content": "spd-masks"}
        return write_atomically(
            os.path.join(directory, MASKS_NAME), lambda path: save_file(state, path, metadata=metadata)
        )

    def load_masks(self, directory: str) -> None:
        """Read the masks a checkpoint was saved with (clear errors for a missing, truncated or foreign file)."""
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"resume_from_checkpoint={directory!r}: no such checkpoint directory. Pass a checkpoint-N folder of "
                "this run's output_dir, or True for the latest one."
            )
        path = os.path.join(directory, MASKS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"checkpoint {directory} has no {MASKS_NAME}: it was not written by SPDTrainer, or its save was "
                "interrupted. Resume from an earlier checkpoint."
            )
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{path} cannot be read ({error}): the checkpoint is truncated or damaged. Resume from an earlier "
                "checkpoint."
            ) from None
        self.masks.load_state_dict(state)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """``Trainer.train``, plus the masks of the checkpoint being resumed."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = last_resumable_checkpoint(self.args.output_dir)
            if checkpoint is None:
                raise ValueError(
                    f"resume_from_checkpoint=True but {self.args.output_dir} holds no complete checkpoint."
                )
        num_labels = getattr(self.model.config, "num_labels", 2)
        if type(self.model).__name__.endswith("ForQuestionAnswering"):
            check_span_dataset(self.train_dataset, self._field_needing_gold_labels(num_labels))
        else:
            check_train_dataset(
                self.train_dataset,
                num_labels,
                self._field_needing_gold_labels(num_labels),
                getattr(self.model.config, "problem_type", None),
            )
        vocab_size = getattr(self.model.config, "vocab_size", None)
        check_token_ids(self.train_dataset, vocab_size, "train_dataset")
        check_token_ids(self.transfer_dataset, vocab_size, "transfer_dataset")
        check_token_ids(
            self.eval_dataset if not isinstance(self.eval_dataset, dict) else None, vocab_size, "eval_dataset"
        )
        if checkpoint:
            check_resumed_recipe(self.args, checkpoint)
            self.load_masks(checkpoint)
        return super().train(checkpoint or None, *args, **kwargs)
