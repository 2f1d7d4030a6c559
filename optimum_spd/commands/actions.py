"""What the ``optimum-cli spd`` / ``optimum-spd`` commands do. Each returns a process exit code."""

from __future__ import annotations

import json
import os

import torch
from transformers.utils import cached_file

from ..modeling.compressed import resolve_weight_files
from ..modeling.conversion import compress, decompress, load_dense_model
from ..modeling.registry import MODEL_CLASSES
from ..report import sparsity_by_layer, sparsity_report
from ..serialization.format import dense_nbytes, validate_sparsity_config
from ..utils import looks_like_a_local_path


def _megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size / 1e3:,.1f} kB"


def check_source_exists(path: str, local_only: bool = False) -> None:
    """A local path that does not exist gets "no such directory", not a Hub repo-id or connection error."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path} has no config.json: it is not a model checkpoint directory.")
    elif os.path.isfile(path):
        raise NotADirectoryError(f"{path} is a file; give the checkpoint directory that holds config.json.")
    elif local_only or looks_like_a_local_path(path) or os.path.exists(path):
        raise FileNotFoundError(
            f"no such checkpoint directory: {path}. Check the path (a Hub repo id is 'user/name')."
        )


def _read_config(path: str, hub_kwargs: dict) -> tuple[dict, str]:
    check_source_exists(path)
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
    else:
        config_path = cached_file(path, "config.json", **hub_kwargs)
    try:
        with open(config_path, encoding="utf-8") as handle:
            return json.load(handle), config_path
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); the file is truncated or was edited.") from None


def checkpoint_summary(path: str, **hub_kwargs) -> dict:
    """Per-tensor and whole-model sparsity and sizes of a compressed (or vanilla dense) checkpoint."""
    config, config_path = _read_config(path, hub_kwargs)
    files = resolve_weight_files(path, hub_kwargs)
    stored_bytes = sum(os.path.getsize(file) for file in files)
    block = config.get("sparsity_config")
    if block is not None:
        block = validate_sparsity_config(block, source=config_path)
        tensors = [
            {
                "name": name,
                "shape": entry["shape"],
                "encoding": entry["encoding"],
                "nnz": entry["nnz"],
                "sparsity": 1 - entry["nnz"] / (entry["shape"][0] * entry["shape"][1]),
            }
            for name, entry in block["tensors"].items()
        ]
        dense_bytes = dense_nbytes(block)
        totals = {
            key: block[key]
            for key in (
                "prunable_sparsity",
                "global_sparsity",
                "dense_parameter_count",
                "nonzero_parameter_count",
                "storage_dtype",
            )
        }
    else:
        if not os.path.isdir(path):
            raise ValueError(f"{path}: a dense checkpoint is only inspected from a local directory.")
        model = load_dense_model(path)
        report = sparsity_report(model)
        tensors = [
            {
                "name": t.name,
                "shape": list(t.shape),
                "encoding": "dense",
                "nnz": t.numel - t.zeros,
                "sparsity": t.sparsity,
            }
            for t in report.tensors
        ]
        dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        totals = {
            "prunable_sparsity": report.prunable_sparsity,
            "global_sparsity": report.global_sparsity,
            "dense_parameter_count": report.total_numel,
            "nonzero_parameter_count": report.total_numel - report.total_zeros,
            "storage_dtype": None,
        }
    return {
        "path": str(path),
        "model_type": config.get("model_type"),
        "tensors": tensors,
        **totals,
        "stored_bytes": stored_bytes,
        "dense_bytes": dense_bytes,
    }


def info(path: str, show_tensors: bool = False, as_json: bool = False, **hub_kwargs) -> int:
    summary = checkpoint_summary(path, **hub_kwargs)
    if as_json:
        print(json.dumps(summary, indent=2))
        return 0
    layers = sparsity_by_layer((t["name"], t["shape"][0] * t["shape"][1], t["nnz"]) for t in summary["tensors"])
    print(f"{summary['path']}  (model_type {summary['model_type']})")
    print(f"{'layer':>5}  {'tensors':>7}  {'weights':>12}  {'non-zero':>10}  {'sparsity':>8}")
    for row in layers:
        print(
            f"{row['layer']:>5}  {row['tensors']:>7}  {row['numel']:>12,}  {row['nnz']:>10,}  {row['sparsity']:>8.4f}"
        )
    if show_tensors:
        for t in summary["tensors"]:
            print(
                f"  {t['name']}  {'x'.join(map(str, t['shape']))}  {t['encoding']}  nnz={t['nnz']:,}  sparsity={t['sparsity']:.4f}"
            )
    print(
        f"prunable_sparsity={summary['prunable_sparsity']:.4f}  global_sparsity={summary['global_sparsity']:.4f}  "
        f"non-zero parameters {summary['nonzero_parameter_count']:,} of {summary['dense_parameter_count']:,}"
    )
    ratio = summary["dense_bytes"] / summary["stored_bytes"]
    print(
        f"size on disk {_megabytes(summary['stored_bytes'])} vs dense {_megabytes(summary['dense_bytes'])} "
        f"({ratio:.2f}x smaller; values stored as {summary['storage_dtype'] or 'the model dtype'})"
    )
    return 0


def run_compress(
    source: str, output_dir: str, storage_dtype: str | None, max_shard_size: int | None, overwrite: bool = False
) -> int:
    check_source_exists(source, local_only=True)
    compress(source, output_dir, storage_dtype=storage_dtype, max_shard_size=max_shard_size, overwrite=overwrite)
    print(f"compressed {source} -> {output_dir}")
    return info(output_dir)


def run_decompress(source: str, output_dir: str, overwrite: bool = False, **hub_kwargs) -> int:
    check_source_exists(source)
    decompress(source, output_dir, overwrite=overwrite, **hub_kwargs)
    print(f"decompressed {source} -> {output_dir} (vanilla transformers checkpoint)")
    return 0


def verify(path: str, reference: str | None = None, atol: float = 1e-5, **hub_kwargs) -> int:
    """Reload a compressed checkpoint and check it: recorded counts, dense vs CSR logits, and a reference model."""
    config, _ = _read_config(path, hub_kwargs)
    architecture = (config.get("architectures") or [None])[0]
    model_class = next((cls for cls in MODEL_CLASSES.values() if cls.__name__ == architecture), None)
    if model_class is None:
        print(f"FAIL {path}: architectures={config.get('architectures')!r} is not an SPD model class.")
        return 1
    model = model_class.from_pretrained(path, **hub_kwargs).eval()
    failures = []
    block = model.config.sparsity_config
    report = sparsity_report(model, targets=block["targets"])
    for tensor in report.tensors:
        recorded = block["tensors"][tensor.name]["nnz"]
        if tensor.numel - tensor.zeros != recorded:
            failures.append(f"{tensor.name}: {tensor.numel - tensor.zeros} non-zeros, config records {recorded}")
    if abs(report.prunable_sparsity - block["prunable_sparsity"]) > 1e-9:
        failures.append(f"prunable_sparsity {report.prunable_sparsity} != recorded {block['prunable_sparsity']}")
    generator = torch.Generator().manual_seed(0)
    vocab = getattr(model.config, "vocab_size", 100)
    inputs = {
        "input_ids": torch.randint(1, vocab, (4, 32), generator=generator),
        "attention_mask": torch.ones(4, 32, dtype=torch.long),
    }
    with torch.no_grad():
        logits = _first_output(model(**inputs))
        print(f"reloaded {path}: {architecture}, prunable_sparsity={report.prunable_sparsity:.4f}")
        if reference is not None:
            reference_logits = _first_output(load_dense_model(reference).eval()(**inputs))
            difference = float((reference_logits - logits).abs().max())
            print(f"max |logits - reference logits| = {difference:.3e} (tolerance {atol:g})")
            if difference > atol:
                failures.append(
                    f"logits differ from {reference} by {difference:.3e}: --reference must hold the same weights (e.g. "
                    "`optimum-spd decompress` of this checkpoint), not the dense teacher it was pruned from"
                )
        sparse_logits = _first_output(model.to_sparse_inference(min_sparsity=0.0)(**inputs))
        difference = float((sparse_logits - logits).abs().max())
        print(f"max |CSR inference logits - dense logits| = {difference:.3e} (tolerance {atol:g})")
        if difference > atol:
            failures.append(f"CSR inference differs from the dense path by {difference:.3e}")
    for failure in failures:
        print(f"FAIL {failure}")
    print("OK" if not failures else f"{len(failures)} check(s) failed")
    return 0 if not failures else 1


def _first_output(outputs) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") and outputs.logits is not None else outputs[0]


def export(
    source: str,
    output_dir: str,
    *,
    int8: bool = False,
    opset: int = 18,
    atol: float = 1e-4,
    task: str | None = None,
    data_dir: str | None = None,
    overwrite: bool = False,
    **hub_kwargs,
) -> int:
    """``export``: ONNX Runtime graphs of a checkpoint, verified, with a one-table summary."""
    from ..export import export_onnx

    check_source_exists(source)
    evaluation = {}
    if task is not None:
        from transformers import AutoTokenizer

        from ..tasks import glue_compute_metrics, load_glue, tokenize_glue

        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
        evaluation = {
            "eval_dataset": tokenize_glue(load_glue(task, data_dir)["validation"], tokenizer),
            "compute_metrics": glue_compute_metrics(task),
        }
    report = export_onnx(
        source, output_dir, int8=int8, opset=opset, atol=atol, overwrite=overwrite, **evaluation, **hub_kwargs
    )
    print(f"exported {source} -> {output_dir} (opset {opset}, prunable_sparsity {report['prunable_sparsity']:.4f})")
    print(f"{'file':<18} {'MB':>8}  {'max |diff| vs PyTorch':>22}")
    for variant, name in (("onnx_fp32", "model.onnx"), ("onnx_int8", "model_int8.onnx")):
        if variant in report["max_abs_diff"]:
            print(f"{name:<18} {report['files_mb'][name]:>8.1f}  {report['max_abs_diff'][variant]:>22.3e}")
    for variant, metrics in report.get("metrics", {}).items():
        print(f"{variant:<10} " + "  ".join(f"{key}={value:.4f}" for key, value in metrics.items()))
    return 0


def card(path: str, repo_id: str | None = None, license: str | None = None, tags: list[str] | None = None) -> int:
    from ..hub import render_model_card

    check_source_exists(path, local_only=True)
    render_model_card(path, license=license, tags=tags, repo_id=repo_id)
    print(f"wrote {os.path.join(path, 'README.md')}")
    return 0


def push(
    path: str,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "",
    keep_card: bool = False,
    license: str | None = None,
    tags: list[str] | None = None,
) -> int:
    """Upload a copy of ``path`` (Trainer checkpoints left out) with a freshly rendered card; ``path`` is untouched."""
    import shutil
    import tempfile

    from ..hub import push_folder, render_model_card
    from ..hub.push import checked_repo_id

    checked_repo_id(repo_id)
    check_source_exists(path, local_only=True)
    with tempfile.TemporaryDirectory() as staging:
        folder = os.path.join(staging, os.path.basename(os.path.abspath(path)))
        shutil.copytree(path, folder, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "*.tmp-*", ".*"))
        if not (keep_card and os.path.isfile(os.path.join(folder, "README.md"))):
            render_model_card(folder, license=license, tags=tags, repo_id=repo_id)
        url = push_folder(folder, repo_id, private=private or None, revision=revision, commit_message=commit_message)
    print(f"pushed {path} -> {url}")
    return 0
