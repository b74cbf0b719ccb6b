"""The target registry: one entry per target kind, holding everything that differs between kinds —
its settings model, its renderer (what `coderig render` writes), the stacks module that builds it
for `pulumi up` (named, since stacks/ imports coderig and not the reverse), its operator commands
(`coderig stop|start|idle`, None where it has none) and the features it declares, which the CLI and
the docs read. Nothing else dispatches on the kind: validation takes the kinds' settings models from
here (`parse_settings`, `load_stack_file`), core knows none by name. Adding a kind: one folder here
holding its settings model (and whatever else it renders or runs), its Pulumi builder in stacks/ (or an
existing one it shares), one entry below (tests/core/test_layers.py walks every entry;
tests/targets/test_new_kind.py adds a throwaway kind this way and nothing else).

    local, ssh, external, aws   compose-based machines (coderig.targets.compose, shared); aws adds the
                                instances, their weights volumes and the idle reaper (coderig.targets.aws)
    kubernetes                  manifests on an existing cluster (coderig.targets.kubernetes)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coderig.core import engine, kv_tier, planner, report, stack_file
from coderig.core import settings as core_settings
from coderig.core.files import FileSet, RenderedFile
from coderig.core.settings import StackSettings
from coderig.core.target_base import TargetSettings
from coderig.targets import operations as feature
from coderig.targets.aws.ops import OPERATIONS as AWS_OPERATIONS
from coderig.targets.aws.settings import AwsTarget
from coderig.targets.compose.ops import OPERATIONS as COMPOSE_OPERATIONS
from coderig.targets.compose.rendered import render_node_files
from coderig.targets.external.settings import ExternalTarget
from coderig.targets.kubernetes.ops import OPERATIONS as KUBERNETES_OPERATIONS
from coderig.targets.kubernetes.preflight import plan_lines as kubernetes_plan_lines
from coderig.targets.kubernetes.render import render_manifests
from coderig.targets.kubernetes.settings import KubernetesTarget
from coderig.targets.local.settings import LocalTarget
from coderig.targets.operations import TargetOperations
from coderig.targets.ssh.settings import SshTarget

Renderer = Callable[[StackSettings, str, planner.Plan], FileSet]


@dataclass(frozen=True)
class TargetKind:
    """One target kind: everything coderig does differently for it."""

    settings: type[TargetSettings]  # its `coderig:target` model (in its folder: coderig.targets.<kind>.settings)
    render: Renderer  # the target's own files for `coderig render`
    stack_module: str  # the stacks/ module whose build(ctx) registers its resources
    operations: TargetOperations | None  # `coderig idle|stop|start`; None: it has none
    declared: frozenset[str] = frozenset()  # features beyond what its settings model says
    instead: str = ""  # how to stop and start this kind's model by hand, when operations is None
    plan_lines: Callable[[StackSettings, planner.Plan], list[str]] | None = None  # extra `coderig plan` lines

    @property
    def features(self) -> frozenset[str]:
        """What it declares, plus `serves-model` from its settings model (the planner reads that there)."""
        return self.declared | ({feature.SERVES_MODEL} if self.settings.serves_model else frozenset())

    @property
    def idle_mechanism(self) -> str | None:
        """What `coderig:idle` does on this kind ("stop-instances", "scale-to-zero"), None: nothing."""
        found = sorted(f.removeprefix(feature.IDLE_PREFIX) for f in self.features if f.startswith(feature.IDLE_PREFIX))
        return found[0] if found else None


# one entry per kind, in the order error messages list the kinds
REGISTRY: dict[str, TargetKind] = {
    "local": TargetKind(
        LocalTarget,
        render_node_files,
        "stacks.local",
        COMPOSE_OPERATIONS,
        frozenset({feature.COMPOSE_NODES, feature.IDLE_SLEEP_OR_STOP}),
    ),
    "ssh": TargetKind(
        SshTarget,
        render_node_files,
        "stacks.ssh",
        COMPOSE_OPERATIONS,
        frozenset({feature.COMPOSE_NODES, feature.OVER_SSH, feature.IDLE_SLEEP_OR_STOP}),
    ),
    "aws": TargetKind(
        AwsTarget,
        render_node_files,
        "stacks.aws",
        AWS_OPERATIONS,
        frozenset({feature.COMPOSE_NODES, feature.IDLE_STOP_INSTANCES}),
    ),
    "kubernetes": TargetKind(
        KubernetesTarget,
        render_manifests,
        "stacks.kubernetes",
        KUBERNETES_OPERATIONS,
        frozenset({feature.IDLE_SCALE_TO_ZERO}),
        plan_lines=kubernetes_plan_lines,
    ),
    "external": TargetKind(
        ExternalTarget,
        render_node_files,
        "stacks.external",
        None,
        frozenset({feature.COMPOSE_NODES, feature.OVER_SSH}),
        "the endpoint's own platform starts and stops its model (coderig runs only the front door, no GPU)",
    ),
}


def kind_of(settings: StackSettings) -> TargetKind:
    """The registry entry of a validated stack."""
    return REGISTRY[settings.target.kind]


def target_models() -> core_settings.Kinds:
    """kind -> its `coderig:target` settings model: what validation accepts, read off the registry."""
    return {kind: entry.settings for kind, entry in REGISTRY.items()}


def parse_settings(raw: dict[str, Any], other_keys: Iterable[str] = ()) -> StackSettings:
    """Validate the `coderig:` namespace for a target of a registered kind (coderig.core.settings)."""
    return core_settings.parse_settings(raw, other_keys, kinds=target_models())


def load_stack_file(path: str | Path) -> StackSettings:
    """Read and validate `Pulumi.<stack>.yaml` for a target of a registered kind (coderig.core.stack_file)."""
    return stack_file.load_stack_file(path, kinds=target_models())


def plan_summary(settings: StackSettings, stack: str, p: planner.Plan) -> dict[str, object]:
    """`coderig plan --json` and plan.json: the plan, its cost, the front-door machine when there is one."""
    return report.summary(settings, p, stack, kind_of(settings).idle_mechanism)


def plan_report(settings: StackSettings, stack: str, p: planner.Plan) -> str:
    """`coderig plan` and plan.txt: the plan, its cost, the front-door machine's line when there is one."""
    return report.text(settings, p, stack, kind_of(settings).idle_mechanism)


def plan_files(settings: StackSettings, stack: str, p: planner.Plan) -> FileSet:
    return {
        "plan.json": RenderedFile(json.dumps(plan_summary(settings, stack, p), indent=2) + "\n"),
        "plan.txt": RenderedFile(plan_report(settings, stack, p) + "\n"),
    }


def model_server_files(settings: StackSettings, stack: str, p: planner.Plan) -> FileSet:
    if not settings.target.serves_model:
        return {}
    line = engine.command_line(settings.model, p.layout, kv_tier.flags(p.kv_tier))
    return {"model-server/command.sh": RenderedFile(f"#!/bin/sh\nexec {line}\n", 0o755)}


def render_stack(settings: StackSettings, stack: str, plan: planner.Plan) -> FileSet:
    """Every file the stack deploys that holds no secret: what `coderig render` writes, from the
    stack's one plan."""
    out: FileSet = {}
    for contribute in (plan_files, model_server_files, kind_of(settings).render):
        files = contribute(settings, stack, plan)
        clash = set(out) & set(files)
        if clash:
            raise RuntimeError(f"two renderers write {sorted(clash)}")
        out.update(files)
    return out
