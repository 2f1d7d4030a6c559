import pytest
import torch
from helpers import tiny_model

from optimum_spd.architectures import find_layer_list
from optimum_spd.grafting import draw_grafting_decisions, grafted


def test_draws_depend_only_on_seed_and_step():
    first = [draw_grafting_decisions(12, 0.5, seed=7, step=step) for step in range(50)]
    again = [draw_grafting_decisions(12, 0.5, seed=7, step=step) for step in range(50)]
    assert first == again
    assert first != [draw_grafting_decisions(12, 0.5, seed=8, step=step) for step in range(50)]
    assert draw_grafting_decisions(4, 1.0, 0, 3) == [True] * 4 and draw_grafting_decisions(4, 0.0, 0, 3) == [False] * 4


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_empirical_grafting_rate_matches_p(rate):
    draws = [use for step in range(4000) for use in draw_grafting_decisions(6, rate, seed=1, step=step)]
    # 24,000 Bernoulli draws: the standard error is at most 0.0033, so 0.015 is > 4.5 sigma.
    assert sum(draws) / len(draws) == pytest.approx(rate, abs=0.015)


def test_grafted_swaps_and_restores_layers():
    student, teacher = tiny_model(seed=0), tiny_model(seed=1)
    _, student_layers = find_layer_list(student)
    _, teacher_layers = find_layer_list(teacher)
    originals = list(student_layers)
    student.train()
    with grafted(student_layers, teacher_layers, [True, False]):
        assert student_layers[0] is originals[0] and student_layers[1] is teacher_layers[1]
        assert teacher_layers[1].training  # dropout active in grafted teacher layers, as in the reference
    assert list(student_layers) == originals and not teacher_layers[1].training
    with pytest.raises(RuntimeError, match="boom"):
        with grafted(student_layers, teacher_layers, [False, False]):
            raise RuntimeError("boom")
    assert list(student_layers) == originals  # restored even when the forward fails
    with pytest.raises(ValueError, match="as many"):
        with grafted(student_layers, teacher_layers, [True]):
            pass


def test_grafted_forward_equals_teacher_when_no_student_layer_is_drawn():
    student, teacher = tiny_model(seed=0).eval(), tiny_model(seed=1).eval()
    inputs = torch.randint(5, 100, (2, 7))
    _, student_layers = find_layer_list(student)
    _, teacher_layers = find_layer_list(teacher)
    # The embeddings and head are the student's; only the blocks are swapped.
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    with torch.no_grad(), grafted(student_layers, teacher_layers, [False, False]):
        grafted_hidden = student.bert(inputs).last_hidden_state
    with torch.no_grad():
        assert torch.allclose(grafted_hidden, teacher.bert(inputs).last_hidden_state, atol=1e-6)
        assert not torch.allclose(student.bert(inputs).last_hidden_state, grafted_hidden, atol=1e-2)
