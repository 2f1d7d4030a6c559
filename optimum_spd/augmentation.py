"""Model-free augmentation of tokenised rows: extra, unlabelled text for the teacher-supervised distillation terms.

SPD's diagnosis is *relative data deficiency*: the pruned student must relearn from a small task set what pruning
removed. The teacher can label any text, so perturbed copies of the training rows are extra distillation signal
(TinyBERT's augmentation, without its GloVe/BERT word substitutions, which would need a download). Each copy of a row
changes word pieces independently with small probabilities: replacement by a random piece of the tokenizer's own
vocabulary, replacement by the mask token, deletion, and a swap with the next piece. Special tokens ([CLS], [SEP],
<s>...) never move, so the sentence-pair structure and ``token_type_ids`` stay aligned; every segment keeps at least
one piece, and no operation lengthens a row, so an augmented row is never empty nor longer than its source.
Everything is a function of ``seed``, the row index and the copy index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Dataset

RATE_NAMES = ("delete", "swap", "mask", "replace")


@dataclass(frozen=True)
class AugmentationRates:
    """Per-word-piece probabilities of each perturbation (applied in this order: delete, swap, mask, replace)."""

    delete: float = 0.1
    swap: float = 0.1
    mask: float = 0.1
    replace: float = 0.1

    def __post_init__(self):
        for name in RATE_NAMES:
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AugmentationRates.{name}={value} must be in [0, 1).")

    @classmethod
    def parse(cls, text: str) -> AugmentationRates:
        """Rates from a command line: ``"0.05"`` sets all four; ``"delete=0,swap=0"`` sets those named and keeps
        the others' defaults."""
        text = text.strip()
        if "=" not in text:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"augment rates {text!r}: give one number for all four rates or name=value pairs of "
                    f"{', '.join(RATE_NAMES)} separated by commas (e.g. 'delete=0,swap=0')."
                ) from None
            return cls(**dict.fromkeys(RATE_NAMES, value))
        rates = {}
        for item in text.split(","):
            name, _, value = item.partition("=")
            name = name.strip()
            if name not in RATE_NAMES or name in rates:
                raise ValueError(
                    f"augment rates {text!r}: {name!r} is not a rate or is named twice; the rates are "
                    f"{', '.join(RATE_NAMES)}."
                )
            try:
                rates[name] = float(value)
            except ValueError:
                raise ValueError(f"augment rates {text!r}: {name}={value!r} is not a number.") from None
        return cls(**rates)

    def label(self) -> str:
        """Short and canonical: ``""`` for the defaults, ``"0.05"`` when all four are equal, else ``name=value`` pairs
        (what `parse` reads back)."""
        values = [getattr(self, name) for name in RATE_NAMES]
        if self == AugmentationRates():
            return ""
        if len(set(values)) == 1:
            return f"{values[0]:g}"
        return ",".join(f"{name}={value:g}" for name, value in zip(RATE_NAMES, values))


def _segments(special: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of ordinary word pieces between special tokens."""
    runs, start = [], None
    for position, is_special in enumerate(special):
        if not is_special and start is None:
            start = position
        elif is_special and start is not None:
            runs.append((start, position))
            start = None
    if start is not None:
        runs.append((start, len(special)))
    return runs


def augment_row(
    input_ids: list[int],
    token_type_ids: list[int] | None,
    special_ids: set[int],
    replacement_ids: np.ndarray,
    mask_id: int | None,
    rates: AugmentationRates,
    rng: np.random.Generator,
) -> tuple[list[int], list[int] | None]:
    """One perturbed copy of one row (padding must already be stripped)."""
    ids = np.asarray(input_ids)
    types = None if token_type_ids is None else np.asarray(token_type_ids)
    special = np.isin(ids, list(special_ids))
    keep = np.ones(len(ids), dtype=bool)
    for start, end in _segments(special):
        drop = rng.random(end - start) < rates.delete
        if drop.all():  # a segment never disappears: keep one random piece of it
            drop[rng.integers(end - start)] = False
        keep[start:end] = ~drop
    ids, special = ids[keep].copy(), special[keep]
    types = None if types is None else types[keep]
    for start, end in _segments(special):
        for position in range(start, end - 1):
            if rng.random() < rates.swap:
                ids[position], ids[position + 1] = ids[position + 1], ids[position]
        draws = rng.random(end - start)
        if mask_id is not None:
            ids[start:end][draws < rates.mask] = mask_id
        replaced = (draws >= rates.mask) & (draws < rates.mask + rates.replace)
        ids[start:end][replaced] = rng.choice(replacement_ids, size=int(replaced.sum()))
    return ids.tolist(), None if types is None else types.tolist()


def augment_dataset(
    dataset: Dataset,
    tokenizer,
    copies: int,
    seed: int,
    rates: AugmentationRates | None = None,
) -> Dataset:
    """``copies`` perturbed copies of every row of a tokenised dataset, without labels (a ``transfer_dataset``).

    Only ``input_ids``, ``attention_mask`` and ``token_type_ids`` are kept; padding (``attention_mask == 0``) is
    removed first, so rows may be padded or not.
    """
    if copies < 1:
        raise ValueError(f"augment copies={copies} must be >= 1.")
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"augmentation needs tokenised rows (an 'input_ids' column); got {dataset.column_names}.")
    rates = rates or AugmentationRates()
    special_ids = set(tokenizer.all_special_ids)
    replacement_ids = np.asarray([i for i in range(len(tokenizer)) if i not in special_ids])
    mask_id = tokenizer.mask_token_id
    has_types = "token_type_ids" in dataset.column_names

    def augment(batch: dict, indices: list[int]) -> dict:
        output = {"input_ids": [], "attention_mask": [], **({"token_type_ids": []} if has_types else {})}
        for row, index in enumerate(indices):
            length = sum(batch["attention_mask"][row]) if "attention_mask" in batch else len(batch["input_ids"][row])
            ids = batch["input_ids"][row][:length]
            types = batch["token_type_ids"][row][:length] if has_types else None
            for copy in range(copies):
                rng = np.random.default_rng([seed, index, copy])
                new_ids, new_types = augment_row(ids, types, special_ids, replacement_ids, mask_id, rates, rng)
                output["input_ids"].append(new_ids)
                output["attention_mask"].append([1] * len(new_ids))
                if has_types:
                    output["token_type_ids"].append(new_types)
        return output

    return dataset.map(
        augment,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        desc=f"augmenting x{copies}",
    )
