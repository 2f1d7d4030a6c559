import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_dataset, tiny_model

from optimum_spd.distillation import (
    LossWeights,
    distillation_loss,
    masked_attention_mse,
    masked_hidden_mse,
    soft_cross_entropy,
)


def test_soft_cross_entropy_is_batch_mean_ce_against_teacher_probs():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    expected = F.cross_entropy(student / 2.0, F.softmax(teacher / 2.0, dim=-1))
    assert soft_cross_entropy(student, teacher, 2.0) == pytest.approx(float(expected), rel=1e-6)
    # Against itself, soft CE equals the entropy of the teacher: its minimum over students.
    entropy = -(F.softmax(teacher, -1) * F.log_softmax(teacher, -1)).sum(-1).mean()
    assert soft_cross_entropy(teacher, teacher, 1.0) == pytest.approx(float(entropy), rel=1e-6)


def test_padding_positions_do_not_count():
    torch.manual_seed(0)
    teacher = (torch.randn(2, 4, 8),)
    student = (teacher[0].clone(),)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    student[0][0, 2:] += 100.0  # garbage at padding positions only
    student[0][1, 3] -= 50.0
    assert masked_hidden_mse(student, teacher, mask) == 0.0
    assert masked_hidden_mse(student, teacher, None) > 100  # the reference's unmasked mean would count it
    student[0][0, 0, 0] += 1.0
    assert masked_hidden_mse(student, teacher, mask) == pytest.approx(1.0 / (5 * 8))

    attention_teacher = (torch.softmax(torch.randn(2, 2, 4, 4), -1),)
    attention_student = (attention_teacher[0].clone(),)
    attention_student[0][0, :, 2:, :] = 7.0  # padded queries
    attention_student[0][1, :, :, 3] = 7.0  # padded keys
    assert masked_attention_mse(attention_student, attention_teacher, mask) == 0.0


def test_losses_vanish_when_student_equals_teacher_in_eval_mode():
    model = tiny_model().eval()
    batch = tiny_dataset(8)[:8]
    inputs = {key: torch.tensor(batch[key]) for key in ("input_ids", "attention_mask")}
    model.set_attn_implementation("eager")
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True, output_attentions=True)
        again = model(**inputs, output_hidden_states=True, output_attentions=True)
    total, terms = distillation_loss(again, outputs, LossWeights(logit=0.0), 1.0, inputs["attention_mask"], None)
    assert float(terms["hidden"]) == 0.0 and float(terms["attention"]) == 0.0 and float(total) == 0.0
    # The logit term's minimum is the teacher's entropy, reached exactly when the student matches.
    _, with_logits = distillation_loss(again, outputs, LossWeights(), 1.0, inputs["attention_mask"], None)
    probabilities = F.softmax(outputs.logits, -1)
    entropy = -(probabilities * F.log_softmax(outputs.logits, -1)).sum(-1).mean()
    assert float(with_logits["logit"]) == pytest.approx(float(entropy), rel=1e-5)


def test_regression_uses_mse_and_switched_off_terms_are_absent():
    model = tiny_model(num_labels=1).eval()
    batch = tiny_dataset(4, num_labels=1)[:4]
    inputs = {key: torch.tensor(batch[key]) for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        teacher = model(**inputs)
        student = type(teacher)(logits=teacher.logits + 0.5)
    labels = torch.tensor(batch["labels"])
    total, terms = distillation_loss(
        student,
        teacher,
        LossWeights(hidden=0, attention=0, hard_label=2.0),
        1.0,
        None,
        labels,
        regression_target="teacher",
    )  # the gold target is tested in test_fidelity.py
    assert set(terms) == {"logit", "hard_label"}
    assert float(terms["logit"]) == pytest.approx(0.25)
    expected_hard = F.mse_loss(student.logits.squeeze(-1), labels.float())
    assert float(total) == pytest.approx(0.25 + 2.0 * float(expected_hard), rel=1e-5)
