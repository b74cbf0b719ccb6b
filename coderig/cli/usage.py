"""`coderig usage STACK`: who used the model, how much, and what the period's GPU time cost.

Where the record comes from: the gateway machine's relay keeps it (coderig.runtime.usage_record) in
a 0600 file on its host volume and serves it on its metrics listener (`GET /usage`), which binds
loopback (or an admin network) and is never routed through the gateway, so developers' keys cannot
read it. The operator points `--record` at a copy of that file, or at the listener's URL through an
SSH tunnel (`ssh -L 9300:127.0.0.1:9300 gpu1` then `--record http://127.0.0.1:9300/usage`); the
default is `.coderig/usage/STACK.json`.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import coderig.cli.usage_report as usage_report
from coderig.core import planner
from coderig.core.errors import INVALID, UserError
from coderig.frontdoor import is_loopback
from coderig.runtime import usage_record
from coderig.runtime.usage_record import Ledger, RecordError
from coderig.targets import load_stack_file


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("usage", help="per-developer requests, tokens and GPU cost from a stack's usage record")
    p.add_argument("stack", help="stack name (reads Pulumi.<stack>.yaml in the current directory)")
    p.add_argument("--config", help="stack file (default Pulumi.<stack>.yaml)")
    p.add_argument(
        "--record",
        metavar="FILE|URL",
        help="usage record file, or the relay's http://127.0.0.1:PORT/usage (default .coderig/usage/<stack>.json)",
    )
    p.add_argument("--since", default="7d", help="period: 30m, 24h, 7d, 2w … (default: %(default)s)")
    p.add_argument("--by", choices=("developer", "day"), default="developer", help="one row per (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="also draw tokens per developer per day over awake time")
    p.add_argument("--usd-per-hour", type=float, help="the stack's GPU price per hour (default: the plan's, on aws)")
    p.set_defaults(func=cmd_usage)


def read_record(source: str) -> Ledger:
    """The record from a file or the relay's loopback URL; UserError (one line) otherwise."""
    if source.startswith(("http://", "https://")):
        host = urllib.parse.urlsplit(source).hostname or ""
        if not is_loopback(host):
            raise UserError(f"--record {source}: the usage listener is reached on loopback only (an SSH tunnel)")
        try:
            with urllib.request.urlopen(source, timeout=10) as resp:  # noqa: S310 - loopback, checked above
                text = resp.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(f"--record {source}: cannot read the usage record ({exc})") from None
        try:
            return Ledger.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"--record {source}: corrupt usage record ({exc})") from None
    try:
        return usage_record.load(Path(source))
    except RecordError as exc:
        raise UserError(str(exc), INVALID) from None


def cmd_usage(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else Path(f"Pulumi.{args.stack}.yaml")
    if not config.exists():
        raise UserError(
            f"unknown stack {args.stack!r}: no {config} here (run in the stack's directory or give --config)"
        )
    try:
        since_s = usage_report.parse_since(args.since)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.usd_per_hour is not None and args.usd_per_hour < 0:
        raise UserError(f"--usd-per-hour {args.usd_per_hour}: must be >= 0")
    settings = load_stack_file(config)
    price = args.usd_per_hour if args.usd_per_hour is not None else planner.plan_stack(settings).usd_per_hour
    ledger = read_record(args.record or f".coderig/usage/{args.stack}.json")
    now = time.time()
    report = usage_report.build(ledger, args.stack, usage_report.Period(now - since_s, now), price, args.by)
    if args.plot:
        import coderig.cli.usage_plot as usage_plot  # noqa: PLC0415 - matplotlib only when a plot is asked for

        usage_plot.plot(report, Path(args.plot))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(usage_report.table(report, args.since))
    return 0
