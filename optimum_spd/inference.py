"""Sparse CPU inference: pruned linears as CSR matrices.

At 90% sparsity a CSR matrix-times-activations product does a tenth of the multiply-adds of the dense one; how
much of that becomes wall time depends on the CPU, the thread count and the number of tokens (see the README's
measurements). Two kernels: ``torch`` (torch's sparse CSR product, MKL on x86) and ``native`` (this package's C
kernel, :mod:`optimum_spd.sparse_kernel`, with uint16 column indices and optionally int8 values). Attention
products, embeddings and LayerNorm are untouched. The modules keep the ``nn.Linear`` state-dict layout (a dense
``weight`` is rebuilt on save), so a model with sparse linears still saves correctly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

from .sparse_kernel import csr_matmul, load_kernel


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


class _SparseLinear(nn.Module):
    """What the sparse linears share: a frozen bias, and the ``nn.Linear`` state-dict layout (dense ``weight``)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.set_weight(linear.weight.detach())

    def set_weight(self, weight: torch.Tensor) -> None:
        """Hold ``weight`` (dense, out_features x in_features) in this module's sparse form."""
        raise NotImplementedError

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense tensor (what a state dict holds)."""
        raise NotImplementedError

    @property
    def nnz(self) -> int:
        raise NotImplementedError

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / (self.in_features * self.out_features)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.dense_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        if prefix + "weight" in state_dict:
            self.set_weight(state_dict[prefix + "weight"].detach())
        elif strict:
            missing_keys.append(prefix + "weight")
        if self.bias is not None and prefix + "bias" in state_dict:
            with torch.no_grad():
                self.bias.copy_(state_dict[prefix + "bias"])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sparsity={self.sparsity:.3f}"


class CSRLinear(_SparseLinear):
    """``y = x W^T + b`` with ``W`` held as a torch sparse CSR tensor (torch's kernel: MKL on x86)."""

    def __init__(self, linear: nn.Linear, index_dtype: torch.dtype = torch.int32):
        self.index_dtype = index_dtype
        super().__init__(linear)

    def set_weight(self, weight: torch.Tensor) -> None:
        self.weight_csr = _to_csr(weight, self.index_dtype)

    def dense_weight(self) -> torch.Tensor:
        return self.weight_csr.to_dense()

    @property
    def nnz(self) -> int:
        return self.weight_csr.values().numel()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, self.in_features)
        output = torch.mm(self.weight_csr, flat.t()).t()  # (W x^T)^T: CSR on the left is the fast MKL path
        if self.bias is not None:
            output = output + self.bias
        return output.reshape(*hidden.shape[:-1], self.out_features)

    def _apply(self, fn, recurse=True):  # keep the CSR weight on the same device/dtype as the rest of the model
        self.weight_csr = fn(self.weight_csr)
        return super()._apply(fn, recurse)


class NativeCSRLinear(_SparseLinear):
    """``y = x W^T + b`` by this package's C kernel (:mod:`optimum_spd.sparse_kernel`): CPU, fp32 activations.

    ``W`` is held as int32 row offsets, uint16 column indices and fp32 values, or, with ``int8=True``, int8 values
    with one fp32 scale per output row (symmetric: ``scale = max|W_row| / 127``): about 3 bytes per non-zero
    instead of 6. int8 changes the outputs (the benchmark reports by how much); saving rebuilds the dequantised
    weight. Inference only: no autograd.
    """

    def __init__(self, linear: nn.Linear, int8: bool = False):
        if linear.in_features > 2**16 - 1:
            raise ValueError(
                f"NativeCSRLinear needs in_features <= 65535 (uint16 column indices); got {linear.in_features}."
            )
        self.int8 = int8
        super().__init__(linear)

    def set_weight(self, weight: torch.Tensor) -> None:
        weight = weight.detach().float().cpu()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = weight.to_sparse_csr()
        self.row_ptr = csr.crow_indices().to(torch.int32)
        self.col = csr.col_indices().to(torch.uint16)
        values = csr.values().clone()  # not a view: a view would keep the sparse tensor alive as its base
        self.scale = None
        if self.int8:
            self.scale = (weight.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
            values = torch.round(values / self._scale_per_value()).clamp(-127, 127).to(torch.int8)
        self.values = values

    def _scale_per_value(self) -> torch.Tensor:
        """The int8 scale of each stored value's row."""
        return torch.repeat_interleave(self.scale, self.row_ptr.diff().long())

    def dense_weight(self) -> torch.Tensor:
        values = self.values.float()
        if self.scale is not None:
            values = values * self._scale_per_value()
        return torch.sparse_csr_tensor(
            self.row_ptr.long(), self.col.long(), values, (self.out_features, self.in_features)
        ).to_dense()

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dtype != torch.float32 or hidden.device.type != "cpu":
            raise TypeError(
                f"NativeCSRLinear runs fp32 activations on the CPU; got {hidden.dtype} on {hidden.device}. Use "
                "kernel='torch' for other devices or dtypes."
            )
        if torch.is_grad_enabled() and hidden.requires_grad:
            raise RuntimeError("NativeCSRLinear is for inference: run it under torch.inference_mode() or no_grad().")
        bias = None if self.bias is None else self.bias.detach()
        flat = hidden.reshape(-1, self.in_features)
        output = csr_matmul(flat, self.row_ptr, self.col, self.values, self.scale, bias)
        return output.reshape(*hidden.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", int8" if self.int8 else "")


SPARSE_KERNELS = ("torch", "native")


def to_sparse_inference(
    model: nn.Module,
    targets: Iterable[str] | None = None,
    min_sparsity: float = 0.8,
    index_dtype: torch.dtype = torch.int32,
    kernel: str = "torch",
    int8: bool = False,
) -> list[str]:
    """Replace each targeted ``nn.Linear`` whose weight is at least ``min_sparsity`` sparse by a sparse linear.

    Args:
        targets: weight names (``...dense.weight``); default: every linear weight inside the Transformer blocks.
        index_dtype: CSR index type of the ``torch`` kernel; int32 is faster than torch's default int64.
        kernel: ``"torch"`` (:class:`CSRLinear`: torch's CSR product, any device) or ``"native"``
            (:class:`NativeCSRLinear`: this package's C kernel, CPU and fp32 only, built on first use with the
            system C compiler). ``benchmarks/inference.py`` measures both.
        int8: int8 weight values with a per-row scale (``native`` only); changes the outputs slightly.
            ``kernel="native", int8=True`` followed by ``torch.compile(model)`` is the fastest batch-1 CPU path
            measured (the kernel is a torch custom op, so the model compiles as one graph).
    Returns: the names of the replaced modules.
    """
    if kernel not in SPARSE_KERNELS:
        raise ValueError(f"kernel={kernel!r}: choose one of {SPARSE_KERNELS}.")
    if int8 and kernel != "native":
        raise ValueError("int8=True needs kernel='native' (torch's CSR product has no int8 kernel).")
    if kernel == "native":
        load_kernel()  # build it now: a missing compiler is reported here, not in the middle of a forward pass
    from .architectures import prunable_parameters

    weight_names = set(targets) if targets is not None else set(prunable_parameters(model))
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and f"{name}.weight" in weight_names:
            weight = module.weight
            if float((weight == 0).float().mean()) >= min_sparsity:
                parent_name, _, child = name.rpartition(".")
                sparse = NativeCSRLinear(module, int8) if kernel == "native" else CSRLinear(module, index_dtype)
                setattr(model.get_submodule(parent_name) if parent_name else model, child, sparse)
                replaced.append(name)
    return replaced
