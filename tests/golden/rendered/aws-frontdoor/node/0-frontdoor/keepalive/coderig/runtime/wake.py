"""Waking a model that idles: the one interface the gateway's relay calls, whatever the target does to
save its GPUs (stdlib only; ships with the relay).

A `Waker` knows one model server's idle mechanism:
  name "sleep"  vLLM sleep mode level 1: POST /wake_up on the model server's admin address
  name "stop"   the model container was stopped: ask the node's reaper (which alone holds the
                docker socket) to start it, on its loopback control port
  name "ec2"    a stopped EC2 GPU instance (coderig.runtime.aws_wake)
  name "scale"  a Kubernetes Deployment scaled to zero (KUBE)

The relay holds the requests for a model that is not awake, calls `wake()` once for all of them,
polls the model server's /health until it is ready or the start budget passes, then forwards.
`wake()` only starts the wake (idempotent: calling it on an awake or waking model is harmless); it
raises `WakeError` with one line the client is shown when the start cannot even begin.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Protocol, runtime_checkable

STATES = ("awake", "sleeping", "stopped", "waking", "unknown")


class WakeError(RuntimeError):
    """One-line reason a wake failed (shown to the client in its own error shape)."""


@runtime_checkable
class Waker(Protocol):
    name: str  # "sleep" (vLLM wake_up), "stop" (docker start), "ec2", "scale"

    def state(self) -> str:  # "awake" | "sleeping" | "stopped" | "waking" | "unknown"
        ...

    def wake(self) -> None:  # start the model (idempotent); raise WakeError on failure
        ...


def _request(url: str, method: str, timeout: float) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    if not url.startswith("http://"):
        raise ValueError(f"admin URLs are plain http on loopback or a link listener: {url}")
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class SleepWaker:
    """vLLM sleep mode (level 1). `base` is the model server's admin address as the gateway's host
    reaches it: http://127.0.0.1:8000 on the first machine, a replica's loopback link listener
    otherwise. vLLM 0.28 serves /sleep, /wake_up, /is_sleeping only with VLLM_SERVER_DEV_MODE=1 and
    --enable-sleep-mode (entrypoints/serve/dev/sleep/api_router.py): both answer 200 with no body,
    /is_sleeping answers {"is_sleeping": bool}."""

    name = "sleep"

    def __init__(self, base: str, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout

    def state(self) -> str:
        status, body = _request(f"{self.base}/is_sleeping", "GET", self.timeout)
        if status == 0:
            return "stopped"  # nothing listens: the container is down
        if status != 200:
            return "unknown"
        try:
            sleeping = json.loads(body).get("is_sleeping")
        except (ValueError, AttributeError):
            return "unknown"
        return "sleeping" if sleeping is True else "awake" if sleeping is False else "unknown"

    def sleep(self) -> None:
        """Level 1. vLLM's default mode=abort aborts what runs: callers sleep only an idle model."""
        status, body = _request(f"{self.base}/sleep?level=1", "POST", self.timeout)
        if status != 200:
            raise WakeError(f"model server refused /sleep: {_why(status, body)}")

    def wake(self) -> None:
        status, body = _request(f"{self.base}/wake_up", "POST", self.timeout)
        if status != 200:
            raise WakeError(f"model server refused /wake_up: {_why(status, body)}")


class StopWaker:
    """A stopped model container, started by the node's reaper: `control` is the reaper's loopback
    control URL (http://127.0.0.1:PORT). The gateway's side never holds the docker socket; all it
    can ask for is "start the model" (POST /wake) and "what state is it in" (GET /state)."""

    name = "stop"

    def __init__(self, control: str, timeout: float = 30.0) -> None:
        self.control = control.rstrip("/")
        self.timeout = timeout

    def state(self) -> str:
        status, body = _request(f"{self.control}/state", "GET", self.timeout)
        if status != 200:
            return "unknown"
        try:
            value = json.loads(body).get("state")
        except (ValueError, AttributeError):
            return "unknown"
        return value if value in STATES else "unknown"

    def wake(self) -> None:
        status, body = _request(f"{self.control}/wake", "POST", self.timeout)
        if status != 200:
            raise WakeError(f"the node's reaper could not start the model: {_why(status, body)}")


def _why(status: int, body: bytes) -> str:
    if status == 0:
        return "no answer"
    text = body.decode("utf-8", "replace").strip().splitlines()
    return f"HTTP {status}" + (f" {text[0][:200]}" if text else "")
