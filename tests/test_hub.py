"""push_to_hub end to end against the local Hub server, through the real huggingface_hub client."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from helpers import tiny_dataset, tiny_model, tiny_tokenizer
from huggingface_hub import ModelCard
from test_serialization import logits, pruned_model
from transformers import AutoModelForSequenceClassification

from optimum.commands.register.register_spd import main as cli
from optimum_spd import SPDTrainer, compress
from optimum_spd.hub import HubPushError
from optimum_spd.hub.card import _stage_timeline


def accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}


@pytest.fixture
def trained(spd_args, tmp_path):
    model = tiny_model()
    trainer = SPDTrainer(
        model=model,
        args=spd_args(
            max_steps=12,
            target_sparsity=0.9,
            eval_strategy="steps",
            eval_steps=4,
            hub_model_id="tester/tiny-spd",
            logging_steps=2,
        ),
        train_dataset=tiny_dataset(),
        eval_dataset=tiny_dataset(16, seed=1),
        processing_class=tiny_tokenizer(str(tmp_path / "tok")),
        compute_metrics=accuracy,
    )
    trainer.train()
    trainer.evaluate_teacher()
    return trainer


def test_trainer_push_to_hub_end_to_end(trained, hub, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    local_before = sorted(os.listdir(trained.args.output_dir)) if os.path.isdir(trained.args.output_dir) else []
    url = trained.push_to_hub(dataset="glue", dataset_args="mrpc", dataset_tags="nyu-mll/glue", license="apache-2.0")
    assert "tester/tiny-spd" in url
    repo = hub.repos["tester/tiny-spd"]
    assert len(repo.commits) == 2  # the repository's creation, then everything in one commit
    files = hub.files("tester/tiny-spd")
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "spd_config.json",
        "trainer_state.json",
        "README.md",
        "spd_training.png",
        "spd_run.json",
        "configuration_spd.py",
        "modeling_spd.py",
    } <= set(files)
    assert files["spd_training.png"].startswith(b"\x89PNG")
    # The local output directory was not touched by the push.
    assert (
        sorted(os.listdir(trained.args.output_dir)) if os.path.isdir(trained.args.output_dir) else []
    ) == local_before

    # A fresh cache downloads exactly the trained weights.
    loaded = AutoModelForSequenceClassification.from_pretrained(
        "tester/tiny-spd", cache_dir=str(tmp_path / "fresh"), attn_implementation="eager"
    )
    assert torch.equal(logits(loaded), logits(trained.model))
    # The uploaded weights are smaller than the same model saved dense.
    trained.model.save_pretrained(tmp_path / "dense")
    assert len(files["model.safetensors"]) < os.path.getsize(tmp_path / "dense" / "model.safetensors")

    card = ModelCard.load("tester/tiny-spd")
    assert card.data.library_name == "optimum-spd" and card.data.license == "apache-2.0"
    assert {"sparse", "pruning", "distillation", "spd"} <= set(card.data.tags)
    last_eval = [e for e in trained.state.log_history if "eval_accuracy" in e][-1]["eval_accuracy"]
    results = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("accuracy", "accuracy (sparse student)")] == pytest.approx(last_eval)
    assert results[("accuracy", "accuracy (dense teacher)")] == pytest.approx(trained.teacher_metrics["eval_accuracy"])
    assert all(r.dataset_name == "glue" and r.dataset_config == "mrpc" for r in card.data.eval_results)
    # The card is true of the uploaded files: sizes and per-layer counts come from them.
    config = json.loads(files["config.json"])
    block = config["sparsity_config"]
    assert f"{len(files['model.safetensors']) / 1e6:.1f} MB on disk" in card.text
    assert (
        f"| **whole model** | {block['dense_parameter_count']:,} | {block['nonzero_parameter_count']:,} |" in card.text
    )
    assert "## Stage timeline" in card.text and "spd_training.png" in card.text
    assert 'from_pretrained("tester/tiny-spd")' in card.text

    # The token is nowhere: not in any uploaded file, log record or printed output.
    secret = hub.token.encode()
    assert secret not in hub.all_uploaded_bytes()
    assert hub.token not in caplog.text and hub.token not in "".join(capsys.readouterr())


@pytest.mark.parametrize("failure", [500, 503, "drop"])
def test_failed_push_is_clear_and_retry_completes(trained, hub, failure):
    hub.fail_next.extend([("commit", failure)] * 10)  # more than any client-side retry absorbs
    with pytest.raises(HubPushError, match=r"to the Hub repo tester/tiny-spd failed .* run the same push again"):
        trained.push_to_hub()
    hub.fail_next.clear()
    hub.unexpected.clear()
    trained.push_to_hub()
    assert "model.safetensors" in hub.files("tester/tiny-spd")


def test_model_push_revision_and_cli_push(hub, tmp_path, capsys):
    first = pruned_model(sparsity=0.9, seed=0)
    compress(first, tmp_path / "first")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "first")
    loaded.push_to_hub("tester/model-push", license="mit")
    first_commit = hub.repos["tester/model-push"].head["oid"]
    assert ModelCard.load("tester/model-push").data.license == "mit"

    second = pruned_model(sparsity=0.8, seed=1)
    compress(second, tmp_path / "second")
    tiny_tokenizer(str(tmp_path / "second"))
    before = sorted(os.listdir(tmp_path / "second"))
    assert cli(["push", str(tmp_path / "second"), "tester/model-push"]) == 0
    assert sorted(os.listdir(tmp_path / "second")) == before  # the CLI pushes a staged copy
    assert "README.md" in hub.files("tester/model-push")
    latest = AutoModelForSequenceClassification.from_pretrained("tester/model-push", cache_dir=str(tmp_path / "c1"))
    pinned = AutoModelForSequenceClassification.from_pretrained(
        "tester/model-push", revision=first_commit, cache_dir=str(tmp_path / "c2")
    )
    assert torch.equal(logits(latest), logits(second)) and torch.equal(logits(pinned), logits(first))
    assert cli(["info", "tester/model-push", "--revision", first_commit]) == 0
    assert "prunable_sparsity=0.9004" in capsys.readouterr().out


def test_a_hub_that_never_answers_times_out_with_a_clear_error(tmp_path, monkeypatch):
    """A server on 127.0.0.1 that accepts connections and never replies: the push must end, and say why."""
    import socket
    import threading
    import time

    import huggingface_hub.constants
    from huggingface_hub.utils import _http

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held, stop = [], threading.Event()

    def accept_and_stay_silent():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    model_dir = tmp_path / "sparse"
    compress(pruned_model(), model_dir)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("OPTIMUM_SPD_HUB_TIMEOUT", "1")
    _http.set_client_factory(_http.default_client_factory)  # as a fresh process has it: no time-out at all
    try:
        started = time.monotonic()
        with pytest.raises(HubPushError, match=r"did not answer within 1 s.*OPTIMUM_SPD_HUB_TIMEOUT"):
            AutoModelForSequenceClassification.from_pretrained(model_dir).push_to_hub("tester/never-answers")
        assert time.monotonic() - started < 120
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()
        _http.set_client_factory(_http.default_client_factory)


def test_the_card_template_links_to_no_other_projects_repository():
    template = os.path.join(os.path.dirname(__file__), "..", "model_cards", "spd_model_card.md.j2")
    assert "github.com" not in open(template, encoding="utf-8").read()


def test_plot_scales_the_learning_rate_by_the_configured_peak_and_labels_only_what_it_draws(tmp_path, recwarn):
    import matplotlib.pyplot as plt

    from optimum_spd.hub.plot import plot_training_curves

    history = [  # a short run: logged rates below the peak (decay began), no distillation terms, no evaluation
        {
            "step": step,
            "loss": 1.0,
            "loss_hard_label": 1.0,
            "prunable_sparsity": 0.1 * step,
            "replacing_rate": 1.0,
            "learning_rate": 1e-4 * (1 - step / 10),
            "spd_stage": 1,
        }
        for step in (1, 2, 3)
    ]
    drawn = {}
    original = plt.Axes.plot

    def record(axis, *args, **kwargs):
        drawn[kwargs.get("label")] = args[1]
        return original(axis, *args, **kwargs)

    plt.Axes.plot = record
    try:
        plot_training_curves(history, str(tmp_path / "plot.png"), peak_learning_rate=1e-4)
    finally:
        plt.Axes.plot = original
    assert max(drawn["learning rate / 1.0e-04"]) == pytest.approx(0.9)  # not rescaled to 1 by its own max
    assert not [w for w in recwarn if "No artists with labels" in str(w.message)]
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")


def test_card_timeline_says_whether_stage_three_still_grafts():
    """The paper preset ends on the pure student; the reference preset keeps grafting at p = 0.8 after stage I."""

    def logs(rates_by_stage):
        return [
            {"step": step, "spd_stage": stage, "replacing_rate": rate}
            for step, (stage, rate) in enumerate(rates_by_stage, start=1)
        ]

    paper = _stage_timeline(logs([(1, 0.3), (1, 0.3), (2, 0.65), (3, 1.0), (3, 1.0)]), None)
    assert [row["stage"] for row in paper] == [
        "I: prune while grafting",
        "II: grafting rate ramps to 1",
        "III: pure sparse student",
    ]
    assert (paper[2]["first_step"], paper[2]["last_step"]) == (4, 5)
    reference = _stage_timeline(logs([(1, 0.8), (1, 0.8), (3, 0.8), (3, 0.8)]), {"stage_3": 12.5})
    assert [row["stage"] for row in reference] == ["I: prune while grafting", "III: masks frozen, grafting at p = 0.8"]
    assert reference[1]["seconds"] == 12.5
