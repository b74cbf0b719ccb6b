"""The `coderig` command line. Each feature module contributes its subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that expose `add_commands(subparsers)`; each command sets `func(args) -> int`.
COMMAND_MODULES: tuple[str, ...] = (
    "coderig.commands",
    "coderig.frontdoor_run",
    "coderig.onboard",
    "coderig.aws_ops",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coderig", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
