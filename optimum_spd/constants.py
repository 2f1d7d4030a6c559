"""The table of supported architectures: the one place that lists them (peft keeps its tables the same way).

It imports nothing from the package, so every module can derive its lists from it: the layer lists SPD grafts
(``architectures.py``), the SPD classes registered with the Auto classes (``modeling/registry.py``) and the
allowlist of base model types read from a checkpoint (``serialization/format.py``).
"""

from __future__ import annotations

from typing import NamedTuple


class ArchitectureSpec(NamedTuple):
    """How SPD finds and names the parts of one transformers architecture."""

    class_prefix: str  # transformers class names: f"{class_prefix}Config", f"{class_prefix}ForSequenceClassification"
    layer_list: str  # attribute path of the nn.ModuleList of Transformer blocks, relative to the base model
    prunable_linears: tuple[str, ...]  # the nn.Linear modules inside one block (all of them are pruned by default)


_BERT_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)

SUPPORTED_ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "bert": ArchitectureSpec("Bert", "encoder.layer", _BERT_LINEARS),
    "roberta": ArchitectureSpec("Roberta", "encoder.layer", _BERT_LINEARS),
    "distilbert": ArchitectureSpec(
        "DistilBert",
        "transformer.layer",
        ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"),
    ),
    "electra": ArchitectureSpec("Electra", "encoder.layer", _BERT_LINEARS),
    "deberta-v2": ArchitectureSpec(
        "DebertaV2",
        "encoder.layer",
        (
            "attention.self.query_proj",
            "attention.self.key_proj",
            "attention.self.value_proj",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ),
    ),
}


def spd_model_type(base_model_type: str) -> str:
    """``bert`` -> ``spd_bert``, ``deberta-v2`` -> ``spd_deberta_v2``: the model_type of a compressed checkpoint."""
    return "spd_" + base_model_type.replace("-", "_")


# Auto class name -> class-name suffix of the head: the SPD classes generated and registered for every architecture.
HEAD_SUFFIXES: dict[str, str] = {
    "AutoModel": "Model",
    "AutoModelForSequenceClassification": "ForSequenceClassification",
    "AutoModelForTokenClassification": "ForTokenClassification",
    "AutoModelForQuestionAnswering": "ForQuestionAnswering",
}


def spd_class_name(base_model_type: str, head_suffix: str | None = None) -> str:
    """``("bert", "ForSequenceClassification")`` -> ``SPDBertForSequenceClassification``; no suffix: the config class."""
    prefix = SUPPORTED_ARCHITECTURES[base_model_type].class_prefix
    return f"SPD{prefix}Config" if head_suffix is None else f"SPD{prefix}{head_suffix}"


def base_type_and_head(model_class_name: str, base_model_type: str | None) -> tuple[str, str]:
    """``(base model_type, head suffix)`` of a plain or SPD transformers model class; a clear error if unsupported."""
    name = model_class_name.removeprefix("SPD")
    spec = SUPPORTED_ARCHITECTURES.get(base_model_type or "")
    supported = ", ".join(
        f"{s.class_prefix}{h}" for s in SUPPORTED_ARCHITECTURES.values() for h in HEAD_SUFFIXES.values()
    )
    if spec is None or not name.startswith(spec.class_prefix):
        raise ValueError(
            f"{model_class_name} (model_type={base_model_type!r}) has no compressed SPD format; supported: {supported}."
        )
    suffix = name[len(spec.class_prefix) :]
    if suffix not in HEAD_SUFFIXES.values():
        raise ValueError(
            f"{model_class_name}: head {suffix!r} has no SPD class; supported: {sorted(set(HEAD_SUFFIXES.values()))}."
        )
    return base_model_type, suffix
