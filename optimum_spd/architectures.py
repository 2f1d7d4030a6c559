"""Where each supported model keeps its layer list and its prunable linear weights.

SPD grafts layer ``i`` of the student into position ``i`` of the teacher, so it needs the ``nn.ModuleList`` of
Transformer blocks. The known architectures are listed explicitly; any other model whose blocks form exactly one
``nn.ModuleList`` of ``num_hidden_layers`` entries works too, and anything else gets an error naming its type.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from .constants import SUPPORTED_ARCHITECTURES

# model_type -> attribute path of the layer list, relative to the model's base model.
LAYER_LIST_PATHS = {model_type: spec.layer_list for model_type, spec in SUPPORTED_ARCHITECTURES.items()}


class UnsupportedArchitectureError(ValueError):
    """Raised when SPD cannot find the Transformer blocks of a model."""


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", type(model).__name__)


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def _resolve(module: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return ``(name, layers)``: the qualified name of the block list inside ``model`` and the list itself."""
    base = getattr(model, "base_model", model)
    layers = None
    known_path = LAYER_LIST_PATHS.get(_model_type(model))
    if known_path is not None:
        layers = _resolve(base, known_path)
    if layers is None:
        expected = _num_layers(model)
        candidates = [
            module
            for module in base.modules()
            if isinstance(module, nn.ModuleList) and len(module) > 0 and (expected is None or len(module) == expected)
        ]
        if len(candidates) == 1:
            layers = candidates[0]
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(
            f"SPD does not support model_type={_model_type(model)!r} ({type(model).__name__}): its Transformer blocks "
            f"are not one nn.ModuleList of num_hidden_layers entries. Supported: {sorted(LAYER_LIST_PATHS)}."
        )
    for name, module in model.named_modules():
        if module is layers:
            return name, layers
    raise UnsupportedArchitectureError(f"the layer list of {type(model).__name__} is not a submodule of the model.")


def prunable_parameters(model: nn.Module, patterns: Sequence[str] | None = None) -> dict[str, nn.Parameter]:
    """The weights SPD prunes: ``nn.Linear`` weights inside the Transformer blocks whose name matches a pattern.

    With ``patterns=None`` every linear weight of every block is taken (for BERT: attention query/key/value/output
    and the two FFN matrices). Embeddings, LayerNorm, biases, pooler and classifier are never candidates. Each
    pattern is a regular expression searched in the full parameter name, and must match at least one candidate.
    """
    layer_list_name, layers = find_layer_list(model)
    candidates = {}
    for index, layer in enumerate(layers):
        for module_name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                candidates[f"{layer_list_name}.{index}.{module_name}.weight"] = module.weight
    if not candidates:
        raise UnsupportedArchitectureError(
            f"SPD does not support model_type={_model_type(model)!r} ({type(model).__name__}): its Transformer blocks "
            "hold no nn.Linear to prune (GPT-2 style models use Conv1D). Supported: "
            f"{sorted(LAYER_LIST_PATHS)}."
        )
    if patterns is None:
        return candidates
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"pruning_targets: {pattern!r} is not a valid regular expression ({error}).") from None
    selected = {}
    for regex in compiled:
        matches = {name: param for name, param in candidates.items() if regex.search(name)}
        if not matches:
            example = next(iter(candidates))
            raise ValueError(
                f"pruning_targets: {regex.pattern!r} matches no linear weight inside the Transformer blocks of "
                f"{type(model).__name__} (names look like {example!r}). Fix the pattern or leave pruning_targets unset."
            )
        selected.update(matches)
    return {name: candidates[name] for name in candidates if name in selected}
