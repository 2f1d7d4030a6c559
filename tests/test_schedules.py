import pytest

from optimum_spd.pruning.schedules import (
    StageSteps,
    lr_multiplier_at,
    pruning_events_done,
    replacing_rate_at,
    target_sparsity_at,
)


def reference_mrpc_steps():
    # The reference's MRPC stage I: 3,450 steps, events every F=286 steps, K=11 (spd-method.md section 2.4).
    return StageSteps(total_steps=6900, pruning_start=0, pruning_end=11 * 286, stage_1_end=3450, stage_2_end=3450)


def test_cubic_matches_reference_sequence():
    steps = reference_mrpc_steps()
    # Values listed in spd-method.md to 3 decimals (its 6th value, 0.816, is 0.81548 rounded up: hence abs=1e-3).
    values = [target_sparsity_at(k * 286, steps, 0.9, "cubic", 11) for k in range(1, 12)]
    assert values == pytest.approx(
        [0.224, 0.407, 0.554, 0.668, 0.754, 0.816, 0.857, 0.882, 0.895, 0.899, 0.9], abs=1e-3
    )
    assert values[5] == pytest.approx(0.9 * (1 - (5 / 11) ** 3))
    values_95 = [target_sparsity_at(k * 286, steps, 0.95, "cubic", 11) for k in range(1, 12)]
    assert values_95 == pytest.approx(
        [0.236, 0.43, 0.585, 0.705, 0.796, 0.861, 0.904, 0.931, 0.944, 0.949, 0.95], abs=1e-3
    )
    # Between events the target does not move.
    assert target_sparsity_at(286 * 3 + 100, steps, 0.9, "cubic", 11) == values[2]


@pytest.mark.parametrize("schedule", ["cubic", "linear", "one_shot"])
def test_endpoints_and_monotone(schedule):
    steps = StageSteps(total_steps=1000, pruning_start=100, pruning_end=600, stage_1_end=700, stage_2_end=800)
    values = [target_sparsity_at(step, steps, 0.9, schedule, 10) for step in range(1001)]
    assert values[0] == 0.0 and values[99] == 0.0
    assert values[600] == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)
    assert all(later >= earlier for earlier, later in zip(values, values[1:]))
    if schedule == "one_shot":
        assert values[100] == pytest.approx(0.9)
    else:
        assert values[100] == 0.0  # the first event is one event-period after pruning_start


def test_event_count_and_spacing():
    steps = StageSteps(total_steps=1000, pruning_start=100, pruning_end=600, stage_1_end=700, stage_2_end=800)
    values = [target_sparsity_at(step, steps, 0.9, "cubic", 10) for step in range(1001)]
    changes = [step for step in range(1, 1001) if values[step] != values[step - 1]]
    assert changes == list(range(150, 601, 50))
    assert pruning_events_done(599, steps, 10) == 9 and pruning_events_done(600, steps, 10) == 10


def test_from_fractions_rounds_in_order():
    steps = StageSteps.from_fractions(345, 0.0, 0.5 * 11 / 12, 0.5, 2 / 3)
    assert (steps.pruning_start, steps.pruning_end, steps.stage_1_end, steps.stage_2_end) == (0, 158, 172, 230)
    assert [steps.stage_at(s) for s in (0, 171, 172, 229, 230, 344)] == [1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="at least one optimizer step"):
        StageSteps.from_fractions(0, 0, 0.5, 0.5, 0.5)


def test_replacing_rate_ramps_to_one_in_stage_two():
    steps = StageSteps(total_steps=100, pruning_start=0, pruning_end=40, stage_1_end=50, stage_2_end=70)
    assert replacing_rate_at(0, steps, 0.3, "linear") == 0.3
    assert replacing_rate_at(49, steps, 0.3, "linear") == 0.3
    assert replacing_rate_at(60, steps, 0.3, "linear") == pytest.approx(0.65)
    assert all(replacing_rate_at(s, steps, 0.3, "linear") == 1.0 for s in range(70, 100))
    rates = [replacing_rate_at(s, steps, 0.3, "linear") for s in range(100)]
    assert all(b >= a for a, b in zip(rates, rates[1:]))
    assert {replacing_rate_at(s, steps, 0.8, "constant") for s in range(100)} == {0.8}


def test_lr_restart_shape():
    steps = StageSteps(total_steps=100, pruning_start=0, pruning_end=40, stage_1_end=50, stage_2_end=70)
    multipliers = [lr_multiplier_at(s, steps, warmup_steps=10, shape="linear") for s in range(100)]
    assert multipliers[0] == 0.0 and multipliers[5] == pytest.approx(0.5) and multipliers[10] == 1.0
    assert multipliers[49] == pytest.approx(1 / 40)  # stage I decays to ~0 ...
    assert multipliers[50] == 1.0  # ... and stage II restarts at the peak, without a second warmup
    assert multipliers[75] == pytest.approx(0.5) and multipliers[99] == pytest.approx(1 / 50)
    no_restart = [lr_multiplier_at(s, steps, 0, "linear", restart_at_stage_2=False) for s in range(100)]
    assert all(b < a for a, b in zip(no_restart, no_restart[1:]))
    cosine = [lr_multiplier_at(s, steps, 0, "cosine") for s in range(100)]
    assert cosine[0] == 1.0 and cosine[25] == pytest.approx(0.5) and cosine[50] == 1.0
    assert {lr_multiplier_at(s, steps, 0, "constant") for s in range(100)} == {1.0}
    with pytest.raises(ValueError, match="not supported by SPD"):
        lr_multiplier_at(0, steps, 0, "polynomial")
