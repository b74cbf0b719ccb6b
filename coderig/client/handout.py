"""`coderig bundle` (ops): developer bundles from the stack outputs.

One developer (`--developer NAME --out FILE`) or every developer at once (`--all --out-dir DIR`), from
one `pulumi stack output --json --show-secrets --stack STACK` (or a saved copy of it: `--outputs`).
Each file is a developer's credential: written 0600, and never printed. With `--all`, a file in DIR
that is a bundle of this stack for a developer no longer in the outputs (revoked) is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from coderig.client import bundle as clients
from coderig.client import configs
from coderig.core.errors import UserError
from coderig.core.files import read_json_file, write_file
from coderig.core.settings import DEVELOPER_RE

STATE_DIR = ".pulumi-state"  # the project-local backend `up.sh` creates (keep the two in step)


def project_backend_env(cwd: str | None) -> dict[str, str]:
    """The environment for `pulumi`: the project-local file backend and passphrase `up.sh` uses,
    unless the caller already chose a backend or passphrase."""
    env = dict(os.environ)
    state = Path(cwd or ".").resolve() / STATE_DIR
    if "PULUMI_BACKEND_URL" not in env and state.is_dir():
        env["PULUMI_BACKEND_URL"] = f"file://{state}"
        passphrase = state / "passphrase"
        if not ({"PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"} & set(env)) and passphrase.exists():
            env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    return env


def pulumi_outputs(stack: str, cwd: str | None) -> dict[str, Any]:
    exe = shutil.which("pulumi")
    if not exe:
        raise UserError(
            "pulumi not found on PATH. Run this where the Pulumi CLI and the stack's backend are, or save the "
            f"outputs there with `pulumi stack output --json --show-secrets --stack {stack} > outputs.json` "
            "(a secret file: chmod 600) and pass --outputs outputs.json"
        )
    proc = subprocess.run(
        [exe, "stack", "output", "--json", "--show-secrets", "--stack", stack],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        env=project_backend_env(cwd),
    )
    if proc.returncode != 0:
        raise UserError(f"`pulumi stack output --stack {stack}` failed:\n{proc.stderr.strip()}")
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise UserError("`pulumi stack output --json` did not print JSON") from None
    if not isinstance(data, dict):
        raise UserError("`pulumi stack output --json` did not print an object")
    return data


def saved_outputs(source: Path) -> dict[str, Any]:
    outputs = read_json_file(source)
    if not isinstance(outputs, dict):
        raise UserError(f"{source}: expected the object `pulumi stack output --json` prints")
    try:
        mode = stat.S_IMODE(source.stat().st_mode)
    except OSError:
        mode = 0
    if mode & 0o077:
        print(
            f"coderig bundle: warning: {source} holds every developer's token and is readable by "
            f"others (mode {mode:o}); chmod 600 it",
            file=sys.stderr,
        )
    return outputs


def developers(outputs: dict[str, Any]) -> list[str]:
    """Every developer with a token in the outputs (the names only)."""
    tokens = outputs.get(clients.TOKENS_OUTPUT)
    if not isinstance(tokens, dict):
        clients.developer_bundle(outputs, "")  # raises the error that says how to export the tokens
        return []
    bad = [repr(name) for name in tokens if not (isinstance(name, str) and DEVELOPER_RE.fullmatch(name))]
    if bad:  # a name becomes a file name: nothing may lead outside --out-dir
        raise UserError(f"the outputs name developers coderig:developers does not allow: {', '.join(bad)}")
    return sorted(tokens)


def stale_bundles(out_dir: Path, stack: str, keep: set[str]) -> list[Path]:
    """Bundles in out_dir of this stack for developers not in `keep`: revoked, so their files go."""
    stale = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(data, dict)
            and data.get("kind") == clients.DEVELOPER_KIND
            and data.get("stack") == stack
            and data.get("developer") not in keep
        ):
            stale.append(path)
    return stale


def check_args(args: argparse.Namespace) -> None:
    if args.all and (args.out or not args.out_dir):
        raise UserError("--all writes one file per developer: give --out-dir DIR (not --out)")
    if not args.all and (args.out_dir or not args.out):
        raise UserError(f"--developer writes one file: give --out FILE, e.g. --out bundles/{args.developer}.json")


def cmd_bundle(args: argparse.Namespace) -> int:
    check_args(args)
    outputs = saved_outputs(Path(args.outputs)) if args.outputs else pulumi_outputs(args.stack, args.cwd)
    names = developers(outputs) if args.all else [args.developer]
    bundles = {name: clients.developer_bundle(outputs, name) for name in names}
    for data in bundles.values():
        if data.get("stack") not in (None, args.stack):
            raise UserError(f"the outputs are from stack {data.get('stack')!r}, not {args.stack!r}")
    if args.all:
        return write_all(bundles, Path(args.out_dir), args.stack)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out}/{args.developer}.json")
    data = bundles[args.developer]
    write_file(out, configs.dumps_json(data))
    print(
        f"coderig bundle: wrote {out} (mode 0600, holds {args.developer}'s token) for stack {data['stack']}: "
        f"{data['endpoint']['anthropic_base_url']}, model {data['model']['served_name']}"
    )
    print(f"  send it to {args.developer} over a private channel; they run: coderig onboard {out.name}")
    return 0


def write_all(bundles: dict[str, dict[str, Any]], out_dir: Path, stack: str) -> int:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir} is a file; give a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in bundles.items():
        write_file(out_dir / f"{name}.json", configs.dumps_json(data))
    removed = stale_bundles(out_dir, stack, set(bundles))
    for path in removed:
        path.unlink()
    where = "no developers"
    if bundles:
        some = next(iter(bundles.values()))
        where = f"{some['endpoint']['anthropic_base_url']}, model {some['model']['served_name']}"
    print(
        f"coderig bundle: wrote {len(bundles)} bundle(s) to {out_dir}/ (mode 0600, each holds its developer's "
        f"token) for stack {stack}: {where}"
    )
    if removed:
        print(f"  removed the bundles of revoked developers: {', '.join(p.name for p in removed)}")
    print(f"  send each file to its developer over a private channel; they run: coderig onboard {out_dir}/NAME.json")
    return 0
