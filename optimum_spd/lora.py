"""LoRA and SPD: load LoRA adapters safely, merge them densely (teachers) or under the sparse mask (adapted students).

peft's ``merge_and_unload()`` adds a dense low-rank delta ``B @ A * scale`` to every adapted matrix, which fills in
every pruned position of a sparse model. :func:`merge_sparse` merges the same adapter as ``(W + ΔW) ⊙ M``, with
``M`` the non-zero pattern of the sparse base, so the result keeps exactly the base's sparsity, saves in the
compressed format and still runs the sparse inference path. Matrices outside the pruned set (pooler, head, a
LoRA on an embedding) merge exactly as peft merges them.

A teacher (or a dense model to prune) that exists only as a base model + LoRA adapter is merged densely with
:func:`merge_dense`, because SPD distils from, and initialises the student from, the dense fine-tuned weights.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .architectures import prunable_parameters
from .utils import looks_like_a_local_path

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
# Only plain LoRA merges to `W + B @ A * scale`; other peft types (IA3, LoHa, prefix tuning...) are refused.
SUPPORTED_PEFT_TYPES = ("LORA",)
# The `spd_adaptation` block written into config.json by merge_sparse; the card reads only these keys.
ADAPTATION_KEYS = ("method", "rank", "alpha", "target_modules", "masked_merge", "base_model")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class AdapterError(ValueError):
    """A LoRA adapter that cannot be loaded or merged as asked (wrong type, wrong base, dense base...)."""


def _peft():
    try:
        import peft
    except ImportError as error:  # peft is a declared dependency: this is a broken environment
        raise ImportError("LoRA support needs peft: pip install 'peft>=0.15'.") from error
    return peft


def is_peft_model(model: object) -> bool:
    """True for a ``peft.PeftModel``; never imports peft (no PeftModel can exist before peft is imported)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def find_adapter_config(name_or_path: str, **hub_kwargs) -> str | None:
    """The local path of ``adapter_config.json`` when ``name_or_path`` is a LoRA adapter (folder or Hub repo)."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, ADAPTER_CONFIG_NAME)
        return path if os.path.isfile(path) else None
    if looks_like_a_local_path(name_or_path):
        return None
    from transformers.utils import find_adapter_config_file

    return find_adapter_config_file(name_or_path, **hub_kwargs)


def read_adapter_config(name_or_path: str, **hub_kwargs) -> dict[str, Any]:
    """``adapter_config.json`` of a LoRA adapter, with every field we act on checked (peft type, base model)."""
    path = find_adapter_config(name_or_path, **hub_kwargs)
    if path is None:
        raise AdapterError(
            f"{name_or_path}: no {ADAPTER_CONFIG_NAME}; give the folder (or Hub repo) of a LoRA adapter."
        )
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    peft_type = config.get("peft_type")
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise AdapterError(
            f"{path}: peft_type={peft_type!r} is not supported; only LoRA adapters ({SUPPORTED_PEFT_TYPES}) merge to "
            "W + B @ A * scale, which is what a masked merge needs."
        )
    base = config.get("base_model_name_or_path")
    if base is not None and not (isinstance(base, str) and (os.path.isdir(base) or _HUB_ID.match(base))):
        raise AdapterError(
            f"{path}: base_model_name_or_path={base!r} is neither an existing folder nor a Hub repo id; pass the "
            "base model explicitly (base_model=...)."
        )
    return config


def _adapter_weight_shapes(name_or_path: str, **hub_kwargs) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors in ``adapter_model.safetensors`` (read from the header, nothing is unpickled)."""
    from safetensors import safe_open

    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, ADAPTER_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise AdapterError(
                f"{name_or_path}: no {ADAPTER_WEIGHTS_NAME} (an adapter_model.bin is a pickle, which optimum-spd never "
                "loads). Re-save the adapter with save_pretrained(..., safe_serialization=True)."
            )
    else:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(name_or_path, ADAPTER_WEIGHTS_NAME, **hub_kwargs)
    with safe_open(path, framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


def check_adapter_fits(base: nn.Module, name_or_path: str, **hub_kwargs) -> None:
    """Fail early, naming the first module, when an adapter was trained on a differently shaped base model."""
    parameters = dict(base.named_parameters())
    modules = dict(base.named_modules())
    for key, shape in _adapter_weight_shapes(name_or_path, **hub_kwargs).items():
        name = key.removeprefix("base_model.model.")
        for part, (dim, attribute) in (
            (".lora_A.weight", (1, "in_features")),
            (".lora_B.weight", (0, "out_features")),
        ):
            if name.endswith(part):
                module = modules.get(name[: -len(part)])
                expected = getattr(module, attribute, None)
                if module is None or expected != shape[dim]:
                    raise AdapterError(
                        f"{name_or_path}: the adapter's {key} (shape {list(shape)}) does not fit the base model "
                        f"{type(base).__name__} ({name[: -len(part)]} has {attribute}={expected}): the adapter was "
                        "trained on a different base model. Load the base it names in adapter_config.json."
                    )
                break
        else:
            if name in parameters and tuple(parameters[name].shape) != shape:
                raise AdapterError(
                    f"{name_or_path}: the adapter's {key} has shape {list(shape)} but the base model's {name} has "
                    f"{list(parameters[name].shape)} (for a head: load the base with the adapter's num_labels)."
                )


def load_lora_model(
    adapter_name_or_path: str,
    model_class: type | None = None,
    base_model: PreTrainedModel | str | None = None,
    **model_kwargs,
):
    """Load a LoRA adapter onto its base model and return the ``peft.PeftModel`` (adapter not merged).

    Args:
        adapter_name_or_path: a folder or Hub repo with ``adapter_config.json`` and ``adapter_model.safetensors``.
        model_class: the Auto class (or model class) used to load the base, default
            ``AutoModelForSequenceClassification``; an SPD checkpoint loads as its SPD class.
        base_model: a loaded base model, or its path / Hub id; default: the adapter's ``base_model_name_or_path``.
        **model_kwargs: passed to ``model_class.from_pretrained`` (``num_labels``, ``dtype``...).
    """
    config = read_adapter_config(adapter_name_or_path)
    base = base_model if base_model is not None else config.get("base_model_name_or_path")
    if base is None:
        raise AdapterError(f"{adapter_name_or_path}: the adapter names no base model; pass base_model=...")
    if isinstance(base, (str, os.PathLike)):
        if model_class is None:
            from transformers import AutoModelForSequenceClassification as model_class
        base = model_class.from_pretrained(str(base), **model_kwargs)
    check_adapter_fits(base, adapter_name_or_path)
    return _peft().PeftModel.from_pretrained(base, adapter_name_or_path)


def _lora_configs(peft_model) -> dict[str, Any]:
    """The active adapters' configs, each checked to be LoRA."""
    if not is_peft_model(peft_model):
        raise TypeError(f"expected a peft.PeftModel with a LoRA adapter, got {type(peft_model).__name__}.")
    configs = {name: peft_model.peft_config[name] for name in peft_model.active_adapters}
    for name, config in configs.items():
        peft_type = getattr(config.peft_type, "value", config.peft_type)
        if peft_type not in SUPPORTED_PEFT_TYPES:
            raise AdapterError(
                f"adapter {name!r} is {peft_type}, not LoRA: only LoRA merges to W + B @ A * scale, so only LoRA "
                "adapters can be merged under a sparse mask."
            )
    return configs


def adaptation_record(peft_model, masked_merge: bool) -> dict[str, Any]:
    """What the model card says about a LoRA adaptation: method, rank, alpha, targets, base model."""
    configs = _lora_configs(peft_model)
    first = next(iter(configs.values()))
    base = getattr(first, "base_model_name_or_path", None)
    return {
        "method": "lora",
        "rank": int(first.r),
        "alpha": float(first.lora_alpha),
        "target_modules": sorted(
            {module for config in configs.values() for module in _as_list(config.target_modules)}
        ),
        "masked_merge": masked_merge,
        "base_model": base if isinstance(base, str) and _HUB_ID.match(base) else None,  # never a local path
    }


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else sorted(value)


def validate_adaptation(block: object, source: str) -> dict[str, Any] | None:
    """The ``spd_adaptation`` block of a checkpoint's config.json, allowlisted field by field (for the card)."""
    if block is None:
        return None

    def fail(field: str, why: str):
        raise AdapterError(f"{source}: spd_adaptation.{field} {why} Re-save the model with merge_sparse().")

    if not isinstance(block, dict) or set(block) - set(ADAPTATION_KEYS):
        fail("keys", f"must be among {ADAPTATION_KEYS}.")
    if block.get("method") != "lora":
        fail("method", "must be 'lora'.")
    if not isinstance(block.get("rank"), int) or block["rank"] < 1:
        fail("rank", "must be a positive integer.")
    if not isinstance(block.get("alpha"), (int, float)):
        fail("alpha", "must be a number.")
    targets = block.get("target_modules")
    if not isinstance(targets, list) or not all(isinstance(t, str) and _MODULE_NAME.match(t) for t in targets):
        fail("target_modules", "must be a list of module names (letters, digits, '_', '.', '-').")
    if not isinstance(block.get("masked_merge"), bool):
        fail("masked_merge", "must be true or false.")
    base = block.get("base_model")
    if base is not None and not (isinstance(base, str) and _HUB_ID.match(base)):
        fail("base_model", "must be a Hub repo id or null.")
    return dict(block)


def merge_dense(model) -> PreTrainedModel:
    """A ``PeftModel`` with LoRA merged into its (dense) base; any other model is returned unchanged.

    Used for teachers and for dense models to prune: SPD needs the dense fine-tuned weights. Like peft's
    ``merge_and_unload``, this consumes ``model`` (its base is merged in place and returned).
    """
    if not is_peft_model(model):
        return model
    record = adaptation_record(model, masked_merge=False)
    # peft froze the base for adapter training; merged, it is an ordinary model again (the student trains it).
    merged = model.merge_and_unload().requires_grad_(True)
    merged.spd_merged_adapter = record  # read by SPDTrainer for the card; not saved with the weights
    return merged


_ADAPTER_PARTS = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "modules_to_save", "original_module"}


def _merged_name(name: str) -> str | None:
    """The name a parameter of a peft-wrapped model has after ``merge_and_unload`` (None: an adapter's own)."""
    parts = name.split(".")
    if _ADAPTER_PARTS.intersection(parts):
        return None
    return ".".join(part for part in parts if part != "base_layer")


def _linear_weight_masks(peft_model) -> dict[str, torch.Tensor]:
    """Non-zero pattern of every linear weight of the base, keyed by its name after ``merge_and_unload``."""
    masks = {}
    for name, module in peft_model.get_base_model().named_modules():
        merged_name = _merged_name(name)
        if merged_name is not None and isinstance(module, nn.Linear):
            masks[f"{merged_name}.weight"] = module.weight.detach() != 0
    return masks


def _pruned_weight_names(base: nn.Module) -> list[str]:
    """The pruned matrices of a (peft-wrapped) base: its checkpoint's targets, or else every Transformer-block linear."""
    sparsity_config = getattr(getattr(base, "config", None), "sparsity_config", None)
    if isinstance(sparsity_config, dict) and sparsity_config.get("targets"):
        return list(sparsity_config["targets"])
    # peft keeps the wrapped linear as `<module>.base_layer`: prunable_parameters sees it (and the adapters' own).
    return [merged for name in prunable_parameters(base) if (merged := _merged_name(name)) is not None]


@contextmanager
def masked_lora(peft_model) -> Iterator[None]:
    """Inside this block the LoRA layers on pruned matrices compute ``x ((W + ΔW) ⊙ M)^T``: what :func:`merge_sparse`
    will produce, so training sees the deployed model and the masked merge loses nothing.

    The adapter's delta is materialised as a dense ``out x in`` matrix per layer and step (about one extra dense
    matmul per adapted linear); other adapted modules (pooler, head) are untouched.
    """
    import torch.nn.functional as F  # noqa: N812
    from peft.tuners.lora import LoraLayer

    masks = _linear_weight_masks(peft_model)
    pruned = set(_pruned_weight_names(peft_model.get_base_model()))

    def forward(self, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)
        for adapter in self.active_adapters:
            if adapter in self.lora_A:
                delta = self.lora_B[adapter].weight @ self.lora_A[adapter].weight * self.scaling[adapter]
                result = result + F.linear(self.lora_dropout[adapter](x), (delta * self.spd_mask).to(x.dtype))
        return result

    patched = []
    for name, module in peft_model.get_base_model().named_modules():
        if isinstance(module, LoraLayer) and f"{name}.weight" in pruned:
            module.spd_mask = masks[f"{name}.weight"].to(module.get_base_layer().weight.dtype)
            module.forward = types.MethodType(forward, module)
            patched.append(module)
    if not patched:
        raise AdapterError("masked_lora: no LoRA layer sits on a pruned matrix of the base model; nothing to mask.")
    try:
        yield
    finally:
        for module in patched:
            del module.forward, module.spd_mask


@torch.no_grad()
def merge_sparse(peft_model) -> PreTrainedModel:
    """Merge the active LoRA adapter(s) of ``peft_model`` so that every pruned weight of its sparse base stays zero.

    Every pruned matrix becomes ``(W + ΔW) ⊙ M`` (``M``: the base's non-zero pattern); every other adapted matrix
    merges as in ``merge_and_unload``. Returns the base model (an SPD model class when the base was loaded from an
    SPD checkpoint, so ``save_pretrained`` writes the compressed format), at exactly the base's prunable sparsity,
    with ``config.spd_adaptation`` recording rank, alpha and targets for the model card. Consumes ``peft_model``.

    Raises:
        TypeError: ``peft_model`` is not a ``PeftModel``.
        AdapterError: an active adapter is not LoRA, or the base model is not sparse (nothing to keep).
    """
    record = adaptation_record(peft_model, masked_merge=True)
    masks = _linear_weight_masks(peft_model)
    base = peft_model.get_base_model()
    pruned = _pruned_weight_names(base)
    missing = [name for name in pruned if name not in masks]
    if missing:
        raise AdapterError(f"the base model has no linear weight {missing[0]!r} that its sparsity_config lists.")
    pruned_zeros = sum(int((~masks[name]).sum()) for name in pruned)
    if pruned_zeros == 0:
        raise AdapterError(
            f"the base model {type(base).__name__} is not sparse (its prunable weights hold no zeros): there is no "
            "sparsity to keep. Use peft's merge_and_unload() for a dense model, or load an SPD checkpoint as the base."
        )
    merged = peft_model.merge_and_unload()
    weights = dict(merged.named_parameters())
    for name in pruned:
        weights[name].mul_(masks[name].to(weights[name].dtype))
    merged.config.spd_adaptation = record
    return merged
