"""Model-free augmentation of tokenised rows: extra, unlabelled text for the teacher-supervised distillation terms.

SPD's diagnosis is *relative data deficiency*: the pruned student must relearn from a small task set what pruning
removed. The teacher can label any text, so perturbed copies of the training rows are extra distillation signal
(TinyBERT's augmentation, without the GloVe vectors and BERT MLM that its word substitutions download). Each copy of
a row changes word pieces independently with small probabilities: replacement by a random piece of the tokenizer's
own vocabulary, replacement by the mask token, deletion, a swap with the next piece and, opt-in, replacement by one of
the piece's nearest neighbours in the model's own input-embedding table (``AugmentationRates.neighbour``: "walked"
becomes "walks" or "strolled", a near miss rather than a random piece; the stand-in for TinyBERT's GloVe neighbours
that needs no download, only the embeddings of the model being distilled). Special tokens ([CLS], [SEP], <s>...)
never move, so the sentence-pair structure and ``token_type_ids`` stay aligned; every segment keeps at least one
piece, and no operation lengthens a row, so an augmented row is never empty nor longer than its source.
Everything is a function of ``seed``, the row index and the copy index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

# The four random perturbations (one number on a command line sets these) and the opt-in embedding-neighbour one.
RANDOM_RATE_NAMES = ("delete", "swap", "mask", "replace")
RATE_NAMES = (*RANDOM_RATE_NAMES, "neighbour")
# Vocabulary entries that are no words although the tokenizer does not call them special ([unused17], <extra_id_3>):
# their embeddings are untrained, so they would be everyone's near neighbour.
_PLACEHOLDER_PIECE = re.compile(r"^(\[[^\]]*\]|<[^>]*>)$")


@dataclass(frozen=True)
class AugmentationRates:
    """Per-word-piece probabilities of each perturbation (applied in this order: delete, swap, then one of mask,
    replace and neighbour). ``neighbour`` (default 0) needs the model's input embeddings (`augment_dataset`'s
    ``embeddings``)."""

    delete: float = 0.1
    swap: float = 0.1
    mask: float = 0.1
    replace: float = 0.1
    neighbour: float = 0.0

    def __post_init__(self):
        for name in RATE_NAMES:
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AugmentationRates.{name}={value} must be in [0, 1).")
        # mask, replace and neighbour share one draw per piece: together they are the chance a piece changes.
        if self.mask + self.replace + self.neighbour >= 1.0:
            raise ValueError(
                f"AugmentationRates: mask + replace + neighbour = {self.mask + self.replace + self.neighbour:g} "
                "must be below 1 (each piece is changed by at most one of them); lower one of them."
            )

    @classmethod
    def parse(cls, text: str) -> AugmentationRates:
        """Rates from a command line: ``"0.05"`` sets the four random rates (``neighbour`` stays 0);
        ``"delete=0,swap=0"`` or ``"delete=0,swap=0,mask=0,replace=0,neighbour=0.2"`` sets those named and keeps the
        others' defaults."""
        text = text.strip()
        if "=" not in text:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"augment rates {text!r}: give one number for the four random rates or name=value pairs of "
                    f"{', '.join(RATE_NAMES)} separated by commas (e.g. 'delete=0,swap=0')."
                ) from None
            return cls(**dict.fromkeys(RANDOM_RATE_NAMES, value))
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
        """Short and canonical: ``""`` for the defaults, ``"0.05"`` when the four random rates are equal and
        ``neighbour`` is 0, else ``name=value`` pairs (``neighbour`` only when it is not 0); `parse` reads it back."""
        names = RATE_NAMES if self.neighbour else RANDOM_RATE_NAMES
        values = [getattr(self, name) for name in names]
        if self == AugmentationRates():
            return ""
        if len(set(values)) == 1 and not self.neighbour:
            return f"{values[0]:g}"
        return ",".join(f"{name}={value:g}" for name, value in zip(names, values))


def _piece_kind(piece: str) -> int:
    """Which pieces may stand in for each other: a word-continuation piece of WordPiece (``##ing``), a piece that
    marks a word start in byte-level BPE or SentencePiece (``Ġthe``, ``▁the``), or an unmarked piece (a word start in
    WordPiece, a continuation in the other two). Substituting within a kind never merges or splits words."""
    if piece.startswith("##"):
        return 0
    if piece.startswith(("\u0120", "\u2581")):  # Ġ, ▁
        return 1
    return 2


@torch.no_grad()
def embedding_neighbours(embeddings: torch.Tensor, tokenizer, ids: np.ndarray, candidates: int = 10) -> np.ndarray:
    """A ``[len(tokenizer), candidates]`` table: row ``i`` holds the ``candidates`` pieces nearest to piece ``i`` by
    cosine similarity of the input embeddings, among ordinary pieces of the same kind (`_piece_kind`), never itself.
    Rows are computed for ``ids`` only (the pieces the data uses); every other row, and a piece that is itself special
    or a placeholder, holds that piece repeated, so substituting it changes nothing."""
    vocab_size = len(tokenizer)
    if embeddings.dim() != 2 or embeddings.shape[0] < vocab_size:
        raise ValueError(
            f"embeddings of shape {tuple(embeddings.shape)} do not cover the tokenizer's {vocab_size} pieces: pass "
            "the distilled model's input embeddings (model.get_input_embeddings().weight)."
        )
    if candidates < 1:
        raise ValueError(f"neighbour candidates={candidates} must be >= 1.")
    table = np.repeat(np.arange(vocab_size)[:, None], candidates, axis=1)
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    special = set(tokenizer.all_special_ids)
    ordinary = np.asarray([i not in special and not _PLACEHOLDER_PIECE.match(p) for i, p in enumerate(pieces)])
    kinds = np.asarray([_piece_kind(p) for p in pieces])
    unit = torch.nn.functional.normalize(embeddings[:vocab_size].detach().float().cpu(), dim=-1)
    wanted = np.unique(np.asarray(ids))
    for kind in np.unique(kinds[wanted]):
        pool = np.flatnonzero(ordinary & (kinds == kind))
        queries = wanted[ordinary[wanted] & (kinds[wanted] == kind)]
        if len(pool) < 2 or len(queries) == 0:
            continue
        count = min(candidates, len(pool) - 1)
        for start in range(0, len(queries), 1024):  # 1024 x pool similarities at a time: bounded memory
            chunk = queries[start : start + 1024]
            similarity = unit[chunk] @ unit[pool].T
            similarity[torch.from_numpy(chunk[:, None] == pool[None, :])] = -float("inf")  # never itself
            nearest = pool[similarity.topk(count, dim=-1).indices.numpy()]
            table[chunk] = nearest[:, np.arange(candidates) % count]  # a small kind: its neighbours cycle
    return table


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
    neighbours: np.ndarray | None = None,
) -> tuple[list[int], list[int] | None]:
    """One perturbed copy of one row (padding must already be stripped); ``neighbours`` is `embedding_neighbours`'
    table, needed when ``rates.neighbour`` is not 0."""
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
        upper = rates.mask + rates.replace
        near = np.flatnonzero((draws >= upper) & (draws < upper + rates.neighbour)) + start
        if len(near):  # no draw at all when the rate is 0: the other perturbations' stream is unchanged
            ids[near] = neighbours[ids[near], rng.integers(neighbours.shape[1], size=len(near))]
    return ids.tolist(), None if types is None else types.tolist()


def augment_dataset(
    dataset: Dataset,
    tokenizer,
    copies: int,
    seed: int,
    rates: AugmentationRates | None = None,
    embeddings: torch.Tensor | None = None,
    neighbour_candidates: int = 10,
) -> Dataset:
    """``copies`` perturbed copies of every row of a tokenised dataset, without labels (a ``transfer_dataset``).

    Only ``input_ids``, ``attention_mask`` and ``token_type_ids`` are kept; padding (``attention_mask == 0``) is
    removed first, so rows may be padded or not. ``embeddings`` (the distilled model's
    ``get_input_embeddings().weight``) is needed when ``rates.neighbour`` is not 0: a substituted piece is one of its
    ``neighbour_candidates`` nearest pieces there, drawn uniformly.
    """
    if copies < 1:
        raise ValueError(f"augment copies={copies} must be >= 1.")
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"augmentation needs tokenised rows (an 'input_ids' column); got {dataset.column_names}.")
    rates = rates or AugmentationRates()
    neighbours = None
    if rates.neighbour:
        if embeddings is None:
            raise ValueError(
                f"AugmentationRates.neighbour={rates.neighbour:g} substitutes embedding neighbours: pass "
                "embeddings=model.get_input_embeddings().weight to augment_dataset (or set neighbour=0)."
            )
        used = np.unique(np.concatenate([np.asarray(row, dtype=np.int64) for row in dataset["input_ids"]]))
        neighbours = embedding_neighbours(embeddings, tokenizer, used, neighbour_candidates)
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
                new_ids, new_types = augment_row(
                    ids, types, special_ids, replacement_ids, mask_id, rates, rng, neighbours
                )
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
