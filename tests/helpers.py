"""Tiny random models, tokenizers and datasets built locally: the test suite never downloads anything."""

from __future__ import annotations

import os

import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertTokenizerFast,
)

WORDS = [f"w{i}" for i in range(90)]


def tiny_config(model_type: str = "bert", num_labels: int = 2, num_layers: int = 2, **overrides):
    """A 2-layer, 32-wide config of ``model_type`` (random weights, vocab of 100)."""
    common = dict(vocab_size=100, num_labels=num_labels)
    if model_type == "distilbert":
        params = dict(dim=32, n_layers=num_layers, n_heads=4, hidden_dim=64, max_position_embeddings=64)
    else:
        params = dict(
            hidden_size=32,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            type_vocab_size=2,
        )
    if model_type == "roberta":
        params.update(pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=70)
    params.update(common)
    params.update(overrides)
    return AutoConfig.for_model(model_type, **params)


def tiny_model(model_type: str = "bert", seed: int = 0, **config_overrides):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_config(model_type, **config_overrides))


def tiny_tokenizer(directory: str) -> BertTokenizerFast:
    """A WordPiece tokenizer over WORDS, written to ``directory``."""
    os.makedirs(directory, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w") as handle:
        handle.write("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab=path, do_lower_case=True)  # transformers 5 names it `vocab` (vocab_file is ignored)


def tiny_dataset(rows: int = 64, seed: int = 0, num_labels: int = 2, max_length: int = 12) -> Dataset:
    """Random token sequences of varying length, with padding, and a label learnable from the first token."""
    generator = torch.Generator().manual_seed(seed)
    input_ids, attention_mask, labels = [], [], []
    for _ in range(rows):
        length = int(torch.randint(4, max_length + 1, (1,), generator=generator))
        ids = torch.randint(5, 100, (length,), generator=generator).tolist()
        ids = [2, *ids, 3][:max_length]
        pad = max_length - len(ids)
        input_ids.append(ids + [0] * pad)
        attention_mask.append([1] * len(ids) + [0] * pad)
        labels.append(float(ids[1] % 5) if num_labels == 1 else ids[1] % num_labels)
    return Dataset.from_dict({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
