"""`coderig frontdoor run`'s children under supervision: each one (the keepalive relay, LiteLLM, nginx)
runs in its own process group; when one exits, whatever is left of its group (nginx workers after
their master was killed, LiteLLM's uvicorn workers) is stopped before it is started again, with a
backoff, on the same address. While a child is down the gateway's /healthz answers 503: it asks
LiteLLM's liveliness and the model server's health through the relay.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from coderig.frontdoor.lifecycle import die_with_parent

BACKOFF_FIRST_S = 0.5  # the first restart comes this soon; each failure in a row doubles it
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0  # up this long: the next failure starts the backoff over


def backoff_s(failures: int) -> float:
    """Seconds before restart number `failures` (1, 2, …) of a child that keeps failing."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, failures - 1))


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`, from /proc (Linux); elsewhere, [pgid]
    while the group can be signalled."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp …
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, sig: int = signal.SIGTERM, grace_s: float = 10) -> None:
    """Signal every process in the group (also when its leader, the child we started, is already
    gone: its workers are not), wait until none is left, SIGKILL after `grace_s`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + grace_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)


@dataclass
class Child:
    """One supervised child: how to start it and how to tell it serves."""

    name: str
    command: list[str]
    serves: Callable[[], bool]  # one quick check (a connect, a GET)
    log: Path | None = None  # None: inherit stdout/stderr
    env: dict[str, str] | None = None
    cwd: Path | None = None
    startup_s: float = 120
    proc: subprocess.Popen[bytes] | None = None
    state: str = "down"  # down | starting | up
    failures: int = 0
    restarts: int = 0
    retry_at: float = 0.0
    started_at: float = 0.0
    _out: IO[bytes] | None = field(default=None, repr=False)

    def spawn(self) -> None:
        if self._out is None and self.log is not None:
            self._out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            self.command,
            stdout=self._out,
            stderr=subprocess.STDOUT if self._out else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
            env=self.env,
            cwd=self.cwd,
        )
        self.state, self.started_at = "starting", time.monotonic()

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 10) -> None:
        if self.proc is not None:
            stop_group(self.proc.pid, sig, grace_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.state = "down"

    def close(self) -> None:
        self.stop()
        if self._out is not None:
            self._out.close()
            self._out = None


def say(text: str) -> None:
    print(f"coderig frontdoor: {text}", file=sys.stderr, flush=True)


class Supervisor:
    """Starts the children in order, then keeps them running: `poll` restarts what exited."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children

    def start(self, child: Child) -> bool:
        """Start `child` and wait until it serves (False: it exited or did not serve in time)."""
        child.spawn()
        assert child.proc is not None
        deadline = time.monotonic() + child.startup_s
        while time.monotonic() < deadline and child.proc.poll() is None:
            if child.serves():
                child.state = "up"
                return True
            time.sleep(0.1)
        child.stop()
        return False

    def degraded(self) -> list[str]:
        return [c.name for c in self.children if c.state != "up"]

    def poll(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.state != "down" and child.proc.poll() is not None:
                code = child.proc.returncode
                child.stop(grace_s=5)  # what is left of its group (workers) goes first
                child.failures += 1
                child.retry_at = now + backoff_s(child.failures)
                say(f"{child.name} exited ({code}); restarting in {backoff_s(child.failures):g}s")
            elif child.state == "starting":
                if child.serves():
                    child.state = "up"
                    say(f"{child.name} serves again (restart {child.restarts})")
                elif now - child.started_at > child.startup_s:
                    child.stop(grace_s=5)
                    child.failures += 1
                    child.retry_at = now + backoff_s(child.failures)
                    say(f"{child.name} did not serve within {child.startup_s:g}s; restarting")
            elif child.state == "up" and child.failures and now - child.started_at > STABLE_S:
                child.failures = 0
            if child.state == "down" and now >= child.retry_at:
                child.restarts += 1
                child.spawn()

    def close(self) -> None:
        for child in reversed(self.children):
            child.close()
