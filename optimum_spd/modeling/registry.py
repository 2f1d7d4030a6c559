"""SPD configs and models for each supported architecture, registered with the transformers Auto classes.

For every base architecture (``bert`` -> ``spd_bert``, ...) there is a config class that keeps every base field at
top level and adds ``sparsity_config``, and model classes for the bare model and the sequence-classification,
token-classification and question-answering heads. They are real ``PreTrainedModel`` subclasses of the
transformers classes (generated below, one line per architecture), so pipelines, Trainer and exporters treat them
as what they are; only loading and saving differ (see :class:`SPDModelMixin`).
"""

from __future__ import annotations

import transformers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from ..constants import HEAD_SUFFIXES, SUPPORTED_ARCHITECTURES, base_type_and_head, spd_class_name, spd_model_type
from .mixin import SPDModelMixin

# base model_type -> class-name prefix in transformers
BASE_ARCHITECTURES = {model_type: spec.class_prefix for model_type, spec in SUPPORTED_ARCHITECTURES.items()}
# Auto class -> class-name suffix of the head
_AUTO_CLASSES = (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoModelForQuestionAnswering,
)
HEADS = {auto_class: HEAD_SUFFIXES[auto_class.__name__] for auto_class in _AUTO_CLASSES}

CONFIG_CLASSES: dict[str, type] = {}  # base model_type -> SPD config class
MODEL_CLASSES: dict[tuple[str, str], type] = {}  # (base model_type, head suffix) -> SPD model class


def _generate_classes() -> None:
    for base_type, prefix in BASE_ARCHITECTURES.items():
        base_config = getattr(transformers, f"{prefix}Config")
        config_class = type(
            spd_class_name(base_type),
            (base_config,),
            {
                "model_type": spd_model_type(base_type),
                "__module__": __name__,
                "__doc__": f"{base_config.__name__} of an optimum-spd compressed sparse checkpoint.",
            },
        )
        globals()[config_class.__name__] = config_class
        CONFIG_CLASSES[base_type] = config_class
        for suffix in HEADS.values():
            base_model = getattr(transformers, f"{prefix}{suffix}")
            model_class = type(
                spd_class_name(base_type, suffix),
                (SPDModelMixin, base_model),
                {
                    "config_class": config_class,
                    "base_model_class": base_model,
                    "base_config_class": base_config,
                    "__module__": __name__,
                    "__doc__": f"{base_model.__name__} loaded from / saved to the SPD sparse format.",
                },
            )
            globals()[model_class.__name__] = model_class
            MODEL_CLASSES[(base_type, suffix)] = model_class


def register() -> None:
    """Register every SPD config and model with AutoConfig and the matching AutoModel classes (idempotent)."""
    for base_type, config_class in CONFIG_CLASSES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto_class, suffix in HEADS.items():
            auto_class.register(config_class, MODEL_CLASSES[(base_type, suffix)], exist_ok=True)


def spd_classes_for(model: nn.Module) -> tuple[type, type, dict[str, type]]:
    """For a plain or SPD transformers model: its SPD config class, SPD model class, and Auto name -> SPD class.

    The Auto map lists every head of the architecture, so a checkpoint saved from one head can be loaded into
    another (e.g. the bare model), as with any transformers checkpoint.
    """
    config = getattr(model, "config", None)
    base_type = getattr(config, "base_model_type", None) or getattr(config, "model_type", None)
    base_type, suffix = base_type_and_head(type(model).__name__, base_type)
    auto_classes = {auto.__name__: MODEL_CLASSES[(base_type, head)] for auto, head in HEADS.items()}
    return CONFIG_CLASSES[base_type], MODEL_CLASSES[(base_type, suffix)], auto_classes


_generate_classes()
