"""`optimum-cli spd ...`: optimum-spd's plug-in for the Optimum CLI.

optimum-cli imports every module of the namespace ``optimum.commands.register`` at each start, so this file imports
only the standard library and optimum's command base classes at module level; the work (torch, transformers,
optimum_spd) is imported inside ``run()``. The ``optimum-spd`` console script is :func:`main` below, here rather than
under ``optimum_spd`` (whose ``__init__`` imports torch and transformers to register the model classes), so that
``optimum-spd --help`` starts as fast as ``optimum-cli spd --help``; both parse exactly the same flags.
"""

import math
import sys
from argparse import ArgumentParser, ArgumentTypeError

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo


def _add_hub_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub repository.")
    parser.add_argument("--cache_dir", default=None, help="Where Hub files are cached.")
    parser.add_argument("--local_files_only", action="store_true", help="Never reach the network.")


def _tolerance(text: str) -> float:
    """``--atol``: a finite number >= 0 (``nan`` would make every comparison pass)."""
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a number; give a tolerance such as 1e-5.") from None
    if not math.isfinite(value) or value < 0:
        raise ArgumentTypeError(f"{text!r} must be a finite number >= 0, such as 1e-5.")
    return value


def _add_overwrite_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into a non-empty directory that is not a checkpoint (its model, tokenizer and card "
        "files are replaced, everything else is kept).",
    )


def add_info_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("path", help="Compressed (or dense) checkpoint: local directory or Hub repo id.")
    parser.add_argument("--tensors", action="store_true", help="Also list every pruned tensor.")
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    _add_hub_arguments(parser)


def add_compress_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("source", help="Vanilla transformers checkpoint directory of a pruned model.")
    parser.add_argument("output_dir", help="Where to write the compressed checkpoint (replaced atomically).")
    parser.add_argument(
        "--storage_dtype",
        choices=("float16", "bfloat16"),
        default=None,
        help="Store values in half precision (lossy rounding; restored to the model dtype on load).",
    )
    parser.add_argument("--max_shard_size", type=int, default=None, help="Bytes per safetensors shard.")
    _add_overwrite_argument(parser)


def add_decompress_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("source", help="Compressed SPD checkpoint: local directory or Hub repo id.")
    parser.add_argument("output_dir", help="Where to write the vanilla dense checkpoint.")
    _add_overwrite_argument(parser)
    _add_hub_arguments(parser)


def add_verify_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("path", help="Compressed SPD checkpoint: local directory or Hub repo id.")
    parser.add_argument(
        "--reference",
        default=None,
        help="Checkpoint directory with the same weights (e.g. the decompressed copy) whose logits "
        "must match; a different model, such as the dense teacher, will not.",
    )
    parser.add_argument("--atol", type=_tolerance, default=1e-5, help="Largest allowed absolute logit difference.")
    _add_hub_arguments(parser)


def _add_card_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--license", default=None, help="License for the card (default: the base model's, if known).")
    parser.add_argument("--tags", nargs="*", default=None, help="Extra card tags.")


def add_card_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "path", help="Compressed SPD checkpoint directory; README.md and the plot are written into it."
    )
    parser.add_argument("--repo_id", default=None, help="Repo id shown in the card's loading snippet.")
    _add_card_arguments(parser)


def add_push_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("path", help="Compressed SPD checkpoint directory (left untouched).")
    parser.add_argument("repo_id", help="Hub repository, e.g. user/bert-mrpc-spd90.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Branch to push to.")
    parser.add_argument("--commit_message", default="Upload sparse model (optimum-spd)")
    parser.add_argument("--keep_card", action="store_true", help="Upload the folder's README.md as is.")
    _add_card_arguments(parser)


def _opset(text: str) -> int:
    """``--opset``: an ONNX opset torch's exporter writes (18 is its own; others are converted from it)."""
    if not text.isdigit() or not 17 <= int(text) <= 23:
        raise ArgumentTypeError(f"{text!r}: give an ONNX opset between 17 and 23, such as 18.")
    return int(text)


def add_export_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("source", help="Compressed SPD checkpoint (directory or Hub repo id) or a dense directory.")
    parser.add_argument("output_dir", help="Where to write model.onnx, the tokenizer, config.json and the report.")
    parser.add_argument("--int8", action="store_true", help="Also write ONNX Runtime's dynamic int8 model_int8.onnx.")
    parser.add_argument("--opset", type=_opset, default=18, help="ONNX opset (default 18).")
    parser.add_argument(
        "--atol", type=_tolerance, default=1e-4, help="Largest allowed |ONNX fp32 - PyTorch| output difference."
    )
    parser.add_argument(
        "--task", default=None, help="A GLUE task (mrpc, sst2, stsb...): also report each variant's dev metric."
    )
    parser.add_argument("--data_dir", default=None, help="Local GLUE folder for --task (offline).")
    _add_overwrite_argument(parser)
    _add_hub_arguments(parser)


def _hub_kwargs(args) -> dict:
    return {"revision": args.revision, "cache_dir": args.cache_dir, "local_files_only": args.local_files_only}


def run_command(name: str, args) -> int:
    """Run subcommand ``name`` with parsed ``args``; returns the exit code."""
    from optimum_spd.commands import actions

    if name == "info":
        return actions.info(args.path, show_tensors=args.tensors, as_json=args.json, **_hub_kwargs(args))
    if name == "compress":
        return actions.run_compress(
            args.source, args.output_dir, args.storage_dtype, args.max_shard_size, args.overwrite
        )
    if name == "decompress":
        return actions.run_decompress(args.source, args.output_dir, args.overwrite, **_hub_kwargs(args))
    if name == "verify":
        return actions.verify(args.path, args.reference, args.atol, **_hub_kwargs(args))
    if name == "export":
        return actions.export(
            args.source,
            args.output_dir,
            int8=args.int8,
            opset=args.opset,
            atol=args.atol,
            task=args.task,
            data_dir=args.data_dir,
            overwrite=args.overwrite,
            **_hub_kwargs(args),
        )
    if name == "card":
        return actions.card(args.path, repo_id=args.repo_id, license=args.license, tags=args.tags)
    if name == "push":
        return actions.push(
            args.path,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            keep_card=args.keep_card,
            license=args.license,
            tags=args.tags,
        )
    raise ValueError(f"unknown spd command {name!r}")


SUBCOMMAND_SPECS = {
    "info": ("Per-layer and whole-model sparsity and sizes of a checkpoint.", add_info_arguments),
    "compress": ("Write a pruned dense checkpoint in the compressed sparse format.", add_compress_arguments),
    "decompress": (
        "Write a compressed checkpoint as a vanilla transformers one (zeros stored).",
        add_decompress_arguments,
    ),
    "verify": ("Reload a compressed checkpoint and compare its logits.", add_verify_arguments),
    "export": (
        "Export a checkpoint to ONNX Runtime (fp32, optionally dynamic int8), verified against PyTorch.",
        add_export_arguments,
    ),
    "card": (
        "Render README.md (model card) and the training plot from a checkpoint folder's files.",
        add_card_arguments,
    ),
    "push": ("Upload a compressed checkpoint with its model card to the Hub in one commit.", add_push_arguments),
}


def _make_subcommand(name: str) -> type:
    help_text, add_arguments = SUBCOMMAND_SPECS[name]

    class SPDSubcommand(BaseOptimumCLICommand):
        COMMAND = CommandInfo(name=name, help=help_text)

        @staticmethod
        def parse_args(parser: ArgumentParser) -> None:
            add_arguments(parser)

        def run(self):
            code = run_command(name, self.args)
            if code:
                raise SystemExit(code)

    SPDSubcommand.__name__ = SPDSubcommand.__qualname__ = f"SPD{name.capitalize()}Command"
    return SPDSubcommand


class SPDCommand(BaseOptimumCLICommand):
    COMMAND = CommandInfo(name="spd", help="Sparse Progressive Distillation checkpoints (optimum-spd).")
    SUBCOMMANDS = tuple(
        CommandInfo(name=name, help=spec[0], subcommand_class=_make_subcommand(name))
        for name, spec in SUBCOMMAND_SPECS.items()
    )


REGISTER_COMMANDS = [SPDCommand]


def build_parser() -> ArgumentParser:
    """The ``optimum-spd`` console script's parser: the same subcommands and flags as ``optimum-cli spd``."""
    parser = ArgumentParser(prog="optimum-spd", description="Inspect and convert optimum-spd sparse checkpoints.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in SUBCOMMAND_SPECS.items():
        add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    """``optimum-spd ...``: one line on stderr and exit code 2 for an error the user can fix, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return run_command(args.command, args)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as error:
        print(f"optimum-spd {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
