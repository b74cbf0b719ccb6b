"""`coderig idle STACK` for the `ssh` and `local` targets: each model server's state as the first machine's
relay holds it (awake, sleeping, stopped, waking, since when) and the reaper's last decision.

The first machine answers a short stdlib python3 program (STATUS_PROGRAM) that reads the relay's control
API on its loopback and the reaper's state file; on `ssh` it runs through `ssh` with the stack's pinned
host key (the operator's own SSH identity, or --ssh-key), on `local` on this machine.
`coderig stop|start` keep the docker compose commands (the reaper and the relay do it on their own)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

from coderig.core import hostkeys
from coderig.core.errors import REFUSED, UserError
from coderig.core.settings import StackSettings
from coderig.targets.compose import idle as node_idle
from coderig.targets.compose.spec import REMOTE_BUNDLE_DIR

STATUS_PROGRAM = """
import json, sys, urllib.request
out = {}
try:
    out["relay"] = json.load(urllib.request.urlopen(sys.argv[1] + "/state", timeout=5))
except Exception as exc:
    out["error"] = f"the relay's control API ({sys.argv[1]}) did not answer: {exc}"
try:
    out["reaper"] = json.load(open(sys.argv[2]))
except Exception:
    pass
print(json.dumps(out))
"""

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def status_command(relay: str = f"http://{node_idle.RELAY_CONTROL}", state_file: str = "") -> str:
    """The shell command the first machine runs (python3 is on every supported host OS)."""
    state_file = state_file or f"{REMOTE_BUNDLE_DIR}/{node_idle.STATE_DIR}/reaper.json"
    return shlex.join(["python3", "-c", STATUS_PROGRAM, relay, state_file])


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def first_machine(settings: StackSettings, args: argparse.Namespace, command: str, run: Runner = _run) -> str:
    """stdout of `command` on the stack's first machine (the front door's, when there is one: it holds the
    relay and the reaper)."""
    host = next(iter(settings.target.ssh_machines), None)
    if host is None:
        done = run(["sh", "-c", command])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            known = os.path.join(tmp, "known_hosts")
            opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(host.port)]
            if host.hostKey:
                with open(known, "w") as f:
                    f.write(hostkeys.known_hosts_line(host.address, host.port, host.hostKey))
                opts += [
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    f"UserKnownHostsFile={known}",
                    "-o",
                    "GlobalKnownHostsFile=/dev/null",
                ]
            if getattr(args, "ssh_key", None):
                opts += ["-o", "IdentitiesOnly=yes", "-i", args.ssh_key]
            done = run(["ssh", "-F", "/dev/null", *opts, f"{host.user}@{host.address}", command])
    if done.returncode != 0:
        where = f"{host.user}@{host.address}" if host else "this machine"
        raise UserError(f"could not read the idle state on {where}: {done.stderr.strip()[-300:] or done.returncode}")
    return done.stdout


def format_status(status: dict[str, Any]) -> list[str]:
    if "error" in status:
        return [f"unknown: {status['error']} (is the stack up, with coderig:idle set?)"]
    decisions = {m.get("model", "").removeprefix("http://"): m for m in (status.get("reaper") or {}).get("models", [])}
    lines = []
    for i, r in enumerate(status["relay"]["routes"]):
        line = f"model {i} ({r['target']}): {r['state']} since {r['since']}"
        line += f"; {r['inflight']} in flight, {r['requests_total']} requests, {r['wakes_total']} wakes"
        if r.get("last_error"):
            line += f"; last wake failed: {r['last_error']}"
        d = decisions.get(r["target"])
        if d and d.get("decision"):
            line += f"; reaper: {d['decision']} ({d['reason']})"
        lines.append(line)
    return lines


def cmd_idle(args: argparse.Namespace, settings: StackSettings | None, run: Runner = _run) -> int:
    if settings is None:
        raise UserError(f"no Pulumi.{args.stack}.yaml here: pass --config FILE")
    if node_idle.action(settings) is None:
        raise UserError(
            f"stack {args.stack} has no idle policy: set coderig:idle.stopAfterMinutes (and idle.action) to let "
            "the reaper sleep or stop its model",
            REFUSED,
        )
    status = json.loads(first_machine(settings, args, status_command(), run))
    if getattr(args, "json", False):
        print(json.dumps(status, indent=2))
        return 0
    dry = " (dry run: the reaper only says what it would do)" if settings.idle.dryRun else ""
    print(f"idle.action {node_idle.action(settings)}, window {settings.idle.stop_after_minutes} min{dry}")
    for line in format_status(status):
        print(line)
    return 0


def _by_hand(args: argparse.Namespace, settings: StackSettings | None) -> int:
    raise UserError(
        f"`coderig {args.command}` is not needed on ssh/local stacks with coderig:idle: the reaper sleeps or stops "
        "the model and the next request wakes it; by hand, `sudo docker compose -p coderig stop model` (the "
        "weights stay) and `... start model`",
        REFUSED,
    )


class ComposeOperations:
    """coderig.targets.operations.TargetOperations of the ssh and local kinds."""

    def __init__(self, run: Runner = _run) -> None:
        self.run = run

    def idle(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return cmd_idle(args, settings, self.run)

    def stop(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return _by_hand(args, settings)

    def start(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return _by_hand(args, settings)


OPERATIONS = ComposeOperations()
