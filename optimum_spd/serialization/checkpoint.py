"""Compressed checkpoint files: safetensors (single file or sharded with an index), written atomically.

A save builds the whole checkpoint in a staging directory beside the target and moves it into place with
an atomic swap, so at every instant the target path holds either the previous complete checkpoint or the new one.
A directory that holds files we did not write, or the save's own input, is refused before anything is written.
Every weight file carries the checkpoint id of its ``config.json`` in its metadata, so files from two different
saves are never silently mixed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..utils import write_json_atomically
from .encoding import EncodedTensor, decode, encode, stored_keys

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def replace_pickled_training_arguments(directory: str, args) -> None:
    """Write ``args`` (``TrainingArguments``) as ``training_args.json`` and delete Trainer's pickled
    ``training_args.bin`` beside it: we ship no pickle, and a JSON is readable without unpickling."""
    pickled = os.path.join(directory, "training_args.bin")
    if os.path.isfile(pickled):
        os.remove(pickled)
    # to_json_string, not to_dict: it redacts the hub token.
    arguments = json.loads(args.to_json_string())
    write_json_atomically(arguments, os.path.join(directory, "training_args.json"), sort_keys=True)


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


def _shards(
    stored: dict[str, torch.Tensor], encoded: dict[str, EncodedTensor], max_shard_bytes: int
) -> list[list[str]]:
    """Group keys into shards of at most ``max_shard_bytes``; the parts of one encoded tensor stay together."""
    groups: list[list[str]] = []
    grouped = set()
    for tensor in encoded.values():
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
            raise CompressedCheckpointError(
                f"{path}: not a readable safetensors file ({error}); truncated download?"
            ) from None
        except OSError as error:
            raise CompressedCheckpointError(f"{path}: cannot be read ({error}).") from None
    return stored


def decode_state_dict(stored: dict[str, torch.Tensor], sparsity_config: dict, source: str) -> dict[str, torch.Tensor]:
    """Rebuild the dense state dict from stored tensors and a validated ``sparsity_config``."""
    from .format import STORAGE_DTYPES

    dtype = STORAGE_DTYPES[sparsity_config["dtype"]]
    storage = STORAGE_DTYPES[sparsity_config.get("storage_dtype") or sparsity_config["dtype"]]
    wrong = sorted(key for key, tensor in stored.items() if tensor.is_floating_point() and tensor.dtype != storage)
    if wrong:
        raise CompressedCheckpointError(
            f"{source}: {len(wrong)} stored tensor(s) ({wrong[:2]}, {stored[wrong[0]].dtype}) are not in the "
            f"{storage} that config.json's sparsity_config records (dtype/storage_dtype): the file was edited or "
            "mixed with another save. Nothing was loaded; loading them as recorded would silently round them."
        )
    remaining = dict(stored)
    state_dict: dict[str, torch.Tensor] = {}
    for name, entry in sparsity_config["tensors"].items():
        keys = stored_keys(name, entry["encoding"])
        missing = [key for key in keys if key not in remaining]
        if missing:
            raise CompressedCheckpointError(f"{source}: tensor {name!r} ({entry['encoding']}) is missing {missing}.")
        parts = {key: remaining.pop(key) for key in keys}
        if entry["encoding"] != "dense":
            placeholder = remaining.pop(name, None)  # format 2's zero-size guard against plain-class loading
            if placeholder is not None and placeholder.numel() != 0:
                raise CompressedCheckpointError(f"{source}: tensor {name!r} is stored both encoded and dense.")
        state_dict[name] = decode(name, entry["encoding"], tuple(entry["shape"]), entry["nnz"], parts, dtype, source)
    for key, tensor in remaining.items():
        state_dict[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    non_finite = [
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if non_finite:
        raise CompressedCheckpointError(
            f"{source}: {len(non_finite)} tensor(s) hold NaN or inf values ({', '.join(non_finite[:3])}): the model "
            "that was saved had diverged. Use an earlier checkpoint, or retrain with a lower learning_rate."
        )
    return state_dict


# Files a checkpoint save owns. A new save replaces them as a set (one left over from the previous save is dropped,
# so another model's tokenizer or card never sits beside the new weights); every other entry of the directory
# (Trainer checkpoints, logs, results, a user's own files) is carried over.
_CHECKPOINT_FILE_NAMES = frozenset(
    {
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "configuration_spd.py",
        "modeling_spd.py",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "added_tokens.json",
        "spm.model",
        "sentencepiece.bpe.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "chat_template.json",
        "spd_config.json",
        "training_args.json",
        "training_args.bin",
        "generation_config.json",
        "README.md",
        "spd_run.json",
        "spd_training.png",
    }
)
_CHECKPOINT_SHARD = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")


def _is_checkpoint_file(name: str) -> bool:
    return name in _CHECKPOINT_FILE_NAMES or bool(_CHECKPOINT_SHARD.fullmatch(name))


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


class OutputDirectoryError(ValueError):
    """The output directory cannot safely receive a checkpoint; the message says why and what to do."""


def _is_model_checkpoint(path: str) -> bool:
    """A transformers checkpoint (SPD or vanilla): a ``config.json`` naming a ``model_type``."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            return isinstance(json.load(handle).get("model_type"), str)
    except (OSError, ValueError, AttributeError):
        return False


def check_output_directory(path: str, inputs: tuple[str, ...] = (), overwrite: bool = False) -> str:
    """The real path a save may replace, after refusing the unsafe cases (before anything is written).

    Refused: an output that is one of ``inputs`` (or holds one), an existing file, and a non-empty directory that is
    not a model checkpoint (no ``config.json`` with a ``model_type``) unless ``overwrite``. A symbolic link is followed, so the link survives.
    """
    real = os.path.realpath(os.path.abspath(path))
    for source in inputs:
        source_real = os.path.realpath(os.path.abspath(source))
        if os.path.exists(source_real) and (real == source_real or source_real.startswith(real + os.sep)):
            raise OutputDirectoryError(
                f"the output directory {path} is the input {source} (or contains it): a save would replace what it "
                "reads. Choose another output directory."
            )
    if os.path.exists(real) and not os.path.isdir(real):
        raise OutputDirectoryError(f"the output path {path} exists and is not a directory. Choose another path.")
    if os.path.isdir(real) and os.listdir(real) and not overwrite and not _is_model_checkpoint(real):
        entries = sorted(os.listdir(real))
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise OutputDirectoryError(
            f"the output directory {path} is not empty and is not a model checkpoint (it holds {shown}). Nothing was "
            "written. Choose a new or empty directory, or pass overwrite=True (CLI: --overwrite) to replace its "
            "model, tokenizer and card files while keeping everything else."
        )
    return real


def _exchange(first: str, second: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), second)


@contextlib.contextmanager
def atomic_directory(path: str, inputs: tuple[str, ...] = (), overwrite: bool = False) -> Iterator[str]:
    """Yield a staging directory; on success it replaces ``path``, on error it is removed and ``path`` is untouched.

    ``path`` is checked first (:func:`check_output_directory`). The staging directory gets the mode of the
    directory it replaces (or the umask's default for a new one) and is swapped in atomically where the system
    allows (Linux), so at every instant ``path`` names a complete checkpoint, the old or the new one; then the
    entries of the old directory that are not checkpoint files are moved into the new one. A crash during that last
    move leaves them in a hidden ``.<name>.tmp-*`` directory beside ``path``, never lost.
    """
    real = check_output_directory(path, inputs, overwrite)
    parent = os.path.dirname(real)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.tmp-", dir=parent)
    except OSError as error:
        raise OutputDirectoryError(
            f"cannot write the checkpoint {path}: {error.strerror or error} in {parent}. Nothing was written; choose "
            "a writable directory."
        ) from None
    try:
        try:
            yield staging
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise OSError(
                    error.errno,
                    f"writing the checkpoint {path} failed: {error.strerror} ({error.filename or parent}). The "
                    "previous content of that path is untouched; free space or choose another directory, then save "
                    "again.",
                ) from error
            raise
        if os.path.isdir(real):
            os.chmod(staging, stat.S_IMODE(os.stat(real).st_mode))
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not os.path.exists(real):
        os.rename(staging, real)
        return
    in_output = os.path.realpath(os.getcwd()) == real  # `compress X .`: the process stands in the swapped directory
    old = staging  # after the swap, the staging name holds the previous directory
    if not _exchange(staging, real):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.tmp-", dir=parent)
        os.rmdir(old)
        os.rename(real, old)
        os.rename(staging, real)
    if in_output:
        os.chdir(real)
    for entry in os.listdir(old):
        if not _is_checkpoint_file(entry) and not os.path.exists(os.path.join(real, entry)):
            os.rename(os.path.join(old, entry), os.path.join(real, entry))
    shutil.rmtree(old, ignore_errors=True)
