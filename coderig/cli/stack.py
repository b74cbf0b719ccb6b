"""`coderig plan` and `coderig render`: check and review a stack file without Pulumi or credentials."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coderig.core import planner
from coderig.core.errors import REFUSED, UserError
from coderig.core.files import FileSet, write_file, write_files
from coderig.core.settings import StackSettings
from coderig.core.stack_file import stack_name_from_path
from coderig.targets import REGISTRY, load_stack_file, plan_report, plan_summary, render_stack
from coderig.targets.compose.idle import plan_note as idle_plan_note

MANIFEST = ".coderig-render"  # in the --out directory: the files the last render wrote


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="capacity plan for a stack file: does the model fit, how many requests")
    p.add_argument("--config", required=True, help="Pulumi.<stack>.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)

    r = sub.add_parser("render", help="write every file the stack would deploy into a directory")
    r.add_argument("--config", required=True, help="Pulumi.<stack>.yaml")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument(
        "--force",
        action="store_true",
        help=f"render into a non-empty directory: replace coderig's own output there (listed in {MANIFEST}), "
        "removing what the new render does not write; other files are kept",
    )
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
        print(json.dumps(plan_summary(settings, stack, p), indent=2))
    else:
        print(plan_report(settings, stack, p))
        extra = REGISTRY[settings.target.kind].plan_lines
        if extra is not None and p.fits:
            print("\n".join(extra(settings, p)))
        note = idle_plan_note(settings)  # ssh/local: what idling does there
        if note:
            print(note)
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
    out = Path(args.out)
    bundle = render_stack(settings, stack, p)
    for path in replace_rendered(bundle, out, force=args.force):
        print(path)
    return 0


def _previous(out: Path) -> list[str]:
    """What the last render into `out` wrote (relative paths), from its manifest."""
    try:
        lines = (out / MANIFEST).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line for line in lines if line and not line.startswith("#")]


def _inside(out: Path, rel: str) -> Path | None:
    """`out/rel` when rel is a plain relative path inside out (a manifest is not trusted blindly)."""
    if rel.startswith("/") or ".." in Path(rel).parts:
        return None
    return out / rel


def replace_rendered(bundle: FileSet, out: Path, *, force: bool) -> list[Path]:
    """Write `bundle` into `out`. A non-empty `out` is refused unless `force`; then only coderig's own
    output is replaced: files the previous render listed in MANIFEST and this one does not write are
    removed (and directories they leave empty); any other file is kept."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(
            f"--out {out} is not empty: pass --force to replace coderig's own output there (the files listed in "
            f"{out / MANIFEST}; other files are kept), or choose an empty directory",
            REFUSED,
        )
    for rel in _previous(out):
        old = _inside(out, rel)
        if old is None or rel in bundle or not (old.is_file() or old.is_symlink()):
            continue
        old.unlink()
        for parent in old.parents:
            if parent == out or not parent.is_relative_to(out) or any(parent.iterdir()):
                break
            parent.rmdir()
    written = write_files(bundle, out)
    manifest = "# written by `coderig render`; `--force` replaces exactly these files\n"
    write_file(out / MANIFEST, manifest + "".join(f"{rel}\n" for rel in sorted(bundle)), 0o644)
    return written
