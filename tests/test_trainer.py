import math
import os

import pytest
import torch
from helpers import tiny_dataset, tiny_model
from transformers import TrainerCallback

from optimum_spd import SparsityInvariantError, SPDTrainer, sparsity_report
from optimum_spd.pruning.masks import num_to_prune


class StepRecorder(TrainerCallback):
    """Records, after every optimizer step, what the pruned weights and the schedule look like."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.violations, self.learning_rates, self.sparsities = [], [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.violations.append(self.trainer.masks.violations())
        self.learning_rates.append(self.trainer.lr_scheduler.get_last_lr()[0])
        self.sparsities.append(self.trainer.masks.sparsity)


def make_trainer(spd_args, model=None, teacher=None, rows=64, num_labels=2, **overrides):
    model = model if model is not None else tiny_model(num_labels=num_labels)
    return SPDTrainer(
        model=model,
        args=spd_args(**overrides),
        teacher_model=teacher,
        train_dataset=tiny_dataset(rows, num_labels=num_labels),
        eval_dataset=tiny_dataset(16, seed=1, num_labels=num_labels),
    )


def test_pruned_weights_stay_exactly_zero_for_50_steps_with_weight_decay(spd_args):
    trainer = make_trainer(spd_args, max_steps=50, weight_decay=0.5, learning_rate=5e-3, target_sparsity=0.9)
    recorder = StepRecorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    assert len(recorder.violations) == 50 and all(v == {} for v in recorder.violations)
    # Masks grew on schedule and the final sparsity is exact per matrix (no ties with random weights).
    assert recorder.sparsities[0] == 0.0 and recorder.sparsities[-1] == 0.9
    assert all(b >= a for a, b in zip(recorder.sparsities, recorder.sparsities[1:]))
    for name, weight in trainer.masks.parameters.items():
        assert int((weight == 0).sum()) == num_to_prune(weight.numel(), 0.9), name


def test_bf16_keeps_pruned_weights_exactly_zero_for_50_steps(spd_args):
    trainer = make_trainer(
        spd_args, max_steps=50, bf16=True, learning_rate=5e-3, target_sparsity=0.9, weight_decay=0.1
    )
    recorder = StepRecorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    assert len(recorder.violations) == 50 and all(v == {} for v in recorder.violations)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 50 and all(math.isfinite(loss) for loss in losses)
    for name, weight in trainer.masks.parameters.items():
        assert weight.dtype == torch.float32, name  # master weights stay fp32; only the compute is bf16
        assert int((weight == 0).sum()) == num_to_prune(weight.numel(), 0.9), name


def test_logs_schedule_and_final_state(spd_args):
    # The paper preset: all three stages (the default, reference, preset has no ramp; tested below).
    trainer = make_trainer(spd_args, max_steps=30, target_sparsity=0.8, preset="paper")
    recorder = StepRecorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 30
    for key in (
        "prunable_sparsity",
        "replacing_rate",
        "spd_stage",
        "loss_hidden",
        "loss_attention",
        "loss_logit",
        "loss_hard_label",
        "learning_rate",
    ):
        assert all(key in entry for entry in logs), key
    assert [entry["spd_stage"] for entry in logs] == [1] * 15 + [2] * 5 + [3] * 10
    assert logs[0]["replacing_rate"] == 0.3 and logs[-1]["replacing_rate"] == 1.0
    assert logs[-1]["prunable_sparsity"] == pytest.approx(0.8, abs=1e-3)
    # Learning rate: linear decay over stage I (15 steps), then a restart at the peak for stages II and III.
    assert recorder.learning_rates[13] < 1e-4 and recorder.learning_rates[14] == pytest.approx(1e-3)
    assert recorder.learning_rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert trainer.replacing_rate(trainer.state.global_step) == 1.0
    assert set(trainer.stage_seconds) == {"stage_1", "stage_2", "stage_3"}
    report = sparsity_report(trainer.model, targets=trainer.masks.parameters)
    assert report.prunable_sparsity == pytest.approx(0.8, abs=1e-3)


def test_reference_preset_is_the_default_and_keeps_p_constant(spd_args):
    trainer = make_trainer(spd_args, max_steps=12)
    assert trainer.args.preset == "reference"
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert {entry["replacing_rate"] for entry in logs} == {0.8}
    # Stage I (pruning while grafting) ends at half time; the masks are frozen after it and p stays at 0.8.
    assert [entry["spd_stage"] for entry in logs] == [1] * 6 + [3] * 6
    assert logs[-1]["prunable_sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_teacher_placement_and_frozen_parts(spd_args):
    model = tiny_model()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer = make_trainer(spd_args, model=model, max_steps=10, target_sparsity=0.5)
    teacher = trainer.teacher_model
    assert teacher is not model and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert next(teacher.parameters()).device == next(model.parameters()).device
    teacher_before = {name: param.detach().cpu().clone() for name, param in teacher.named_parameters()}
    trainer.train()
    for name, param in model.named_parameters():
        if ".encoder.layer." not in name:
            assert torch.equal(param.cpu(), before[name]), (
                f"{name} should be frozen (embeddings and head stay the teacher's)"
            )
    assert any(not torch.equal(p.cpu(), before[n]) for n, p in model.named_parameters() if ".encoder.layer." in n)
    assert all(torch.equal(p.cpu(), teacher_before[n]) for n, p in teacher.named_parameters())


def test_train_embeddings_and_head_unfreezes_everything_but_the_teacher(spd_args):
    model = tiny_model()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer = make_trainer(spd_args, model=model, max_steps=10, target_sparsity=0.5, train_embeddings_and_head=True)
    teacher_before = {name: param.detach().cpu().clone() for name, param in trainer.teacher_model.named_parameters()}
    trainer.train()
    for prefix in ("bert.embeddings.word_embeddings", "bert.pooler", "classifier"):
        changed = [
            name
            for name, param in model.named_parameters()
            if name.startswith(prefix) and not torch.equal(param.cpu(), before[name])
        ]
        assert changed, f"{prefix} should train with train_embeddings_and_head=True"
    assert all(torch.equal(p.cpu(), teacher_before[n]) for n, p in trainer.teacher_model.named_parameters())


def test_gold_label_only_training_skips_the_teacher_forward(spd_args):
    """The GMP baseline (no distillation term, p = 1) never runs the teacher, yet prunes and trains as usual."""
    trainer = make_trainer(
        spd_args,
        max_steps=8,
        hidden_distill_weight=0.0,
        attention_distill_weight=0.0,
        logit_distill_weight=0.0,
        hard_label_weight=1.0,
        replacing_rate=1.0,
        replacing_schedule="constant",
    )
    calls = []
    handle = trainer.teacher_model.register_forward_hook(lambda *args: calls.append(1))
    trainer.train()
    handle.remove()
    assert calls == []
    assert trainer.masks.measured_sparsity() == pytest.approx(0.8, abs=1e-3)
    assert [entry for entry in trainer.state.log_history if "loss_hard_label" in entry]


def test_evaluation_runs_the_student_only(spd_args):
    trainer = make_trainer(spd_args, max_steps=4)
    trainer.train()
    calls = []
    handle = trainer.teacher_model.register_forward_hook(lambda *args: calls.append(1))
    metrics = trainer.evaluate()
    handle.remove()
    assert calls == [] and "eval_loss" in metrics
    batch = tiny_dataset(16, seed=1)
    with torch.no_grad():
        trainer.model.eval()
        device = trainer.model.device  # the GPU when the suite runs with SPD_TEST_DEVICE=cuda
        outputs = trainer.model(
            input_ids=torch.tensor(batch["input_ids"], device=device),
            attention_mask=torch.tensor(batch["attention_mask"], device=device),
            labels=torch.tensor(batch["labels"], device=device),
        )
    assert metrics["eval_loss"] == pytest.approx(float(outputs.loss), rel=1e-5)


def test_invariant_check_catches_a_resurrected_weight(spd_args):
    trainer = make_trainer(spd_args, max_steps=20, target_sparsity=0.8)

    class Corrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 15:  # after pruning ended: no mask update will hide it
                name = next(iter(trainer.masks.keep))
                index = (~trainer.masks.keep[name]).nonzero()[0]
                with torch.no_grad():
                    trainer.masks.parameters[name][tuple(index)] = 1.0

    trainer.add_callback(Corrupt())
    with pytest.raises(SparsityInvariantError, match="before optimizer step 16"):
        trainer.train()


def test_save_model_checks_sparsity_and_writes_recipe(spd_args, tmp_path):
    trainer = make_trainer(spd_args, max_steps=6, target_sparsity=0.5, pruning_end=0.4, stage_1_end=0.5)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    files = set(os.listdir(tmp_path / "saved"))
    assert {"config.json", "model.safetensors", "spd_config.json", "training_args.json"} <= files
    assert "training_args.bin" not in files  # no pickle in what we ship
    name = next(iter(trainer.masks.keep))
    index = (~trainer.masks.keep[name]).nonzero()[0]
    with torch.no_grad():
        trainer.masks.parameters[name][tuple(index)] = 0.5
    with pytest.raises(SparsityInvariantError, match="refusing to save"):
        trainer.save_model(str(tmp_path / "bad"))


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert", "electra", "deberta-v2"])
def test_every_supported_architecture_trains(spd_args, model_type):
    trainer = make_trainer(
        spd_args,
        model=tiny_model(model_type),
        max_steps=8,
        preset="paper",  # ends on the pure sparse student (p = 1), checked below
        target_sparsity=0.7,
        pruning_end=0.4,
        stage_1_end=0.5,
        stage_2_end=0.75,
    )
    trainer.train()
    assert trainer.masks.measured_sparsity() == pytest.approx(0.7, abs=2e-3)
    assert trainer.state.log_history[-2]["replacing_rate"] == 1.0


def test_regression_gradient_accumulation_and_teacher_from_path(spd_args, tmp_path):
    teacher = tiny_model(num_labels=1, seed=3)
    teacher.save_pretrained(tmp_path / "teacher")
    student = tiny_model(num_labels=1, seed=3)
    trainer = make_trainer(
        spd_args,
        model=student,
        teacher=str(tmp_path / "teacher"),
        num_labels=1,
        max_steps=6,
        gradient_accumulation_steps=2,
        hard_label_weight=1.0,
        attention_distill_weight=0.0,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 6 and "loss_attention" not in logs[0] and logs[0]["loss_hard_label"] > 0


@pytest.mark.parametrize(
    "teacher_overrides, message",
    [
        ({"vocab_size": 120}, "vocab_size"),
        ({"hidden_size": 48}, "hidden_size"),
        ({"num_layers": 3}, "number of layers"),
        ({"num_labels": 3}, "num_labels"),
    ],
)
def test_mismatched_teacher_is_refused(spd_args, teacher_overrides, message):
    with pytest.raises(ValueError, match=f"teacher and student differ in {message}"):
        make_trainer(spd_args, teacher=tiny_model(**teacher_overrides), max_steps=2)


def test_wrong_argument_types(spd_args):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="SparseDistillConfig"):
        SPDTrainer(model=tiny_model(), args=TrainingArguments(output_dir="x", report_to=[]))
    with pytest.raises(TypeError, match="PreTrainedModel"):
        SPDTrainer(model=torch.nn.Linear(2, 2), args=spd_args())
    model = tiny_model()
    with pytest.raises(ValueError, match="student itself"):
        SPDTrainer(model=model, args=spd_args(), teacher_model=model)


def test_resume_from_checkpoint_continues_the_same_run(spd_args, tmp_path):
    def run(output, **overrides):
        trainer = make_trainer(
            spd_args,
            max_steps=20,
            target_sparsity=0.8,
            output_dir=str(tmp_path / output),
            dataloader_num_workers=0,
            **overrides,
        )
        return trainer

    uninterrupted = run("a")
    uninterrupted.train()
    interrupted = run("b", save_strategy="steps", save_steps=7)
    interrupted.train()
    checkpoint = tmp_path / "b" / "checkpoint-7"
    assert (checkpoint / "spd_masks.safetensors").is_file()
    resumed = run("b", save_strategy="no")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, keep in uninterrupted.masks.keep.items():
        assert torch.equal(keep, resumed.masks.keep[name]), name
    final = dict(uninterrupted.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, final[name]), name

    def losses(trainer):
        return [e["loss"] for e in trainer.state.log_history if "loss" in e and e["step"] > 7]

    assert losses(resumed) == losses(uninterrupted)


def test_resume_without_masks_is_refused(spd_args, tmp_path):
    trainer = make_trainer(spd_args, max_steps=4, save_strategy="steps", save_steps=2)
    trainer.train()
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-2")
    os.remove(os.path.join(checkpoint, "spd_masks.safetensors"))
    with pytest.raises(FileNotFoundError, match="has no spd_masks.safetensors"):
        make_trainer(spd_args, max_steps=4).train(resume_from_checkpoint=checkpoint)


class KillAtSave(TrainerCallback):
    """A kill after Trainer's checkpoint save (and its rotation of older checkpoints), before any later work."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after the save of step {self.step}")


def test_a_kill_right_after_a_save_leaves_that_checkpoint_resumable(spd_args, tmp_path):
    from optimum_spd import last_resumable_checkpoint

    options = dict(max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=1, output_dir=str(tmp_path))
    trainer = make_trainer(spd_args, **options)
    trainer.callback_handler.callbacks.insert(0, KillAtSave(4))  # before every other callback's on_save
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    # save_total_limit=1 has already removed checkpoint-2: checkpoint-4 must hold everything a resume needs.
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4"]
    assert last_resumable_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    resumed = make_trainer(spd_args, **options)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6


def test_a_save_cut_short_is_skipped_for_the_last_complete_checkpoint(spd_args, tmp_path, monkeypatch):
    from transformers import TrainerState
    from transformers.trainer_utils import get_last_checkpoint

    from optimum_spd import last_resumable_checkpoint

    save_state = TrainerState.save_to_json

    def killed_before_the_state_of_step_4(state, path):
        if state.global_step == 4:
            raise KeyboardInterrupt("killed while saving checkpoint-4")
        save_state(state, path)

    monkeypatch.setattr(TrainerState, "save_to_json", killed_before_the_state_of_step_4)
    options = dict(max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=1, output_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        make_trainer(spd_args, **options).train()
    monkeypatch.undo()
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")  # what Trainer alone would pick
    assert last_resumable_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    resumed = make_trainer(spd_args, **options)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    assert last_resumable_checkpoint(str(tmp_path / "nowhere")) is None
