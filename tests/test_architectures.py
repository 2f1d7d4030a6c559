import pytest
import torch
from helpers import tiny_model
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from optimum_spd import UnsupportedArchitectureError, find_layer_list, prunable_parameters, sparsity_report
from optimum_spd.constants import SUPPORTED_ARCHITECTURES


@pytest.mark.parametrize("model_type", sorted(SUPPORTED_ARCHITECTURES))
def test_default_targets_are_the_block_linears_of_the_architecture_table(model_type):
    # Discovery (every nn.Linear inside the blocks) and the table in optimum_spd/constants.py must agree exactly.
    spec = SUPPORTED_ARCHITECTURES[model_type]
    model = tiny_model(model_type)
    layer_list_name, layers = find_layer_list(model)
    assert len(layers) == 2 and layer_list_name.endswith(spec.layer_list)
    names = set(prunable_parameters(model))
    expected = {f"{layer_list_name}.{i}.{linear}.weight" for i in range(2) for linear in spec.prunable_linears}
    assert names == expected
    assert not any(word in name for name in names for word in ("embeddings", "LayerNorm", "pooler", "classifier"))


def test_pruning_target_regexes(tmp_path):
    model = tiny_model()
    names = set(prunable_parameters(model, [r"attention\.self\.(query|key)"]))
    assert names == {f"bert.encoder.layer.{i}.attention.self.{p}.weight" for i in range(2) for p in ("query", "key")}
    with pytest.raises(ValueError, match=r"pruning_targets: 'classifier' matches no linear weight"):
        prunable_parameters(model, ["classifier"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        prunable_parameters(model, ["(query"])


def test_generic_single_module_list_is_found():
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    name, layers = find_layer_list(model)
    assert name == "transformer.h" and len(layers) == 2


def test_unsupported_architecture_names_the_model_type():
    class NoBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

    with pytest.raises(UnsupportedArchitectureError, match="NoBlocks"):
        find_layer_list(NoBlocks())


def test_sparsity_report_counts():
    model = tiny_model()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[:16] = 0  # half of a 32x32 matrix
    report = sparsity_report(model)
    query = next(t for t in report.tensors if t.name.endswith("layer.0.attention.self.query.weight"))
    assert query.zeros == 512 and query.sparsity == 0.5
    assert report.prunable_numel == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert report.prunable_zeros == 512 and report.prunable_sparsity == pytest.approx(512 / report.prunable_numel)
    assert report.total_numel == sum(p.numel() for p in model.parameters())
    assert report.global_sparsity == pytest.approx(report.total_zeros / report.total_numel)
    as_dict = report.to_dict()
    assert as_dict["prunable_zeros"] == 512 and len(as_dict["tensors"]) == 12
    assert "prunable_sparsity=" in str(report)


def test_sparsity_by_layer_groups_in_block_order():
    from optimum_spd.report import sparsity_by_layer

    rows = sparsity_by_layer(
        [
            ("bert.encoder.layer.10.output.dense.weight", 100, 10),
            ("bert.encoder.layer.2.attention.self.query.weight", 50, 25),
            ("bert.encoder.layer.2.output.dense.weight", 50, 0),
            ("classifier.weight", 4, 4),
        ]
    )
    assert [row["layer"] for row in rows] == ["2", "10", "other"]
    assert rows[0] == {"layer": "2", "tensors": 2, "numel": 100, "nnz": 25, "sparsity": 0.75}
    assert rows[1]["sparsity"] == pytest.approx(0.9) and rows[2]["sparsity"] == 0.0
