"""`coderig idle|stop|start STACK`: parse, read the stack file once, hand it to its target's commands
(coderig.targets.REGISTRY); a target kind without operations is told what to do instead."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coderig.core.errors import REFUSED, UserError
from coderig.core.settings import StackSettings
from coderig.runtime.aws_reaper import TAG_STACK
from coderig.targets import REGISTRY, load_stack_file, operations


def stack_settings(args: argparse.Namespace) -> StackSettings | None:
    """The validated stack file (--config, else Pulumi.<stack>.yaml here); None when there is none
    (the aws commands then work from tags and --region)."""
    path = Path(args.config) if args.config else Path(f"Pulumi.{args.stack}.yaml")
    if not path.exists() and not args.config:
        return None
    return load_stack_file(path)


def no_ops_message(kind: str, command: str) -> str:
    """Why `coderig idle|stop|start` does nothing on this kind, and what to do instead."""
    able = [k for k, t in REGISTRY.items() if t.operations is not None]
    kinds = ", ".join(able[:-1]) + f" and {able[-1]}" if len(able) > 1 else able[0]
    how = "; ".join(f"{k}: {REGISTRY[k].idle_mechanism}" for k in able if REGISTRY[k].idle_mechanism)
    return (
        f"coderig:target.kind is {kind}: `coderig {command}` works on {kinds} stacks only (the kinds whose GPU "
        f"capacity coderig stops and starts, by hand or by coderig:idle: {how}); on this {kind} stack, "
        f"{REGISTRY[kind].instead}"
    )


def run_command(args: argparse.Namespace) -> int:
    settings = stack_settings(args)
    kind = settings.target.kind if settings is not None else "aws"
    ops = REGISTRY[kind].operations
    if ops is None:
        raise UserError(no_ops_message(kind, args.command), REFUSED)
    return operations.run(ops, args.command, args, settings)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("stack", help="stack name (reads Pulumi.<stack>.yaml in the current directory)")
    p.add_argument("--config", help="stack file (default Pulumi.<stack>.yaml)")
    p.add_argument("--region", help="aws: region (default coderig:target.region in the stack file)")
    p.add_argument("--tag-key", help=f"aws: instance tag that names the stack (default {TAG_STACK})")
    p.add_argument("--tag-value", help="aws: its value (default the stack name)")
    p.add_argument("--port", type=int, help="aws: gateway port (default coderig:gateway.port, 8443)")
    p.add_argument("--ssh-key", help="ssh: private key for the first host (default: your SSH agent/identity)")
    p.set_defaults(func=run_command)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("idle", help="show, per node or replica, what the idle policy would do")
    _common(p)
    p.add_argument("--stop-after-minutes", type=float, help="override coderig:idle.stopAfterMinutes")
    p.add_argument("--json", action="store_true")

    p = subparsers.add_parser("stop", help="stop a stack's GPU nodes or scale its model to zero now (weights kept)")
    _common(p)
    p.add_argument("--force", action="store_true", help="stop even with requests running")
    p.add_argument("--dry-run", action="store_true")

    p = subparsers.add_parser("start", help="start a stack's GPU nodes (or scale its model back) and wait until ready")
    _common(p)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for readiness (default 1800)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between /healthz polls")
    p.add_argument("--health-url", help="readiness URL (default https://<public ip>:<port>/healthz)")
    p.add_argument("--ca-file", help="CA bundle to verify the gateway's certificate")
    p.add_argument("--no-wait", action="store_true", help="return once the instances run")
    p.add_argument("--dry-run", action="store_true")
