"""NER support of the token-classification example: CoNLL reading, label alignment, entity F1, the script."""

import json
import os
import subprocess
import sys

import pytest
from helpers import WORDS, tiny_config, tiny_tokenizer
from transformers import AutoModelForTokenClassification, pipeline

from optimum_spd.tasks.ner import entity_scores, entity_spans, label_list, read_conll, tokenize_and_align

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_conll(path, sentences=12, seed=0):
    lines = ["-DOCSTART-\tO", ""]
    for s in range(sentences):
        for w in range(4 + s % 3):
            word = WORDS[(s * 7 + w) % len(WORDS)]
            tag = "B-person" if w == 1 else "I-person" if w == 2 and s % 2 else "B-location" if w == 3 else "O"
            lines.append(f"{word}\t{tag}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def test_entity_spans_and_scores_follow_seqeval():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == {("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 5)}
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert entity_scores(gold, gold)["f1"] == 1.0
    half = entity_scores([["B-PER", "O", "O", "B-LOC"]], gold)  # the person span is cut short: wrong
    assert half["precision"] == 0.5 and half["recall"] == 0.5 and half["accuracy"] == 0.75


def test_read_conll_and_align_labels_to_first_word_pieces(tmp_path):
    write_conll(tmp_path / "train.conll")
    data = read_conll(str(tmp_path / "train.conll"))
    assert data.num_rows == 12 and data[0]["tokens"][0] == WORDS[0]
    labels = label_list(data)
    assert labels[0] == "O" and labels[1:] == ["B-location", "B-person", "I-person"]
    tokenizer = tiny_tokenizer(str(tmp_path / "tok"))
    aligned = tokenize_and_align(data, tokenizer, {label: i for i, label in enumerate(labels)}, 32)
    first = aligned[0]
    assert first["labels"][0] == -100 and first["labels"][-1] == -100  # [CLS] and [SEP]
    assert [label for label in first["labels"] if label != -100] == [0, 2, 0, 1]
    (tmp_path / "empty.conll").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no sentence"):
        read_conll(str(tmp_path / "empty.conll"))


@pytest.mark.slow
def test_ner_example_end_to_end(tmp_path):
    write_conll(tmp_path / "train.conll", 24)
    write_conll(tmp_path / "dev.conll", 8, seed=1)
    tiny_tokenizer(str(tmp_path / "base")).save_pretrained(tmp_path / "base")
    AutoModelForTokenClassification.from_config(tiny_config(num_labels=4)).save_pretrained(tmp_path / "base")
    output = tmp_path / "run"
    command = [
        sys.executable,
        os.path.join(REPO, "examples", "token-classification", "run_ner_spd.py"),
        *("--train_file", str(tmp_path / "train.conll"), "--validation_file", str(tmp_path / "dev.conll")),
        *("--model_name_or_path", str(tmp_path / "base"), "--output_dir", str(output)),
        *("--teacher_num_train_epochs", "1", "--num_train_epochs", "2", "--per_device_train_batch_size", "8"),
        *("--target_sparsity", "0.75", "--num_pruning_events", "3", "--report_to", "none", "--use_cpu"),
        *("--save_strategy", "no", "--eval_strategy", "epoch", "--dataset_name", "tiny_ner"),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((output / "all_results.json").read_text())
    assert {"eval_f1", "eval_precision", "eval_recall"} <= set(results["student"])
    assert results["sparsity"]["prunable_sparsity"] == pytest.approx(0.75, abs=2e-3)
    card = (output / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "AutoModelForTokenClassification" in card
    import optimum_spd  # noqa: F401

    tagger = pipeline("token-classification", model=str(output), device="cpu")
    assert all(entity["entity"] in results["labels"] for entity in tagger(" ".join(WORDS[:5])))
