"""``compress`` and ``decompress``: convert between vanilla transformers checkpoints and the SPD sparse format."""

from __future__ import annotations

import json
import os
import shutil

import transformers
from transformers import AutoConfig, PreTrainedModel

from ..serialization.checkpoint import atomic_directory, check_output_directory
from ..serialization.format import SparsityConfigError
from .compressed import save_compressed
from .registry import BASE_ARCHITECTURES, HEADS, MODEL_CLASSES, spd_model_type

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spm.model",
)
# Class names a vanilla checkpoint's `architectures` may name: only these are ever looked up in transformers.
DENSE_ARCHITECTURES = {f"{prefix}{suffix}" for prefix in BASE_ARCHITECTURES.values() for suffix in HEADS.values()}


def _read_config_json(path: str) -> dict:
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: no config.json; is this a model directory?")
    with open(config_path, encoding="utf-8") as handle:
        return json.load(handle)


def _copy_tokenizer_files(source: str, destination: str) -> None:
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copy2(os.path.join(source, name), os.path.join(destination, name))


def load_dense_model(path: str) -> PreTrainedModel:
    """Load a vanilla checkpoint whose ``architectures`` names a supported transformers class (allowlisted)."""
    config = _read_config_json(path)
    architectures = config.get("architectures") or []
    if str(config.get("model_type", "")).startswith("spd_"):
        raise ValueError(f"{path} is already a compressed SPD checkpoint (model_type {config['model_type']!r}).")
    if len(architectures) != 1 or architectures[0] not in DENSE_ARCHITECTURES:
        raise ValueError(
            f"{path}/config.json: architectures={architectures!r} is not one supported class among "
            f"{sorted(DENSE_ARCHITECTURES)}."
        )
    model, loading_info = getattr(transformers, architectures[0]).from_pretrained(path, output_loading_info=True)
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise ValueError(
            f"{path}: the checkpoint has no {missing[:3]} ({len(missing)} missing) for {architectures[0]}; "
            "transformers would fill them with random values. Save the complete fine-tuned model and try again."
        )
    return model


def compress(
    model_or_path: PreTrainedModel | str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    targets: set[str] | None = None,
    storage_dtype: str | None = None,
    max_shard_size: int | None = None,
    overwrite: bool = False,
) -> str:
    """Write a pruned model (in memory, or a vanilla checkpoint directory) as a compressed SPD checkpoint.

    The tokenizer files of a source directory are copied along. Returns ``output_dir``, which may not be the source
    and may only be a non-empty directory that is not a checkpoint with ``overwrite=True``.
    """
    source = None
    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        source = str(model_or_path)
        check_output_directory(str(output_dir), (source,), overwrite)  # before loading: fail fast, write nothing
        model = load_dense_model(source)
    extra = None if source is None else (lambda staging: _copy_tokenizer_files(source, staging))
    return save_compressed(
        model,
        output_dir,
        targets=targets,
        storage_dtype=storage_dtype,
        max_shard_size=max_shard_size,
        add_files=extra,
        inputs=(source,) if source else (),
        overwrite=overwrite,
    )


def decompress(path: str | os.PathLike, output_dir: str | os.PathLike, overwrite: bool = False, **hub_kwargs) -> str:
    """Write a compressed SPD checkpoint as a vanilla transformers checkpoint (``model_type: bert``..., zeros stored).

    For tools that know nothing of optimum-spd (ONNX export, other runtimes). Nothing is written if ``path`` is
    not a valid SPD checkpoint.
    """
    path = str(path)
    check_output_directory(str(output_dir), (path,), overwrite)
    config = AutoConfig.from_pretrained(path, **hub_kwargs)
    if not config.model_type.startswith("spd_") or getattr(config, "sparsity_config", None) is None:
        raise SparsityConfigError(
            f"{path}: model_type {config.model_type!r} is a plain dense checkpoint, not an SPD compressed one: "
            "there is nothing to decompress (it already loads with transformers alone)."
        )
    architecture = (config.architectures or [None])[0]
    model_class = next((cls for cls in MODEL_CLASSES.values() if cls.__name__ == architecture), None)
    if model_class is None or spd_model_type(config.base_model_type) != config.model_type:
        raise SparsityConfigError(
            f"{path}/config.json: architectures={config.architectures!r} is not an SPD model class."
        )
    dense = model_class.from_pretrained(path, config=config, **hub_kwargs).to_dense()
    with atomic_directory(str(output_dir), (path,), overwrite) as staging:
        dense.save_pretrained(staging)
        if os.path.isdir(path):
            _copy_tokenizer_files(path, staging)
    return str(output_dir)
