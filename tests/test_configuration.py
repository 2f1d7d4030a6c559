import json
import re

import pytest
from transformers import HfArgumentParser

from optimum_spd import PRESETS, SparseDistillConfig


def make(tmp_path, **kwargs):
    return SparseDistillConfig(output_dir=str(tmp_path), report_to=[], **kwargs)


def test_presets_fill_unset_fields_only(tmp_path):
    reference = make(tmp_path)  # the default preset, chosen by the issue-11 study
    assert reference.preset == "reference"
    assert reference.replacing_schedule == "constant" and reference.replacing_rate == 0.8
    assert reference.stage_2_end == reference.stage_1_end == 0.5
    paper = make(tmp_path, preset="paper")
    assert paper.replacing_schedule == "linear" and paper.replacing_rate == 0.3 and paper.stage_2_end == 2 / 3
    overridden = make(tmp_path, preset="reference", replacing_rate=0.5)
    assert overridden.replacing_rate == 0.5 and overridden.replacing_schedule == "constant"
    assert set(PRESETS) == {"paper", "reference"}


def test_grafting_needs_unused_parameter_search_in_ddp(tmp_path):
    assert make(tmp_path).ddp_find_unused_parameters is True
    assert make(tmp_path, ddp_find_unused_parameters=False).ddp_find_unused_parameters is False


@pytest.mark.parametrize(
    "overrides, field_name, hint",
    [
        ({"target_sparsity": 1.0}, "target_sparsity", r"\[0.0, 1.0\)"),
        ({"target_sparsity": -0.1}, "target_sparsity", r"\[0.0, 1.0\)"),
        ({"target_sparsity": float("nan")}, "target_sparsity", "finite"),
        ({"replacing_rate": 1.5}, "replacing_rate", r"\[0.0, 1.0\]"),
        ({"replacing_rate": -0.2}, "replacing_rate", r"\[0.0, 1.0\]"),
        ({"temperature": -1.0}, "temperature", "> 0"),
        ({"temperature": 0.0}, "temperature", "> 0"),
        ({"hidden_distill_weight": -1.0}, "hidden_distill_weight", r"\[0.0, inf\]"),
        ({"num_pruning_events": 0}, "num_pruning_events", "integer >= 1"),
        ({"sparsity_schedule": "exponential"}, "sparsity_schedule", "cubic"),
        ({"replacing_schedule": "cosine"}, "replacing_schedule", "linear"),
        ({"preset": "fast"}, "preset", "paper"),
        ({"pruning_targets": []}, "pruning_targets", "non-empty list"),
        ({"stage_1_end": 1.2}, "stage_1_end", r"\[0.0, 1.0\]"),
    ],
)
def test_invalid_values_name_field_value_and_range(tmp_path, overrides, field_name, hint):
    with pytest.raises(ValueError, match=field_name) as error:
        make(tmp_path, **overrides)
    message = str(error.value)
    assert f"{field_name}={overrides[field_name]!r}" in message  # the field and the bad value ...
    assert re.search(hint, message)  # ... and what is valid


@pytest.mark.parametrize(
    "overrides",
    [
        {"pruning_start": 0.5, "pruning_end": 0.4},
        {"pruning_end": 0.6, "stage_1_end": 0.5},
        {"stage_1_end": 0.7, "stage_2_end": 0.6},
        {"pruning_start": 0.3, "pruning_end": 0.3},
    ],
)
def test_contradictory_stage_boundaries(tmp_path, overrides):
    with pytest.raises(ValueError, match="stage boundaries are contradictory"):
        make(tmp_path, **overrides)


def test_all_zero_weights_and_untrainable_student(tmp_path):
    with pytest.raises(ValueError, match="every loss weight is 0"):
        make(tmp_path, hidden_distill_weight=0, attention_distill_weight=0, logit_distill_weight=0)
    with pytest.raises(ValueError, match="never trained"):
        make(tmp_path, replacing_rate=0.0, replacing_schedule="constant")


def test_unsupported_lr_scheduler(tmp_path):
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        make(tmp_path, lr_scheduler_type="polynomial")


def test_recipe_round_trip(tmp_path):
    config = make(
        tmp_path, target_sparsity=0.95, preset="reference", pruning_targets=["query", "key"], temperature=2.0
    )
    path = config.save_pretrained(tmp_path / "recipe")
    recipe = json.loads(open(path).read())
    assert recipe["spd_config_version"] == 1 and recipe["target_sparsity"] == 0.95
    assert "learning_rate" not in recipe  # only SPD fields belong to the recipe
    loaded = SparseDistillConfig.from_pretrained(tmp_path / "recipe", output_dir=str(tmp_path / "other"))
    for name in SparseDistillConfig.recipe_field_names():
        assert getattr(loaded, name) == getattr(config, name), name
    assert loaded.output_dir == str(tmp_path / "other")


def test_recipe_rejects_unknown_fields_and_versions(tmp_path):
    (tmp_path / "spd_config.json").write_text(json.dumps({"spd_config_version": 1, "sparsity": 0.9}))
    with pytest.raises(ValueError, match="unknown SPD recipe fields"):
        SparseDistillConfig.from_pretrained(tmp_path)
    (tmp_path / "spd_config.json").write_text(json.dumps({"spd_config_version": 99}))
    with pytest.raises(ValueError, match="spd_config_version"):
        SparseDistillConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="spd_config.json"):
        SparseDistillConfig.from_pretrained(tmp_path / "missing")


def test_hf_argument_parser_exposes_spd_flags(tmp_path):
    parser = HfArgumentParser(SparseDistillConfig)
    (config,) = parser.parse_args_into_dataclasses(
        args=[
            "--output_dir",
            str(tmp_path),
            "--target_sparsity",
            "0.85",
            "--preset",
            "reference",
            "--pruning_targets",
            "query",
            "value",
            "--attention_distill_weight",
            "0",
            "--report_to",
            "none",
        ]
    )
    assert config.target_sparsity == 0.85 and config.replacing_rate == 0.8
    assert config.pruning_targets == ["query", "value"] and config.attention_distill_weight == 0


def test_every_recipe_field_is_documented_in_the_docstring_and_the_readme():
    import os
    import re

    from optimum_spd import SparseDistillConfig

    documented = set(re.findall(r"^        (\w+) \(`", SparseDistillConfig.__doc__, flags=re.MULTILINE))
    fields = set(SparseDistillConfig.recipe_field_names())
    assert documented == fields
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    table = readme[readme.index("## Configuration") :]
    table = table[: table.index("\n\n", table.index("| field |"))]
    in_table = set(re.findall(r"`(\w+)`", "".join(line.split("|")[1] for line in table.splitlines() if "|" in line)))
    assert fields <= in_table, sorted(fields - in_table)


def test_defaults_that_suit_spd(tmp_path):
    from optimum_spd import SparseDistillConfig

    args = SparseDistillConfig(output_dir=str(tmp_path), use_cpu=True)
    assert args.logging_steps == 10  # Trainer's 500 would log nothing of a short run's stages
    assert args.learning_rate == 6.4e-4  # Trainer's 5e-5 under-trains SPD (the GPU study's grid)
    assert SparseDistillConfig(output_dir=str(tmp_path), learning_rate=1e-4).learning_rate == 1e-4
    assert args.dataloader_pin_memory is False  # no accelerator: pinning only adds a warning per DataLoader
    assert SparseDistillConfig(output_dir=str(tmp_path), logging_steps=3).logging_steps == 3
