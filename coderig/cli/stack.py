"""`coderig plan` and `coderig render`: check and review a stack file without Pulumi or credentials."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coderig.core import planner
from coderig.core.errors import REFUSED, UserError
from coderig.core.files import write_bundle
from coderig.core.settings import StackSettings, load_stack_file, stack_name_from_path
from coderig.targets import render_stack


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="capacity plan for a stack file: does the model fit, how many requests")
    p.add_argument("--config", required=True, help="Pulumi.<stack>.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)

    r = sub.add_parser("render", help="write every file the stack would deploy into a directory")
    r.add_argument("--config", required=True, help="Pulumi.<stack>.yaml")
    r.add_argument("--out", required=True, help="output directory")
    r.set_defaults(func=cmd_render)


def _refusal(p: planner.Plan) -> UserError:
    return UserError(p.reason + (f"; {p.suggestion}" if p.suggestion else ""), REFUSED)


def _warn(settings: StackSettings) -> None:
    """Accepted but risky settings: one `coderig: warning:` line each, on stderr (stdout stays the plan)."""
    for line in settings.warnings:
        print(f"coderig: warning: {line}", file=sys.stderr)


def cmd_plan(args: argparse.Namespace) -> int:
    settings = load_stack_file(args.config)
    _warn(settings)
    stack = stack_name_from_path(args.config)
    p = planner.plan_stack(settings)
    if args.json:
        print(json.dumps({"stack": stack, **p.summary()}, indent=2))
    else:
        print(planner.format_plan(p, stack))
    if not p.fits:
        raise _refusal(p)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    settings = load_stack_file(args.config)
    _warn(settings)
    stack = stack_name_from_path(args.config)
    p = planner.plan_stack(settings)
    if not p.fits:
        raise _refusal(p)
    for path in write_bundle(render_stack(settings, stack), Path(args.out)):
        print(path)
    return 0
