"""The target registry: for each target kind, what `coderig render` writes and which operator
commands (`coderig stop|start|idle`) it has. The kinds themselves, and their capabilities, are
declared on their settings models (coderig.core.settings.TARGET_MODELS); stacks/ routes `pulumi up`
with its own module map. Nothing else dispatches on the kind.

    local, ssh, external, aws   compose-based machines (coderig.targets.compose); aws adds the instances,
                                their weights volumes and the idle reaper (coderig.targets.aws)
    kubernetes                  manifests on an existing cluster (coderig.targets.kubernetes)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType

from coderig.core import engine, plan_text, planner
from coderig.core.files import Bundle, RenderedFile
from coderig.core.settings import StackSettings
from coderig.targets.aws import ops as aws_ops
from coderig.targets.compose import ops as compose_ops
from coderig.targets.compose.spec import render_node_files
from coderig.targets.kubernetes import ops as kube_ops
from coderig.targets.kubernetes.render import render_manifests

Renderer = Callable[[StackSettings, str], Bundle]


@dataclass(frozen=True)
class TargetKind:
    render: Renderer  # the target's own files for `coderig render`
    ops: ModuleType | None  # module with COMMANDS {"start", "stop", "idle"}; None: no idle mechanism
    instead: str = ""  # how to stop and start this kind's model by hand, when ops is None


_COMPOSE = "docker compose -p coderig"
REGISTRY: Mapping[str, TargetKind] = {
    "local": TargetKind(
        render_node_files,
        compose_ops,
        f"`{_COMPOSE} stop` stops the model (the weights stay in the cache) and `{_COMPOSE} start` starts it "
        "again; `pulumi destroy` removes the stack",
    ),
    "ssh": TargetKind(
        render_node_files,
        compose_ops,
        f"on each host, `sudo {_COMPOSE} stop` stops the model (the weights stay on the cache volume) and "
        f"`sudo {_COMPOSE} start` starts it again; `pulumi destroy` removes the stack",
    ),
    "external": TargetKind(
        render_node_files,
        None,
        "the endpoint's own platform starts and stops its model (coderig runs only the front door, no GPU)",
    ),
    "aws": TargetKind(render_node_files, aws_ops),
    "kubernetes": TargetKind(render_manifests, kube_ops),
}


def plan_files(settings: StackSettings, stack: str) -> Bundle:
    p = planner.plan_stack(settings)
    summary = {"stack": stack, **p.summary()}
    return {
        "plan.json": RenderedFile(json.dumps(summary, indent=2) + "\n"),
        "plan.txt": RenderedFile(plan_text.format_plan(p, stack) + "\n"),
    }


def model_server_files(settings: StackSettings, stack: str) -> Bundle:
    if not settings.target.serves_model:
        return {}
    p = planner.plan_stack(settings)
    line = engine.command_line(settings.model, p.layout)
    return {"model-server/command.sh": RenderedFile(f"#!/bin/sh\nexec {line}\n", 0o755)}


def render_stack(settings: StackSettings, stack: str) -> Bundle:
    """Every file the stack deploys that holds no secret: what `coderig render` writes."""
    out: Bundle = {}
    for contribute in (plan_files, model_server_files, REGISTRY[settings.target.kind].render):
        files = contribute(settings, stack)
        clash = set(out) & set(files)
        if clash:
            raise RuntimeError(f"two renderers write {sorted(clash)}")
        out.update(files)
    return out
