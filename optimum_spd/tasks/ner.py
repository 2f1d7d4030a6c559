"""Named-entity recognition support for the token-classification example: CoNLL files, label alignment, entity F1.

Files are the CoNLL layout of WNUT-17 and CoNLL-2003: one ``token<TAB or SPACE>tag`` per line (the tag is the last
column), a blank line between sentences, ``-DOCSTART-`` lines skipped. Scores are exact-match entity spans of BIO
tags (the seqeval convention, without the dependency): an entity counts only with the same type, start and end.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset


def read_conll(path: str) -> Dataset:
    """Sentences of a CoNLL file as ``tokens`` and ``tags`` (strings) columns."""
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise ValueError(f"{path}: the line {line!r} is not 'token<TAB>tag'.")
            tokens.append(fields[0])
            tags.append(fields[-1])
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise ValueError(f"{path} holds no sentence: is it a CoNLL file (token, tag per line)?")
    return Dataset.from_dict({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences]})


def label_list(*datasets: Dataset) -> list[str]:
    """Every tag of the datasets, ``O`` first, then sorted by entity type and B before I."""
    tags = {tag for dataset in datasets for row in dataset["tags"] for tag in row}
    return ["O", *sorted(tags - {"O"}, key=lambda tag: (tag[2:], tag[:1]))]


def tokenize_and_align(dataset: Dataset, tokenizer, label_to_id: dict[str, int], max_length: int) -> Dataset:
    """Word pieces with one label per word on its first piece (-100 on the others and on special tokens)."""

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        encoded["labels"] = []
        for row, tags in enumerate(batch["tags"]):
            previous, labels = None, []
            for word in encoded.word_ids(row):
                labels.append(-100 if word is None or word == previous else label_to_id[tags[word]])
                previous = word
            encoded["labels"].append(labels)
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """``(type, start, end)`` of every BIO entity; an ``I-`` that does not continue its type starts a new one."""
    spans, start, kind = set(), None, None
    for position, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and label == kind
        if start is not None and not continues:
            spans.add((kind, start, position))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = position, label
    return spans


def entity_scores(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity spans, and token accuracy."""
    true_positives = predicted_count = gold_count = 0
    correct_tokens = total_tokens = 0
    for predicted_tags, gold_tags in zip(predicted, gold):
        predicted_spans, gold_spans = entity_spans(predicted_tags), entity_spans(gold_tags)
        true_positives += len(predicted_spans & gold_spans)
        predicted_count += len(predicted_spans)
        gold_count += len(gold_spans)
        correct_tokens += sum(p == g for p, g in zip(predicted_tags, gold_tags))
        total_tokens += len(gold_tags)
    precision = true_positives / predicted_count if predicted_count else 0.0
    recall = true_positives / gold_count if gold_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": correct_tokens / max(total_tokens, 1)}


def ner_compute_metrics(labels: list[str]):
    """A ``Trainer`` ``compute_metrics`` for token classification: entity F1 on the labelled (first) word pieces."""

    def compute(prediction) -> dict[str, float]:
        predicted_ids = np.argmax(prediction.predictions, axis=-1)
        predicted, gold = [], []
        for predicted_row, gold_row in zip(predicted_ids, prediction.label_ids):
            keep = gold_row != -100
            predicted.append([labels[i] for i in predicted_row[keep]])
            gold.append([labels[i] for i in gold_row[keep]])
        return entity_scores(predicted, gold)

    return compute
