"""Waking a model that is not serving: the interface the relay calls (stdlib only).

The relay holds a request for a model that is not awake, calls `wake()` once for all held requests,
polls the model server's `/health` until ready or the start budget passes, then forwards.
Implementations: vLLM sleep mode ("sleep"), a stopped container ("stop"), a stopped EC2 instance
("ec2", coderig.runtime.aws_wake), a Deployment scaled to zero ("scale").
"""

from __future__ import annotations

from typing import Protocol


class WakeError(RuntimeError):
    """One-line reason a wake failed (shown to the client)."""


class Waker(Protocol):
    name: str  # "sleep" (vLLM wake_up), "stop" (docker start), "ec2", "scale"

    def state(self) -> str:  # "awake" | "sleeping" | "stopped" | "waking" | "unknown"
        ...

    def wake(self) -> None:  # start the model (idempotent); raise WakeError on failure
        ...
