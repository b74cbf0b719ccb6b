"""The `coderig` command line: plan and render a stack file, run a front door, hand out and use
developer bundles, and stop idle GPUs. Every failure the user can fix prints as `coderig: <problem>`
(one line each) and exits 2 for invalid input, 1 for a refusal; never a traceback."""

from __future__ import annotations

import argparse
import os
import sys

from coderig.cli import client, frontdoor, ops, stack, usage
from coderig.core.errors import INVALID, REFUSED, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coderig", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (stack, frontdoor, client, ops, usage):
        module.add_commands(sub)
    return parser


def report(problems: list[str]) -> None:
    """The one printing path for user errors."""
    for line in problems:
        for part in line.splitlines() or [""]:
            print(f"coderig: {part}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        report(exc.problems)
        return exc.exit_code
    except BrokenPipeError:
        # `coderig … | head`: the reader left; say nothing more (stdout is gone)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (IsADirectoryError, NotADirectoryError, FileNotFoundError, PermissionError, FileExistsError) as exc:
        report([f"{exc.filename}: {exc.strerror}"])
        return INVALID
    except OSError as exc:  # a full disk, a read-only file system, a reset connection…
        report([f"{exc.filename}: {exc.strerror}" if exc.filename else f"{exc.strerror or exc}"])
        return REFUSED


if __name__ == "__main__":
    sys.exit(main())
