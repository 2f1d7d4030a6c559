"""Model cards for compressed SPD checkpoints, generated from the files of the checkpoint folder itself.

Everything the card states is read from the folder that is uploaded: ``config.json`` (sparsity per tensor, counts),
the weight files (sizes on disk), ``spd_config.json`` (the recipe), ``training_args.json``, ``trainer_state.json``
(curves, stage timeline, evaluation) and ``spd_run.json`` (teacher, dataset, wall time per stage), so the card is
true of the uploaded files by construction. The template is ``model_cards/spd_model_card.md.j2``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..lora import validate_adaptation
from ..report import sparsity_by_layer
from ..serialization.format import dense_nbytes, validate_sparsity_config
from ..utils import write_json_atomically

TEMPLATE_PATH = Path(__file__).with_name("spd_model_card.md.j2")
PLOT_NAME = "spd_training.png"
RUN_INFO_NAME = "spd_run.json"
PIPELINE_TAGS = {  # head class suffix -> the Hub's pipeline tag
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}
CARD_TAGS = ["sparse", "pruning", "distillation", "spd", "optimum-spd"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_METRIC_NAMES = {
    "accuracy",
    "f1",
    "matthews_correlation",
    "pearson",
    "spearmanr",
    "precision",
    "recall",
    "exact_match",
}


def _read_json(folder: str, name: str) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _is_hub_id(value: str | None) -> bool:
    """A Hub repo id (``user/name``), not a local path: only those may appear as ``base_model``."""
    return bool(value) and bool(_HUB_ID.match(value)) and not os.path.exists(value)


def _metric_values(metrics: dict | None) -> dict[str, float]:
    """``{"eval_accuracy": 0.8, "eval_loss": ...}`` -> ``{"accuracy": 0.8}`` (task metrics only)."""
    values = {}
    for key, value in (metrics or {}).items():
        name = key.removeprefix("eval_")
        if name in _METRIC_NAMES and isinstance(value, (int, float)):
            values[name] = float(value)
    return values


def _stage_timeline(log_history: list[dict], stage_seconds: dict | None) -> list[dict]:
    """First and last logged step of each stage, from the logs themselves."""
    spans: dict[int, list[int]] = {}
    # The reference preset has no ramp: after stage I it keeps grafting at a constant p < 1, so "pure sparse
    # student" would be false there; the rate logged in stage III says which it was.
    rate_after_stage_1 = 1.0
    for entry in log_history:
        if "spd_stage" in entry:
            spans.setdefault(entry["spd_stage"], [entry["step"], entry["step"]])[1] = entry["step"]
            if entry["spd_stage"] == 3 and "replacing_rate" in entry:
                rate_after_stage_1 = entry["replacing_rate"]
    names = {
        1: "I: prune while grafting",
        2: "II: grafting rate ramps to 1",
        3: "III: pure sparse student"
        if rate_after_stage_1 >= 1.0
        else f"III: masks frozen, grafting at p = {rate_after_stage_1:g}",
    }
    return [
        {
            "stage": names[stage],
            "first_step": first,
            "last_step": last,
            "seconds": (stage_seconds or {}).get(f"stage_{stage}"),
        }
        for stage, (first, last) in sorted(spans.items())
    ]


def _teacher_label(run: dict) -> str | None:
    """How the card names the teacher: its Hub id, or what it was fine-tuned from (never a local path)."""
    teacher = run.get("teacher_model")
    if _is_hub_id(teacher):
        return teacher
    if _is_hub_id(run.get("base_model")):
        return f"{run['base_model']}, fine-tuned on the task"
    return None


def collect_card_context(folder: str) -> dict[str, Any]:
    """Everything the template needs, read from ``folder``."""
    config = _read_json(folder, "config.json")
    if config is None or "sparsity_config" not in config:
        raise ValueError(f"{folder} is not a compressed SPD checkpoint (no sparsity_config in config.json).")
    block = validate_sparsity_config(config["sparsity_config"], source=os.path.join(folder, "config.json"))
    tensors = [
        {
            "name": name,
            "shape": "x".join(map(str, entry["shape"])),
            "encoding": entry["encoding"],
            "sparsity": 1 - entry["nnz"] / (entry["shape"][0] * entry["shape"][1]),
        }
        for name, entry in block["tensors"].items()
    ]
    layers = sparsity_by_layer((name, e["shape"][0] * e["shape"][1], e["nnz"]) for name, e in block["tensors"].items())
    stored_bytes = sum(
        os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".safetensors")
    )
    dense_bytes = dense_nbytes(block)
    run = _read_json(folder, RUN_INFO_NAME) or {}
    state = _read_json(folder, "trainer_state.json") or {}
    log_history = state.get("log_history", [])
    evaluations = [entry for entry in log_history if "eval_loss" in entry]
    student_metrics = _metric_values(run.get("student_metrics") or (evaluations[-1] if evaluations else None))
    return {
        "model_id": run.get("model_name") or os.path.basename(os.path.abspath(folder)),
        "architecture": (config.get("architectures") or ["?"])[0],
        "auto_class": _auto_class((config.get("architectures") or ["?"])[0]),
        "base_model_type": block["base_model_type"],
        "sparsity": block,
        "storage_dtype": block["storage_dtype"] or block["dtype"],
        "layers": layers,
        "tensors": tensors,
        "encodings": sorted({tensor["encoding"] for tensor in tensors}),
        "stored_mb": stored_bytes / 1e6,
        "dense_mb": dense_bytes / 1e6,
        "size_ratio": dense_bytes / stored_bytes if stored_bytes else None,
        "recipe": _read_json(folder, "spd_config.json") or {},
        "training_args": _training_summary(_read_json(folder, "training_args.json") or {}),
        "timeline": _stage_timeline(log_history, run.get("stage_seconds")),
        "teacher": _teacher_label(run),
        "base_model": run.get("base_model") if _is_hub_id(run.get("base_model")) else None,
        "teacher_metrics": _metric_values(run.get("teacher_metrics")),
        "student_metrics": student_metrics,
        "dataset": run.get("dataset") or {},
        "has_plot": os.path.isfile(os.path.join(folder, PLOT_NAME)),
        # A LoRA adaptation merged under the sparse mask (lora.merge_sparse), and adapters merged before pruning.
        "adaptation": validate_adaptation(config.get("spd_adaptation"), os.path.join(folder, "config.json")),
        "merged_adapters": {
            role: validate_adaptation(record, os.path.join(folder, RUN_INFO_NAME))
            for role, record in (run.get("merged_adapters") or {}).items()
            if role in ("model", "teacher")
        },
        "run": run,
    }


def _auto_class(architecture: str) -> str:
    """The Auto class a user loads this head with (from an allowlisted table, never the raw config string)."""
    from ..constants import HEAD_SUFFIXES

    return next(
        (auto for auto, suffix in HEAD_SUFFIXES.items() if suffix != "Model" and architecture.endswith(suffix)),
        "AutoModel",
    )


def _training_summary(arguments: dict) -> dict:
    keys = (
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "weight_decay",
        "warmup_steps",
        "lr_scheduler_type",
        "seed",
        "max_grad_norm",
    )
    return {key: arguments[key] for key in keys if key in arguments}


def _card_data(context: dict, license: str | None, language: str | None, tags: list[str] | None) -> ModelCardData:
    dataset = context["dataset"]
    eval_results = []
    if dataset.get("name"):
        for source, metrics in (
            ("sparse student", context["student_metrics"]),
            ("dense teacher", context["teacher_metrics"]),
        ):
            for metric, value in metrics.items():
                eval_results.append(
                    EvalResult(
                        task_type=dataset.get("task_type", "text-classification"),
                        dataset_type=dataset.get("type", dataset["name"]),
                        dataset_name=dataset["name"],
                        dataset_config=dataset.get("config"),
                        dataset_split=dataset.get("split", "validation"),
                        metric_type=metric,
                        metric_value=round(value, 6),
                        metric_name=f"{metric} ({source})",
                    )
                )
    base_model = context["base_model"]
    return ModelCardData(
        library_name="optimum-spd",
        license=license or context["run"].get("license"),
        language=language,
        tags=sorted(set(CARD_TAGS + list(tags or []))),
        base_model=base_model,
        datasets=[dataset["type"]] if _is_hub_id(dataset.get("type")) else None,
        pipeline_tag=next(
            (tag for suffix, tag in PIPELINE_TAGS.items() if context["architecture"].endswith(suffix)), None
        ),
        model_name=context["model_id"],
        eval_results=eval_results or None,
    )


def render_model_card(
    folder: str,
    license: str | None = None,
    language: str | None = None,
    tags: list[str] | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """Plot the run (if its logs are there) and write ``README.md`` into ``folder``; return the card."""
    from .plot import plot_training_curves

    state = _read_json(folder, "trainer_state.json")
    if state and state.get("log_history"):
        arguments = _read_json(folder, "training_args.json") or {}
        peak = arguments.get("learning_rate")
        plot_training_curves(
            state["log_history"], os.path.join(folder, PLOT_NAME), peak if isinstance(peak, (int, float)) else None
        )
    context = collect_card_context(folder)
    if repo_id:
        context["model_id"] = repo_id
    card = ModelCard.from_template(
        _card_data(context, license, language, tags), template_path=str(TEMPLATE_PATH), **context
    )
    card.save(os.path.join(folder, "README.md"))
    return card


def write_run_info(folder: str, info: dict) -> None:
    """Write ``spd_run.json``: what a run knows that the checkpoint files do not (teacher, dataset, timings)."""
    write_json_atomically(info, os.path.join(folder, RUN_INFO_NAME), sort_keys=True, default=str)


def license_of(model_path: str | None) -> str | None:
    """The license in the YAML header of a local model folder's README.md, if any (to carry it to the card)."""
    if not model_path or not os.path.isfile(os.path.join(model_path, "README.md")):
        return None
    try:
        return ModelCard.load(os.path.join(model_path, "README.md")).data.license
    except Exception:  # a malformed card of the base model must not break our save
        return None
