"""The operator commands a target kind may have (`coderig idle|stop|start STACK`) and the features a
kind declares. A kind without stop/start has no operations (None in its registry entry)."""

from __future__ import annotations

import argparse
from typing import Protocol, runtime_checkable

from coderig.core.settings import StackSettings


@runtime_checkable
class TargetOperations(Protocol):
    """Stop and start a stack's GPU capacity (weights kept) and report what its idle policy sees.
    `settings` is the validated stack file, or None where the kind can work without one (aws: tags)."""

    def idle(self, args: argparse.Namespace, settings: StackSettings | None) -> int: ...

    def stop(self, args: argparse.Namespace, settings: StackSettings | None) -> int: ...

    def start(self, args: argparse.Namespace, settings: StackSettings | None) -> int: ...


def run(ops: TargetOperations, command: str, args: argparse.Namespace, settings: StackSettings | None) -> int:
    commands = {"idle": ops.idle, "stop": ops.stop, "start": ops.start}
    return commands[command](args, settings)


# Features a kind declares (TargetKind.features). Other engineers extend this set; each is read by
# the CLI, the plan or the docs, and tests/core/test_layers.py checks every kind declares only these.
SERVES_MODEL = "serves-model"  # runs a model server (external: only the front door runs here)
OVER_SSH = "over-ssh"  # may reach machines over SSH with coderig:sshPrivateKey (settings .over_ssh: this stack)
COMPOSE_NODES = "compose-nodes"  # machines that run a Docker Compose bundle (coderig.targets.compose)
IDLE_STOP_INSTANCES = "idle:stop-instances"  # idle: the GPU instances stop, EBS weights kept
IDLE_SCALE_TO_ZERO = "idle:scale-to-zero"  # idle: the model Deployment scales to zero
IDLE_SLEEP_OR_STOP = "idle:sleep-or-stop"  # idle: vLLM sleeps or the model container stops; requests wake it
IDLE_PREFIX = "idle:"
FEATURES = frozenset(
    {SERVES_MODEL, OVER_SSH, COMPOSE_NODES, IDLE_STOP_INSTANCES, IDLE_SCALE_TO_ZERO, IDLE_SLEEP_OR_STOP}
)
