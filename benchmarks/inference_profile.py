#!/usr/bin/env python
"""Where a CPU forward pass spends its time, per kind of module: dense PyTorch fp32 against the native sparse path.

    python benchmarks/inference_profile.py [--model bert-base] [--sparsity 0.9] [--threads 1] [--calls 30]

The same models and inputs as ``inference.py``. Every leaf module's forward (the linears, embeddings, layer norms,
activations, dropouts) is wrapped in a ``torch.profiler.record_function`` named after its class; "attention and
the rest" is the whole forward minus those leaves (attention scores, softmax, residual adds, reshapes, Python).
Reports milliseconds per forward and shares; writes ``benchmarks/results/inference_profile.json``. Run it on an
otherwise idle machine: the shares are what it is for, the absolute times come from ``inference.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
from collections import defaultdict

import torch
from inference import build_model, inputs_for  # benchmarks/inference.py: the same models and inputs

from optimum_spd import to_sparse_inference
from optimum_spd.utils import write_json_atomically

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "inference_profile.json")
SHAPES = ((1, 16), (1, 128))
WHOLE = "whole forward"


def leaves(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules with no children: the ones whose forward does the work."""
    return [module for module in model.modules() if next(module.children(), None) is None]


def label_leaves(model: torch.nn.Module) -> None:
    """Wrap each leaf module's forward in a profiler range named after its class."""
    for module in leaves(model):
        forward, name = module.forward, type(module).__name__

        def labelled(*args, _forward=forward, _name=name, **kwargs):
            with torch.profiler.record_function(_name):
                return _forward(*args, **kwargs)

        module.forward = labelled


def profile(model: torch.nn.Module, inputs: dict[str, torch.Tensor], calls: int) -> dict[str, float]:
    """Milliseconds per forward for each leaf class, the whole forward, and what the leaves leave out."""
    with torch.inference_mode():
        for _ in range(3):  # warm-up: lazy initialisation, caches
            model(**inputs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(calls):
                with torch.profiler.record_function(WHOLE):
                    model(**inputs)
    leaf_names = {type(module).__name__ for module in leaves(model)}
    totals: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        if event.key in leaf_names or event.key == WHOLE:
            totals[event.key] += event.cpu_time_total / 1e3 / calls  # inclusive: a leaf's own ops
    totals["attention and the rest"] = totals[WHOLE] - sum(v for k, v in totals.items() if k != WHOLE)
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bert-base", "minilm"), default="bert-base")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dense = build_model(args.model, args.sparsity)
    native_int8 = copy.deepcopy(dense)
    to_sparse_inference(native_int8, min_sparsity=0.0, kernel="native", int8=True)
    variants = {"dense": dense, "native_int8": native_int8}
    for model in variants.values():
        label_leaves(model)
    rows = [
        {
            "variant": name,
            "batch": batch,
            "tokens": tokens,
            "ms_per_forward": profile(model, inputs_for(batch, tokens), args.calls),
        }
        for batch, tokens in SHAPES
        for name, model in variants.items()
    ]
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}
    write_json_atomically(
        {"model": args.model, "sparsity": args.sparsity, "threads": args.threads, "calls": args.calls,
         "machine": machine, "rows": rows},
        args.output,
    )  # fmt: skip
    columns = list(dict.fromkeys(k for row in rows for k in row["ms_per_forward"] if k != WHOLE))
    print(f"{args.model}, {args.sparsity:.0%} sparse, {args.threads} thread(s): ms per forward (share of the whole)")
    print("| variant | shape | " + " | ".join(columns) + f" | {WHOLE} |\n|" + " --- |" * (len(columns) + 3))
    for row in rows:
        times = row["ms_per_forward"]
        cells = [f"{times[k]:.2f} ({times[k] / times[WHOLE]:.0%})" if k in times else "–" for k in columns]
        print(
            f"| {row['variant']} | {row['batch']}x{row['tokens']} | " + " | ".join(cells) + f" | {times[WHOLE]:.2f} |"
        )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
