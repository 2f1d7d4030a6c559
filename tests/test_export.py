"""ONNX Runtime export: fp32 graph equal to PyTorch, int8 graph reported, clear errors for bad paths."""

import json
import os

import numpy as np
import pytest
import torch
from helpers import tiny_dataset, tiny_model, tiny_tokenizer
from test_serialization import pruned_model
from transformers import AutoModelForSequenceClassification

from optimum.commands.register.register_spd import main as cli
from optimum_spd import compress
from optimum_spd.export import ExportVerificationError, export_onnx, session_for


@pytest.fixture
def sparse_dir(tmp_path):
    compress(pruned_model(sparsity=0.9), tmp_path / "sparse")
    tiny_tokenizer(str(tmp_path / "sparse")).save_pretrained(tmp_path / "sparse")
    return tmp_path / "sparse"


def onnx_logits(path, input_ids, attention_mask):
    session = session_for(str(path))
    names = {i.name for i in session.get_inputs()}
    feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
    return session.run(["logits"], {name: value for name, value in feed.items() if name in names})[0]


def test_export_fp32_matches_pytorch_on_new_shapes_and_int8_is_reported(sparse_dir, tmp_path):
    report = export_onnx(str(sparse_dir), str(tmp_path / "onnx"), int8=True)

    files = set(os.listdir(tmp_path / "onnx"))
    assert {"model.onnx", "model_int8.onnx", "config.json", "tokenizer.json", "export_report.json"} <= files
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["model_type"] == "bert"  # servable as-is
    assert report["max_abs_diff"]["onnx_fp32"] <= 1e-4 and "onnx_int8" in report["max_abs_diff"]
    assert report["prunable_sparsity"] == pytest.approx(0.9, abs=1e-3)
    # Shapes never traced (batch 5, 23 tokens, padding): the axes are dynamic and the mask is honoured.
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 100, (5, 23), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    expected = AutoModelForSequenceClassification.from_pretrained(sparse_dir).eval()(
        input_ids=ids, attention_mask=mask
    )
    got = onnx_logits(tmp_path / "onnx" / "model.onnx", ids.numpy(), mask.numpy())
    np.testing.assert_allclose(got, expected.logits.detach().numpy(), atol=1e-4)
    int8 = onnx_logits(tmp_path / "onnx" / "model_int8.onnx", ids.numpy(), mask.numpy())
    assert int8.shape == got.shape and np.isfinite(int8).all()


def test_a_dense_checkpoint_exports_too(tmp_path):
    tiny_model("roberta").save_pretrained(tmp_path / "dense")
    report = export_onnx(str(tmp_path / "dense"), str(tmp_path / "onnx"))
    assert report["max_abs_diff"]["onnx_fp32"] <= 1e-4 and report["prunable_sparsity"] < 0.01
    session_inputs = [i.name for i in session_for(str(tmp_path / "onnx" / "model.onnx")).get_inputs()]
    assert session_inputs == report["inputs"] and report["inputs"][:2] == ["input_ids", "attention_mask"]


def test_export_reports_the_metric_of_each_variant(sparse_dir, tmp_path):
    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    dataset = tiny_dataset(20).rename_column("labels", "label")
    report = export_onnx(
        str(sparse_dir), str(tmp_path / "onnx"), int8=True, eval_dataset=dataset, compute_metrics=accuracy
    )
    assert set(report["metrics"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert report["metrics"]["onnx_fp32"] == report["metrics"]["pytorch"]


def test_export_bad_inputs_are_clear_and_write_nothing(sparse_dir, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_onnx(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="overwrite"):
        export_onnx(str(sparse_dir), str(tmp_path / "busy"))
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]
    # A graph that does not reproduce PyTorch is never kept.
    monkeypatch.setattr("optimum_spd.export.max_abs_difference", lambda *args: 0.5)
    with pytest.raises(ExportVerificationError, match="differ from PyTorch"):
        export_onnx(str(sparse_dir), str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_cli_export(sparse_dir, tmp_path, capsys):
    assert cli(["export", str(sparse_dir), str(tmp_path / "onnx"), "--int8", "--opset", "18"]) == 0
    out = capsys.readouterr().out
    assert "model_int8.onnx" in out and "max |diff|" in out
    assert cli(["export", str(tmp_path / "missing"), str(tmp_path / "o2")]) != 0
    assert "no such" in capsys.readouterr().err.lower()
