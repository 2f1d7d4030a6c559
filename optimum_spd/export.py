"""ONNX Runtime export of an SPD (or plain dense) checkpoint: fp32 and dynamic int8, verified against PyTorch.

``optimum[onnxruntime]`` pins transformers 4.x, so this uses ``torch.onnx`` and ``onnxruntime`` directly (the
``onnx`` extra). The exported graph is the dense model with its zeros: no maintained CPU runtime exploits
unstructured sparsity, and ONNX Runtime's dynamic int8 quantisation is the fastest CPU path we measured
(``benchmarks/inference.py``). Every export is checked before it is kept: the fp32 graph must reproduce the PyTorch
logits within ``atol`` on padded batches of other shapes than the one traced; the int8 graph's difference and, when
an evaluation set is given, the metric of each variant are written to ``export_report.json``.
"""

from __future__ import annotations

import inspect
import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from .modeling.conversion import load_dense_model
from .modeling.registry import MODEL_CLASSES
from .report import sparsity_report
from .serialization.checkpoint import atomic_directory, check_output_directory

ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model_int8.onnx"
REPORT_NAME = "export_report.json"
DEFAULT_OPSET = 18  # the torch.export-based exporter's own opset
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The outputs each head exports, in order (the names an ONNX Runtime user reads).
HEAD_OUTPUTS = {
    "ForSequenceClassification": ("logits",),
    "ForTokenClassification": ("logits",),
    "ForQuestionAnswering": ("start_logits", "end_logits"),
    "Model": ("last_hidden_state",),
}
SAMPLE_TEXTS = (
    ("The company said its quarterly profit rose sharply.", "Profits went up a lot this quarter, the firm said."),
    ("A man is playing a guitar.", "Nobody is playing music."),
    ("Short.", "Also short, but a little longer than the first one, with padding to check the mask."),
)


class ExportVerificationError(RuntimeError):
    """The exported fp32 graph does not reproduce the PyTorch model (nothing is written)."""


def _require_onnxruntime():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "ONNX export needs onnx and onnxruntime: pip install 'optimum-spd[onnx]' (optimum[onnxruntime] pins "
            "transformers 4.x and is not used)."
        ) from error
    return onnxruntime


def load_for_export(model_name_or_path: str, **hub_kwargs) -> PreTrainedModel:
    """A compressed SPD checkpoint (as its dense equivalent) or a vanilla one whose class is allowlisted."""
    if os.path.isdir(model_name_or_path) and not os.path.isfile(os.path.join(model_name_or_path, "config.json")):
        raise FileNotFoundError(f"{model_name_or_path} has no config.json: it is not a model checkpoint directory.")
    config = AutoConfig.from_pretrained(model_name_or_path, **hub_kwargs)
    if str(config.model_type).startswith("spd_"):
        architecture = (config.architectures or [None])[0]
        model_class = next((cls for cls in MODEL_CLASSES.values() if cls.__name__ == architecture), None)
        if model_class is None:
            raise ValueError(
                f"{model_name_or_path}/config.json: architectures={config.architectures!r} is not an SPD class."
            )
        return model_class.from_pretrained(model_name_or_path, config=config, **hub_kwargs).to_dense()
    if not os.path.isdir(model_name_or_path):
        raise ValueError(f"{model_name_or_path}: a dense (non-SPD) model is exported only from a local directory.")
    return load_dense_model(model_name_or_path)


def _head_outputs(model: PreTrainedModel) -> tuple[str, ...]:
    name = type(model).__name__
    for suffix, outputs in HEAD_OUTPUTS.items():
        if name.endswith(suffix):
            return outputs
    raise ValueError(f"{name}: no ONNX export for this head; supported: {sorted(HEAD_OUTPUTS)}.")


class _OutputsAsTuple(nn.Module):
    """The model with the three standard inputs and a tuple of named outputs: what the ONNX exporter traces."""

    def __init__(self, model: PreTrainedModel, output_names: tuple[str, ...]):
        super().__init__()
        self.model, self.output_names = model, output_names

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> tuple[torch.Tensor, ...]:
        inputs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        outputs = self.model(input_ids, **{k: v for k, v in inputs.items() if v is not None}, return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


def sample_batches(tokenizer, model: PreTrainedModel, input_names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """Padded batches of two sizes and lengths (the tokenizer's, or random ids without one), for verification."""
    if tokenizer is not None:
        first, second = zip(*SAMPLE_TEXTS)
        encoded = [tokenizer(list(first[:1]), list(second[:1])), tokenizer(list(first), list(second), padding=True)]
        return [{name: np.asarray(batch[name], dtype=np.int64) for name in input_names} for batch in encoded]
    generator = torch.Generator().manual_seed(0)
    batches = []
    for batch_size, length in ((1, 7), (3, 19)):
        ids = torch.randint(5, min(100, model.config.vocab_size), (batch_size, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[-1, length // 2 :] = 0
        values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        batches.append({name: values[name].numpy() for name in input_names})
    return batches


def _torch_outputs(model: PreTrainedModel, batch: dict[str, np.ndarray], output_names) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = model(**{name: torch.from_numpy(value) for name, value in batch.items()}, return_dict=True)
    return [outputs[name].numpy() for name in output_names]


def max_abs_difference(session, model, batches, output_names) -> float:
    """Largest absolute output difference between an ONNX Runtime session and the PyTorch model."""
    worst = 0.0
    for batch in batches:
        expected = _torch_outputs(model, batch, output_names)
        for got, want in zip(session.run(list(output_names), batch), expected):
            worst = max(worst, float(np.abs(got - want).max()))
    return worst


def _drop_intermediate_shapes(path: str) -> None:
    """Remove the exporter's intermediate ``value_info``: some of it is traced at the sample's batch size, which
    ONNX shape inference (run by the int8 quantiser) rejects. ONNX Runtime re-infers every shape anyway."""
    import onnx

    graph = onnx.load(path)
    del graph.graph.value_info[:]
    onnx.save(graph, path)


def session_for(path: str, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation on."""
    onnxruntime = _require_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _predictions(run: Callable[[dict[str, np.ndarray]], np.ndarray], dataset, tokenizer, input_names, batch_size):
    """Logits of every row of a tokenised dataset, batch by batch (rows padded per batch)."""
    logits = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        features = {name: rows[name] for name in input_names if name in rows}
        padded = tokenizer.pad(features, return_tensors="np")
        ids = padded["input_ids"]
        batch = {name: np.asarray(padded.get(name, np.zeros_like(ids)), dtype=np.int64) for name in input_names}
        logits.append(run(batch))
    return np.concatenate(logits)


def evaluate_variants(
    model, sessions: dict[str, Any], dataset, tokenizer, compute_metrics, input_names, label_column="label"
) -> dict[str, dict[str, float]]:
    """``compute_metrics`` of PyTorch and of every ONNX session on ``dataset`` (a tokenised dataset with labels)."""
    from transformers import EvalPrediction

    labels = np.asarray(dataset[label_column])
    runners = {"pytorch": lambda batch: _torch_outputs(model, batch, ("logits",))[0]}
    runners.update(
        {name: (lambda batch, s=session: s.run(["logits"], batch)[0]) for name, session in sessions.items()}
    )
    return {
        name: {
            key: float(value)
            for key, value in compute_metrics(
                EvalPrediction(predictions=_predictions(run, dataset, tokenizer, input_names, 64), label_ids=labels)
            ).items()
        }
        for name, run in runners.items()
    }


def export_onnx(
    model_name_or_path: str,
    output_dir: str,
    *,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    overwrite: bool = False,
    eval_dataset=None,
    compute_metrics: Callable | None = None,
    **hub_kwargs,
) -> dict[str, Any]:
    """Export a checkpoint to ``output_dir/model.onnx`` (and ``model_int8.onnx``), verified, with tokenizer and config.

    Args:
        model_name_or_path: a compressed SPD checkpoint (folder or Hub id) or a vanilla dense checkpoint folder.
        output_dir: new or empty folder (or ``overwrite=True``); written atomically, nothing is left on failure.
        int8: also write ONNX Runtime's dynamic int8 quantisation (int8 weights, activations quantised per batch).
        opset: ONNX opset of the graph.
        atol: largest allowed difference between the fp32 graph's outputs and PyTorch's; above it nothing is kept.
        eval_dataset, compute_metrics: optional tokenised dataset (with ``label``) and a ``Trainer``-style metric
            function: the metric of PyTorch and of each exported graph goes to the report.
    Returns: the report also written to ``export_report.json``.
    """
    _require_onnxruntime()
    source = str(model_name_or_path)
    check_output_directory(str(output_dir), (source,), overwrite)  # fail before the (slow) load and export
    model = load_for_export(source, **hub_kwargs).eval()
    model.set_attn_implementation("eager")  # one attention graph for every exporter and runtime
    tokenizer = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError):
        pass  # a checkpoint without a tokenizer still exports; verification uses random ids
    accepted = set(inspect.signature(model.forward).parameters)
    names = tuple(tokenizer.model_input_names) if tokenizer is not None else MODEL_INPUTS
    input_names = tuple(name for name in MODEL_INPUTS if name in accepted and name in names)
    output_names = _head_outputs(model)
    batches = sample_batches(tokenizer, model, input_names)

    report: dict[str, Any] = {
        "source": source if not os.path.isdir(source) else os.path.basename(os.path.abspath(source)),
        "architecture": type(model).__name__,
        "opset": opset,
        "inputs": list(input_names),
        "outputs": list(output_names),
        "prunable_sparsity": sparsity_report(model).prunable_sparsity,
        "torch_version": torch.__version__,
        "onnxruntime_version": _require_onnxruntime().__version__,
    }
    with atomic_directory(str(output_dir), (source,), overwrite) as staging:
        fp32_path = os.path.join(staging, ONNX_NAME)
        started = time.perf_counter()
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on renamed axes; the graph is verified below
            program = torch.onnx.export(
                _OutputsAsTuple(model, output_names),
                (),
                kwargs={name: torch.from_numpy(batches[-1][name]) for name in input_names},
                input_names=list(input_names),
                output_names=list(output_names),
                # torch.export: the TorchScript tracer bakes transformers 5's mask shapes into the graph.
                dynamo=True,
                dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
                opset_version=opset,
                verbose=False,
            )
            program.save(fp32_path)
        _drop_intermediate_shapes(fp32_path)
        report["export_seconds"] = time.perf_counter() - started
        sessions = {"onnx_fp32": session_for(fp32_path)}
        report["max_abs_diff"] = {"onnx_fp32": max_abs_difference(sessions["onnx_fp32"], model, batches, output_names)}
        if not report["max_abs_diff"]["onnx_fp32"] <= atol:
            raise ExportVerificationError(
                f"the exported graph's outputs differ from PyTorch's by {report['max_abs_diff']['onnx_fp32']:.3g} > "
                f"atol={atol}; nothing was written. Try another --opset, or report the model type."
            )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8_path = os.path.join(staging, ONNX_INT8_NAME)
            quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)
            sessions["onnx_int8"] = session_for(int8_path)
            report["max_abs_diff"]["onnx_int8"] = max_abs_difference(
                sessions["onnx_int8"], model, batches, output_names
            )
        report["files_mb"] = {
            name: os.path.getsize(os.path.join(staging, name)) / 1e6
            for name in (ONNX_NAME, ONNX_INT8_NAME)
            if os.path.isfile(os.path.join(staging, name))
        }
        if eval_dataset is not None and compute_metrics is not None:
            if tokenizer is None:
                raise ValueError("evaluating the export needs the checkpoint's tokenizer (to pad batches).")
            report["metrics"] = evaluate_variants(
                model, sessions, eval_dataset, tokenizer, compute_metrics, input_names
            )
        model.config.save_pretrained(staging)  # the dense config: id2label for serving, no SPD fields
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        with open(os.path.join(staging, REPORT_NAME), "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return report
