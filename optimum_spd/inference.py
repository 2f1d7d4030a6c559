"""Sparse CPU inference: pruned linears as CSR matrices.

At 90% sparsity a CSR matrix-times-activations product does a tenth of the multiply-adds of the dense one; how
much of that becomes wall time depends on the CPU, the thread count and the number of tokens (see the README's
measurements). Attention products, embeddings and LayerNorm are untouched. The module keeps its ``nn.Linear``
state-dict layout (a dense ``weight`` is rebuilt on save), so a model with CSR linears still saves correctly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn


def _to_csr(weight: torch.Tensor, index_dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """CSR with ``index_dtype`` indices: int32 (half of torch's default int64 index traffic) whenever they fit."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        csr = weight.to_sparse_csr()
        if index_dtype == torch.int64 or csr.values().numel() >= 2**31:
            return csr
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(index_dtype), csr.col_indices().to(index_dtype), csr.values(), csr.shape
        )


class CSRLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held as a torch sparse CSR tensor."""

    def __init__(self, linear: nn.Linear, index_dtype: torch.dtype = torch.int32):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.index_dtype = index_dtype
        self.weight_csr = _to_csr(linear.weight.detach(), index_dtype)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.weight_csr.values().numel() / (self.in_features * self.out_features)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, self.in_features)
        output = torch.mm(self.weight_csr, flat.t()).t()  # (W x^T)^T: CSR on the left is the fast MKL path
        if self.bias is not None:
            output = output + self.bias
        return output.reshape(*hidden.shape[:-1], self.out_features)

    def _apply(self, fn, recurse=True):  # keep the CSR weight on the same device/dtype as the rest of the model
        self.weight_csr = fn(self.weight_csr)
        return super()._apply(fn, recurse)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight_csr.to_dense()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        if prefix + "weight" in state_dict:
            self.weight_csr = _to_csr(state_dict[prefix + "weight"].detach(), self.index_dtype)
        elif strict:
            missing_keys.append(prefix + "weight")
        if self.bias is not None and prefix + "bias" in state_dict:
            with torch.no_grad():
                self.bias.copy_(state_dict[prefix + "bias"])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sparsity={self.sparsity:.3f}"


def to_sparse_inference(
    model: nn.Module,
    targets: Iterable[str] | None = None,
    min_sparsity: float = 0.8,
    index_dtype: torch.dtype = torch.int32,
) -> list[str]:
    """Replace each targeted ``nn.Linear`` whose weight is at least ``min_sparsity`` sparse by a :class:`CSRLinear`.

    Args:
        targets: weight names (``...dense.weight``); default: every linear weight inside the Transformer blocks.
        index_dtype: CSR index type; int32 is faster than torch's default int64 (``benchmarks/inference.py``).
    Returns: the names of the replaced modules.
    """
    from .architectures import prunable_parameters

    weight_names = set(targets) if targets is not None else set(prunable_parameters(model))
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and f"{name}.weight" in weight_names:
            weight = module.weight
            if float((weight == 0).float().mean()) >= min_sparsity:
                parent_name, _, child = name.rpartition(".")
                setattr(
                    model.get_submodule(parent_name) if parent_name else model, child, CSRLinear(module, index_dtype)
                )
                replaced.append(name)
    return replaced
