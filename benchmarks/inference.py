#!/usr/bin/env python
"""CPU inference of a 90%-sparse model: dense PyTorch, the CSR path, ONNX Runtime fp32 and int8, torch int8, bf16.

    python benchmarks/inference.py [--model bert-base] [--sparsity 0.9] [--threads 1 2] [--rounds 7]

BERT-base shapes are built locally from a ``BertConfig`` (random weights, seed 0, every Transformer-block linear
magnitude-pruned per matrix to ``--sparsity``); ``--model minilm`` uses the real pretrained MiniLM-L6. For each
thread count, every variant runs every shape (batch x tokens: 1x16, 1x128, 8x128) in turn, round after round, in
this one process, so a drift of the machine's speed hits all variants alike; the first round is a warm-up and is
dropped, the median of the others is reported with its ratio to dense PyTorch fp32. ``max diff`` is the largest
absolute logit difference to dense PyTorch fp32 over the timed inputs (padding included).

Variants: ``dense`` (PyTorch fp32), ``csr`` (``to_sparse_inference``: pruned linears as CSR, int32 indices),
``csr_int64`` (the same with torch's default int64 indices, for comparison), ``native`` and ``native_int8``
(``to_sparse_inference(kernel="native")``: this package's C kernel, uint16 indices, fp32 or int8 values),
``native_compiled`` and ``native_int8_compiled`` (the same models through ``torch.compile``, inductor, one compiled
graph per shape and thread count, compiled in the dropped warm-up round), ``ort_fp32`` and ``ort_int8`` (the
``optimum-spd export`` graphs, ONNX Runtime CPU, ``ORT_ENABLE_ALL``; int8 = dynamic quantisation, per-channel int8
weights), ``torch_int8`` (``torch.ao.quantization.quantize_dynamic`` of the linears) and ``bf16`` (autocast).

Prints one table and writes ``benchmarks/results/inference.json``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch
from compression import bert_base, minilm, prune  # benchmarks/compression.py: the same models, built alike
from transformers import BertForSequenceClassification

from optimum_spd import compress, sparsity_report, to_sparse_inference
from optimum_spd.export import export_onnx, session_for
from optimum_spd.utils import write_json_atomically

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "inference.json")
SHAPES = ((1, 16), (1, 128), (8, 128))
VARIANTS = (
    "dense",
    "csr",
    "csr_int64",
    "native",
    "native_int8",
    "native_compiled",
    "native_int8_compiled",
    "ort_fp32",
    "ort_int8",
    "torch_int8",
    "bf16",
)


def build_model(name: str, sparsity: float) -> BertForSequenceClassification:
    """The model to time (the same builders as compression.py), pruned per matrix by magnitude."""
    model = prune((bert_base if name == "bert-base" else minilm)(), sparsity)
    model.set_attn_implementation("eager")  # what the ONNX export traces: every variant runs the same attention
    return model


def inputs_for(batch: int, tokens: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch * 1000 + tokens)
    ids = torch.randint(1000, 20000, (batch, tokens), generator=generator)
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[-1, tokens // 2 :] = 0  # one padded row: the mask path is timed too
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def torch_runner(model, autocast: bool = False):
    def run(inputs):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(**inputs).logits.float().numpy()

    return run


def ort_runner(path: str, threads: int):
    session = session_for(path, threads=threads)
    names = [i.name for i in session.get_inputs()]

    def run(inputs):
        return session.run(["logits"], {name: inputs[name].numpy() for name in names})[0]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bert-base", "minilm"), default="bert-base")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (+1 warm-up round, dropped)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()

    dense = build_model(args.model, args.sparsity)
    workdir = tempfile.mkdtemp(prefix="spd-inference-")
    compress(dense, os.path.join(workdir, "sparse"))
    export = export_onnx(os.path.join(workdir, "sparse"), os.path.join(workdir, "onnx"), int8=True)
    csr_model = copy.deepcopy(dense)
    to_sparse_inference(csr_model, min_sparsity=0.0)
    csr64_model = copy.deepcopy(dense)
    to_sparse_inference(csr64_model, min_sparsity=0.0, index_dtype=torch.int64)
    native_models = {}
    for name, int8 in (("native", False), ("native_int8", True)):
        native_models[name] = copy.deepcopy(dense)
        to_sparse_inference(native_models[name], min_sparsity=0.0, kernel="native", int8=int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        int8_model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(dense), {torch.nn.Linear}, torch.qint8)

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch._dynamo.reset()  # inductor's CPU code is built for the thread count it was compiled under
        compiled = {f"{name}_compiled": torch.compile(model, dynamic=False) for name, model in native_models.items()}
        runners = {
            "dense": torch_runner(dense),
            "csr": torch_runner(csr_model),
            "csr_int64": torch_runner(csr64_model),
            **{name: torch_runner(model) for name, model in native_models.items()},
            **{name: torch_runner(model) for name, model in compiled.items()},
            "ort_fp32": ort_runner(os.path.join(workdir, "onnx", "model.onnx"), threads),
            "ort_int8": ort_runner(os.path.join(workdir, "onnx", "model_int8.onnx"), threads),
            "torch_int8": torch_runner(int8_model),
            "bf16": torch_runner(dense, autocast=True),
        }
        runners = {name: runners[name] for name in ["dense", *args.variants] if name in runners}
        samples = {(name, shape): [] for name in runners for shape in SHAPES}
        diffs = {(name, shape): 0.0 for name in runners for shape in SHAPES}
        references = {shape: runners["dense"](inputs_for(*shape)) for shape in SHAPES}
        for round_index in range(args.rounds + 1):
            for shape in SHAPES:
                inputs = inputs_for(*shape)
                for name, run in runners.items():
                    started = time.perf_counter()
                    logits = run(inputs)
                    elapsed = time.perf_counter() - started
                    if round_index:  # round 0 warms caches and lazy initialisation up
                        samples[name, shape].append(elapsed)
                    diffs[name, shape] = max(diffs[name, shape], float(np.abs(logits - references[shape]).max()))
            print(f"threads {threads}: round {round_index}/{args.rounds} done", flush=True)
        for shape in SHAPES:
            dense_ms = statistics.median(samples["dense", shape]) * 1e3
            for name in runners:
                ms = statistics.median(samples[name, shape]) * 1e3
                rows.append(
                    {
                        "threads": threads,
                        "batch": shape[0],
                        "tokens": shape[1],
                        "variant": name,
                        "median_ms": ms,
                        "speedup_vs_dense": dense_ms / ms,
                        "max_logit_diff": diffs[name, shape],
                        "samples_ms": [s * 1e3 for s in samples[name, shape]],
                    }
                )

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": export["onnxruntime_version"],
    }
    write_json_atomically(
        {
            "model": args.model,
            "sparsity": sparsity_report(dense).prunable_sparsity,
            "rounds": args.rounds,
            "machine": machine,
            "onnx_files_mb": export["files_mb"],
            "rows": rows,
        },
        args.output,
    )
    print(f"\n{args.model}, {args.sparsity:.0%} sparse, speed-up over dense PyTorch fp32 (median ms in brackets)")
    header = "| variant | threads | " + " | ".join(f"{b}x{t}" for b, t in SHAPES) + " | max logit diff |"
    print(header + "\n|" + " --- |" * (3 + len(SHAPES)))
    for threads in args.threads:
        for name in runners:
            cells = [
                next(r for r in rows if (r["threads"], r["variant"], r["batch"], r["tokens"]) == (threads, name, *s))
                for s in SHAPES
            ]
            print(
                f"| {name} | {threads} | "
                + " | ".join(f"{c['speedup_vs_dense']:.2f}x ({c['median_ms']:.1f})" for c in cells)
                + f" | {max(c['max_logit_diff'] for c in cells):.1e} |"
            )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
