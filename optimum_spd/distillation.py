"""Distillation loss terms of SPD: hidden states, attention maps, predictions, and (optionally) gold labels.

The prediction term follows the head: a soft cross-entropy over classes per example (sequence classification;
MSE for one-output regression), per real token (token classification), or over the sequence's positions for the
start and the end of an answer span (question answering).

Deliberate fix against the reference code: padding positions do not count in the hidden-state and attention terms
(the reference averages over them, so a batch's loss depends on how much padding it carries). Each term is the mean
over real positions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weight of each term; a weight of 0 switches the term off (and its inputs are not even requested)."""

    hidden: float = 1.0
    attention: float = 1.0
    logit: float = 1.0
    hard_label: float = 0.0


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` (broadcastable to the inputs) is 1."""
    squared = (student - teacher.to(student.dtype)).pow(2)
    if mask is None:
        return squared.mean()
    mask = mask.to(squared.dtype).expand_as(squared)
    return (squared * mask).sum() / mask.sum().clamp_min(1)


def masked_hidden_mse(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Sum over layers (embedding output included) of the MSE between hidden states at non-padding positions."""
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError(f"student returned {len(student_hidden)} hidden states, teacher {len(teacher_hidden)}.")
    token_mask = None if attention_mask is None else attention_mask[:, :, None]  # [batch, tokens, 1]
    return sum(_masked_mse(student, teacher, token_mask) for student, teacher in zip(student_hidden, teacher_hidden))


def masked_attention_mse(
    student_attentions: tuple[torch.Tensor, ...],
    teacher_attentions: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Sum over layers of the MSE between attention probabilities where both query and key are real tokens."""
    if len(student_attentions) != len(teacher_attentions):
        raise ValueError(
            f"student returned {len(student_attentions)} attention maps, teacher {len(teacher_attentions)}."
        )
    pair_mask = None  # [batch, 1, query, key], broadcast over heads
    if attention_mask is not None:
        pair_mask = attention_mask[:, None, :, None] * attention_mask[:, None, None, :]
    return sum(
        _masked_mse(student, teacher, pair_mask) for student, teacher in zip(student_attentions, teacher_attentions)
    )


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch mean of ``-softmax(z_t / T) . log_softmax(z_s / T)``, without the T^2 factor (as in the reference)."""
    teacher_probs = F.softmax(teacher_logits.float() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(teacher_probs * student_log_probs).sum(dim=-1).mean()


def logit_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    temperature: float,
    labels: torch.Tensor | None = None,
    regression_target: str = "gold",
) -> torch.Tensor:
    """The prediction term: soft cross-entropy to the teacher for classification; for regression (one output) the MSE
    to the gold score (``regression_target="gold"``, the reference's STS-B branch) or to the teacher's prediction."""
    if student_logits.shape[-1] == 1:
        if regression_target == "gold":
            if labels is None:
                raise ValueError(
                    "the regression logit term matches the gold score (regression_distill_target='gold', the "
                    "reference behaviour) but this batch has no labels. Fix: give the dataset a float 'labels' "
                    "column, or set regression_distill_target='teacher'."
                )
            return hard_label_loss(student_logits, labels)
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    return soft_cross_entropy(student_logits, teacher_logits, temperature)


def token_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, token_mask: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Token classification: soft cross-entropy per token, averaged over the tokens where ``token_mask`` is 1
    (real tokens, and tokens with a gold label when the batch has labels): padding and ignored positions never count."""
    teacher_probs = F.softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = -(teacher_probs * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(dim=-1)
    if token_mask is None:
        return per_token.mean()
    token_mask = token_mask.to(per_token.dtype)
    return (per_token * token_mask).sum() / token_mask.sum().clamp_min(1)


def span_distillation_loss(student_outputs, teacher_outputs, attention_mask: torch.Tensor | None, temperature: float):
    """Question answering: the mean of the soft cross-entropies on start and end logits, each a softmax over the
    real positions of the sequence only (padding gets no probability, from the teacher or the student)."""
    losses = []
    for name in ("start_logits", "end_logits"):
        student, teacher = getattr(student_outputs, name).float(), getattr(teacher_outputs, name).float()
        if attention_mask is not None:
            padding = attention_mask == 0
            student = student.masked_fill(padding, torch.finfo(student.dtype).min)
            teacher = teacher.masked_fill(padding, torch.finfo(teacher.dtype).min)
        losses.append(soft_cross_entropy(student, teacher, temperature))
    return (losses[0] + losses[1]) / 2


def is_span_output(outputs) -> bool:
    """Question-answering heads return start/end logits instead of one ``logits`` tensor."""
    return getattr(outputs, "start_logits", None) is not None


def prediction_distillation_loss(
    student_outputs,
    teacher_outputs,
    temperature: float,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    regression_target: str,
) -> torch.Tensor:
    """The prediction term for the model's head: sequence classification/regression, token classification or QA."""
    if is_span_output(student_outputs):
        return span_distillation_loss(student_outputs, teacher_outputs, attention_mask, temperature)
    if student_outputs.logits.dim() == 3:  # [batch, tokens, labels]: token classification
        token_mask = attention_mask
        if labels is not None:
            labelled = labels != -100
            token_mask = labelled if token_mask is None else token_mask.bool() & labelled
        return token_distillation_loss(student_outputs.logits, teacher_outputs.logits, token_mask, temperature)
    teacher_logits = None if teacher_outputs is None else teacher_outputs.logits
    return logit_distillation_loss(student_outputs.logits, teacher_logits, temperature, labels, regression_target)


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Task loss on gold labels: cross-entropy, or MSE for regression (one output)."""
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits.float().squeeze(-1), labels.float())
    return F.cross_entropy(student_logits.float().view(-1, student_logits.shape[-1]), labels.view(-1))


def distillation_loss(
    student_outputs,
    teacher_outputs,
    weights: LossWeights,
    temperature: float,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    regression_target: str = "gold",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the switched-on terms, and each term's detached value for logging.

    The hard-label term is always reported when labels are present (it is the training-side twin of
    ``eval_loss``, i.e. half of the overfitting gap), but only added to the loss when its weight is non-zero.
    """
    terms: dict[str, torch.Tensor] = {}
    if weights.hidden:
        terms["hidden"] = masked_hidden_mse(
            student_outputs.hidden_states, teacher_outputs.hidden_states, attention_mask
        )
    if weights.attention:
        terms["attention"] = masked_attention_mse(
            student_outputs.attentions, teacher_outputs.attentions, attention_mask
        )
    if weights.logit:
        terms["logit"] = prediction_distillation_loss(
            student_outputs, teacher_outputs, temperature, attention_mask, labels, regression_target
        )
    if is_span_output(student_outputs):
        if student_outputs.loss is not None:  # the batch had start/end positions: the head's own span loss
            terms["hard_label"] = student_outputs.loss.float()
    elif labels is not None:
        terms["hard_label"] = hard_label_loss(student_outputs.logits, labels)
    reference = student_outputs.start_logits if is_span_output(student_outputs) else student_outputs.logits
    total = reference.new_zeros((), dtype=torch.float32)
    for name, value in terms.items():
        weight = getattr(weights, name)
        if weight:
            total = total + weight * value
    # Detached tensors, not floats: converting here would force a device sync on every step.
    return total, {name: value.detach() for name, value in terms.items()}
