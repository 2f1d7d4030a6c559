"""Schedules of SPD as pure functions of the optimizer step.

Everything that changes over a run (target sparsity, grafting rate, stage, learning-rate multiplier) is computed
from the global optimizer step and the run's :class:`StageSteps`, never from state accumulated step by step. That
makes each schedule unit-testable in isolation and lets a resumed run land on exactly the same values.

Convention: ``step`` is the number of optimizer steps already taken (``TrainerState.global_step``), so the step in
progress during ``compute_loss`` is ``step`` and the value after the update is ``step + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPARSITY_SCHEDULES = ("cubic", "linear", "one_shot")
REPLACING_SCHEDULES = ("linear", "constant")
LR_SHAPES = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class StageSteps:
    """Boundaries of one run in optimizer steps, resolved from the fractions in ``SparseDistillConfig``.

    Stage I is ``[0, stage_1_end)``: masks grow from ``pruning_start`` to ``pruning_end`` while grafting at the
    initial rate. Stage II is ``[stage_1_end, stage_2_end)``: masks frozen, grafting rate ramps to 1, learning rate
    restarts. Stage III is ``[stage_2_end, total_steps)``: the pure sparse student is distilled.
    """

    total_steps: int
    pruning_start: int
    pruning_end: int
    stage_1_end: int
    stage_2_end: int

    @classmethod
    def from_fractions(
        cls,
        total_steps: int,
        pruning_start: float,
        pruning_end: float,
        stage_1_end: float,
        stage_2_end: float,
    ) -> StageSteps:
        """Round each fraction of ``total_steps`` to a whole step (ordering is preserved by rounding)."""
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps} is invalid: an SPD run needs at least one optimizer step.")

        def to_step(fraction: float) -> int:
            return int(round(fraction * total_steps))

        return cls(
            total_steps=total_steps,
            pruning_start=to_step(pruning_start),
            pruning_end=to_step(pruning_end),
            stage_1_end=to_step(stage_1_end),
            stage_2_end=to_step(stage_2_end),
        )

    def stage_at(self, step: int) -> int:
        """Stage (1, 2 or 3) that the optimizer step ``step`` belongs to."""
        if step < self.stage_1_end:
            return 1
        if step < self.stage_2_end:
            return 2
        return 3


def pruning_events_done(step: int, steps: StageSteps, num_events: int) -> int:
    """How many of the ``num_events`` evenly spaced pruning events have happened once ``step`` steps are done.

    Event ``k`` (1-based) fires at ``pruning_start + k * (pruning_end - pruning_start) / num_events``, so the last
    event is exactly at ``pruning_end`` and the first ``1 / num_events`` of the pruning window trains densely, as in
    the reference implementation.
    """
    if step < steps.pruning_start:
        return 0
    window = steps.pruning_end - steps.pruning_start
    if window <= 0:
        return num_events
    return min(num_events, (num_events * (step - steps.pruning_start)) // window)


def target_sparsity_at(
    step: int,
    steps: StageSteps,
    final_sparsity: float,
    schedule: str = "cubic",
    num_events: int = 12,
) -> float:
    """Fraction of zeros every targeted matrix must have once ``step`` optimizer steps are done.

    ``cubic`` is Zhu & Gupta's ``s_f * (1 - (1 - k/K)^3)`` over ``K`` discrete events; ``linear`` is ``s_f * k/K``;
    ``one_shot`` jumps to ``s_f`` at ``pruning_start``.
    """
    if schedule not in SPARSITY_SCHEDULES:
        raise ValueError(f"sparsity_schedule={schedule!r} is not one of {SPARSITY_SCHEDULES}.")
    if schedule == "one_shot":
        return final_sparsity if step >= steps.pruning_start else 0.0
    events = pruning_events_done(step, steps, num_events)
    progress = events / num_events
    if schedule == "linear":
        return final_sparsity * progress
    return final_sparsity * (1.0 - (1.0 - progress) ** 3)


def replacing_rate_at(step: int, steps: StageSteps, initial_rate: float, schedule: str = "linear") -> float:
    """Probability that a student layer replaces its teacher layer during optimizer step ``step``.

    ``linear``: ``initial_rate`` in stage I, a linear ramp to 1 across stage II, 1 in stage III (the paper's
    progressive grafting). ``constant``: ``initial_rate`` for the whole run (what the released code's README does).
    """
    if schedule not in REPLACING_SCHEDULES:
        raise ValueError(f"replacing_schedule={schedule!r} is not one of {REPLACING_SCHEDULES}.")
    if schedule == "constant" or step < steps.stage_1_end:
        return initial_rate
    if step >= steps.stage_2_end:
        return 1.0
    ramp = (step - steps.stage_1_end) / (steps.stage_2_end - steps.stage_1_end)
    return initial_rate + (1.0 - initial_rate) * ramp


def lr_multiplier_at(
    step: int,
    steps: StageSteps,
    warmup_steps: int = 0,
    shape: str = "linear",
    restart_at_stage_2: bool = True,
) -> float:
    """Learning-rate multiplier for optimizer step ``step``.

    The run is one segment, or two when ``restart_at_stage_2``: ``[0, stage_1_end)`` and ``[stage_1_end, total)``.
    Each segment decays from the peak with ``shape``; the second starts again at the peak (the warm restart that
    keeps the pruning schedule and the distillation schedule from fighting over one decay). Warmup applies to the
    first segment only, like the reference code.
    """
    if shape not in LR_SHAPES:
        raise ValueError(f"lr_scheduler_type={shape!r} is not supported by SPD; use one of {LR_SHAPES}.")
    if restart_at_stage_2 and 0 < steps.stage_1_end < steps.total_steps and step >= steps.stage_1_end:
        segment_start, segment_end, warmup = steps.stage_1_end, steps.total_steps, 0
    else:
        first_end = steps.stage_1_end if restart_at_stage_2 and steps.stage_1_end > 0 else steps.total_steps
        segment_start, segment_end, warmup = 0, first_end, warmup_steps
    local_step = step - segment_start
    if local_step < warmup:
        return local_step / warmup  # same ramp as transformers' schedulers: 0 at step 0
    if shape == "constant":
        return 1.0
    decay_length = max(1, segment_end - segment_start - warmup)
    progress = min(1.0, (local_step - warmup) / decay_length)
    if shape == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
