"""SQuAD support of the question-answering example: windows, post-processing, EM/F1, the script end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import WORDS, tiny_config, tiny_tokenizer
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding, TrainingArguments

from optimum_spd.tasks.squad import (
    load_squad,
    postprocess_predictions,
    predict_span_logits,
    prepare_eval_features,
    prepare_train_features,
    split_by_article,
    squad_scores,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_squad(path, articles=3, questions=4):
    data = []
    for a in range(articles):
        paragraphs = []
        for p in range(2):
            words = [WORDS[(a * 13 + p * 5 + k) % len(WORDS)] for k in range(30)]
            context = " ".join(words)
            qas = []
            for q in range(questions):
                answer = " ".join(words[3 * q + 2 : 3 * q + 4])
                qas.append(
                    {
                        "id": f"{a}-{p}-{q}",
                        "question": " ".join(words[q : q + 2]),
                        "answers": [{"text": answer, "answer_start": context.index(answer)}],
                    }
                )
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"article{a}", "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": "1.1", "data": data}))


def test_windows_point_at_the_answer_and_postprocessing_recovers_it(tmp_path):
    write_squad(tmp_path / "squad.json")
    examples = load_squad(str(tmp_path / "squad.json"))
    train, held_out = split_by_article(examples, 2)
    assert len(train) == 16 and len(held_out) == 8 and set(held_out["title"]) == {"article2"}
    tokenizer = tiny_tokenizer(str(tmp_path / "tok"))
    window = {"tokenizer": tokenizer, "max_length": 24, "stride": 8}  # short windows: contexts overflow
    features = train.map(prepare_train_features, batched=True, remove_columns=train.column_names, fn_kwargs=window)
    assert len(features) > len(train)  # several windows per question
    found = 0
    for row in features:
        if row["start_positions"]:
            span = tokenizer.decode(row["input_ids"][row["start_positions"] : row["end_positions"] + 1])
            found += span in set(train["answers"][i]["text"][0] for i in range(len(train)))
    assert found > 0
    eval_features = held_out.map(
        prepare_eval_features, batched=True, remove_columns=held_out.column_names, fn_kwargs=window
    )
    # Logits that point exactly at each gold answer give EM = F1 = 100 after post-processing.
    starts = np.full((len(eval_features), 24), -10.0)
    ends = np.full((len(eval_features), 24), -10.0)
    for index, feature in enumerate(eval_features):
        example = held_out[[e["id"] for e in held_out].index(feature["example_id"])]
        begin = example["answers"]["answer_start"][0]
        end = begin + len(example["answers"]["text"][0])
        for position, offset in enumerate(feature["offset_mapping"]):
            if offset is not None and offset[0] == begin:
                starts[index, position] = 5.0
            if offset is not None and offset[1] == end:
                ends[index, position] = 5.0
    predictions = postprocess_predictions(held_out, eval_features, starts, ends)
    assert squad_scores(predictions, held_out) == {"exact_match": 100.0, "f1": 100.0}
    assert squad_scores({}, held_out) == {"exact_match": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="articles"):
        split_by_article(examples, 3)


def test_span_logits_come_back_in_dataset_order_with_length_grouped_training(tmp_path):
    """Post-processing pairs logits row i with window i: a length-grouped eval sampler must not reorder them."""
    tokenizer = tiny_tokenizer(str(tmp_path / "tok"))
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_config(tiny_config("bert")).eval()
    texts = [" ".join(WORDS[: 3 + (7 * i) % 20]) for i in range(24)]  # lengths 3..22, not sorted
    features = Dataset.from_dict(dict(tokenizer(texts)))
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_eval_batch_size=4,
        train_sampling_strategy="group_by_length",
        report_to=[],
        use_cpu=True,
    )
    starts, ends = predict_span_logits(model, args, features, DataCollatorWithPadding(tokenizer))
    assert args.train_sampling_strategy == "group_by_length"  # the caller's arguments are left as they were
    with torch.no_grad():
        for index, row in enumerate(features):
            output = model(**{key: torch.tensor([value]) for key, value in row.items()})
            length = len(row["input_ids"])
            torch.testing.assert_close(torch.from_numpy(starts[index, :length]), output.start_logits[0])
            torch.testing.assert_close(torch.from_numpy(ends[index, :length]), output.end_logits[0])


@pytest.mark.slow
def test_qa_example_end_to_end(tmp_path):
    write_squad(tmp_path / "squad.json")
    tiny_tokenizer(str(tmp_path / "base")).save_pretrained(tmp_path / "base")
    AutoModelForQuestionAnswering.from_config(tiny_config()).save_pretrained(tmp_path / "base")
    output = tmp_path / "run"
    command = [
        sys.executable,
        os.path.join(REPO, "examples", "question-answering", "run_qa_spd.py"),
        *("--squad_file", str(tmp_path / "squad.json"), "--train_articles", "2", "--max_seq_length", "32"),
        *("--doc_stride", "8", "--model_name_or_path", str(tmp_path / "base"), "--output_dir", str(output)),
        *("--teacher_num_train_epochs", "1", "--num_train_epochs", "2", "--per_device_train_batch_size", "8"),
        *("--target_sparsity", "0.75", "--num_pruning_events", "3", "--report_to", "none", "--use_cpu"),
        *("--save_strategy", "no"),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((output / "all_results.json").read_text())
    assert set(results["student"]) == set(results["teacher"]) == {"exact_match", "f1"}
    assert results["sparsity"]["prunable_sparsity"] == pytest.approx(0.75, abs=2e-3)
    card = (output / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "AutoModelForQuestionAnswering" in card
    assert "exact_match" in card
