"""The GLUE benchmark's bookkeeping: method recipes, the results table and the loss plot (no training here)."""

import contextlib
import importlib.util
import os
import sys

import pytest
import torch
from helpers import tiny_dataset, tiny_model, tiny_tokenizer

from optimum_spd import SparseDistillConfig

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.realpath(os.path.join(HERE, "..", "benchmarks"))


@contextlib.contextmanager
def benchmark_script(filename: str):
    """A ``benchmarks/`` script imported as a module; ``sys.path`` and ``sys.modules`` are restored on exit."""
    spec = importlib.util.spec_from_file_location(
        f"{filename.removesuffix('.py')}_benchmark", os.path.join(BENCHMARKS, filename)
    )
    module = importlib.util.module_from_spec(spec)
    saved_path, loaded_before = list(sys.path), set(sys.modules)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved_path  # a script may put benchmarks/ first to import a sibling (transfer_summary: glue)
        for name in set(sys.modules) - loaded_before:  # that sibling and the script itself, not third-party imports
            if os.path.dirname(os.path.realpath(getattr(sys.modules[name], "__file__", None) or "")) == BENCHMARKS:
                del sys.modules[name]


@pytest.fixture(scope="module")
def glue_benchmark():
    with benchmark_script("glue.py") as module:
        yield module


def test_methods_differ_only_in_what_the_student_learns_from(glue_benchmark, tmp_path):
    budget = glue_benchmark.BUDGETS["mrpc"]

    class Cli:
        bf16, optim, transfer_loss_weight = False, "adamw_torch_fused", 1.0

    configs = {
        m: glue_benchmark.run_config(str(tmp_path), 0.8, m, budget, Cli, 1e-4, 42) for m in glue_benchmark.METHODS
    }
    schedule_fields = (
        "pruning_start",
        "pruning_end",
        "stage_1_end",
        "num_pruning_events",
        "sparsity_schedule",
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "seed",
        "lr_restart",
    )
    for field in schedule_fields:
        assert len({getattr(config, field) for config in configs.values()}) == 1, field
    gmp, gmp_kd, paper, reference = (configs[m] for m in ("gmp", "gmp_kd", "spd_paper", "spd_reference"))
    assert not gmp.needs_teacher_outputs and gmp.hard_label_weight == 1
    assert gmp.replacing_rate == gmp_kd.replacing_rate == 1.0 and gmp_kd.replacing_schedule == "constant"
    assert gmp_kd.hidden_distill_weight > 0 and gmp_kd.logit_distill_weight > 0
    assert paper.replacing_rate < 1 and paper.replacing_schedule == "linear"
    assert reference.replacing_schedule == "constant" and reference.replacing_rate == 0.8
    assert isinstance(paper, SparseDistillConfig)
    # The ablations move SPD towards the GMP baselines one field at a time.
    all_params, all_params_gold = configs["spd_paper_all_params"], configs["spd_paper_all_params_gold"]
    assert all_params.train_embeddings_and_head and not paper.train_embeddings_and_head
    assert all_params.hard_label_weight == paper.hard_label_weight == 0 and all_params_gold.hard_label_weight == 1
    assert all_params.replacing_rate == all_params_gold.replacing_rate == paper.replacing_rate
    # SPD runs with the reference's behaviours; the no-fidelity ablation undoes exactly those two; GMP+KD distils
    # regression to the teacher (its gold signal is the label term).
    no_fidelity = configs["spd_paper_no_fidelity"]
    assert paper.step_unsampled_layers and paper.regression_distill_target == "gold"
    assert not no_fidelity.step_unsampled_layers and no_fidelity.regression_distill_target == "teacher"
    assert gmp_kd.regression_distill_target == "teacher"
    differing = {
        f
        for f in glue_benchmark.SparseDistillConfig.recipe_field_names()
        if getattr(paper, f) != getattr(no_fidelity, f) and f != "output_dir"
    }
    assert differing == {"step_unsampled_layers", "regression_distill_target"}


def fake_result(method: str, accuracy: float, seed: int = 42, best: float | None = None) -> dict:
    history = [
        {"step": 10, "loss_hard_label": 0.6, "prunable_sparsity": 0.8},
        {"step": 10, "eval_loss": 0.6, "eval_accuracy": best or accuracy},
        {"step": 20, "loss_hard_label": 0.4},
        {"step": 20, "eval_loss": 0.7, "eval_accuracy": accuracy},
    ]
    return {
        "task": "mrpc",
        "sparsity": 0.8,
        "method": method,
        "learning_rate": 1e-4,
        "seed": seed,
        "teacher": {"eval_accuracy": 0.806, "eval_f1": 0.867},
        "final": {"eval_accuracy": accuracy, "eval_f1": 0.81, "eval_loss": 0.7},
        "prunable_sparsity": 0.8,
        "global_sparsity": 0.37,
        "train_seconds": 100.0,
        "resumed_from": None,
        "optimizer_steps": 20,
        "log_history": history,
    }


def test_results_table_and_plot(glue_benchmark, tmp_path):
    results = [
        fake_result("spd_paper", 0.75, seed=0, best=0.80),
        fake_result("spd_paper", 0.71, seed=1),
        fake_result("gmp", 0.70),
    ]
    table = glue_benchmark.results_table(results).splitlines()
    assert len(table) == 4
    assert "| GMP |" in table[2] and "| SPD (paper) |" in table[3]  # methods in their fixed order
    assert "80.6/86.7" in table[2] and "70.0 ± – / 81.0 ± –" in table[2] and "-10.6" in table[2]
    assert "| 0.400 |" in table[2]
    # Two seeds: mean ± sample std of the last evaluation is the headline; the best-of-run mean stands beside it.
    assert "| 0,1 |" in table[3] and "73.0 ± 2.8" in table[3] and "| 75.5 |" in table[3]
    path = tmp_path / "mrpc.png"
    glue_benchmark.plot_task("mrpc", results, str(path))
    assert path.read_bytes().startswith(b"\x89PNG")


def test_plot_shows_each_method_at_its_most_seeded_rate_as_a_mean_curve(glue_benchmark):
    def at(rate, method, accuracy, seed):
        return {**fake_result(method, accuracy, seed=seed), "learning_rate": rate}

    results = [
        at(1e-4, "gmp", 0.90, 0),  # the best single run, but one seed only
        at(3e-4, "gmp", 0.70, 0),
        at(3e-4, "gmp", 0.72, 1),
        at(1e-4, "spd_paper", 0.70, 0),  # a tie on seeds goes to the better mean
        at(3e-4, "spd_paper", 0.75, 0),
        {**at(3e-4, "spd_paper", 0.60, 0), "precision": "bf16"},  # a variant of its own
    ]
    chosen = glue_benchmark.plotted_runs(results, "mrpc")
    assert {(key.method, key.precision): [r["learning_rate"] for r in runs] for key, runs in chosen.items()} == {
        ("gmp", "fp32"): [3e-4, 3e-4],
        ("spd_paper", "fp32"): [3e-4],
        ("spd_paper", "bf16"): [3e-4],
    }
    assert {(key.learning_rate, key.teacher_score) for key in chosen} == {(None, None)}  # a variant spans both
    runs = next(runs for key, runs in chosen.items() if key.method == "gmp")
    runs[1]["log_history"] = [*runs[1]["log_history"], {"step": 20, "eval_loss": 0.9}]  # a final evaluation
    # Mean over the runs, the last entry per step of each run (the final evaluation replaces the epoch's).
    assert glue_benchmark.mean_curve(runs, "eval_loss") == [(10, 0.6), (20, pytest.approx(0.8))]


def test_one_shot_reference_prunes_to_target_without_training(glue_benchmark, tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher = tiny_model()
    teacher.save_pretrained(teacher_dir)
    tokenizer = tiny_tokenizer(str(tmp_path / "tokenizer"))

    class Cli:
        bf16, optim, work_dir = False, "adamw_torch_fused", str(tmp_path / "work")
        transfer_loss_weight = 1.0

    result = glue_benchmark.run_one_shot(
        task="mrpc",
        sparsity=0.75,
        budget=glue_benchmark.BUDGETS["mrpc"],
        datasets={"validation": tiny_dataset(16)},
        tokenizer=tokenizer,
        compute_metrics=glue_benchmark.glue_compute_metrics("mrpc"),
        teacher_dir=str(teacher_dir),
        cli=Cli,
    )
    assert result["prunable_sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert result["optimizer_steps"] == 0 and "eval_accuracy" in result["final"]
    # The cached teacher itself is untouched: the one-shot copy is pruned in memory only.
    reloaded = type(teacher).from_pretrained(teacher_dir)
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), reloaded.state_dict().values()))
    result["teacher"] = {"eval_accuracy": 0.8, "eval_f1": 0.85}
    row = glue_benchmark.results_table([result]).splitlines()[2]
    assert "| one-shot, no training |" in row and "| 75% |" in row


def test_tuned_learning_rate_is_the_best_grid_run_of_the_tuning_seed(glue_benchmark):
    grid = []
    for rate, accuracy in ((1e-4, 0.70), (3e-4, 0.74), (6.4e-4, 0.72)):
        grid.append({**fake_result("gmp_kd", accuracy, seed=0), "learning_rate": rate})
    grid.append({**fake_result("gmp_kd", 0.99, seed=1), "learning_rate": 6.4e-4})  # another seed: not tuning data
    assert glue_benchmark.tuned_learning_rate(grid, "mrpc", 0.8, "gmp_kd", seed=0) == 3e-4
    with pytest.raises(SystemExit, match="grid"):
        glue_benchmark.tuned_learning_rate(grid, "mrpc", 0.8, "spd_paper", seed=0)


def test_best_of_run_counts_only_evaluations_at_the_target_sparsity(glue_benchmark):
    result = fake_result("gmp_kd", 0.70)
    result["log_history"] = [
        {"step": 5, "loss_hard_label": 0.5, "prunable_sparsity": 0.3},
        {"step": 5, "eval_accuracy": 0.95},  # a denser model: not a score of the pruned one
        {"step": 10, "loss_hard_label": 0.5, "prunable_sparsity": 0.8},
        {"step": 10, "eval_accuracy": 0.72},
        {"step": 20, "eval_accuracy": 0.70},
    ]
    assert glue_benchmark.best_evaluation(result) == 0.72


def test_augmented_and_longer_runs_are_named_grouped_and_labelled_apart(glue_benchmark):
    class Cli:
        bf16, augment_copies, budget_scale, tuned_lr, learning_rates, seeds = False, 2, 1.0, False, [1e-4], [0]
        transfer_loss_weight, augment_rates, transfer_task = 1.0, "", ""

    names = [name for name, _ in glue_benchmark.planned_runs("mrpc", 0.8, "spd_paper", Cli, [])]
    assert names == ["mrpc-s80-spd_paper-lr1.0e-04-seed0-aug2"]
    Cli.transfer_loss_weight = 0.5
    names = [name for name, _ in glue_benchmark.planned_runs("mrpc", 0.8, "spd_paper", Cli, [])]
    assert names == ["mrpc-s80-spd_paper-lr1.0e-04-seed0-aug2-tw0.5"]
    Cli.transfer_loss_weight, Cli.augment_rates = 1.0, "delete=0,swap=0,mask=0.1,replace=0.1"
    names = [name for name, _ in glue_benchmark.planned_runs("mrpc", 0.8, "spd_paper", Cli, [])]
    assert names == ["mrpc-s80-spd_paper-lr1.0e-04-seed0-aug2-ratesdelete=0-swap=0-mask=0.1-replace=0.1"]
    Cli.augment_rates = ""
    assert glue_benchmark.planned_runs("mrpc", 0.8, "gmp", Cli, []) == []  # no teacher term to distil with
    Cli.augment_copies, Cli.budget_scale = 0, 3.0
    names = [name for name, _ in glue_benchmark.planned_runs("mrpc", 0.8, "gmp", Cli, [])]
    assert names == ["mrpc-s80-gmp-lr1.0e-04-seed0-x3"]
    Cli.budget_scale, Cli.transfer_task = 1.0, "rte"
    names = [name for name, _ in glue_benchmark.planned_runs("mrpc", 0.8, "spd_paper", Cli, [])]
    assert names == ["mrpc-s80-spd_paper-lr1.0e-04-seed0-transfer_rte"]
    assert glue_benchmark.planned_runs("mrpc", 0.8, "gmp", Cli, []) == []  # transfer text needs a teacher term too
    plain, augmented = fake_result("gmp_kd", 0.70), {**fake_result("gmp_kd", 0.74), "augment_copies": 2}
    longer = {**fake_result("gmp_kd", 0.99), "budget_scale": 3.0, "learning_rate": 6.4e-4}
    other_text = {**fake_result("gmp_kd", 0.98), "transfer_task": "rte", "learning_rate": 3e-4}
    rows = glue_benchmark.results_table([plain, augmented, longer, other_text]).splitlines()[2:]
    labels = [row.split(" | ")[2] for row in rows]
    assert labels == ["GMP+KD", "GMP+KD, 3× epochs", "GMP+KD + RTE train text", "GMP+KD + 2 augmented copies/row"]
    # No variant takes part in tuning the rate: the plain run's rate stays the tuned one.
    rates = glue_benchmark.tuned_learning_rate([plain, augmented, longer, other_text], "mrpc", 0.8, "gmp_kd", seed=42)
    assert rates == plain["learning_rate"]


def test_augmentation_gain_pairs_runs_by_seed_with_their_plain_twin(glue_benchmark):
    def run(accuracy, seed, copies=0, **changes):
        return {**fake_result("spd_reference", accuracy, seed=seed), "augment_copies": copies, **changes}

    results = [
        run(0.70, 0),
        run(0.72, 1),
        run(0.90, 3),  # no augmented twin: not in the pair
        run(0.75, 0, copies=1),
        run(0.73, 1, copies=1),
        run(0.99, 2, copies=1),  # no plain twin
        run(0.99, 0, copies=1, learning_rate=1e-3),  # another rate: a group without a plain twin
        run(0.50, 0, copies=2),
        run(0.60, 1, copies=1, transfer_loss_weight=0.5),  # another transfer weight: its own row, same plain twin
        run(0.76, 0, copies=1, augment_rates="0.05"),  # other augmentation rates: likewise
        run(0.80, 1, transfer_task="rte"),  # another task's text as transfer data: likewise, no copies
    ]
    rows = glue_benchmark.augmentation_gains_table(results).splitlines()[2:]
    assert len(rows) == 5
    other_text, half_weight, one_copy, light, two_copies = (row.split(" | ") for row in rows)
    assert other_text[2] == "SPD (reference) + RTE train text"
    assert other_text[5:] == ["–", "1", "72.0 ± –", "80.0 ± –", "+8.0", "+8.0 ± – |"]
    assert light[2] == "SPD (reference), augmentation rates 0.05"
    assert light[5:] == ["1", "0", "70.0 ± –", "76.0 ± –", "+6.0", "+6.0 ± – |"]
    assert one_copy[5:] == ["1", "0,1", "71.0 ± 1.4", "74.0 ± 1.4", "+5.0, +1.0", "+3.0 ± 2.0 |"]
    assert half_weight[2] == "SPD (reference), transfer loss × 0.5"
    assert half_weight[5:] == ["1", "1", "72.0 ± –", "60.0 ± –", "-12.0", "-12.0 ± – |"]
    assert two_copies[5:] == ["2", "0", "70.0 ± –", "50.0 ± –", "-20.0", "-20.0 ± – |"]
    assert glue_benchmark.augmentation_gains_table([run(0.7, 0)]) == ""


def test_spd_is_paired_with_gmp_kd_at_each_ones_most_seeded_rate_and_same_teacher(glue_benchmark):
    spd, baseline = glue_benchmark.SPD_DEFAULT_METHOD, glue_benchmark.BASELINE_METHOD
    assert spd == "spd_reference"  # the package's default preset

    def run(method, accuracy, seed, **changes):
        return {**fake_result(method, accuracy, seed=seed), **changes}

    results = [
        run(baseline, 0.70, 0, learning_rate=6.4e-4),
        run(baseline, 0.74, 1, learning_rate=6.4e-4),
        run(baseline, 0.99, 0, learning_rate=1e-3),  # one grid seed: fewer seeds than the tuned rate, not compared
        run(spd, 0.75, 0, learning_rate=1e-3),
        run(spd, 0.73, 1, learning_rate=1e-3),
        run(spd, 0.80, 2, learning_rate=1e-3),  # no GMP+KD twin for seed 2: left out of the pair
        run(spd, 0.79, 0, learning_rate=1e-3, augment_copies=1),
        run(baseline, 0.71, 0, learning_rate=6.4e-4, augment_copies=1),
        run(spd, 0.77, 1, learning_rate=1e-3, transfer_task="rte"),
        run(baseline, 0.78, 1, learning_rate=6.4e-4, transfer_task="rte"),
        run("spd_paper", 0.99, 0, learning_rate=1e-3),  # not the default recipe
        run(spd, 0.99, 3, learning_rate=1e-3, teacher={"eval_accuracy": 0.9, "eval_f1": 0.9}),  # another teacher
        run(baseline, 0.10, 3, learning_rate=1e-3, teacher={"eval_accuracy": 0.8, "eval_f1": 0.9}),  # and another
    ]
    rows = [row.split(" | ") for row in glue_benchmark.spd_against_baseline_table(results).splitlines()[2:]]
    assert [row[2:] for row in rows] == [
        ["none", "fp32", "0.001 / 0.00064", "0,1", "72.0 ± 2.8", "74.0 ± 1.4", "+5.0, -1.0", "+2.0 ± 3.0 |"],
        ["RTE train text", "fp32", "0.001 / 0.00064", "1", "78.0 ± –", "77.0 ± –", "-1.0", "-1.0 ± – |"],
        ["1 augmented copies/row", "fp32", "0.001 / 0.00064", "0", "71.0 ± –", "79.0 ± –", "+8.0", "+8.0 ± – |"],
    ]
    assert glue_benchmark.spd_against_baseline_table([run(spd, 0.7, 0)]) == ""


def test_transfer_task_gives_another_tasks_training_text_without_labels(glue_benchmark, tmp_path):
    """--transfer_task: the whole train file of the other task, tokenised, its labels dropped; one source at a time."""
    (tmp_path / "SST-2").mkdir()
    rows = ["sentence\tlabel", "a gripping , funny film\t1", "dull\t0", 'an "unmatched quote\t1']
    (tmp_path / "SST-2" / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nnot read\t0\n")

    class Cli:
        augment_copies, augment_rates, transfer_task, data_dir = 0, "", "sst2", str(tmp_path)

    transfer = glue_benchmark.transfer_dataset({}, tiny_tokenizer(str(tmp_path / "tokenizer")), Cli, 0, None)
    assert transfer.num_rows == 3 and "label" not in transfer.column_names and "sentence1" not in transfer.column_names
    assert all(len(ids) >= 3 for ids in transfer["input_ids"])  # [CLS], at least one piece, [SEP]
    Cli.transfer_task = ""
    assert glue_benchmark.transfer_dataset({}, None, Cli, 0, None) is None


def test_augmented_transfer_data_substitutes_the_teachers_embedding_neighbours(glue_benchmark, tmp_path):
    """--augment_rates with a neighbour rate: the run's teacher gives the embeddings; every substitute is one of the
    teacher's nearest pieces, so another teacher (other embeddings) gives other copies from the same seed."""
    from datasets import Dataset

    from optimum_spd.augmentation import embedding_neighbours

    tokenizer = tiny_tokenizer(str(tmp_path / "tokenizer"))
    train = Dataset.from_dict(dict(tokenizer([" ".join(f"w{i + j}" for j in range(6)) for i in range(1, 40, 3)])))

    class Cli:
        augment_copies, augment_rates, transfer_task = 1, "delete=0,swap=0,mask=0,replace=0,neighbour=0.5", ""

    teacher, other_teacher = tiny_model(seed=1), tiny_model(seed=2)
    copies = glue_benchmark.transfer_dataset({"train": train}, tokenizer, Cli, 0, teacher)
    table = embedding_neighbours(teacher.get_input_embeddings().weight, tokenizer, list(range(len(tokenizer))))
    substituted = 0
    for source, row in zip(train["input_ids"], copies["input_ids"]):
        assert len(row) == len(source)
        for before, after in zip(source, row):
            substituted += before != after
            assert before == after or after in table[before]
    assert substituted > 10
    other = glue_benchmark.transfer_dataset({"train": train}, tokenizer, Cli, 0, other_teacher)
    assert list(other["input_ids"]) != list(copies["input_ids"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--tasks", "cola", "--transfer_task", "sst2", "--augment_copies", "1"], "use one of them"),
        (["--tasks", "cola", "--transfer_task", "cola"], "name a task other than the one pruned"),
        (["--tasks", "mrpc", "--transfer_task", "sst2"], "sentence(s) per row"),
        (["--tasks", "cola", "--transfer_loss_weight", "0.5"], "needs --augment_copies N or --transfer_task"),
    ],
)
def test_transfer_task_is_refused_before_anything_loads(glue_benchmark, monkeypatch, capsys, arguments, message):
    monkeypatch.setattr(sys, "argv", ["glue.py", *arguments])
    with pytest.raises(SystemExit):
        glue_benchmark.main()
    assert message in capsys.readouterr().err


def test_glue_study_runs_its_phases_in_order_with_equal_tuning(tmp_path):
    # The study script's plan, recorded by a stand-in interpreter instead of running glue.py.
    import subprocess

    calls = tmp_path / "calls.txt"
    recorder = tmp_path / "python"
    recorder.write_text(f'#!/bin/sh\nshift\necho "$@" >> {calls}\n')
    recorder.chmod(0o755)
    env = dict(os.environ, PYTHON=str(recorder), JOBS="1", METHODS="gmp spd_paper", LEARNING_RATES="3e-4 1e-3")
    script = os.path.join(BENCHMARKS, "glue_study.sh")
    subprocess.run(["bash", script, "stsb:0.8", "--", "--work_dir", "w"], env=env, check=True, capture_output=True)
    lines = calls.read_text().splitlines()
    assert all(line.endswith("--work_dir w") for line in lines)  # the shared options reach every run
    at = "--tasks stsb --sparsities 0.8"
    grid = [
        f"{at} --methods {m} --learning_rates {r} --seeds 0" for m in ("gmp", "spd_paper") for r in ("3e-4", "1e-3")
    ]
    tuned = [
        f"{at} --methods {m} --tuned_lr --tuning_seed 0 --seeds {s}" for m in ("gmp", "spd_paper") for s in (1, 2)
    ]
    bf16 = [f"{at} --methods spd_paper --tuned_lr --tuning_seed 0 --seeds {s} --bf16" for s in (0, 1, 2)]
    expected = [f"{at} --methods one_shot", *grid, *tuned, *bf16, "--report_only"]
    assert [line.removesuffix(" --work_dir w") for line in lines] == expected

    usage = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "<task>:<sparsity>" in usage.stderr


def test_cost_benchmark_times_transfer_steps_as_their_stage_plus_a_transfer_batch(tmp_path):
    with benchmark_script("cost.py") as cost:
        assert cost.configuration_names(["fp32"]) == ["plain-fp32", "stage_1-fp32", "stage_2-fp32", "stage_3-fp32"]
        names = cost.configuration_names(["fp32"], transfer=True)
        assert names[-2:] == ["stage_1_transfer-fp32", "stage_3_transfer-fp32"]
        assert cost.stage_fractions("stage_3_transfer", 8) == cost.stage_fractions("stage_3", 8)

        model_dir = tmp_path / "model"
        tiny_model().save_pretrained(model_dir)
        tiny_tokenizer(str(model_dir)).save_pretrained(model_dir)

        class Cli:
            steps, batch_size, optim = 2, 4, "adamw_torch"
            model_name_or_path = str(model_dir)

        dataset = tiny_dataset(8)
        plain_trainer, _ = cost.build_trainer("stage_3-fp32", dataset, Cli, str(tmp_path))
        transfer_trainer, _ = cost.build_trainer("stage_3_transfer-fp32", dataset, Cli, str(tmp_path))
        assert plain_trainer.transfer_dataset is None
        assert not {"label", "labels"} & set(transfer_trainer.transfer_dataset.column_names)  # teacher terms only
        transfer_trainer.train()
        assert any("loss_transfer" in entry for entry in transfer_trainer.state.log_history)


def test_a_cached_teacher_of_other_epochs_is_refused_not_reused(glue_benchmark, tmp_path):
    teacher_dir = tmp_path / "mrpc" / "teacher"
    teacher_dir.mkdir(parents=True)
    (teacher_dir / "teacher.json").write_text('{"trained_here": true, "epochs": 3, "metrics": {}}')

    class Cli:
        work_dir = str(tmp_path)

    budget = glue_benchmark.BUDGETS["mrpc"]
    assert glue_benchmark.ensure_teacher("mrpc", budget, None, None, None, Cli)[1]["epochs"] == 3
    longer = glue_benchmark.replace(budget, teacher_epochs=6)
    with pytest.raises(SystemExit, match="trained for 3 epochs, not the 6 asked"):
        glue_benchmark.ensure_teacher("mrpc", longer, None, None, None, Cli)


def test_transfer_summary_reads_the_root_and_every_subfolder_with_runs_by_default(tmp_path):
    """With no folder given it pools every glue.py --results_dir under benchmarks/results, and nothing else."""
    with benchmark_script("transfer_summary.py") as module:
        for folder in ("glue", "b_cpu/glue", "a_h100/glue", "lora", "notes/glue_v1"):
            os.makedirs(tmp_path / folder)
        assert module.default_results_dirs(str(tmp_path)) == [str(tmp_path / name) for name in ("", "a_h100", "b_cpu")]
        os.rmdir(tmp_path / "glue")  # a root without runs of its own is left out
        assert module.default_results_dirs(str(tmp_path)) == [str(tmp_path / "a_h100"), str(tmp_path / "b_cpu")]
    assert "glue" not in sys.modules and BENCHMARKS not in map(os.path.realpath, sys.path)  # its sibling import undone


def test_transfer_summary_pools_paired_gains_over_teachers_and_weighs_each_task_once(tmp_path):
    """Two folders (two teachers of one task) and a second task: pairs stay within a teacher, tasks pool them."""
    import json
    import subprocess

    def write(folder, name, method, accuracy, seed, copies=0, task="mrpc", teacher=0.806, **changes):
        run = {**fake_result(method, accuracy, seed=seed), "task": task, "augment_copies": copies, **changes}
        run["teacher"] = {"eval_accuracy": teacher, "eval_f1": 0.867}
        os.makedirs(tmp_path / folder / "glue", exist_ok=True)
        (tmp_path / folder / "glue" / f"{name}.json").write_text(json.dumps(run))

    spd, baseline = "spd_reference", "gmp_kd"
    for seed, (plain, augmented) in enumerate([(0.70, 0.74), (0.72, 0.74)]):  # teacher A: +4, +2
        write("a", f"spd{seed}", spd, plain, seed)
        write("a", f"spd{seed}-aug", spd, augmented, seed, copies=1)
    # SPD+aug − GMP+KD+aug, seed 0 only: +2.349, which must print +2.3 (rounded once), not +2.4 (via 2.35)
    write("a", "gmp_kd0-aug", baseline, 0.71651, 0, copies=1)
    write("a", "spd0-aug4", spd, 0.99, 0, copies=4)  # other transfer data: not in the 1-copy summary
    write("a", "spd0-aug-light", spd, 0.30, 0, copies=1, augment_rates="0.05")  # nor other rates (checked below)
    write("b", "spd0", spd, 0.60, 0, teacher=0.7)  # teacher B, same seed: its own pair, +6
    write("b", "spd0-aug", spd, 0.66, 0, copies=1, teacher=0.7)
    write("b", "rte0", spd, 0.50, 0, task="rte")  # a second task: +2 and +4
    write("b", "rte0-aug", spd, 0.52, 0, copies=1, task="rte")
    write("b", "rte1", spd, 0.50, 1, task="rte")
    write("b", "rte1-aug", spd, 0.54, 1, copies=1, task="rte")
    output = tmp_path / "summary.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "transfer_summary.py")]
        + [str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(output)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(output.read_text())["comparisons"]
    gain = summary["SPD default: with − without augmentation"]
    mrpc, rte = gain["tasks"]["mrpc"], gain["tasks"]["rte"]
    assert [teacher["differences_by_seed"] for teacher in mrpc["teachers"]] == [{"0": 4.0, "1": 2.0}, {"0": 6.0}]
    assert (
        mrpc["n"] == 3 and mrpc["mean"] == pytest.approx(4.0) and mrpc["standard_error"] == pytest.approx(2 / 3**0.5)
    )
    assert rte["mean"] == pytest.approx(3.0) and rte["standard_error"] == pytest.approx(1.0)
    assert gain["mean_over_tasks"] == pytest.approx(3.5)
    assert gain["standard_error_over_tasks"] == pytest.approx((4 / 3 + 1) ** 0.5 / 2)
    against = summary["SPD default − GMP+KD, both with augmentation"]
    assert against["tasks"]["mrpc"]["mean"] == pytest.approx(2.349)
    assert "| mrpc (accuracy) | 80.6: +2.3 |" in (tmp_path / "summary.md").read_text()
    assert against["standard_error_over_tasks"] is None  # a single pair has no standard error
    assert "**+3.5 ± 0.8**" in completed.stdout
    assert (tmp_path / "summary.md").read_text().count("| SPD default: with − without augmentation |") == 3
    light = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "transfer_summary.py"), str(tmp_path / "a")]
        + ["--augment_rates", "0.05", "--output", str(tmp_path / "light.json")],
        capture_output=True,
        text=True,
    )
    assert light.returncode == 0, light.stderr
    light_gain = json.loads((tmp_path / "light.json").read_text())["comparisons"][
        "SPD default: with − without augmentation"
    ]
    assert [teacher["differences_by_seed"] for teacher in light_gain["tasks"]["mrpc"]["teachers"]] == [{"0": -40.0}]
    assert "rates 0.05" in (tmp_path / "light.md").read_text().splitlines()[0]


def test_augmentation_agreement_compares_the_teachers_outputs_row_by_row():
    import numpy as np

    with benchmark_script("augmentation_agreement.py") as module:
        before = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
        after = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]])
        result = module.compare(before, after)
        assert result["agreement"] == 0.75  # row 0 changed class
        assert result["class_1_share"] == 0.5 and result["class_1_flipped"] == pytest.approx(1 / 3)
        assert result["mean_top_probability"] == pytest.approx((0.6 + 0.7 + 0.8 + 0.9) / 4)
        scores = module.compare(np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 4.0]))
        assert scores["mean_absolute_change"] == pytest.approx(0.5) and 0.9 < scores["pearson"] < 1
        assert "agreement" not in scores and module.cell(scores, "agreement") == ""
