"""The ``optimum-spd`` console script: the same subcommands and flags as ``optimum-cli spd``."""

from __future__ import annotations

import argparse
import sys

from optimum.commands.register.register_spd import SUBCOMMAND_SPECS, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimum-spd", description="Inspect and convert optimum-spd sparse checkpoints."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in SUBCOMMAND_SPECS.items():
        add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args.command, args)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as error:
        print(f"optimum-spd {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
