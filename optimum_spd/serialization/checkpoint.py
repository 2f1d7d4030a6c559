"""Compressed checkpoint files: safetensors (single file or sharded with an index), written atomically.

A save builds the whole checkpoint in a staging directory beside the target and moves it into place with
renames, so at every instant the target path holds either the previous complete checkpoint or the new one; a
crash mid-save leaves the previous one untouched (or, in the instant between the two renames, parked next to it
as ``<dir>.old-*``). Every weight file carries the checkpoint id of its ``config.json`` in its metadata, so files
from two different saves are never silently mixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .encoding import EncodedTensor, decode, encode, stored_keys

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# Files a model save owns: replaced by every save, never carried over from the previous checkpoint.
_MODEL_FILE_PREFIXES = ("model.safetensors", "model-", "pytorch_model", "config.json")


def write_json_atomically(payload: object, path: str | os.PathLike, **dump_options) -> str:
    """Write ``payload`` as JSON to ``path`` through a temporary file and a rename: never a half-written file."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, **{"indent": 2, **dump_options})
        handle.write("\n")
    os.replace(temporary, path)
    return str(path)


class CompressedCheckpointError(ValueError):
    """A checkpoint file is missing, truncated or inconsistent; the message names the file."""


def encode_state_dict(
    state_dict: dict[str, torch.Tensor], targets: set[str], storage_dtype: torch.dtype | None
) -> tuple[dict[str, torch.Tensor], dict[str, EncodedTensor]]:
    """Encode the ``targets`` (2-D weights), keep every other tensor dense; floating tensors go to ``storage_dtype``."""
    stored: dict[str, torch.Tensor] = {}
    encoded: dict[str, EncodedTensor] = {}
    for name, tensor in state_dict.items():
        if name in targets:
            encoded[name] = encode(name, tensor, storage_dtype)
            stored.update(encoded[name].tensors)
        else:
            tensor = tensor.detach().to("cpu")
            if storage_dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(storage_dtype)
            stored[name] = tensor.contiguous()
    return stored, encoded


def _shards(stored: dict[str, torch.Tensor], encoded: dict[str, EncodedTensor], max_shard_bytes: int) -> list[list[str]]:
    """Group keys into shards of at most ``max_shard_bytes``; the parts of one encoded tensor stay together."""
    groups: list[list[str]] = []
    grouped = set()
    for name, tensor in encoded.items():
        groups.append(list(tensor.tensors))
        grouped.update(tensor.tensors)
    groups += [[key] for key in stored if key not in grouped]
    shards: list[list[str]] = [[]]
    shard_bytes = 0
    for group in groups:
        group_bytes = sum(stored[key].numel() * stored[key].element_size() for key in group)
        if shards[-1] and shard_bytes + group_bytes > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].extend(group)
        shard_bytes += group_bytes
    return shards


def write_weights(
    stored: dict[str, torch.Tensor],
    encoded: dict[str, EncodedTensor],
    directory: str,
    checkpoint_id: str,
    max_shard_bytes: int | None = None,
) -> list[str]:
    """Write ``stored`` as one ``model.safetensors`` or as shards plus ``model.safetensors.index.json``."""
    metadata = {"format": "pt", "spd_format": "spd-sparse", "spd_checkpoint_id": checkpoint_id}
    shards = _shards(stored, encoded, max_shard_bytes) if max_shard_bytes else [list(stored)]
    if len(shards) == 1:
        save_file({key: stored[key] for key in shards[0]}, os.path.join(directory, WEIGHTS_NAME), metadata=metadata)
        return [WEIGHTS_NAME]
    names = [f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors" for index in range(len(shards))]
    weight_map = {}
    for name, keys in zip(names, shards):
        save_file({key: stored[key] for key in keys}, os.path.join(directory, name), metadata=metadata)
        weight_map.update({key: name for key in keys})
    total_size = sum(tensor.numel() * tensor.element_size() for tensor in stored.values())
    index = {"metadata": {"total_size": total_size, "spd_checkpoint_id": checkpoint_id}, "weight_map": weight_map}
    with open(os.path.join(directory, WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
    return [*names, WEIGHTS_INDEX_NAME]


def read_weight_files(files: list[str], checkpoint_id: str) -> dict[str, torch.Tensor]:
    """Load every tensor of ``files``, checking that each file is intact and belongs to checkpoint ``checkpoint_id``."""
    stored: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("spd_checkpoint_id") != checkpoint_id:
                    raise CompressedCheckpointError(
                        f"{path}: belongs to checkpoint {metadata.get('spd_checkpoint_id')!r}, but config.json is "
                        f"checkpoint {checkpoint_id!r}: files of two different saves are mixed (interrupted copy?)."
                    )
                for key in handle.keys():
                    if key in stored:
                        raise CompressedCheckpointError(f"{path}: tensor {key!r} is stored in two files.")
                    stored[key] = handle.get_tensor(key)
        except SafetensorError as error:
            raise CompressedCheckpointError(f"{path}: not a readable safetensors file ({error}); truncated download?") from None
        except OSError as error:
            raise CompressedCheckpointError(f"{path}: cannot be read ({error}).") from None
    return stored


def decode_state_dict(
    stored: dict[str, torch.Tensor], sparsity_config: dict, source: str
) -> dict[str, torch.Tensor]:
    """Rebuild the dense state dict from stored tensors and a validated ``sparsity_config``."""
    from .format import STORAGE_DTYPES

    dtype = STORAGE_DTYPES[sparsity_config["dtype"]]
    remaining = dict(stored)
    state_dict: dict[str, torch.Tensor] = {}
    for name, entry in sparsity_config["tensors"].items():
        keys = stored_keys(name, entry["encoding"])
        missing = [key for key in keys if key not in remaining]
        if missing:
            raise CompressedCheckpointError(f"{source}: tensor {name!r} ({entry['encoding']}) is missing {missing}.")
        parts = {key: remaining.pop(key) for key in keys}
        state_dict[name] = decode(name, entry["encoding"], tuple(entry["shape"]), entry["nnz"], parts, dtype, source)
    for key, tensor in remaining.items():
        state_dict[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state_dict


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yield a staging directory; on success it replaces ``path``, on error it is removed and ``path`` is untouched.

    Entries of an existing ``path`` that the save does not own (Trainer checkpoints, logs, results) are moved into
    the new directory; its model files (weights, index, config) are replaced as a whole.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not os.path.exists(path):
        os.rename(staging, path)
        return
    if not os.path.isdir(path):
        shutil.rmtree(staging, ignore_errors=True)
        raise NotADirectoryError(f"{path} exists and is not a directory.")
    backup = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
    os.rmdir(backup)
    os.rename(path, backup)
    os.rename(staging, path)
    for entry in os.listdir(backup):
        if not entry.startswith(_MODEL_FILE_PREFIXES) and not os.path.exists(os.path.join(path, entry)):
            os.rename(os.path.join(backup, entry), os.path.join(path, entry))
    shutil.rmtree(backup, ignore_errors=True)
