"""Write a model as a compressed SPD checkpoint, and read one back as a dense state dict.

These functions work on plain transformers models: the SPD model classes, ``SPDTrainer.save_model``,
``optimum_spd.compress`` and the CLI all call them, so there is exactly one writer and one reader of the format.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import cached_file

from ..constants import HEAD_SUFFIXES, base_type_and_head, spd_class_name, spd_model_type
from ..report import sparsity_report
from ..serialization.checkpoint import (
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    CompressedCheckpointError,
    atomic_directory,
    check_output_directory,
    decode_state_dict,
    encode_state_dict,
    read_weight_files,
    write_weights,
)
from ..serialization.format import STORAGE_DTYPES, build_sparsity_config, validate_sparsity_config
from .shims import write_shims

# Keyword arguments of from_pretrained that locate files (forwarded to cached_file), as transformers names them.
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in STORAGE_DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"weights of dtype {dtype} cannot be stored; use one of {sorted(STORAGE_DTYPES)}.")


def spd_config_dict(
    config: PretrainedConfig, architecture: str, sparsity_config: dict, auto_map: dict[str, str]
) -> dict:
    """``config.json`` of an SPD checkpoint: every base field at top level, plus the SPD model type and block."""
    base_model_type = getattr(config, "base_model_type", None) or config.model_type
    config_dict = config.to_dict()
    config_dict.pop("sparsity_config", None)
    config_dict.update(
        model_type=spd_model_type(base_model_type),
        base_model_type=base_model_type,
        architectures=[architecture],
        auto_map=auto_map,
        sparsity_config=sparsity_config,
    )
    return config_dict


def save_compressed(
    model: nn.Module,
    save_directory: str | os.PathLike,
    targets: set[str] | None = None,
    storage_dtype: str | None = None,
    max_shard_size: int | None = None,
    min_prunable_sparsity: float | None = None,
    add_files: Callable[[str], None] | None = None,
    inputs: tuple[str, ...] = (),
    overwrite: bool = False,
) -> str:
    """Write ``model`` (a plain or SPD transformers model) as a compressed SPD checkpoint; return the directory.

    Args:
        targets: names of the pruned weights to encode; default: those recorded in an SPD model's config, else
            every linear weight inside the Transformer blocks.
        storage_dtype: ``"float16"`` or ``"bfloat16"`` to store all floating values in half precision (lossy:
            values are rounded), restored to the model's dtype on load.
        max_shard_size: bytes per safetensors shard; larger checkpoints are sharded with an index file.
        min_prunable_sparsity: refuse to save (before writing anything) if the targets are less sparse than this.
        add_files: called with the staging directory to add files (tokenizer, recipe) to the same atomic save.
        inputs: paths this save reads from, which ``save_directory`` must not be.
        overwrite: accept a non-empty ``save_directory`` that is not a model checkpoint (its checkpoint, tokenizer
            and card files are replaced, everything else is kept).
    """
    check_output_directory(str(save_directory), inputs, overwrite)  # before any work: refuse an unsafe directory
    if storage_dtype is not None and storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype={storage_dtype!r} is not one of {sorted(STORAGE_DTYPES)} (or None).")
    config = model.config
    # Class *names* only (from the architecture table): the writer needs no generated class, hence no registry import.
    base_type, head = base_type_and_head(
        type(model).__name__, getattr(config, "base_model_type", None) or config.model_type
    )
    config_class_name, model_class_name = spd_class_name(base_type), spd_class_name(base_type, head)
    auto_class_names = {auto: spd_class_name(base_type, suffix) for auto, suffix in HEAD_SUFFIXES.items()}
    if targets is None:
        recorded = getattr(config, "sparsity_config", None)
        targets = set(recorded["targets"]) if recorded else None
    report = sparsity_report(model, targets=targets)
    targets = {tensor.name for tensor in report.tensors}
    if min_prunable_sparsity is not None and report.prunable_sparsity + 1e-9 < min_prunable_sparsity:
        raise ValueError(
            f"refusing to save: prunable sparsity is {report.prunable_sparsity:.6f}, below the promised "
            f"{min_prunable_sparsity:.6f}."
        )
    state_dict = model.state_dict()
    dtype = next(tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point())
    stored, encoded = encode_state_dict(
        state_dict, targets, STORAGE_DTYPES.get(storage_dtype) if storage_dtype else None
    )
    checkpoint_id = uuid.uuid4().hex
    sparsity_config = validate_sparsity_config(
        build_sparsity_config(
            base_model_type=getattr(config, "base_model_type", None) or config.model_type,
            tensors={
                name: {"encoding": e.encoding, "shape": list(e.shape), "nnz": e.nnz} for name, e in encoded.items()
            },
            dtype=_dtype_name(dtype),
            storage_dtype=storage_dtype,
            prunable_sparsity=report.prunable_sparsity,
            global_sparsity=report.global_sparsity,
            dense_parameter_count=report.total_numel,
            nonzero_parameter_count=report.total_numel - report.total_zeros,
            checkpoint_id=checkpoint_id,
        ),
        source="the config being saved",
    )
    auto_map = {"AutoConfig": f"configuration_spd.{config_class_name}"}
    auto_map.update({auto: f"modeling_spd.{name}" for auto, name in auto_class_names.items()})
    config_dict = spd_config_dict(config, model_class_name, sparsity_config, auto_map)
    with atomic_directory(str(save_directory), inputs, overwrite) as staging:
        write_weights(stored, encoded, staging, checkpoint_id, max_shard_size)
        write_shims(staging, config_class_name, sorted(set(auto_class_names.values())))
        if add_files is not None:
            add_files(staging)
        # config.json last: a directory with a config.json is a complete checkpoint.
        with open(os.path.join(staging, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(config_dict, handle, indent=2, sort_keys=True)
            handle.write("\n")
    return str(save_directory)


def resolve_weight_files(pretrained_model_name_or_path: str | os.PathLike, hub_kwargs: dict) -> list[str]:
    """Local paths of the weight files of a local or Hub checkpoint (single file, or every shard of an index)."""
    single = cached_file(
        pretrained_model_name_or_path, WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if single is not None:
        return [single]
    index_path = cached_file(
        pretrained_model_name_or_path, WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if index_path is None:
        raise CompressedCheckpointError(
            f"{pretrained_model_name_or_path}: no {WEIGHTS_NAME} and no {WEIGHTS_INDEX_NAME}; SPD checkpoints are "
            "safetensors only."
        )
    try:
        with open(index_path, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
        shard_names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CompressedCheckpointError(f"{index_path}: not a valid safetensors index ({error}).") from None
    for shard in shard_names:
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or not shard.endswith(".safetensors"):
            raise CompressedCheckpointError(f"{index_path}: invalid shard file name {shard!r}.")
    return [cached_file(pretrained_model_name_or_path, shard, **hub_kwargs) for shard in shard_names]


def load_compressed_state_dict(
    pretrained_model_name_or_path: str | os.PathLike, config: PretrainedConfig, hub_kwargs: dict | None = None
) -> dict[str, torch.Tensor]:
    """Read and validate a compressed checkpoint; return its dense state dict."""
    hub_kwargs = hub_kwargs or {}
    source = os.path.join(str(pretrained_model_name_or_path), "config.json")
    sparsity_config = validate_sparsity_config(getattr(config, "sparsity_config", None), source=source)
    files = resolve_weight_files(pretrained_model_name_or_path, hub_kwargs)
    stored = read_weight_files(files, sparsity_config["checkpoint_id"])
    return decode_state_dict(
        stored, sparsity_config, source=files[0] if len(files) == 1 else str(pretrained_model_name_or_path)
    )
