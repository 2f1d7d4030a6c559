"""Module grafting (BERT-of-Theseus style): run the student with some of its layers swapped for teacher layers.

During a training step every student layer ``i`` is used with probability ``p`` and otherwise replaced by the
frozen teacher layer ``i`` (one Bernoulli draw per layer per optimizer step). The swap is done in place on the
student's own ``nn.ModuleList`` for the duration of one forward pass and undone in a ``finally``; outside that
window the student is an ordinary transformers model, and in eval mode no swap ever happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


def draw_grafting_decisions(num_layers: int, replacing_rate: float, seed: int, step: int) -> list[bool]:
    """Which layers use the student (``True``) during optimizer step ``step``.

    The draws come from a generator seeded with ``(seed, step)`` alone, so every process of a distributed run and
    every micro-batch of one accumulated step see the same decisions, and a resumed run repeats them exactly.
    """
    if replacing_rate >= 1.0:
        return [True] * num_layers
    if replacing_rate <= 0.0:
        return [False] * num_layers
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
    return (torch.rand(num_layers, generator=generator) < replacing_rate).tolist()


@contextlib.contextmanager
def grafted(
    student_layers: nn.ModuleList, teacher_layers: nn.ModuleList, use_student: Sequence[bool]
) -> Iterator[None]:
    """Within the block, position ``i`` of ``student_layers`` holds the teacher layer where ``use_student[i]`` is False.

    Swapped-in teacher layers follow the student's train/eval mode (dropout active while training, as in the
    reference code) and are put back in eval mode afterwards; their parameters stay frozen, but gradients flow
    through them to the student layers below.
    """
    if len(student_layers) != len(teacher_layers) or len(use_student) != len(student_layers):
        raise ValueError(
            f"grafting needs as many teacher layers ({len(teacher_layers)}) and decisions ({len(use_student)}) "
            f"as student layers ({len(student_layers)})."
        )
    swapped = {index: student_layers[index] for index, use in enumerate(use_student) if not use}
    try:
        for index in swapped:
            teacher_layers[index].train(student_layers[index].training)
            student_layers[index] = teacher_layers[index]
        yield
    finally:
        for index, student_layer in swapped.items():
            student_layers[index] = student_layer
            teacher_layers[index].eval()
