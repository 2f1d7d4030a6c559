"""The ``sparsity_config`` block of a compressed checkpoint's ``config.json``, and its allowlist validation.

Everything read from a checkpoint is data: each string is checked against a fixed allowlist (or a strict pattern
for tensor names) before it is used, and nothing from a checkpoint is ever imported or executed. A forged or
unknown value is an error naming the file, the field and what is allowed.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..constants import SUPPORTED_ARCHITECTURES
from .encoding import ENCODINGS

FORMAT_NAME = "spd-sparse"
# 2: every encoded (bitmask/CSR) weight also stores a zero-size placeholder under its own name (see encoding.encode).
FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
BASE_MODEL_TYPES = tuple(SUPPORTED_ARCHITECTURES)
STRUCTURES = ("unstructured",)
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_KNOWN_KEYS = {
    "format",
    "format_version",
    "base_model_type",
    "structure",
    "dtype",
    "storage_dtype",
    "prunable_sparsity",
    "global_sparsity",
    "targets",
    "tensors",
    "dense_parameter_count",
    "nonzero_parameter_count",
    "checkpoint_id",
}


class SparsityConfigError(ValueError):
    """The ``sparsity_config`` block of a checkpoint is missing, malformed or forged."""


def build_sparsity_config(
    base_model_type: str,
    tensors: dict[str, dict[str, Any]],
    dtype: str,
    storage_dtype: str | None,
    prunable_sparsity: float,
    global_sparsity: float,
    dense_parameter_count: int,
    nonzero_parameter_count: int,
    checkpoint_id: str,
) -> dict[str, Any]:
    """The block written to ``config.json``; ``tensors`` maps each targeted weight to encoding, shape and nnz."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "base_model_type": base_model_type,
        "structure": "unstructured",
        "dtype": dtype,  # the weights' dtype in memory: what loading restores
        "storage_dtype": storage_dtype,  # float16/bfloat16 when values were stored in half precision (lossy)
        "prunable_sparsity": prunable_sparsity,
        "global_sparsity": global_sparsity,
        "dense_parameter_count": dense_parameter_count,
        "nonzero_parameter_count": nonzero_parameter_count,
        "targets": sorted(tensors),
        "tensors": {name: tensors[name] for name in sorted(tensors)},
        "checkpoint_id": checkpoint_id,
    }


def dense_nbytes(block: dict[str, Any]) -> int:
    """Bytes the model's parameters take dense, in the dtype the checkpoint restores (for size comparisons)."""
    return block["dense_parameter_count"] * torch.empty((), dtype=STORAGE_DTYPES[block["dtype"]]).element_size()


def validate_sparsity_config(block: Any, source: str = "config.json") -> dict[str, Any]:
    """Check every field of a ``sparsity_config`` block read from ``source``; return it unchanged if valid."""

    def fail(field: str, reason: str) -> None:
        raise SparsityConfigError(f"{source}: sparsity_config.{field} {reason}")

    def check_allowed(field: str, value: Any, allowed) -> None:
        if not isinstance(value, str) or value not in allowed:
            fail(
                field,
                f"is {value!r}; allowed: {sorted(allowed)}. This checkpoint was not written by a compatible optimum-spd.",
            )

    def check_fraction(field: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            fail(field, f"is {value!r}; it must be a fraction in [0, 1].")

    def check_count(field: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(field, f"is {value!r}; it must be a non-negative integer.")

    if not isinstance(block, dict):
        raise SparsityConfigError(f"{source}: sparsity_config must be a JSON object, got {type(block).__name__}.")
    unknown = sorted(set(block) - _KNOWN_KEYS)
    if unknown:
        fail(str(unknown[0]), f"is not a known field (unknown fields: {unknown}).")
    if block.get("format") != FORMAT_NAME:
        check_allowed("format", block.get("format"), {FORMAT_NAME})
    version = block.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        fail(
            "format_version",
            f"is {version!r}; this optimum-spd reads versions {SUPPORTED_FORMAT_VERSIONS}: upgrade it.",
        )
    check_allowed("base_model_type", block.get("base_model_type"), BASE_MODEL_TYPES)
    check_allowed("structure", block.get("structure"), STRUCTURES)
    check_allowed("dtype", block.get("dtype"), STORAGE_DTYPES)
    if block.get("storage_dtype") is not None:
        check_allowed("storage_dtype", block.get("storage_dtype"), STORAGE_DTYPES)
    check_fraction("prunable_sparsity", block.get("prunable_sparsity"))
    check_fraction("global_sparsity", block.get("global_sparsity"))
    check_count("dense_parameter_count", block.get("dense_parameter_count"))
    check_count("nonzero_parameter_count", block.get("nonzero_parameter_count"))
    checkpoint_id = block.get("checkpoint_id")
    if not isinstance(checkpoint_id, str) or not re.fullmatch(r"[0-9a-f]{32}", checkpoint_id):
        fail("checkpoint_id", f"is {checkpoint_id!r}; expected 32 hex digits.")
    tensors = block.get("tensors")
    if not isinstance(tensors, dict) or not tensors:
        fail("tensors", "must be a non-empty object mapping tensor names to their encoding.")
    for name, entry in tensors.items():
        if not _TENSOR_NAME.match(name) or len(name) > 300:
            fail("tensors", f"has an invalid tensor name {name[:80]!r}.")
        if not isinstance(entry, dict) or set(entry) != {"encoding", "shape", "nnz"}:
            fail(f"tensors[{name!r}]", "must hold exactly encoding, shape and nnz.")
        check_allowed(f"tensors[{name!r}].encoding", entry["encoding"], ENCODINGS)
        shape = entry["shape"]
        if not (
            isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            fail(f"tensors[{name!r}].shape", f"is {shape!r}; expected two positive integers.")
        nnz = entry["nnz"]
        check_count(f"tensors[{name!r}].nnz", nnz)
        if nnz > shape[0] * shape[1]:
            fail(f"tensors[{name!r}].nnz", f"is {nnz}, more than the {shape[0] * shape[1]} elements of the tensor.")
    if block.get("targets") != sorted(tensors):
        fail("targets", "must list exactly the names in sparsity_config.tensors, sorted.")
    # The headline number (what `info` and the model card show) must agree with the per-tensor counts it summarises.
    numel = sum(entry["shape"][0] * entry["shape"][1] for entry in tensors.values())
    measured = 1 - sum(entry["nnz"] for entry in tensors.values()) / numel
    if abs(measured - block["prunable_sparsity"]) > 1e-6:
        fail(
            "prunable_sparsity",
            f"is {block['prunable_sparsity']!r}, but the per-tensor nnz counts give {measured:.6f}: "
            "the file was edited or corrupted. Re-save the model to record the true value.",
        )
    return block
