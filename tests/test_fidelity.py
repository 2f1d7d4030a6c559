"""The two behaviours the reference code has and torch 2 / transformers 5 lose unless we restore them.

1. Student layers that were not grafted in a step still take an AdamW step on their momentum (the reference's
   torch 1.x ``zero_grad`` left zero gradients; torch 2 leaves ``None`` and AdamW skips the parameter).
2. For regression heads the logit term is the MSE to the gold score, not to the teacher.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_dataset, tiny_model
from transformers import TrainerCallback

from optimum_spd import SPDTrainer
from optimum_spd.distillation import LossWeights, distillation_loss


class LayerMotion(TrainerCallback):
    """Per optimizer step: which student layers were grafted, and which layers' weights changed in the step."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.records = []

    def _snapshot(self):
        return [layer.attention.output.dense.bias.detach().clone() for layer in self.trainer.student_layers]

    def on_step_begin(self, args, state, control, **kwargs):
        self.before = self._snapshot()

    def on_step_end(self, args, state, control, **kwargs):
        moved = [not torch.equal(a, b) for a, b in zip(self.before, self._snapshot())]
        self.records.append((list(self.trainer.grafting_decisions), moved))


def run_motion(spd_args, step_unsampled_layers: bool):
    model = tiny_model(num_layers=4)
    args = spd_args(
        max_steps=16,
        replacing_rate=0.3,
        replacing_schedule="constant",
        preset="reference",
        step_unsampled_layers=step_unsampled_layers,
        target_sparsity=0.5,
    )
    trainer = SPDTrainer(model=model, args=args, train_dataset=tiny_dataset(64))
    motion = LayerMotion(trainer)
    trainer.add_callback(motion)
    trainer.train()
    return motion.records


@pytest.mark.parametrize("step_unsampled_layers", [True, False])
def test_a_layer_that_was_not_grafted_moves_on_its_momentum(spd_args, step_unsampled_layers):
    records = run_motion(spd_args, step_unsampled_layers)
    seen = set()
    idle_steps_after_first_use, idle_moves = 0, 0
    for decisions, moved in records:
        for index, (used, has_moved) in enumerate(zip(decisions, moved)):
            if used:
                assert has_moved, "a grafted layer must move"
            elif index in seen:
                idle_steps_after_first_use += 1
                idle_moves += has_moved
            else:
                assert not has_moved, "a layer never grafted so far has no momentum and must not move"
            seen.add(index) if used else None
    assert idle_steps_after_first_use > 5  # the draw at p=0.3 leaves plenty of such steps
    if step_unsampled_layers:
        assert idle_moves == idle_steps_after_first_use  # the reference: every such layer moves on its momentum
    else:
        assert idle_moves == 0  # torch 2: AdamW skips a parameter whose gradient is None


def test_presets_restore_reference_behaviour(spd_args):
    for preset in ("paper", "reference"):
        args = spd_args(preset=preset)
        assert args.step_unsampled_layers is True and args.regression_distill_target == "gold"
    args = spd_args(preset="reference", step_unsampled_layers=False, regression_distill_target="teacher")
    assert args.step_unsampled_layers is False and args.regression_distill_target == "teacher"


def test_regression_logit_term_is_mse_to_gold_by_default(spd_args):
    torch.manual_seed(0)
    student, teacher = tiny_model(num_labels=1, seed=1), tiny_model(num_labels=1, seed=2)
    batch = tiny_dataset(8, num_labels=1)[:8]
    features = {key: torch.tensor(batch[key]) for key in ("input_ids", "attention_mask")}
    labels = torch.tensor(batch["labels"])
    flags = dict(output_hidden_states=True, output_attentions=True, return_dict=True)
    student_out, teacher_out = student(**features, **flags), teacher(**features, **flags)
    weights = LossWeights(hidden=0.0, attention=0.0, logit=1.0)

    _, gold_terms = distillation_loss(
        student_out, teacher_out, weights, 1.0, features["attention_mask"], labels, "gold"
    )
    expected_gold = F.mse_loss(student_out.logits.detach().squeeze(-1), labels.float())
    assert float(gold_terms["logit"]) == pytest.approx(float(expected_gold), rel=1e-6)

    _, teacher_terms = distillation_loss(
        student_out, teacher_out, weights, 1.0, features["attention_mask"], labels, "teacher"
    )
    assert float(teacher_terms["logit"]) == pytest.approx(
        float(F.mse_loss(student_out.logits.detach(), teacher_out.logits)), rel=1e-6
    )
    assert float(gold_terms["logit"]) != pytest.approx(float(teacher_terms["logit"]))

    # What the trainer uses: the config's default (filled by both faithful presets) is the gold score.
    assert spd_args().regression_distill_target == "gold"
    with pytest.raises(ValueError, match="regression_distill_target"):
        distillation_loss(student_out, teacher_out, weights, 1.0, features["attention_mask"], None, "gold")


@pytest.mark.parametrize("field,value", [("regression_distill_target", "student"), ("step_unsampled_layers", "yes")])
def test_fidelity_fields_are_validated(spd_args, field, value):
    with pytest.raises(ValueError, match=field):
        spd_args(**{field: value})
