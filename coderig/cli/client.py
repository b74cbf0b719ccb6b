"""`coderig bundle` (ops), `coderig onboard` and `coderig smoke` (developer): argument parsing only."""

from __future__ import annotations

import argparse

from coderig.client import handout, onboard, smoke


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = subparsers.add_parser("bundle", help="(ops) write developers' bundle files (0600) from stack outputs")
    b.add_argument("--stack", required=True, help="Pulumi stack name")
    who = b.add_mutually_exclusive_group(required=True)
    who.add_argument("--developer", help="a name listed in coderig:developers (with --out)")
    who.add_argument("--all", action="store_true", help="every developer of the stack (with --out-dir)")
    b.add_argument("--out", metavar="FILE", help="bundle file to write (mode 0600)")
    b.add_argument(
        "--out-dir", metavar="DIR", help="with --all: DIR/<developer>.json, each 0600; revoked developers' removed"
    )
    b.add_argument(
        "--outputs", metavar="FILE", help="saved `pulumi stack output --json --show-secrets` (default: run pulumi)"
    )
    b.add_argument("--cwd", help="Pulumi project directory for `pulumi stack output` (default: current)")
    b.set_defaults(func=handout.cmd_bundle)

    o = subparsers.add_parser("onboard", help="(developer) configure Claude Code, Codex and opencode from a bundle")
    o.add_argument("bundle", metavar="BUNDLE", help="bundle file from `coderig bundle`")
    o.add_argument("--client", choices=[*onboard.CLIENTS, "all"], default="all", help="which client (default: all)")
    o.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    o.add_argument("--home", metavar="DIR", help="home directory to configure (default: $HOME)")
    o.set_defaults(func=onboard.cmd_onboard)

    s = subparsers.add_parser("smoke", help="(developer) check the endpoint of a bundle the way the agents use it")
    s.add_argument("bundle", metavar="BUNDLE", help="bundle file from `coderig bundle`")
    s.add_argument("--timeout", type=float, default=120, help="seconds per request (default: %(default)s)")
    s.set_defaults(func=smoke.cmd_smoke)
