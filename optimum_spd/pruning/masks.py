"""Magnitude masks kept beside the model.

The model stays a plain transformers model at every moment (its checkpoints always load without us); the masks
live here, as boolean "keep" tensors keyed by parameter name, and are enforced twice per optimizer step:
gradients are zeroed at pruned positions before the update and weights are re-zeroed after it, so AdamW moments,
weight decay or mixed-precision rounding can never resurrect a pruned weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def num_to_prune(numel: int, sparsity: float) -> int:
    """Number of zeros a matrix of ``numel`` elements holds at ``sparsity`` (the reference's keep = floor(n(1-s)))."""
    # round() first so that float noise such as 1 - 0.9 = 0.0999... does not keep one weight too few.
    return min(numel, math.ceil(round(numel * sparsity, 6)))


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor into uint8, little-endian bit order along the last dimension (numpy.packbits layout)."""
    if mask.dim() == 0:
        raise ValueError("pack_bits needs a tensor with at least one dimension.")
    mask = mask.to(torch.bool)
    columns = mask.shape[-1]
    padded_columns = -(-columns // 8) * 8
    if padded_columns != columns:
        mask = torch.nn.functional.pad(mask, (0, padded_columns - columns))
    grouped = mask.reshape(*mask.shape[:-1], padded_columns // 8, 8).to(torch.uint8)
    return (grouped * _BIT_WEIGHTS.to(mask.device)).sum(dim=-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, columns: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a boolean tensor whose last dimension has ``columns`` entries."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed bits must be uint8, got {packed.dtype}.")
    if packed.shape[-1] != -(-columns // 8):
        raise ValueError(
            f"packed bits have {packed.shape[-1]} bytes per row, {columns} columns need {-(-columns // 8)}."
        )
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :columns].to(torch.bool)


class PruningMasks:
    """Per-matrix magnitude masks for a fixed set of weights.

    Args:
        parameters: the weights to prune, keyed by their name in the model (``named_parameters`` names).
    """

    def __init__(self, parameters: dict[str, nn.Parameter]):
        if not parameters:
            raise ValueError("PruningMasks needs at least one parameter to prune.")
        self.parameters = dict(parameters)
        self.keep = {name: torch.ones_like(param, dtype=torch.bool) for name, param in self.parameters.items()}
        self.sparsity = 0.0  # the target the masks were last computed for

    def _keep_beside(self, name: str) -> torch.Tensor:
        """The mask of ``name`` on its weight's current device.

        Masks are built where the model is when the trainer is created (usually the CPU); Trainer moves the model to
        its device only when training starts, so a mask follows its weight the first time it is used there.
        """
        keep = self.keep[name]
        device = self.parameters[name].device
        if keep.device != device:
            keep = self.keep[name] = keep.to(device)
        return keep

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Shrink every mask so that its matrix keeps exactly its top ``1 - sparsity`` weights by magnitude.

        Masks only shrink: positions already pruned score -1 and cannot win a place back, so masks are monotone.
        """
        if sparsity < self.sparsity:
            raise ValueError(f"masks are monotone: cannot go from sparsity {self.sparsity} back to {sparsity}.")
        for name, param in self.parameters.items():
            keep = self._keep_beside(name)
            keep_count = param.numel() - num_to_prune(param.numel(), sparsity)
            scores = param.detach().abs().float().masked_fill(~keep, -1.0).flatten()
            new_keep = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
            new_keep[torch.topk(scores, keep_count, sorted=False).indices] = True
            keep &= new_keep.view_as(keep)
        self.sparsity = sparsity
        self.apply_to_weights()

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        """Zero every pruned weight in place."""
        for name, param in self.parameters.items():
            param.masked_fill_(~self._keep_beside(name), 0)

    @torch.no_grad()
    def apply_to_gradients(self) -> None:
        """Zero the gradient of every pruned weight so the optimizer never sees a signal there."""
        for name, param in self.parameters.items():
            if param.grad is not None:
                param.grad.masked_fill_(~self._keep_beside(name), 0)

    @torch.no_grad()
    def apply_to_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero per-weight optimizer state (Adam moments, momentum) at pruned positions after a mask update."""
        for name, param in self.parameters.items():
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.masked_fill_(~self._keep_beside(name), 0)

    def measured_sparsity(self) -> float:
        """Fraction of zeros over all targeted weights, measured on the weights themselves."""
        zeros = sum(int((param == 0).sum()) for param in self.parameters.values())
        total = sum(param.numel() for param in self.parameters.values())
        return zeros / total

    def violations(self) -> dict[str, int]:
        """Number of pruned positions that are not exactly zero, per weight (empty when the invariant holds)."""
        found = {}
        for name, param in self.parameters.items():
            count = int((param.detach()[~self._keep_beside(name)] != 0).sum())
            if count:
                found[name] = count
        return found

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Masks as packed bits (1/8 byte per weight), ready for safetensors."""
        state = {f"{name}.keep_bits": pack_bits(keep).cpu() for name, keep in self.keep.items()}
        state["sparsity"] = torch.tensor([self.sparsity], dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore masks saved by :meth:`state_dict`, checking that they cover exactly the same weights."""
        expected = {f"{name}.keep_bits" for name in self.parameters} | {"sparsity"}
        if set(state) != expected:
            missing = sorted(expected - set(state))[:3]
            unexpected = sorted(set(state) - expected)[:3]
            raise ValueError(
                f"saved masks do not match the pruned weights (missing {missing}, unexpected {unexpected}); "
                "resume with the same model and pruning_targets as the run that saved them."
            )
        for name, param in self.parameters.items():
            keep = unpack_bits(state[f"{name}.keep_bits"], param.shape[-1])
            if keep.shape != param.shape:
                raise ValueError(
                    f"saved mask for {name} has shape {tuple(keep.shape)}, weight has {tuple(param.shape)}."
                )
            self.keep[name] = keep.to(param.device)
        self.sparsity = float(state["sparsity"][0])
