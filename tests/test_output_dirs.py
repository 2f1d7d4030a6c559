"""Saves never destroy what they did not write: output directories, inputs, links, permissions, atomic swaps."""

import os
import stat

import pytest
from helpers import tiny_model

from optimum.commands.register.register_spd import main as cli_main
from optimum_spd import compress, decompress
from optimum_spd.architectures import prunable_parameters
from optimum_spd.pruning import PruningMasks
from optimum_spd.serialization.checkpoint import OutputDirectoryError, _exchange, atomic_directory


def pruned_dense_checkpoint(path, seed=0):
    model = tiny_model(seed=seed)
    masks = PruningMasks(prunable_parameters(model))
    masks.update(0.8)
    masks.apply_to_weights()
    model.save_pretrained(path)
    return model


def test_compress_into_a_directory_of_user_files_is_refused_and_deletes_nothing(tmp_path, monkeypatch, capsys):
    source = tmp_path / "dense"
    pruned_dense_checkpoint(source)
    work = tmp_path / "work"
    work.mkdir()
    user_files = {"config.json.bak": "mine", "model-notes.txt": "mine too", "data.csv": "a,b"}
    for name, text in user_files.items():
        (work / name).write_text(text)
    monkeypatch.chdir(work)
    assert cli_main(["compress", str(source), "."]) == 2
    assert "not empty and is not a model checkpoint" in capsys.readouterr().err
    assert {name: (work / name).read_text() for name in user_files} == user_files
    assert sorted(os.listdir(work)) == sorted(user_files)
    # With --overwrite the checkpoint is written and every user file survives (none has a checkpoint file's name).
    assert cli_main(["compress", str(source), ".", "--overwrite"]) == 0
    assert {name: (work / name).read_text() for name in user_files} == user_files
    assert (work / "config.json").is_file()


@pytest.mark.parametrize("operation", ["compress", "decompress"])
def test_the_input_is_never_the_output(tmp_path, operation):
    dense = tmp_path / "dense"
    pruned_dense_checkpoint(dense)
    source = dense
    if operation == "decompress":
        source = tmp_path / "sparse"
        compress(dense, source)
    before = {name: (source / name).read_bytes() for name in os.listdir(source)}
    function = compress if operation == "compress" else decompress
    with pytest.raises(OutputDirectoryError, match="is the input"):
        function(source, source)
    with pytest.raises(OutputDirectoryError, match="is the input"):
        function(source, tmp_path)  # an output that contains the input would move it away too
    assert {name: (source / name).read_bytes() for name in os.listdir(source)} == before


def test_a_new_save_drops_the_previous_models_files_and_keeps_the_rest(tmp_path):
    out = tmp_path / "out"
    first = tmp_path / "first"
    pruned_dense_checkpoint(first)
    (first / "vocab.txt").write_text("[PAD]\nold\n")
    compress(first, out)  # copies the tokenizer file along
    (out / "README.md").write_text("card of the first model")
    (out / "all_results.json").write_text("{}")
    (out / "checkpoint-10").mkdir()
    model = pruned_dense_checkpoint(tmp_path / "second", seed=1)
    compress(model, out)  # an in-memory model: no tokenizer, no card
    assert not (out / "vocab.txt").exists() and not (out / "README.md").exists()
    assert (out / "all_results.json").read_text() == "{}" and (out / "checkpoint-10").is_dir()


def test_a_symlinked_output_stays_a_link_and_keeps_its_mode(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    os.chmod(target, 0o755)
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    (target / "notes.txt").write_text("kept")
    source = tmp_path / "dense"
    pruned_dense_checkpoint(source)
    compress(source, link, overwrite=True)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target / "config.json").is_file() and (target / "notes.txt").read_text() == "kept"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    fresh = tmp_path / "fresh"
    compress(source, fresh)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_the_swap_is_atomic_and_a_failed_save_changes_nothing(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "config.json").write_text('{"model_type": "bert", "which": "a"}')
    (second / "config.json").write_text('{"model_type": "bert", "which": "b"}')
    assert _exchange(str(first), str(second))  # Linux: renameat2(RENAME_EXCHANGE), no moment without a checkpoint
    assert '"a"' in (second / "config.json").read_text() and '"b"' in (first / "config.json").read_text()
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(str(first)) as staging:
            open(os.path.join(staging, "config.json"), "w").write("{}")
            raise RuntimeError("boom")
    assert '"b"' in (first / "config.json").read_text()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # no staging directory left behind
