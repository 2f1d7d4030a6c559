import json
import os
import subprocess
import sys

import pytest
from helpers import WORDS, tiny_model, tiny_tokenizer

from optimum_spd.tasks import GLUE_TASKS, load_glue, load_glue_metric

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "text-classification", "run_glue_spd.py")


def write_lines(data_dir, task_folder: str, split_file: str, lines: list[str]) -> None:
    """One TSV file of the official GLUE layout: data_dir/<task_folder>/<split_file>.tsv."""
    folder = os.path.join(data_dir, task_folder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{split_file}.tsv"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def write_tiny_mrpc(data_dir, rows=24):
    """MRPC in the official layout: BOM, header, and an unbalanced quote that breaks default CSV quoting."""
    for split, count in (("train", rows), ("dev", rows // 2)):
        lines = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(count):
            first = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 5))
            second = '" ' + " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(4))
            lines.append(f"{i % 2}\t{i}\t{i + 1000}\t{first}\t{second}")
        write_lines(data_dir, "MRPC", split, lines)


MNLI_PARSES = "sentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse"
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def write_tiny_mnli(data_dir, rows=18):
    """MNLI in the official layout: parse columns, one annotator label in train and five in dev, then gold_label."""
    for split, count, offset in (("train", rows, 0), ("dev_matched", rows // 2, 7), ("dev_mismatched", rows // 3, 31)):
        annotators = 1 if split == "train" else 5
        labels = "\t".join(f"label{k + 1}" for k in range(annotators))
        lines = [f"index\tpromptID\tpairID\tgenre\t{MNLI_PARSES}\tsentence1\tsentence2\t{labels}\tgold_label"]
        for i in range(count):
            first = " ".join(WORDS[(offset + i + j) % len(WORDS)] for j in range(3 + i % 4))
            second = '" ' + " ".join(WORDS[(offset + 3 * i + j) % len(WORDS)] for j in range(3))
            gold = MNLI_LABELS[(i + offset) % 3]
            parses = "\t".join(f"( ( {text} ) )" for text in (first, second, first, second))
            votes = "\t".join([gold] * annotators)
            lines.append(f"{i}\t{i}\t{i}n\tfiction\t{parses}\t{first}\t{second}\t{votes}\t{gold}")
        write_lines(data_dir, "MNLI", split, lines)


def write_tiny_qqp(data_dir, rows=16):
    """QQP in the official layout: id, qid1, qid2, question1, question2, is_duplicate."""
    for split, count in (("train", rows), ("dev", rows // 2)):
        lines = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
        for i in range(count):
            question = " ".join(WORDS[(5 * i + j) % len(WORDS)] for j in range(4))
            lines.append(f'{i}\t{2 * i}\t{2 * i + 1}\t{question} ?\t"{question} w1 ?\t{i % 2}')
        write_lines(data_dir, "QQP", split, lines)


def test_mnli_and_qqp_in_the_official_layout(tmp_path):
    """MNLI: train plus matched and mismatched dev sets, string labels mapped to the Hub's ids; QQP: pairs and 0/1."""
    write_tiny_mnli(tmp_path)
    mnli = load_glue("mnli", str(tmp_path))
    assert set(mnli) == {"train", "validation", "validation_mismatched"}
    assert [mnli[name].num_rows for name in ("train", "validation", "validation_mismatched")] == [18, 9, 6]
    assert mnli["validation_mismatched"].features["label"].num_classes == 3
    assert mnli["train"][1]["label"] == 1  # neutral
    assert mnli["validation_mismatched"][0] == {"sentence1": "w31 w32 w33", "sentence2": '" w31 w32 w33', "label": 1}
    assert GLUE_TASKS["mnli"].id2label == dict(enumerate(MNLI_LABELS))
    os.remove(tmp_path / "MNLI" / "dev_mismatched.tsv")
    with pytest.raises(FileNotFoundError, match="dev_mismatched.tsv"):
        load_glue("mnli", str(tmp_path))

    write_tiny_qqp(tmp_path)
    qqp = load_glue("qqp", str(tmp_path))
    assert qqp["train"].num_rows == 16 and qqp["validation"].num_rows == 8
    assert qqp["train"][3] == {"sentence1": "w15 w16 w17 w18 ?", "sentence2": '"w15 w16 w17 w18 w1 ?', "label": 1}


def test_local_glue_reader_keeps_every_row(tmp_path):
    write_tiny_mrpc(tmp_path)
    dataset = load_glue("mrpc", str(tmp_path))
    assert dataset["train"].num_rows == 24 and dataset["validation"].num_rows == 12
    assert dataset["train"][0]["sentence2"].startswith('" ')  # the quote survived, no rows were merged
    assert dataset["train"].features["label"].num_classes == 2
    with pytest.raises(ValueError, match="not a GLUE task"):
        load_glue("mnli-ish", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CoLA/train.tsv"):
        load_glue("cola", str(tmp_path))


@pytest.mark.parametrize(
    "task, predictions, references, expected",
    [
        ("mrpc", [1, 0, 1, 1], [1, 1, 1, 0], {"accuracy": 0.5, "f1": 2 / 3}),
        ("cola", [1, 0, 1, 0], [1, 0, 1, 0], {"matthews_correlation": 1.0}),
        ("sst2", [1, 0], [1, 1], {"accuracy": 0.5}),
        ("qqp", [1, 0, 0, 1], [1, 0, 1, 1], {"accuracy": 0.75, "f1": 0.8}),
        ("mnli", [2, 0, 1], [2, 1, 1], {"accuracy": 2 / 3}),
        ("stsb", [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], {"pearson": 1.0, "spearmanr": 1.0}),
    ],
)
def test_glue_metric_module_offline(task, predictions, references, expected):
    result = load_glue_metric(task).compute(predictions=predictions, references=references)
    assert result == pytest.approx(expected)


def test_example_script_end_to_end(tmp_path):
    """The example on a tiny local model and tiny MRPC: teacher fine-tuning, SPD, evaluation, sparse save."""
    write_tiny_mrpc(tmp_path / "glue")
    tiny_tokenizer(str(tmp_path / "base")).save_pretrained(tmp_path / "base")
    tiny_model().save_pretrained(tmp_path / "base")
    output = tmp_path / "run"
    command = [
        sys.executable,
        SCRIPT,
        "--task_name",
        "mrpc",
        "--data_dir",
        str(tmp_path / "glue"),
        "--model_name_or_path",
        str(tmp_path / "base"),
        "--output_dir",
        str(output),
        "--teacher_num_train_epochs",
        "1",
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--target_sparsity",
        "0.75",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--use_cpu",
        "--train_sampling_strategy",
        "group_by_length",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--num_pruning_events",
        "3",
        # Transfer data: one augmented copy of each training row (embedding neighbours too: the example must hand
        # the teacher's embeddings to the augmenter) plus a file of unlabelled pairs.
        "--augment_copies",
        "1",
        "--augment_rates",
        "delete=0.05,swap=0.05,neighbour=0.1",
        "--transfer_file",
        str(tmp_path / "unlabelled.tsv"),
    ]
    (tmp_path / "unlabelled.tsv").write_text("w1 w2 w3\tw4 w5\nw6 w7\tw8\n\nw9 w10\tw11 w12 w13\n")
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((output / "all_results.json").read_text())
    assert set(results["teacher"]) >= {"eval_accuracy", "eval_f1"}
    assert set(results["student"]) >= {"eval_accuracy", "eval_f1"}
    assert results["sparsity"]["prunable_sparsity"] == pytest.approx(0.75, abs=2e-3)
    assert results["num_transfer_rows"] == 24 + 3  # the blank line is skipped
    state = json.loads((output / "trainer_state.json").read_text())
    assert any("loss_transfer" in entry for entry in state["log_history"])
    # The default (reference) preset: stage I, then frozen masks grafted at a constant rate (no ramp, stage II).
    assert set(results["spd_stage_seconds"]) == {"stage_1", "stage_3"}
    assert (output / "spd_config.json").is_file() and (output / "trainer_state.json").is_file()
    # No pickle anywhere in what the run writes, the fine-tuned teacher's directory included.
    assert not list(output.rglob("*.bin")) and (output / "teacher" / "training_args.json").is_file()
    assert (output / "train_results.json").is_file() and (output / "eval_results.json").is_file()
    assert (output / "README.md").is_file() and (output / "spd_training.png").is_file()
    assert "model-index" in (output / "README.md").read_text()
    # Label names survive into the saved student, so pipeline() answers with them and not LABEL_0 / LABEL_1.
    from transformers import pipeline

    import optimum_spd  # noqa: F401  (registers the spd_* model types)

    classifier = pipeline("text-classification", model=str(output), device="cpu")
    assert classifier("w1 w2 w3")[0]["label"] in {"not_equivalent", "equivalent"}


def run_with_given_teacher(tmp_path, task: str, num_labels: int = 2, batch_size: int = 8, max_steps: int = 8) -> dict:
    """The example with --teacher_model_name_or_path (a frozen tiny random teacher) on the task's tiny files in
    tmp_path/glue; returns its all_results.json."""
    tiny_tokenizer(str(tmp_path / "teacher")).save_pretrained(tmp_path / "teacher")
    tiny_model(seed=5, num_labels=num_labels).save_pretrained(tmp_path / "teacher")
    output = tmp_path / "run"
    command = [sys.executable, SCRIPT, "--task_name", task, "--data_dir", str(tmp_path / "glue"),
               "--teacher_model_name_or_path", str(tmp_path / "teacher"), "--output_dir", str(output),
               "--max_steps", str(max_steps), "--per_device_train_batch_size", str(batch_size),
               "--target_sparsity", "0.5", "--num_pruning_events", "2", "--report_to", "none",
               "--save_strategy", "no", "--use_cpu", "--disable_tqdm", "true"]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((output / "all_results.json").read_text())


def teacher_accuracy(tmp_path, task: str, split: str) -> float:
    """The frozen teacher's accuracy on a split, computed here by hand (a random model: any value, but exact)."""
    import torch
    from transformers import BertForSequenceClassification

    teacher = BertForSequenceClassification.from_pretrained(tmp_path / "teacher").eval()
    dev = load_glue(task, str(tmp_path / "glue"))[split]
    tokenizer = tiny_tokenizer(str(tmp_path / "tok"))
    encoded = tokenizer(list(dev["sentence1"]), list(dev["sentence2"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = teacher(**encoded).logits.argmax(-1)
    return float((predictions == torch.tensor(list(dev["label"]))).float().mean())


def test_example_script_refuses_bad_augmentation_rates_before_loading_anything(tmp_path):
    for rates, copies, message in [
        ("often", "1", "--augment_rates: augment rates 'often': give one number"),
        ("0.05", "0", "--augment_rates sets how --augment_copies perturbs rows"),
    ]:
        command = [sys.executable, SCRIPT, "--task_name", "mrpc", "--data_dir", str(tmp_path / "missing")]
        command += ["--output_dir", str(tmp_path / "out"), "--augment_copies", copies, "--augment_rates", rates]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert completed.returncode != 0 and message in completed.stderr, completed.stderr[-2000:]
        assert not (tmp_path / "out").exists()


def test_example_script_with_a_given_teacher(tmp_path):
    """With --teacher_model_name_or_path the teacher is not re-trained, but evaluated by SPDTrainer.evaluate_teacher."""
    write_tiny_mrpc(tmp_path / "glue")
    results = run_with_given_teacher(tmp_path, "mrpc")
    assert not (tmp_path / "run" / "teacher").exists()  # nothing was fine-tuned
    # The teacher's reported score is its real score on the 12 dev rows.
    assert results["teacher"]["eval_accuracy"] == pytest.approx(teacher_accuracy(tmp_path, "mrpc", "validation"))


def test_example_script_continues_from_the_last_checkpoint(tmp_path):
    """As run_glue.py: a second run in the same output_dir resumes from its last checkpoint instead of restarting."""
    write_tiny_mrpc(tmp_path / "glue")
    tiny_tokenizer(str(tmp_path / "teacher")).save_pretrained(tmp_path / "teacher")
    tiny_model(seed=5).save_pretrained(tmp_path / "teacher")
    output = tmp_path / "run"
    command = [sys.executable, SCRIPT, "--task_name", "mrpc", "--data_dir", str(tmp_path / "glue"),
               "--teacher_model_name_or_path", str(tmp_path / "teacher"), "--output_dir", str(output),
               "--per_device_train_batch_size", "8", "--target_sparsity", "0.5", "--report_to", "none",
               "--save_strategy", "steps", "--save_steps", "4", "--use_cpu", "--disable_tqdm", "true",
               "--num_pruning_events", "2"]  # fmt: skip
    first = subprocess.run([*command, "--max_steps", "4"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (output / "checkpoint-4").is_dir()
    second = subprocess.run([*command, "--max_steps", "8"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {output / 'checkpoint-4'}" in second.stderr
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 8


def test_example_script_reports_both_mnli_dev_sets(tmp_path):
    """MNLI: student and teacher scored on the matched and the mismatched dev set, as transformers' run_glue.py."""
    write_tiny_mnli(tmp_path / "glue")
    results = run_with_given_teacher(tmp_path, "mnli", num_labels=3, batch_size=6, max_steps=4)
    for model in ("teacher", "student"):
        assert {"eval_accuracy", "eval_mismatched_accuracy"} <= set(results[model]), results[model]
    # Each score is the frozen teacher's real accuracy on its own dev set (9 matched rows, 6 mismatched ones).
    assert results["teacher"]["eval_accuracy"] == pytest.approx(teacher_accuracy(tmp_path, "mnli", "validation"))
    mismatched = teacher_accuracy(tmp_path, "mnli", "validation_mismatched")
    assert results["teacher"]["eval_mismatched_accuracy"] == pytest.approx(mismatched)
    # The card compares student and teacher on the matched set (the run's main dev set).
    assert "mismatched" not in (tmp_path / "run" / "README.md").read_text()
