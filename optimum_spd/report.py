"""``sparsity_report``: one definition of sparsity, used by logs, tests, the CLI and model cards.

``prunable_sparsity`` is the fraction of zeros over the targeted weights (what ``target_sparsity`` promises);
``global_sparsity`` is the fraction of zeros over every parameter of the model, embeddings included. Both are
fractions in [0, 1], never percentages.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .architectures import prunable_parameters


@dataclass(frozen=True)
class TensorSparsity:
    """Zeros of one parameter tensor."""

    name: str
    shape: tuple[int, ...]
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-tensor and aggregate sparsity of a model."""

    tensors: list[TensorSparsity] = field(default_factory=list)
    prunable_numel: int = 0
    prunable_zeros: int = 0
    total_numel: int = 0
    total_zeros: int = 0

    @property
    def prunable_sparsity(self) -> float:
        return self.prunable_zeros / self.prunable_numel if self.prunable_numel else 0.0

    @property
    def global_sparsity(self) -> float:
        return self.total_zeros / self.total_numel if self.total_numel else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "prunable_sparsity": self.prunable_sparsity,
            "global_sparsity": self.global_sparsity,
            "prunable_numel": self.prunable_numel,
            "prunable_zeros": self.prunable_zeros,
            "total_numel": self.total_numel,
            "total_zeros": self.total_zeros,
            "tensors": [
                {**asdict(tensor), "shape": list(tensor.shape), "sparsity": tensor.sparsity} for tensor in self.tensors
            ],
        }

    def __str__(self) -> str:
        width = max((len(tensor.name) for tensor in self.tensors), default=10)
        lines = [f"{'tensor':<{width}}  {'shape':>14}  {'sparsity':>8}"]
        lines += [f"{t.name:<{width}}  {'x'.join(map(str, t.shape)):>14}  {t.sparsity:>8.4f}" for t in self.tensors]
        lines.append(f"prunable_sparsity={self.prunable_sparsity:.4f} over {self.prunable_numel:,} targeted weights")
        lines.append(f"global_sparsity={self.global_sparsity:.4f} over {self.total_numel:,} parameters")
        return "\n".join(lines)


def _named_weights(model: nn.Module):
    """Parameters, plus the weights that sparse-inference modules hold as CSR tensors instead of parameters."""
    from .inference import _SparseLinear

    yield from model.named_parameters()
    for name, module in model.named_modules():
        if isinstance(module, _SparseLinear):
            yield f"{name}.weight", module.dense_weight()


@torch.no_grad()
def sparsity_report(model: nn.Module, targets: Iterable[str] | None = None) -> SparsityReport:
    """Measure the sparsity of ``model``.

    Args:
        model: any ``nn.Module``; parameters shared between modules are counted once.
        targets: names of the targeted (prunable) parameters; default: every linear weight inside the
            Transformer blocks, the default SPD targets.
    """
    target_names = set(targets) if targets is not None else set(prunable_parameters(model))
    report_tensors, prunable_numel, prunable_zeros, total_numel, total_zeros = [], 0, 0, 0, 0
    for name, param in _named_weights(model):
        zeros = int((param == 0).sum())
        total_numel += param.numel()
        total_zeros += zeros
        if name in target_names:
            report_tensors.append(TensorSparsity(name, tuple(param.shape), param.numel(), zeros))
            prunable_numel += param.numel()
            prunable_zeros += zeros
    missing = target_names - {tensor.name for tensor in report_tensors}
    if missing:
        raise ValueError(f"sparsity_report: targets not found among the model's parameters: {sorted(missing)[:3]}")
    return SparsityReport(report_tensors, prunable_numel, prunable_zeros, total_numel, total_zeros)


_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def sparsity_by_layer(tensors: Iterable[tuple[str, int, int]]) -> list[dict[str, object]]:
    """Group ``(name, numel, nnz)`` by Transformer block (the first ``.<index>.`` in the name), in block order.

    Returns one row per block: ``layer`` (the index, or ``"other"``), ``tensors``, ``numel``, ``nnz``, ``sparsity``.
    """
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for name, numel, nnz in tensors:
        match = _LAYER_INDEX.search(name)
        group = groups[match.group(1) if match else "other"]
        group[0] += 1
        group[1] += numel
        group[2] += nnz
    order = sorted(groups, key=lambda layer: (not layer.isdigit(), int(layer) if layer.isdigit() else 0))
    return [
        {
            "layer": layer,
            "tensors": groups[layer][0],
            "numel": groups[layer][1],
            "nnz": groups[layer][2],
            "sparsity": 1 - groups[layer][2] / groups[layer][1] if groups[layer][1] else 0.0,
        }
        for layer in order
    ]
