import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import tiny_model, tiny_tokenizer
from transformers import AutoModel, AutoModelForSequenceClassification, BertForSequenceClassification, pipeline

from optimum_spd import compress, decompress, prunable_parameters, sparsity_report
from optimum_spd.pruning import PruningMasks
from optimum_spd.serialization.encoding import decode, encode, encoded_sizes


def pruned_model(model_type="bert", sparsity=0.9, seed=0, **overrides):
    model = tiny_model(model_type, seed=seed, **overrides).eval()
    if sparsity:
        PruningMasks(prunable_parameters(model)).update(sparsity)
    return model


def logits(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(5, 100, (3, 11), generator=generator)
    mask = torch.ones_like(inputs)
    mask[0, 7:] = 0
    with torch.no_grad():
        return model.eval()(input_ids=inputs, attention_mask=mask).logits


def sparsity_block(path):
    return json.loads((path / "config.json").read_text())["sparsity_config"]


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.97])
def test_round_trip_is_exact(tmp_path, model_type, sparsity):
    model = pruned_model(model_type, sparsity)
    compress(model, tmp_path / "c")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "c")
    assert type(loaded).__name__.startswith("SPD")
    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert torch.equal(logits(loaded), logits(model))
    block = sparsity_block(tmp_path / "c")
    encodings = {entry["encoding"] for entry in block["tensors"].values()}
    expected = {0.0: {"dense"}, 0.5: {"bitmask"}, 0.9: {"bitmask"}, 0.97: {"csr"}}[sparsity]
    assert encodings == expected
    assert block["prunable_sparsity"] == pytest.approx(sparsity_report(model).prunable_sparsity)
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert (
        config["model_type"] == f"spd_{model_type}"
        and config["hidden_size" if model_type != "distilbert" else "dim"] == 32
    )
    if sparsity >= 0.5:
        dense_dir = tmp_path / "dense"
        model.save_pretrained(dense_dir)
        assert os.path.getsize(tmp_path / "c" / "model.safetensors") < os.path.getsize(dense_dir / "model.safetensors")


def test_encoding_choice_follows_size():
    # The bitmask costs 1/8 byte per element, CSR 2 bytes per non-zero: they cross at 6.25% density.
    sizes_90 = encoded_sizes(768, 768, 58_982, 4)
    sizes_95 = encoded_sizes(768, 768, 29_491, 4)
    assert sizes_90["bitmask"] < sizes_90["csr"] and sizes_95["csr"] < sizes_95["bitmask"]
    assert "csr" not in encoded_sizes(2, 70_000, 10, 4)  # uint16 column indices cannot address 70k columns
    weight = torch.zeros(4, 70_000)
    weight[0, 69_999] = 1.0
    encoded = encode("w", weight)
    assert encoded.encoding == "bitmask"
    assert torch.equal(decode("w", "bitmask", encoded.shape, encoded.nnz, encoded.tensors, torch.float32), weight)


def test_half_precision_storage(tmp_path):
    model = pruned_model(sparsity=0.9)
    compress(model, tmp_path / "fp32")
    compress(model, tmp_path / "fp16", storage_dtype="float16")
    assert os.path.getsize(tmp_path / "fp16" / "model.safetensors") < 0.7 * os.path.getsize(
        tmp_path / "fp32" / "model.safetensors"
    )
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "fp16")
    assert loaded.dtype == torch.float32  # restored to the model's dtype
    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(tensor, original[name].half().float()), name
    assert sparsity_report(loaded).prunable_sparsity == sparsity_report(model).prunable_sparsity
    assert torch.allclose(logits(loaded), logits(model), atol=1e-3)


def test_sharded_save_and_load(tmp_path):
    model = pruned_model(sparsity=0.9)
    compress(model, tmp_path / "s", max_shard_size=20_000)
    files = sorted(os.listdir(tmp_path / "s"))
    shards = [name for name in files if name.startswith("model-")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files and "model.safetensors" not in files
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    # The parts of one encoded tensor are never split across shards.
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert index["weight_map"][f"{name}.values"] == index["weight_map"][f"{name}.bitmask"]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert torch.equal(logits(loaded), logits(model))


def test_bare_model_pipeline_and_local_files_only(tmp_path):
    model = pruned_model(sparsity=0.8)
    compress(model, tmp_path / "c")
    tiny_tokenizer(str(tmp_path / "tok")).save_pretrained(tmp_path / "c")
    bare = AutoModel.from_pretrained(tmp_path / "c", local_files_only=True)
    assert type(bare).__name__ == "SPDBertModel"
    assert torch.equal(bare.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    classifier = pipeline("text-classification", model=str(tmp_path / "c"), device="cpu")
    result = classifier("w1 w2 w3")
    assert result[0]["label"] in {"LABEL_0", "LABEL_1"} and 0 <= result[0]["score"] <= 1


def test_loaded_model_saves_compressed_again_and_to_dense(tmp_path):
    model = pruned_model(sparsity=0.9)
    compress(model, tmp_path / "a")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a")
    loaded.save_pretrained(tmp_path / "b")
    assert sparsity_block(tmp_path / "b")["targets"] == sparsity_block(tmp_path / "a")["targets"]
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b")
    assert torch.equal(logits(again), logits(model))
    dense = loaded.to_dense()
    assert type(dense) is BertForSequenceClassification and dense.config.model_type == "bert"
    assert not hasattr(dense.config, "sparsity_config")
    assert torch.equal(logits(dense), logits(model))
    loaded.save_pretrained(tmp_path / "vanilla", compressed=False)
    assert json.loads((tmp_path / "vanilla" / "config.json").read_text())["model_type"] == "bert"
    with pytest.raises(ValueError, match="safetensors only"):
        loaded.save_pretrained(tmp_path / "pickle", safe_serialization=False)


def test_decompress_writes_a_vanilla_checkpoint(tmp_path):
    model = pruned_model(sparsity=0.9)
    compress(model, tmp_path / "c")
    tiny_tokenizer(str(tmp_path / "tok")).save_pretrained(tmp_path / "c")
    decompress(tmp_path / "c", tmp_path / "d")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["model_type"] == "bert" and "sparsity_config" not in config and "auto_map" not in config
    assert (tmp_path / "d" / "tokenizer_config.json").is_file()
    plain = BertForSequenceClassification.from_pretrained(tmp_path / "d")
    assert torch.equal(logits(plain), logits(model))
    # compress(dir) goes the other way, tokenizer included.
    compress(tmp_path / "d", tmp_path / "c2")
    assert (tmp_path / "c2" / "tokenizer_config.json").is_file()
    assert torch.equal(logits(AutoModelForSequenceClassification.from_pretrained(tmp_path / "c2")), logits(model))


def test_csr_inference_matches_dense(tmp_path):
    from optimum_spd import CSRLinear

    model = pruned_model(sparsity=0.9, hidden_size=64, intermediate_size=128)
    compress(model, tmp_path / "c")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "c").to_sparse_inference(min_sparsity=0.8)
    replaced = [m for m in loaded.modules() if isinstance(m, CSRLinear)]
    assert len(replaced) == 12
    assert replaced[0].weight_csr.col_indices().dtype == torch.int32  # half the index traffic of torch's int64
    assert torch.allclose(logits(loaded), logits(model), atol=1e-5)
    hidden = torch.randn(2, 5, 64)
    assert torch.allclose(
        replaced[0](hidden),
        torch.nn.functional.linear(
            hidden,
            model.bert.encoder.layer[0].attention.self.query.weight,
            model.bert.encoder.layer[0].attention.self.query.bias,
        ),
        atol=1e-5,
    )
    # A model with CSR linears still saves with the nn.Linear layout.
    loaded.save_pretrained(tmp_path / "again")
    assert torch.equal(logits(AutoModelForSequenceClassification.from_pretrained(tmp_path / "again")), logits(model))


def test_trainer_save_model_writes_compressed_checkpoint(spd_args, tmp_path):
    from helpers import tiny_dataset

    from optimum_spd import SPDTrainer

    model = tiny_model()
    trainer = SPDTrainer(
        model=model,
        args=spd_args(max_steps=8, target_sparsity=0.9, pruning_end=0.4, stage_1_end=0.5),
        train_dataset=tiny_dataset(),
        processing_class=tiny_tokenizer(str(tmp_path / "tok")),
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    files = set(os.listdir(tmp_path / "final"))
    assert {"config.json", "model.safetensors", "spd_config.json", "tokenizer_config.json", "modeling_spd.py"} <= files
    assert sparsity_block(tmp_path / "final")["prunable_sparsity"] == pytest.approx(0.9, abs=2e-3)
    # The student trained with eager attention (attention distillation needs its probabilities): compare like with like.
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final", attn_implementation="eager")
    assert torch.equal(logits(loaded), logits(model))


def run_python(code, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_without_the_package_loading_fails_loudly(tmp_path):
    compress(pruned_model(sparsity=0.9), tmp_path / "c")
    block_import = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'optimum_spd' or name.startswith('optimum_spd.'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, Block())\n"
        "from transformers import AutoModelForSequenceClassification as A\n"
    )
    plain = run_python(block_import + f"A.from_pretrained({str(tmp_path / 'c')!r})")
    # transformers refuses (it sees the auto_map) and points at trust_remote_code, which then names the package.
    assert plain.returncode != 0 and "trust_remote_code" in plain.stderr
    remote = run_python(
        block_import + f"A.from_pretrained({str(tmp_path / 'c')!r}, trust_remote_code=True)",
        {"HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert remote.returncode != 0 and "optimum_spd" in remote.stderr and "pip install" in remote.stderr


def test_trust_remote_code_with_the_package_installed(tmp_path):
    model = pruned_model(sparsity=0.9)
    compress(model, tmp_path / "c")
    result = run_python(
        "import torch\nfrom transformers import AutoModelForSequenceClassification as A\n"
        f"m = A.from_pretrained({str(tmp_path / 'c')!r}, trust_remote_code=True)\n"
        "print(type(m).__name__)",
        {"HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SPDBertForSequenceClassification" in result.stdout


def test_a_plain_transformers_class_cannot_load_random_values_into_pruned_matrices(tmp_path):
    from transformers import BertForSequenceClassification

    compress(pruned_model(sparsity=0.9), tmp_path / "c")
    # Without the placeholders (format 1) this loaded with a random matrix under every pruned name and only a
    # load-report line; now transformers stops on the size mismatch, whatever the verbosity.
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        BertForSequenceClassification.from_pretrained(tmp_path / "c")


def test_format_1_checkpoints_still_load(tmp_path):
    """Checkpoints written before the placeholders (format_version 1) load exactly as before."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    model = pruned_model(sparsity=0.9)
    compress(model, tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys() if handle.get_slice(key).get_shape() != [0]}
    save_file(tensors, str(weights), metadata=metadata)
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["sparsity_config"]["format_version"] = 1
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "c")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
