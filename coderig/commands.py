"""`coderig plan` and `coderig render`: check and review a stack file without Pulumi or credentials."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coderig import planner, render
from coderig.settings import SettingsError, load_stack_file, stack_name_from_path


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="capacity plan for a stack file: does the model fit, how many requests")
    p.add_argument("--config", required=True, help="Pulumi.<stack>.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)

    r = sub.add_parser("render", help="write every file the stack would deploy into a directory")
    r.add_argument("--config", required=True, help="Pulumi.<stack>.yaml")
    r.add_argument("--out", required=True, help="output directory")
    r.set_defaults(func=cmd_render)


def _load(path: str):
    try:
        return load_stack_file(path)
    except SettingsError as exc:
        print(f"coderig: invalid stack config {path}:", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return None


def cmd_plan(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    p = planner.plan_stack(settings)
    if args.json:
        print(json.dumps({"stack": stack_name_from_path(args.config), **p.summary()}, indent=2))
    else:
        print(render.format_plan(p, stack_name_from_path(args.config)))
    if not p.fits:
        print(f"coderig: {p.reason}" + (f"; {p.suggestion}" if p.suggestion else ""), file=sys.stderr)
        return 1
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    stack = stack_name_from_path(args.config)
    p = planner.plan_stack(settings)
    if not p.fits:
        print(f"coderig: {p.reason}" + (f"; {p.suggestion}" if p.suggestion else ""), file=sys.stderr)
        return 1
    written = render.write_bundle(render.render_stack(settings, stack), Path(args.out))
    for path in written:
        print(path)
    return 0
