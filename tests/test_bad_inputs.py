"""Bad inputs to a training run: each is refused before work is lost, with a message naming what and how to fix."""

import os
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from helpers import tiny_dataset, tiny_model
from transformers import TrainerCallback

import optimum_spd.modeling.compressed as compressed_module
import optimum_spd.preflight as preflight
from optimum_spd import SPDTrainer
from optimum_spd.preflight import check_distributed_mode


def trainer_for(spd_args, dataset=None, model=None, **overrides):
    return SPDTrainer(
        model=model or tiny_model(),
        args=spd_args(**overrides),
        train_dataset=dataset if dataset is not None else tiny_dataset(),
    )


def test_model_without_trainable_targets(spd_args):
    model = tiny_model()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="none of the pruned weights is trainable"):
        trainer_for(spd_args, model=model)


def test_empty_dataset(spd_args):
    empty = tiny_dataset(4).select([])
    with pytest.raises(ValueError, match="train_dataset is empty"):
        trainer_for(spd_args, dataset=empty).train()


def test_one_row_dataset_is_too_short_for_the_schedule(spd_args):
    trainer = trainer_for(spd_args, dataset=tiny_dataset(1), max_steps=-1, num_train_epochs=3, num_pruning_events=11)
    with pytest.raises(ValueError, match=r"this run has 3 optimizer steps.*fewer than num_pruning_events=11"):
        trainer.train()


def test_labels_outside_num_labels(spd_args):
    rows = tiny_dataset(8).to_dict()
    rows["labels"][5] = 7
    with pytest.raises(ValueError, match=r"train_dataset\[5\]\['labels'\] = 7 is not a class id in \[0, 1\]"):
        trainer_for(spd_args, dataset=Dataset.from_dict(rows)).train()


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(spd_args, tmp_path):
    trainer = trainer_for(spd_args, max_steps=20, save_strategy="steps", save_steps=5)

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 7:
                with torch.no_grad():
                    trainer.model.bert.embeddings.word_embeddings.weight.fill_(float("nan"))

    trainer.add_callback(Poison())
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-5")
    with pytest.raises(
        FloatingPointError, match=r"SPD loss is nan at optimizer step 8 .* last saved checkpoint is intact"
    ):
        trainer.train()
    snapshot = {name: open(os.path.join(checkpoint, name), "rb").read() for name in sorted(os.listdir(checkpoint))}
    assert "spd_masks.safetensors" in snapshot and "model.safetensors" in snapshot
    assert not os.path.exists(os.path.join(trainer.args.output_dir, "checkpoint-10"))
    resumed = trainer_for(spd_args, max_steps=20, save_strategy="no")
    resumed.train(resume_from_checkpoint=checkpoint)  # the intact checkpoint resumes
    assert resumed.state.global_step == 20


def test_unwritable_output_dir_fails_before_training(spd_args, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"output_dir=.* is not writable"):
        trainer_for(spd_args, output_dir=str(blocker / "run"))


def test_disk_full_fails_before_training(spd_args, monkeypatch):
    monkeypatch.setattr(
        preflight.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1000)
    )
    with pytest.raises(OSError, match=r"has 0 MB free, but saving this run needs about"):
        trainer_for(spd_args, save_strategy="steps", save_steps=5)


def test_interrupted_final_save_keeps_the_previous_model(spd_args, tmp_path, monkeypatch):
    trainer = trainer_for(spd_args, max_steps=6)
    trainer.train()
    final = str(tmp_path / "final")
    trainer.save_model(final)
    before = {name: open(os.path.join(final, name), "rb").read() for name in sorted(os.listdir(final))}

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compressed_module, "write_weights", crash)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_model(final)
    assert {name: open(os.path.join(final, name), "rb").read() for name in sorted(os.listdir(final))} == before
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]  # no staging directory left behind


@pytest.mark.parametrize(
    "mode, message",
    [
        ({"fsdp": "full_shard", "deepspeed": None}, "does not support FSDP"),
        ({"fsdp": None, "deepspeed": "ds_config.json"}, "does not support DeepSpeed"),
    ],
)
def test_sharded_engines_are_refused_with_the_supported_alternative(mode, message):
    with pytest.raises(NotImplementedError, match=rf"{message}.*Use DDP"):
        check_distributed_mode(SimpleNamespace(**mode))


def test_missing_teacher_path(spd_args, tmp_path):
    with pytest.raises(OSError, match="missing-teacher"):
        SPDTrainer(
            model=tiny_model(),
            args=spd_args(),
            teacher_model=str(tmp_path / "missing-teacher"),
            train_dataset=tiny_dataset(),
        )


def test_nan_gradients_with_a_finite_loss_stop_before_the_step_and_name_the_field(spd_args, tmp_path):
    trainer = trainer_for(spd_args, temperature=1e-40, max_steps=6, save_strategy="steps", save_steps=1)
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"non-finite gradients at optimizer step \d+ .*temperature=1e-40"):
        trainer.train()
    assert all(bool(torch.isfinite(param).all()) for param in trainer.model.parameters())
    # Every checkpoint on disk holds finite weights: the step that would have broken them never ran.
    from safetensors.torch import load_file

    for entry in os.listdir(trainer.args.output_dir):
        if entry.startswith("checkpoint-"):
            weights = load_file(os.path.join(trainer.args.output_dir, entry, "model.safetensors"))
            assert all(bool(torch.isfinite(tensor).all()) for tensor in weights.values() if tensor.is_floating_point())
    assert before  # the model had parameters to compare


def test_a_model_with_nan_weights_is_never_saved(spd_args, tmp_path):
    trainer = trainer_for(spd_args, max_steps=4)
    trainer.train()
    with torch.no_grad():
        trainer.model.classifier.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="refusing to save: 1 parameter"):
        trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final").exists()


def test_resume_with_another_target_sparsity_is_refused(spd_args, tmp_path):
    output_dir = str(tmp_path / "run")
    trainer_for(spd_args, output_dir=output_dir, max_steps=4, save_strategy="steps", save_steps=2).train()
    resumed = trainer_for(spd_args, output_dir=output_dir, max_steps=4, target_sparsity=0.5)
    with pytest.raises(ValueError, match=r"recipe differs .*target_sparsity=0\.5 \(checkpoint: 0\.8\)"):
        resumed.train(resume_from_checkpoint=True)


def test_gold_label_term_without_labels_is_refused(spd_args):
    unlabelled = tiny_dataset().remove_columns("labels")
    with pytest.raises(ValueError, match=r"no 'labels' or 'label' column, but hard_label_weight=1.0 needs"):
        trainer_for(
            spd_args,
            dataset=unlabelled,
            hard_label_weight=1.0,
            hidden_distill_weight=0.0,
            attention_distill_weight=0.0,
            logit_distill_weight=0.0,
        ).train()
    # Regression: the reference's logit term is the gold MSE, so it needs labels too.
    regression = tiny_dataset(num_labels=1).remove_columns("labels")
    with pytest.raises(ValueError, match="regression_distill_target='gold'"):
        trainer_for(spd_args, dataset=regression, model=tiny_model(num_labels=1)).train()


def test_regression_with_string_labels_is_refused(spd_args):
    rows = tiny_dataset(8, num_labels=1).to_dict()
    rows["labels"] = [str(value) for value in rows["labels"]]
    with pytest.raises(ValueError, match=r"train_dataset\[0\]\['labels'\] = '.*' is not a number.*num_labels=1"):
        trainer_for(spd_args, dataset=Dataset.from_dict(rows), model=tiny_model(num_labels=1)).train()


@pytest.mark.parametrize("repo_id", ["user/..", "..", "a/b/c", "user/x--y"])
def test_invalid_repo_ids_are_refused_before_any_path_is_built(repo_id, tmp_path, monkeypatch):
    from optimum_spd.modeling.conversion import compress

    model_dir = tmp_path / "sparse"
    compress(tiny_model(), model_dir)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    with pytest.raises(ValueError, match="not a valid Hub repo id"):
        model.push_to_hub(repo_id)
    assert os.listdir(temporary) == [] and sorted(os.listdir(tmp_path)) == ["sparse", "tmp"]


def test_cli_atol_must_be_a_finite_non_negative_number(capsys):
    from optimum.commands.register.register_spd import main as cli_main

    for bad in ("nan", "-1", "inf", "x"):
        with pytest.raises(SystemExit):
            cli_main(["verify", "some/dir", "--atol", bad])
        assert "--atol" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["info"], ["verify"], ["decompress", "OUT"], ["card"]])
def test_cli_missing_local_path_says_no_such_directory(command, capsys, tmp_path):
    from optimum.commands.register.register_spd import main as cli_main

    missing = str(tmp_path / "no" / "such")
    argv = [command[0], missing, *command[1:]]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert "no such" in error.lower() and missing in error


def test_teacher_with_another_head_or_dtype_or_head_count_is_refused(spd_args):
    from helpers import tiny_config
    from transformers import AutoModelForTokenClassification, BertModel

    token_teacher = AutoModelForTokenClassification.from_config(tiny_config())
    with pytest.raises(ValueError, match=r"differ in model class \(task head\) .*BertForTokenClassification"):
        SPDTrainer(model=tiny_model(), args=spd_args(), teacher_model=token_teacher, train_dataset=tiny_dataset())
    with pytest.raises(ValueError, match=r"model class \(task head\).*BertModel"):
        SPDTrainer(
            model=tiny_model(), args=spd_args(), teacher_model=BertModel(tiny_config()), train_dataset=tiny_dataset()
        )
    with pytest.raises(ValueError, match=r"num_attention_heads \(student 4, teacher 2\)"):
        SPDTrainer(
            model=tiny_model(),
            args=spd_args(),
            teacher_model=tiny_model(num_attention_heads=2),
            train_dataset=tiny_dataset(),
        )
    with pytest.raises(ValueError, match=r"dtype of the weights \(student torch.float32, teacher torch.float16\)"):
        SPDTrainer(
            model=tiny_model(), args=spd_args(), teacher_model=tiny_model().half(), train_dataset=tiny_dataset()
        )


def test_teacher_path_that_does_not_exist(spd_args, tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher_model_name_or_path=.*no such directory"):
        SPDTrainer(
            model=tiny_model(),
            args=spd_args(teacher_model_name_or_path=str(tmp_path / "nope")),
            train_dataset=tiny_dataset(),
        )


@pytest.mark.parametrize("split", ["train_dataset", "eval_dataset"])
def test_token_ids_outside_the_vocabulary_are_refused_before_training(spd_args, split):
    rows = tiny_dataset(8).to_dict()
    rows["input_ids"][3][1] = 5000
    bad = Dataset.from_dict(rows)
    datasets = {"train_dataset": tiny_dataset(), "eval_dataset": tiny_dataset(8, seed=1), split: bad}
    trainer = SPDTrainer(model=tiny_model(), args=spd_args(), **datasets)
    with pytest.raises(
        ValueError, match=rf"{split}\[3\]\['input_ids'\] holds token id 5000, outside the model's vocabulary"
    ):
        trainer.train()


def test_resume_from_a_missing_or_truncated_checkpoint(spd_args, tmp_path):
    output_dir = str(tmp_path / "run")
    trainer_for(spd_args, output_dir=output_dir, max_steps=4, save_strategy="steps", save_steps=2).train()
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        trainer_for(spd_args, output_dir=output_dir, max_steps=4).train(resume_from_checkpoint=str(tmp_path / "nope"))
    masks = os.path.join(output_dir, "checkpoint-2", "spd_masks.safetensors")
    with open(masks, "r+b") as handle:
        handle.truncate(40)
    with pytest.raises(ValueError, match="spd_masks.safetensors cannot be read .* truncated or damaged"):
        trainer_for(spd_args, output_dir=output_dir, max_steps=4).train(
            resume_from_checkpoint=os.path.join(output_dir, "checkpoint-2")
        )


def test_multi_label_and_token_labels_are_accepted_and_checked(spd_args):
    from optimum_spd.preflight import check_train_dataset

    multi = Dataset.from_dict({"input_ids": [[2, 5, 3]] * 2, "labels": [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]})
    check_train_dataset(multi, 3, problem_type="multi_label_classification")  # accepted: one target per label
    with pytest.raises(ValueError, match="not a list of 3 floats"):
        check_train_dataset(
            Dataset.from_dict({"input_ids": [[2, 3]], "labels": [[1.0, 0.0]]}),
            3,
            problem_type="multi_label_classification",
        )
    tokens = Dataset.from_dict({"input_ids": [[2, 5, 3]], "labels": [[-100, 1, -100]]})
    check_train_dataset(tokens, 2)  # accepted: -100 marks ignored positions
    with pytest.raises(ValueError, match=r"holds 4, not a class id in \[0, 1\] or -100"):
        check_train_dataset(Dataset.from_dict({"input_ids": [[2, 5, 3]], "labels": [[-100, 4, -100]]}), 2)


def test_read_only_output_is_a_clear_error(tmp_path, monkeypatch):
    import tempfile

    from optimum_spd import compress

    def refuse(*args, **kwargs):  # what mkdtemp raises in a read-only directory (root ignores chmod, so inject it)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(ValueError, match=r"cannot write the checkpoint .*Permission denied.*writable directory"):
        compress(tiny_model(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_push_to_hub_true_with_the_hub_unreachable_is_a_clear_error(spd_args, monkeypatch):
    import huggingface_hub.constants
    import huggingface_hub.hf_api
    import transformers.utils.hub

    from optimum_spd.hub import HubPushError

    unreachable = "http://127.0.0.1:9"  # the discard port: connection refused
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", unreachable)
    # An HfApi keeps the endpoint it read when built, and the libraries share theirs across tests (huggingface_hub's
    # default client; transformers >= 5.x caches its own on first use): point those at the unreachable Hub too.
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", unreachable)
    shared_by_transformers = getattr(transformers.utils.hub, "_hf_api", None)
    if shared_by_transformers is not None:
        monkeypatch.setattr(shared_by_transformers, "endpoint", unreachable)
    with pytest.raises(
        HubPushError,
        match=r"push_to_hub=True: the Hub repo .* could not be created or reached .*"
        r"Nothing was trained yet",
    ):
        trainer_for(spd_args, push_to_hub=True, hub_model_id="tester/unreachable")


def test_second_hostile_pass_cases(spd_args, tmp_path, capsys):
    """Inputs found by a hostile pass after issue 13's list: each now fails early, naming the field and the fix."""
    with pytest.raises(ValueError, match=r"learning_rate=nan is invalid: it must be a finite number"):
        spd_args(learning_rate=float("nan"))
    with pytest.raises(ValueError, match=r"per_device_train_batch_size=0 is invalid: it must be an integer >= 1"):
        spd_args(per_device_train_batch_size=0)
    with pytest.raises(ValueError, match="weights on the meta device"):
        trainer_for(spd_args, model=tiny_model().to("meta"))
    text_only = Dataset.from_dict({"text": ["w1 w2"] * 16, "labels": [0] * 16})
    with pytest.raises(ValueError, match="no 'input_ids' column .* not tokenised"):
        trainer_for(spd_args, dataset=text_only).train()
    from optimum.commands.register.register_spd import main as cli_main

    a_file = tmp_path / "weights.bin"
    a_file.write_text("x")
    assert cli_main(["info", str(a_file)]) == 2
    assert "is a file; give the checkpoint directory" in capsys.readouterr().err


def test_unsupported_heads_and_architectures_are_named(spd_args):
    from helpers import tiny_config
    from transformers import AutoModelForMaskedLM, GPT2Config, GPT2ForSequenceClassification

    from optimum_spd import UnsupportedArchitectureError

    masked_lm = AutoModelForMaskedLM.from_config(tiny_config())
    with pytest.raises(ValueError, match=r"does not train BertForMaskedLM: .*ForQuestionAnswering"):
        trainer_for(spd_args, model=masked_lm)
    gpt2 = GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=100,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    with pytest.raises(UnsupportedArchitectureError, match=r"model_type='gpt2' .* hold no nn.Linear to prune"):
        trainer_for(spd_args, model=gpt2)
