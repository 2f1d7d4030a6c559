"""LoRA on sparse models (merge_sparse keeps the mask) and LoRA-fine-tuned teachers (merged densely)."""

import copy
import json

import pytest
import torch
from helpers import tiny_dataset, tiny_model
from huggingface_hub import ModelCard
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from test_serialization import logits, pruned_model
from transformers import AutoModelForSequenceClassification

from optimum_spd import (
    AdapterError,
    SPDTrainer,
    compress,
    load_lora_model,
    masked_lora,
    merge_sparse,
    sparsity_report,
)
from optimum_spd.hub import render_model_card

TARGETS = ["query", "value", "dense"]  # "dense" also matches bert.pooler.dense, which SPD never prunes


def lora(model, **overrides):
    """A LoRA adapter with random A and B (peft's default B = 0 would make every merge trivially exact)."""
    options = dict(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, modules_to_save=["classifier"])
    options.update(overrides)
    torch.manual_seed(3)
    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **options))


@pytest.fixture
def sparse_dir(tmp_path):
    compress(pruned_model(sparsity=0.8), tmp_path / "sparse")
    return tmp_path / "sparse"


def expected_merge(peft_model):
    """Hand-computed merge: W + B @ A * scale for every adapted linear, by the name it has after unloading."""
    expected = {}
    for name, module in peft_model.get_base_model().named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
            expected[f"{name}.weight"] = module.get_base_layer().weight.detach() + delta.detach()
    return expected


def test_merge_sparse_keeps_the_mask_and_equals_the_masked_merge(sparse_dir):
    base = AutoModelForSequenceClassification.from_pretrained(sparse_dir)
    targets = set(base.config.sparsity_config["targets"])
    masks = {name: param.detach() != 0 for name, param in base.named_parameters() if name in targets}
    before = sparsity_report(base).prunable_sparsity
    peft_model = lora(base)
    expected = expected_merge(peft_model)

    merged = merge_sparse(peft_model)

    weights = dict(merged.named_parameters())
    assert targets <= set(expected) | targets and any(name in expected for name in targets)
    for name in targets:
        assert int(((weights[name] != 0) & ~masks[name]).sum()) == 0  # no pruned position came back
        if name in expected:
            torch.testing.assert_close(weights[name], expected[name] * masks[name], rtol=0, atol=1e-7)
    # A matrix SPD does not prune (the pooler) merges exactly as peft merges it: densely.
    torch.testing.assert_close(weights["bert.pooler.dense.weight"], expected["bert.pooler.dense.weight"])
    assert sparsity_report(merged).prunable_sparsity == before
    assert merged.config.spd_adaptation == {
        "method": "lora",
        "rank": 4,
        "alpha": 8.0,
        "target_modules": sorted(TARGETS),
        "masked_merge": True,
        "base_model": None,  # a local path is never recorded
    }


def test_merged_sparse_model_saves_compressed_and_reloads_identically(sparse_dir, tmp_path):
    merged = merge_sparse(lora(AutoModelForSequenceClassification.from_pretrained(sparse_dir)))
    merged.save_pretrained(tmp_path / "adapted")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "adapted")
    assert type(reloaded).__name__ == "SPDBertForSequenceClassification"
    assert torch.equal(logits(reloaded), logits(merged))
    block = json.loads((tmp_path / "adapted" / "config.json").read_text())["sparsity_config"]
    assert block["prunable_sparsity"] == pytest.approx(sparsity_report(merged).prunable_sparsity)
    card = render_model_card(str(tmp_path / "adapted"))
    assert "adapted with LoRA (rank 4, alpha 8.0" in card.text and "under the sparse mask" in card.text


def test_a_new_head_is_trained_and_merged(sparse_dir, tmp_path):
    """The documented flow for a second task: load with a new head, LoRA + modules_to_save, sparse merge."""
    base = AutoModelForSequenceClassification.from_pretrained(sparse_dir, num_labels=3, ignore_mismatched_sizes=True)
    merged = merge_sparse(lora(base))
    assert merged.classifier.out_features == 3
    merged.save_pretrained(tmp_path / "three")
    assert torch.equal(logits(AutoModelForSequenceClassification.from_pretrained(tmp_path / "three")), logits(merged))


def test_a_forged_adaptation_block_is_refused_by_the_card(sparse_dir, tmp_path):
    merge_sparse(lora(AutoModelForSequenceClassification.from_pretrained(sparse_dir))).save_pretrained(tmp_path / "a")
    config_path = tmp_path / "a" / "config.json"
    config = json.loads(config_path.read_text())
    config["spd_adaptation"]["target_modules"] = ["<script>alert(1)</script>"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="spd_adaptation.target_modules"):
        render_model_card(str(tmp_path / "a"))


def test_merge_sparse_refuses_a_dense_base_and_a_non_lora_adapter(sparse_dir):
    with pytest.raises(AdapterError, match="not sparse"):
        merge_sparse(lora(tiny_model()))
    ia3 = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(sparse_dir),
        IA3Config(task_type="SEQ_CLS", target_modules=["query", "value"], feedforward_modules=[]),
    )
    with pytest.raises(AdapterError, match="not LoRA"):
        merge_sparse(ia3)
    with pytest.raises(TypeError, match="PeftModel"):
        merge_sparse(tiny_model())


def save_teacher_adapter(tmp_path, num_labels=2):
    """A dense base saved to disk and a LoRA adapter on it: the only form some fine-tuned teachers exist in."""
    tiny_model(num_labels=num_labels).save_pretrained(tmp_path / "base")
    peft_model = lora(AutoModelForSequenceClassification.from_pretrained(tmp_path / "base"))
    peft_model.save_pretrained(tmp_path / "adapter")
    return peft_model


def test_a_lora_teacher_directory_gives_the_merged_dense_teacher(spd_args, tmp_path):
    peft_model = save_teacher_adapter(tmp_path)
    expected = logits(copy.deepcopy(peft_model).merge_and_unload())

    trainer = SPDTrainer(
        model=tiny_model(seed=5),
        args=spd_args(teacher_model_name_or_path=str(tmp_path / "adapter")),
        train_dataset=tiny_dataset(),
    )

    torch.testing.assert_close(logits(trainer.teacher_model), expected)  # eager vs SDPA attention: ~1e-8 apart
    assert trainer.merged_adapters["teacher"]["rank"] == 4
    # A PeftModel object works the same way, and the caller's adapter is left unmerged.
    trainer = SPDTrainer(model=tiny_model(seed=5), args=spd_args(), teacher_model=peft_model)
    torch.testing.assert_close(logits(trainer.teacher_model), expected)  # eager vs SDPA attention: ~1e-8 apart
    assert isinstance(peft_model, PeftModel) and peft_model.get_base_model().bert.pooler.dense.lora_A


def test_a_lora_model_to_prune_is_merged_densely_first(spd_args, tmp_path):
    peft_model = save_teacher_adapter(tmp_path)
    expected = logits(copy.deepcopy(peft_model).merge_and_unload())
    trainer = SPDTrainer(model=peft_model, args=spd_args(max_steps=4), train_dataset=tiny_dataset())
    torch.testing.assert_close(logits(trainer.teacher_model), expected)  # the teacher is the merged dense model
    trainer.train()
    assert sparsity_report(trainer.model).prunable_sparsity >= 0.8 - 1e-6


def test_an_adapter_for_another_base_is_a_clear_error(tmp_path):
    save_teacher_adapter(tmp_path)
    other = tiny_model(hidden_size=48)
    with pytest.raises(AdapterError, match="trained on a different base model"):
        load_lora_model(str(tmp_path / "adapter"), base_model=other)
    with pytest.raises(AdapterError, match="num_labels"):
        load_lora_model(str(tmp_path / "adapter"), base_model=tiny_model(num_labels=3))
    assert isinstance(load_lora_model(str(tmp_path / "adapter")), PeftModel)  # the base it names loads fine


def test_adapter_files_are_checked_before_anything_is_loaded(tmp_path):
    save_teacher_adapter(tmp_path)
    adapter = tmp_path / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="peft_type='IA3' is not supported"):
        load_lora_model(str(adapter))
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "../../etc x"}))
    with pytest.raises(AdapterError, match="base_model_name_or_path"):
        load_lora_model(str(adapter))
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle"):
        load_lora_model(str(adapter))
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        load_lora_model(str(tmp_path / "base"))


@pytest.mark.slow
def test_the_lora_example_end_to_end(tmp_path):
    """examples/lora/run_sparse_lora.py on a tiny sparse checkpoint and tiny MRPC: every variant measured and saved."""
    import os
    import subprocess
    import sys

    from helpers import tiny_tokenizer
    from test_glue_example import REPO, write_tiny_mrpc

    write_tiny_mrpc(tmp_path / "glue")
    regression = pruned_model(sparsity=0.8, num_labels=1)
    regression.config.problem_type = "regression"  # as a checkpoint trained on STS-B has it
    compress(regression, tmp_path / "sparse")  # a regression checkpoint: the example gives it a new head
    tiny_tokenizer(str(tmp_path / "sparse")).save_pretrained(tmp_path / "sparse")
    command = [
        sys.executable,
        os.path.join(REPO, "examples", "lora", "run_sparse_lora.py"),
        *("--sparse_model_name_or_path", str(tmp_path / "sparse"), "--task_name", "mrpc"),
        *("--data_dir", str(tmp_path / "glue"), "--output_dir", str(tmp_path / "run"), "--max_steps", "3"),
        *("--per_device_train_batch_size", "8", "--report_to", "none", "--use_cpu", "--lora_r", "2"),
        *("--mask_aware", "true"),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["mask_aware"] is True
    assert results["merged_sparse"]["prunable_sparsity"] == pytest.approx(results["base_prunable_sparsity"])
    assert results["merged_dense"]["prunable_sparsity"] < 0.01  # peft's merge fills every pruned position
    assert results["merged_sparse"]["saved_mb"] < results["merged_dense"]["saved_mb"]
    assert {"merged_sparse_accuracy", "unmerged_accuracy"} <= set(results["merged_sparse"]) | set(results["unmerged"])
    assert results["pipeline_example"]["prediction"]["label"] in {"not_equivalent", "equivalent"}
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "merged-sparse")
    assert reloaded.config.spd_adaptation["rank"] == 2


def test_an_adapted_sparse_model_pushes_with_its_card(sparse_dir, hub, tmp_path):
    merged = merge_sparse(lora(AutoModelForSequenceClassification.from_pretrained(sparse_dir)))
    merged.push_to_hub("tester/adapted-sparse")
    card = ModelCard.load("tester/adapted-sparse")
    assert "adapted with LoRA (rank 4" in card.text
    reloaded = AutoModelForSequenceClassification.from_pretrained("tester/adapted-sparse", cache_dir=str(tmp_path))
    assert torch.equal(logits(reloaded), logits(merged))
    assert hub.token not in card.text


def test_masked_lora_forward_is_the_sparse_merge_and_trains(sparse_dir):
    peft_model = lora(AutoModelForSequenceClassification.from_pretrained(sparse_dir)).eval()
    unmasked = logits(peft_model)
    with masked_lora(peft_model):
        masked = logits(peft_model)
        # Gradients reach the adapter through the masked delta.
        peft_model.train()
        peft_model(input_ids=torch.randint(5, 100, (2, 7))).logits.sum().backward()
        grads = [p.grad for n, p in peft_model.named_parameters() if "lora_A" in n and "query" in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert torch.equal(logits(peft_model.eval()), unmasked)  # the patch is gone after the block
    merged = merge_sparse(copy.deepcopy(peft_model))
    torch.testing.assert_close(masked, logits(merged), rtol=0, atol=1e-5)
    assert not torch.allclose(unmasked, masked, atol=1e-5)  # the mask matters for this adapter
