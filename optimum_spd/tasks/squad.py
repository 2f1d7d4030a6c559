"""Extractive QA support for the question-answering example: SQuAD v1.1 files, windows, post-processing, EM/F1.

Only SQuAD's dev file is available offline, so the example trains on its first articles and evaluates on the last
ones (an article-level split: the five or so questions of a paragraph never straddle the split). Scores from such a
split are not comparable with published SQuAD dev numbers. Long contexts are cut into overlapping windows
(``stride`` tokens shared); an answer outside a training window points at [CLS]; at evaluation the best span over
all windows of a question wins (standard ``run_qa.py`` post-processing), scored with the official normalisation.
"""

from __future__ import annotations

import collections
import copy
import json
import re
import string

import numpy as np
from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainingArguments


def load_squad(path: str) -> Dataset:
    """Every question of a SQuAD v1.1 JSON file: ``id``, ``title``, ``context``, ``question``, ``answers``."""
    with open(path, encoding="utf-8") as handle:
        articles = json.load(handle)["data"]
    rows = collections.defaultdict(list)
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows["id"].append(qa["id"])
                rows["title"].append(article["title"])
                rows["context"].append(paragraph["context"])
                rows["question"].append(qa["question"].lstrip())
                rows["answers"].append(
                    {
                        "text": [a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    }
                )
    return Dataset.from_dict(dict(rows))


def predict_span_logits(
    model: PreTrainedModel, args: TrainingArguments, features: Dataset, data_collator
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits of ``features`` (model inputs only), **in dataset order**.

    Post-processing maps row i of the logits to window i, so the order must hold. transformers 5 evaluates with a
    ``LengthGroupedSampler`` whenever ``args.train_sampling_strategy == "group_by_length"`` (a sensible training
    setting for QA), which shuffles the rows; the prediction therefore runs with the sequential sampler.
    """
    ordered = copy.copy(args)
    ordered.train_sampling_strategy = "random"  # only the training sampler is random; evaluation is sequential
    start_logits, end_logits = (
        Trainer(model=model, args=ordered, data_collator=data_collator).predict(features).predictions
    )
    return start_logits, end_logits


def split_by_article(dataset: Dataset, train_articles: int) -> tuple[Dataset, Dataset]:
    """The questions of the first ``train_articles`` articles (file order), and those of the rest."""
    titles = list(dict.fromkeys(dataset["title"]))
    if not 0 < train_articles < len(titles):
        raise ValueError(
            f"train_articles={train_articles}: the file has {len(titles)} articles; keep some for each side."
        )
    train_titles = set(titles[:train_articles])
    in_train = [title in train_titles for title in dataset["title"]]
    return (
        dataset.select([i for i, keep in enumerate(in_train) if keep]),
        dataset.select([i for i, keep in enumerate(in_train) if not keep]),
    )


def _windows(examples: dict, tokenizer, max_length: int, stride: int):
    pad_right = tokenizer.padding_side == "right"
    return tokenizer(
        examples["question"] if pad_right else examples["context"],
        examples["context"] if pad_right else examples["question"],
        truncation="only_second" if pad_right else "only_first",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def prepare_train_features(examples: dict, tokenizer, max_length: int = 384, stride: int = 128) -> dict:
    """Windows with ``start_positions``/``end_positions`` of the first gold answer ([CLS] = 0 when outside)."""
    encoded = _windows(examples, tokenizer, max_length, stride)
    sample_of = encoded.pop("overflow_to_sample_mapping")
    encoded["start_positions"], encoded["end_positions"] = [], []
    for window, offsets in enumerate(encoded.pop("offset_mapping")):
        answers = examples["answers"][sample_of[window]]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        sequence = encoded.sequence_ids(window)
        context = 1 if tokenizer.padding_side == "right" else 0
        first = sequence.index(context)
        last = len(sequence) - 1 - sequence[::-1].index(context)
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            encoded["start_positions"].append(0)
            encoded["end_positions"].append(0)
            continue
        start = first
        while start <= last and offsets[start][0] <= start_char:
            start += 1
        end = last
        while end >= first and offsets[end][1] >= end_char:
            end -= 1
        encoded["start_positions"].append(start - 1)
        encoded["end_positions"].append(end + 1)
    return encoded


def prepare_eval_features(examples: dict, tokenizer, max_length: int = 384, stride: int = 128) -> dict:
    """Windows with ``example_id`` and offsets kept for the context tokens only (None elsewhere)."""
    encoded = _windows(examples, tokenizer, max_length, stride)
    sample_of = encoded.pop("overflow_to_sample_mapping")
    context = 1 if tokenizer.padding_side == "right" else 0
    encoded["example_id"] = []
    for window in range(len(encoded["input_ids"])):
        sequence = encoded.sequence_ids(window)
        encoded["example_id"].append(examples["id"][sample_of[window]])
        encoded["offset_mapping"][window] = [
            offset if sequence[k] == context else None for k, offset in enumerate(encoded["offset_mapping"][window])
        ]
    return encoded


def postprocess_predictions(
    examples: Dataset,
    features: Dataset,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """The best-scoring valid span (start <= end, inside the context, at most ``max_answer_length`` tokens) of each
    question over all its windows, as text."""
    windows_of = collections.defaultdict(list)
    for index, example_id in enumerate(features["example_id"]):
        windows_of[example_id].append(index)
    predictions = {}
    for example in examples:
        best_text, best_score = "", -np.inf
        for window in windows_of[example["id"]]:
            offsets = features[window]["offset_mapping"]
            starts = np.argsort(start_logits[window])[-1 : -n_best - 1 : -1]
            ends = np.argsort(end_logits[window])[-1 : -n_best - 1 : -1]
            for start in starts:
                for end in ends:
                    if (
                        start >= len(offsets)
                        or end >= len(offsets)
                        or offsets[start] is None
                        or offsets[end] is None
                        or end < start
                        or end - start + 1 > max_answer_length
                    ):
                        continue
                    score = start_logits[window][start] + end_logits[window][end]
                    if score > best_score:
                        best_score = score
                        best_text = example["context"][offsets[start][0] : offsets[end][1]]
        predictions[example["id"]] = best_text
    return predictions


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(predicted) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], examples: Dataset) -> dict[str, float]:
    """Exact match and F1 in percent, each the max over a question's gold answers, averaged over questions."""
    exact, f1 = [], []
    for example in examples:
        prediction, truths = predictions.get(example["id"], ""), example["answers"]["text"]
        exact.append(max(float(normalize_answer(prediction) == normalize_answer(t)) for t in truths))
        f1.append(max(_f1(prediction, t) for t in truths))
    return {"exact_match": 100 * float(np.mean(exact)), "f1": 100 * float(np.mean(f1))}
