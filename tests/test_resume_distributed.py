"""Exact resume after a SIGKILL in each stage, and SPD under torchrun / accelerate launch (2 CPU processes, gloo)."""

import json
import os
import random
import shutil
import socket
import subprocess
import sys

import pytest
from distributed.spd_run import digest
from transformers import AutoModelForSequenceClassification

import optimum_spd  # noqa: F401  (registers the spd_* model types with the Auto classes)

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed", "spd_run.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run(command, timeout=600):
    completed = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)
    return completed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def records(output_dir):
    with open(os.path.join(output_dir, "records.json")) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("spd") / "uninterrupted")
    completed = run([sys.executable, SCRIPT, output, "--save_steps", "1"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    return records(output)


@pytest.mark.slow
def test_sigkill_in_each_stage_then_resume_is_bit_exact(uninterrupted, tmp_path):
    # 16 steps, paper preset: stage I = steps 0-7 (pruning ends at 7), stage II = 8-10, stage III = 11-15.
    chooser = random.Random(1234)
    for stage, (first, last) in {"I": (2, 7), "II": (8, 10), "III": (11, 14)}.items():
        kill_at = chooser.randint(first, last)
        output = str(tmp_path / f"stage-{stage}")
        killed = run([sys.executable, SCRIPT, output, "--save_steps", "1", "--kill_at_step", str(kill_at)])
        assert killed.returncode == -9, f"stage {stage}: the run was not killed ({killed.returncode})"
        assert not os.path.exists(os.path.join(output, "records.json"))
        resumed = run(
            [
                sys.executable,
                SCRIPT,
                output,
                "--save_steps",
                "1",
                "--resume",
                os.path.join(output, f"checkpoint-{kill_at}"),
            ]
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        after = records(output)
        expected = [r for r in uninterrupted["ranks"][0] if r["step"] > kill_at]
        assert after["ranks"][0] == expected, f"stage {stage}: steps after {kill_at} differ"
        assert after["final_weights"] == uninterrupted["final_weights"]
        # log_history resumes from the checkpoint's: the whole loss trajectory must be the uninterrupted one.
        assert after["losses"] == uninterrupted["losses"] and len(after["losses"]) == 16


@pytest.mark.slow
def test_bf16_sigkill_then_resume_is_bit_exact(tmp_path):
    """bf16 autocast (fp32 master weights): a run killed in stage I resumes to the uninterrupted bf16 run exactly."""
    full_dir, killed_dir = str(tmp_path / "bf16"), str(tmp_path / "bf16-killed")
    completed = run([sys.executable, SCRIPT, full_dir, "--save_steps", "1", "--bf16"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    full = records(full_dir)
    killed = run([sys.executable, SCRIPT, killed_dir, "--save_steps", "1", "--bf16", "--kill_at_step", "5"])
    assert killed.returncode == -9
    resumed = run(
        [
            sys.executable,
            SCRIPT,
            killed_dir,
            "--save_steps",
            "1",
            "--bf16",
            "--resume",
            os.path.join(killed_dir, "checkpoint-5"),
        ]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = records(killed_dir)
    assert after["ranks"][0] == [r for r in full["ranks"][0] if r["step"] > 5]  # masks and weights, step by step
    assert after["final_weights"] == full["final_weights"] and after["losses"] == full["losses"]


def check_distributed(output, launcher):
    completed = run(launcher + [SCRIPT, output])
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = records(output)
    assert result["world_size"] == 2
    rank0, rank1 = result["ranks"]
    assert len(rank0) == 16 and rank0 == rank1  # same draws, masks and weights on both ranks at every step
    assert any(not all(r["decisions"]) for r in rank0) and any(all(r["decisions"]) for r in rank0)
    loaded = AutoModelForSequenceClassification.from_pretrained(
        os.path.join(output, "final"), attn_implementation="eager"
    )
    assert digest(list(loaded.parameters())) == result["final_weights"]  # the rank-0 save is the trained model
    return result


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]  # + a port


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    """One checked 2-process run under torchrun, shared by the tests that resume from it or compare with it."""
    output = str(tmp_path_factory.mktemp("torchrun") / "ddp")
    return output, check_distributed(output, TORCHRUN + [str(free_port())])


@pytest.mark.slow
def test_torchrun_two_processes_and_resume(torchrun_run, tmp_path):
    full_dir, full = torchrun_run
    resumed_dir = str(tmp_path / "ddp-resumed")
    shutil.copytree(os.path.join(full_dir, "checkpoint-8"), os.path.join(resumed_dir, "checkpoint-8"))
    launcher = TORCHRUN + [str(free_port())]
    completed = run(launcher + [SCRIPT, resumed_dir, "--resume", os.path.join(resumed_dir, "checkpoint-8")])
    assert completed.returncode == 0, completed.stderr[-4000:]
    resumed = records(resumed_dir)
    assert resumed["ranks"][0] == resumed["ranks"][1] == [r for r in full["ranks"][0] if r["step"] > 8]
    assert resumed["final_weights"] == full["final_weights"]


@pytest.mark.slow
def test_torchrun_with_transfer_data_all_reduces_its_gradients(torchrun_run, tmp_path):
    """Each rank distils its own transfer rows; DDP must still average those gradients, or the ranks drift apart."""
    output = str(tmp_path / "ddp-transfer")
    completed = run(TORCHRUN + [str(free_port()), SCRIPT, output, "--transfer"])
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = records(output)
    rank0, rank1 = result["ranks"]
    drawn = [(a["transfer_rows"], b["transfer_rows"]) for a, b in zip(rank0, rank1) if a["transfer_rows"]]
    assert len(drawn) >= 8 and all(rows0 != rows1 for rows0, rows1 in drawn)  # different rows on each rank...
    assert [(r["masks"], r["weights"]) for r in rank0] == [(r["masks"], r["weights"]) for r in rank1]  # ...same model
    _, without = torchrun_run  # the same run without transfer data
    assert without["final_weights"] != result["final_weights"]  # the transfer rows trained it


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path):
    # On a machine without GPUs, `--multi_gpu` starts torch.distributed processes that run on the CPU with gloo.
    # (`--cpu --num_processes 2` would start ONE process: accelerate only spreads CPU runs over MPI.)
    # Through this interpreter, not PATH: the suite must pass with a venv's python that is not activated.
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
    ]
    check_distributed(str(tmp_path / "accelerate"), launcher)
