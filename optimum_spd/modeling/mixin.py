"""Loading and saving behaviour shared by every SPD model class."""

from __future__ import annotations

import os
import tempfile

import torch
from transformers import PreTrainedModel

from ..serialization.checkpoint import CompressedCheckpointError
from .compressed import HUB_KWARGS, load_compressed_state_dict, save_compressed

_SPD_CONFIG_KEYS = ("sparsity_config", "base_model_type", "auto_map")


def _parse_size(size: int | str | None) -> int | None:
    """``"200MB"`` -> bytes (transformers' spelling of shard sizes)."""
    if size is None or isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    text = size.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


class SPDModelMixin:
    """Mixed into each generated SPD model class, in front of the transformers class it specialises."""

    base_model_class: type[PreTrainedModel]
    base_config_class: type

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """Load a compressed SPD checkpoint (local directory or Hub repo id), with exactly the saved weights.

        Honours ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download`` and ``subfolder`` like
        any ``from_pretrained``; other keyword arguments (``dtype``, ``device_map``...) go to transformers.
        """
        kwargs.pop("trust_remote_code", None)
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        if config is None:
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if not isinstance(config, cls.config_class):
            raise ValueError(
                f"{pretrained_model_name_or_path}: model_type {config.model_type!r} is not {cls.config_class.model_type!r}."
            )
        state_dict = load_compressed_state_dict(pretrained_model_name_or_path, config, hub_kwargs)
        state_dict = _fit_to_class(cls, config, state_dict, str(pretrained_model_name_or_path))
        model = super().from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)
        model.name_or_path = str(pretrained_model_name_or_path)
        return model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        compressed: bool = True,
        storage_dtype: str | None = None,
        max_shard_size: int | str | None = None,
        overwrite: bool = False,
        **kwargs,
    ) -> None:
        """Save the compressed checkpoint (default) or, with ``compressed=False``, a vanilla dense one with zeros.

        ``save_directory`` may be new, empty or a model checkpoint (whose model, tokenizer and card files are
        replaced); any other non-empty directory needs ``overwrite=True``.
        """
        if not compressed:
            self.to_dense().save_pretrained(save_directory, max_shard_size=max_shard_size or "50GB", **kwargs)
            return
        unsupported = sorted(set(kwargs) - {"safe_serialization", "is_main_process", "state_dict"})
        if unsupported:
            raise TypeError(f"save_pretrained of a compressed SPD model does not take {unsupported}.")
        if kwargs.get("safe_serialization") is False:
            raise ValueError("SPD checkpoints are safetensors only (no pickle): drop safe_serialization=False.")
        if kwargs.get("is_main_process", True):
            save_compressed(
                self,
                save_directory,
                storage_dtype=storage_dtype,
                max_shard_size=_parse_size(max_shard_size),
                overwrite=overwrite,
            )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = None,
        tags: list[str] | None = None,
        storage_dtype: str | None = None,
        license: str | None = None,
    ) -> str:
        """Upload the compressed checkpoint with a generated model card in one commit; returns the commit URL."""
        from ..hub import push_folder, render_model_card
        from ..hub.push import checked_repo_id

        with tempfile.TemporaryDirectory() as staging:
            folder = os.path.join(staging, checked_repo_id(repo_id).split("/")[-1])
            self.save_pretrained(folder, storage_dtype=storage_dtype, max_shard_size=max_shard_size)
            render_model_card(folder, license=license, tags=tags, repo_id=repo_id)
            return push_folder(
                folder,
                repo_id,
                token=token,
                private=private,
                revision=revision,
                create_pr=create_pr,
                commit_message=commit_message or "Upload sparse model (optimum-spd)",
                commit_description=commit_description,
            )

    def to_dense(self) -> PreTrainedModel:
        """A vanilla transformers model (``model_type: bert``...) with the same weights, zeros included."""
        dense = self.base_model_class(self.base_config_class(**_plain_config_dict(self.config)))
        dense.load_state_dict(self.state_dict())
        return dense.to(self.dtype).train(self.training)

    def to_sparse_inference(self, min_sparsity: float = 0.8, kernel: str = "torch", int8: bool = False):
        """Swap pruned linears at least ``min_sparsity`` sparse for CSR-backed ones (CPU inference); returns self.

        ``kernel`` and ``int8`` as in :func:`optimum_spd.to_sparse_inference` (``kernel="native"``: this package's
        C kernel)."""
        from ..inference import to_sparse_inference

        targets = self.config.sparsity_config["targets"]
        to_sparse_inference(self, targets=targets, min_sparsity=min_sparsity, kernel=kernel, int8=int8)
        return self


def _fit_to_class(cls, config, state_dict: dict, source: str) -> dict:
    """Match the checkpoint's keys to ``cls``: a bare model loads from a task checkpoint (the head is dropped, as in
    transformers), but a missing weight is an error, never a random initialisation."""
    with torch.device("meta"):
        expected = set(cls.base_model_class(cls.base_config_class(**_plain_config_dict(config))).state_dict())
    prefix = f"{cls.base_model_prefix}."
    if not any(key.startswith(prefix) for key in expected) and any(key.startswith(prefix) for key in state_dict):
        # A bare model from a task checkpoint: the head (every key outside the base model) is dropped on purpose.
        state_dict = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    missing = sorted(expected - set(state_dict))
    if missing:
        raise CompressedCheckpointError(
            f"{source}: the checkpoint has no {missing[:3]} ({len(missing)} missing) for {cls.__name__}; load it with "
            "the head it was saved with (see architectures in its config.json)."
        )
    unexpected = sorted(set(state_dict) - expected)
    if unexpected:
        raise CompressedCheckpointError(
            f"{source}: the checkpoint holds {len(unexpected)} weight(s) that {cls.__name__} built from its "
            f"config.json has no place for ({unexpected[:3]}): a field such as num_hidden_layers was edited. Restore "
            "config.json from the save; nothing was loaded."
        )
    return state_dict


def _plain_config_dict(config) -> dict:
    config_dict = config.to_dict()
    for key in (*_SPD_CONFIG_KEYS, "model_type", "architectures"):
        config_dict.pop(key, None)
    return config_dict
