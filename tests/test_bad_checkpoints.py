"""Malformed, forged or interrupted checkpoints: each is refused with an error naming the file and tensor."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_serialization import logits, pruned_model
from transformers import AutoModelForSequenceClassification

import optimum_spd.modeling.compressed as compressed_module
from optimum_spd import compress, decompress
from optimum_spd.serialization import CompressedCheckpointError, CompressedTensorError, SparsityConfigError

QUERY = "bert.encoder.layer.0.attention.self.query.weight"


@pytest.fixture
def checkpoint(tmp_path):
    compress(pruned_model(sparsity=0.9), tmp_path / "c")
    return tmp_path / "c"


def rewrite_weights(path, change):
    weights = path / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    change(tensors)
    save_file(tensors, str(weights), metadata=metadata)


def rewrite_config(path, change):
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


def load(path):
    return AutoModelForSequenceClassification.from_pretrained(path)


def test_truncated_weights_file(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: os.path.getsize(weights) // 2])
    with pytest.raises(CompressedCheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load(checkpoint)


def consistent_summary(config):
    """Recompute prunable_sparsity from the per-tensor entries, so only the edited entry itself is wrong."""
    tensors = config["sparsity_config"]["tensors"].values()
    numel = sum(entry["shape"][0] * entry["shape"][1] for entry in tensors)
    config["sparsity_config"]["prunable_sparsity"] = 1 - sum(entry["nnz"] for entry in tensors) / numel


def test_wrong_shape_in_metadata(checkpoint):
    def edit(config):
        config["sparsity_config"]["tensors"][QUERY].update(shape=[32, 40])
        consistent_summary(config)

    rewrite_config(checkpoint, edit)
    with pytest.raises(
        CompressedTensorError, match=rf"model\.safetensors: tensor '{QUERY}' \(bitmask\): bitmask has .* shape"
    ):
        load(checkpoint)


def test_bitmask_popcount_differs_from_values(checkpoint):
    def flip_bit(tensors):
        bitmask = tensors[f"{QUERY}.bitmask"]
        bitmask[0, 0] ^= 1

    rewrite_weights(checkpoint, flip_bit)
    with pytest.raises(
        CompressedTensorError, match=rf"tensor '{QUERY}' \(bitmask\): bitmask has \d+ set bits but \d+ values"
    ):
        load(checkpoint)


def test_values_count_differs_from_recorded_nnz(checkpoint):
    rewrite_weights(checkpoint, lambda t: t.update({f"{QUERY}.values": t[f"{QUERY}.values"][:-1].clone()}))
    with pytest.raises(CompressedTensorError, match=rf"tensor '{QUERY}'.*values stored but the config records nnz"):
        load(checkpoint)


def test_corrupt_csr_indices(tmp_path):
    compress(pruned_model(sparsity=0.97), tmp_path / "c")
    rewrite_weights(tmp_path / "c", lambda t: t[f"{QUERY}.col_indices"].fill_(40))
    with pytest.raises(CompressedTensorError, match=rf"tensor '{QUERY}' \(csr\): a column index is 40, beyond the 32"):
        load(tmp_path / "c")


def test_missing_encoded_part(checkpoint):
    rewrite_weights(checkpoint, lambda t: t.pop(f"{QUERY}.row_offsets"))
    with pytest.raises(CompressedCheckpointError, match=rf"tensor '{QUERY}' \(bitmask\) is missing"):
        load(checkpoint)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("format", "compressed-tensors", "sparsity_config.format is 'compressed-tensors'"),
        ("format_version", 3, "sparsity_config.format_version is 3"),
        ("base_model_type", "../../evil", "sparsity_config.base_model_type is '../../evil'"),
        ("structure", "2:4", "sparsity_config.structure is '2:4'"),
        ("storage_dtype", "float8_e4m3", "sparsity_config.storage_dtype is 'float8_e4m3'"),
        ("dtype", "object", "sparsity_config.dtype is 'object'"),
        ("prunable_sparsity", 90.0, "prunable_sparsity is 90.0; it must be a fraction"),
        ("checkpoint_id", "x; rm -rf /", "checkpoint_id is 'x; rm -rf /'"),
        ("loader", "os.system", "sparsity_config.loader is not a known field"),
    ],
)
def test_forged_or_unknown_config_strings(checkpoint, field, value, message):
    rewrite_config(checkpoint, lambda c: c["sparsity_config"].update({field: value}))
    with pytest.raises(SparsityConfigError, match=rf"config\.json: .*{message.replace('(', '.').replace(')', '.')}"):
        load(checkpoint)


@pytest.mark.parametrize(
    "forge, message",
    [
        (lambda t: t[QUERY].update(encoding="pickle"), "encoding is 'pickle'"),
        (lambda t: t.update({"../etc/passwd": t.pop(QUERY)}), "invalid tensor name '../etc/passwd'"),
        (lambda t: t[QUERY].update(nnz=10**9), "nnz is 1000000000, more than"),
        (lambda t: t[QUERY].update(extra="x"), "must hold exactly encoding, shape and nnz"),
    ],
)
def test_forged_tensor_entries(checkpoint, forge, message):
    rewrite_config(checkpoint, lambda c: forge(c["sparsity_config"]["tensors"]))
    with pytest.raises(SparsityConfigError, match=message.replace("(", ".")):
        load(checkpoint)


def test_files_from_two_saves_are_not_mixed(tmp_path):
    compress(pruned_model(sparsity=0.9, seed=0), tmp_path / "a")
    compress(pruned_model(sparsity=0.9, seed=1), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(CompressedCheckpointError, match="files of two different saves are mixed"):
        load(tmp_path / "a")


def test_dense_checkpoint_passed_to_decompress_writes_nothing(tmp_path):
    pruned_model(sparsity=0.9).save_pretrained(tmp_path / "dense")
    with pytest.raises(SparsityConfigError, match=r"model_type 'bert' is a plain dense checkpoint"):
        decompress(tmp_path / "dense", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_checkpoint_passed_to_decompress_writes_nothing(checkpoint, tmp_path):
    rewrite_weights(checkpoint, lambda t: t[f"{QUERY}.bitmask"].__setitem__((0, 0), 255))
    with pytest.raises(CompressedTensorError, match=QUERY):
        decompress(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    good = pruned_model(sparsity=0.9, seed=0)
    compress(good, tmp_path / "c")
    (tmp_path / "c" / "notes.txt").write_text("kept")
    before = {name: (tmp_path / "c" / name).read_bytes() for name in os.listdir(tmp_path / "c")}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(compressed_module, "write_shims", crash)  # after the weights are written, before config.json
    with pytest.raises(KeyboardInterrupt):
        compress(pruned_model(sparsity=0.5, seed=1), tmp_path / "c")
    assert {name: (tmp_path / "c" / name).read_bytes() for name in os.listdir(tmp_path / "c")} == before
    assert sorted(os.listdir(tmp_path)) == ["c"]  # no staging directory left behind
    monkeypatch.undo()
    assert torch.equal(logits(load(tmp_path / "c")), logits(good))
    # A completed save replaces the model files and keeps what it does not own.
    compress(pruned_model(sparsity=0.5, seed=1), tmp_path / "c")
    assert (tmp_path / "c" / "notes.txt").read_text() == "kept" and sorted(os.listdir(tmp_path)) == ["c"]


def test_refuses_to_save_below_promised_sparsity(tmp_path):
    from optimum_spd.modeling import save_compressed

    with pytest.raises(ValueError, match="below the promised 0.900000"):
        save_compressed(pruned_model(sparsity=0.5), tmp_path / "c", min_prunable_sparsity=0.9)
    assert not (tmp_path / "c").exists()


def test_recorded_sparsity_that_the_tensors_contradict_is_refused(checkpoint):
    # What `info` and the model card show must be measured, not trusted: a hand-raised headline number fails.
    rewrite_config(checkpoint, lambda c: c["sparsity_config"].update(prunable_sparsity=0.99))
    with pytest.raises(ValueError, match=r"prunable_sparsity is 0\.99, but the per-tensor nnz counts give"):
        load(checkpoint)


def test_nan_weights_are_refused_on_load(checkpoint):
    def poison(tensors):
        name = next(key for key, value in tensors.items() if value.is_floating_point() and "bias" in key)
        tensors[name][0] = float("nan")

    rewrite_weights(checkpoint, poison)
    with pytest.raises(ValueError, match="NaN or inf"):
        load(checkpoint)


def test_edited_num_hidden_layers_does_not_silently_drop_a_layer(checkpoint):
    rewrite_config(checkpoint, lambda c: c.update(num_hidden_layers=1))
    with pytest.raises(CompressedCheckpointError, match=r"has no place for .*num_hidden_layers was edited"):
        load(checkpoint)


def test_recorded_dtype_that_the_stored_values_contradict(checkpoint):
    # Values stored in float32, config.json claiming float16: loading as recorded would silently round every weight.
    rewrite_config(checkpoint, lambda c: c["sparsity_config"].update(dtype="float16"))
    with pytest.raises(
        CompressedCheckpointError, match=r"are not in the torch.float16 that config.json's sparsity_config"
    ):
        load(checkpoint)


def test_compress_of_a_dense_checkpoint_missing_its_classifier(tmp_path):
    dense = tmp_path / "dense"
    pruned_model(sparsity=0.8).save_pretrained(dense)
    from safetensors.torch import load_file

    weights = load_file(str(dense / "model.safetensors"))
    del weights["classifier.weight"]
    save_file(weights, str(dense / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"has no \['classifier.weight'\] .* random values"):
        compress(dense, tmp_path / "out")
    assert not (tmp_path / "out").exists()
