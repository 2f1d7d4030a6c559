"""Bad inputs to a training run: each is refused before work is lost, with a message naming what and how to fix."""

import os
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

import optimum_spd.modeling.compressed as compressed_module
import optimum_spd.preflight as preflight
from optimum_spd import SPDTrainer
from optimum_spd.preflight import check_distributed_mode
from helpers import tiny_dataset, tiny_model


def trainer_for(spd_args, dataset=None, model=None, **overrides):
    return SPDTrainer(model=model or tiny_model(), args=spd_args(**overrides),
                      train_dataset=dataset if dataset is not None else tiny_dataset())


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
    with pytest.raises(FloatingPointError, match=r"SPD loss is nan at optimizer step 8 .* last saved checkpoint is intact"):
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
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1000))
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
    [({"fsdp": "full_shard", "deepspeed": None}, "does not support FSDP"),
     ({"fsdp": None, "deepspeed": "ds_config.json"}, "does not support DeepSpeed")],
)
def test_sharded_engines_are_refused_with_the_supported_alternative(mode, message):
    with pytest.raises(NotImplementedError, match=rf"{message}.*Use DDP"):
        check_distributed_mode(SimpleNamespace(**mode))


def test_missing_teacher_path(spd_args, tmp_path):
    with pytest.raises(OSError, match="missing-teacher"):
        SPDTrainer(model=tiny_model(), args=spd_args(), teacher_model=str(tmp_path / "missing-teacher"),
                   train_dataset=tiny_dataset())
