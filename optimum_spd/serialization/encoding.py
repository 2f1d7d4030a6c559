"""Encode one sparse weight matrix as a few dense tensors, and decode them back with every invariant checked.

Two encodings, chosen per tensor by size (they cross at 6.25% density, i.e. 93.75% sparsity):

* ``bitmask``: ``<name>.values`` (the non-zeros in row-major order), ``<name>.bitmask`` (uint8, one bit per
  element, little-endian bit order along the last dimension, the numpy.packbits layout) and ``<name>.row_offsets``
  (int64, index in ``values`` where each row starts, so rows can be decoded independently).
* ``csr``: ``<name>.values``, ``<name>.col_indices`` (uint16) and ``<name>.crow_indices`` (int64, rows + 1).

A tensor whose best encoding is not smaller than its dense form is stored dense, under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..pruning.masks import pack_bits, unpack_bits

ENCODINGS = ("bitmask", "csr", "dense")
MAX_CSR_COLUMNS = 2**16  # column indices are uint16
_INDEX_BYTES = 8  # row offsets and crow indices are int64


class CompressedTensorError(ValueError):
    """A compressed tensor is malformed; the message names the file and tensor."""


@dataclass(frozen=True)
class EncodedTensor:
    """The stored tensors of one weight and what the checkpoint config records about it."""

    encoding: str
    tensors: dict[str, torch.Tensor]  # safetensors key -> tensor
    shape: tuple[int, int]
    nnz: int


def encoded_sizes(rows: int, columns: int, nnz: int, value_bytes: int) -> dict[str, int]:
    """Bytes each encoding needs for a ``rows x columns`` matrix with ``nnz`` non-zeros."""
    sizes = {
        "dense": rows * columns * value_bytes,
        "bitmask": nnz * value_bytes + rows * (-(-columns // 8)) + rows * _INDEX_BYTES,
    }
    if columns <= MAX_CSR_COLUMNS:
        sizes["csr"] = nnz * (value_bytes + 2) + (rows + 1) * _INDEX_BYTES
    return sizes


def encode(name: str, weight: torch.Tensor, storage_dtype: torch.dtype | None = None) -> EncodedTensor:
    """Encode a 2-D weight with the smallest of the three encodings."""
    if weight.dim() != 2:
        raise ValueError(f"{name}: only 2-D weights are compressed, got shape {tuple(weight.shape)}.")
    weight = weight.detach().to("cpu")
    if storage_dtype is not None:
        weight = weight.to(storage_dtype)
    rows, columns = weight.shape
    nonzero = weight != 0
    nnz = int(nonzero.sum())
    sizes = encoded_sizes(rows, columns, nnz, weight.element_size())
    encoding = min(sizes, key=lambda key: (sizes[key], key != "dense"))  # dense wins ties: simplest to read
    shape = (rows, columns)
    if encoding == "dense":
        return EncodedTensor("dense", {name: weight.contiguous()}, shape, nnz)
    values = weight[nonzero].contiguous()  # row-major order
    row_counts = nonzero.sum(dim=1)
    if encoding == "bitmask":
        row_offsets = torch.cumsum(row_counts, 0) - row_counts
        tensors = {
            f"{name}.values": values,
            f"{name}.bitmask": pack_bits(nonzero).contiguous(),
            f"{name}.row_offsets": row_offsets.to(torch.int64),
        }
    else:
        crow = torch.zeros(rows + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(row_counts, 0)
        tensors = {
            f"{name}.values": values,
            f"{name}.col_indices": nonzero.nonzero()[:, 1].to(torch.int32).to(torch.uint16).contiguous(),
            f"{name}.crow_indices": crow,
        }
    # Format 2: a zero-size placeholder under the weight's own name. A plain transformers class that loads this
    # checkpoint then stops on a size mismatch instead of filling the matrix with random values; our loader drops it.
    tensors[name] = torch.empty(0, dtype=weight.dtype)
    return EncodedTensor(encoding, tensors, shape, nnz)


def stored_keys(name: str, encoding: str) -> tuple[str, ...]:
    """The safetensors keys that hold tensor ``name`` under ``encoding``."""
    if encoding == "dense":
        return (name,)
    if encoding == "bitmask":
        return (f"{name}.values", f"{name}.bitmask", f"{name}.row_offsets")
    if encoding == "csr":
        return (f"{name}.values", f"{name}.col_indices", f"{name}.crow_indices")
    raise ValueError(f"unknown encoding {encoding!r}")


def decode(
    name: str,
    encoding: str,
    shape: tuple[int, int],
    nnz: int,
    stored: dict[str, torch.Tensor],
    dtype: torch.dtype,
    source: str = "checkpoint",
) -> torch.Tensor:
    """Rebuild the dense weight, checking every invariant; errors name ``source`` (the file) and the tensor."""

    def fail(reason: str) -> None:
        raise CompressedTensorError(f"{source}: tensor {name!r} ({encoding}): {reason}")

    rows, columns = shape
    if encoding == "dense":
        weight = stored[name]
        if tuple(weight.shape) != (rows, columns):
            fail(f"stored shape {tuple(weight.shape)} differs from the recorded shape {shape}.")
        return weight.to(dtype)
    values = stored[f"{name}.values"]
    if values.dim() != 1 or values.numel() != nnz:
        fail(f"{values.numel()} values stored but the config records nnz={nnz}.")
    if not values.dtype.is_floating_point:
        fail(f"values have non-float dtype {values.dtype}.")
    if encoding == "bitmask":
        bitmask, row_offsets = stored[f"{name}.bitmask"], stored[f"{name}.row_offsets"]
        expected = (rows, -(-columns // 8))
        if bitmask.dtype != torch.uint8 or tuple(bitmask.shape) != expected:
            fail(f"bitmask has dtype {bitmask.dtype} and shape {tuple(bitmask.shape)}, expected uint8 {expected}.")
        bits = unpack_bits(bitmask, expected[1] * 8)
        if bool(bits[:, columns:].any()):
            fail("bitmask has bits set beyond the last column.")
        keep = bits[:, :columns]
        row_counts = keep.sum(dim=1)
        popcount = int(row_counts.sum())
        if popcount != nnz:
            fail(f"bitmask has {popcount} set bits but {nnz} values are stored.")
        if tuple(row_offsets.shape) != (rows,) or not torch.equal(
            row_offsets.to(torch.int64), torch.cumsum(row_counts, 0) - row_counts
        ):
            fail("row_offsets do not match the bitmask's row counts.")
        weight = torch.zeros(rows, columns, dtype=dtype)
        weight[keep] = values.to(dtype)
        return weight
    if encoding == "csr":
        col_indices, crow = stored[f"{name}.col_indices"], stored[f"{name}.crow_indices"]
        if crow.dim() != 1 or crow.numel() != rows + 1:
            fail(f"crow_indices has {crow.numel()} entries, expected rows + 1 = {rows + 1}.")
        crow = crow.to(torch.int64)
        if int(crow[0]) != 0 or int(crow[-1]) != nnz or bool((crow[1:] < crow[:-1]).any()):
            fail(f"crow_indices must start at 0, never decrease and end at nnz={nnz}.")
        if col_indices.dim() != 1 or col_indices.numel() != nnz:
            fail(f"{col_indices.numel()} column indices stored, expected nnz={nnz}.")
        columns_index = col_indices.to(torch.int64)
        if nnz and int(columns_index.max()) >= columns:
            fail(f"a column index is {int(columns_index.max())}, beyond the {columns} columns.")
        row_index = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])
        same_row = row_index[1:] == row_index[:-1]
        if bool((same_row & (columns_index[1:] <= columns_index[:-1])).any()):
            fail("column indices within a row must be strictly increasing.")
        weight = torch.zeros(rows, columns, dtype=dtype)
        weight[row_index, columns_index] = values.to(dtype)
        return weight
    fail(f"unknown encoding; expected one of {ENCODINGS}.")
