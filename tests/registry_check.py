"""The registry's completeness check, shared by tests/core/test_layers.py (the real registry, and a
broken copy) and tests/targets/test_new_kind.py (the registry with a throwaway kind added)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, get_args

from coderig.core.target_base import TargetSettings
from coderig.targets import operations


def registry_problems(registry: Mapping[str, Any]) -> list[str]:
    """Every way a registry entry is incomplete: each entry holds a settings model tagged with its kind
    (the model validation picks for that `kind:`), a renderer in coderig.targets, a stacks module with
    build(ctx), operations that implement TargetOperations (or None, with what to do instead) and only
    known features."""
    out: list[str] = []
    for kind, entry in registry.items():
        field = entry.settings.model_fields.get("kind")
        tag = get_args(field.annotation) if field else ()
        if tag != (kind,):
            out.append(f"{kind}: settings model {entry.settings} is tagged kind {tag}, not ({kind!r},)")
        if not entry.render.__module__.startswith("coderig.targets."):
            out.append(f"{kind}: renderer {entry.render.__module__} outside coderig.targets")
        if not callable(getattr(importlib.import_module(entry.stack_module), "build", None)):
            out.append(f"{kind}: {entry.stack_module} has no build(ctx)")
        if entry.operations is not None and not isinstance(entry.operations, operations.TargetOperations):
            out.append(f"{kind}: operations lack idle/stop/start")
        if (entry.operations is None) != bool(entry.instead):
            out.append(f"{kind}: say what to do instead exactly when there are no operations")
        if entry.operations is not None and entry.idle_mechanism is None:
            out.append(f"{kind}: operations but no declared idle mechanism")
        out += [f"{kind}: unknown feature {f!r}" for f in sorted(entry.features - operations.FEATURES)]
        if not entry.settings.serves_model and entry.settings.upstream is TargetSettings.upstream:
            out.append(f"{kind}: serves no model but names no upstream endpoint")
        ssh_key = entry.settings.over_ssh is not TargetSettings.over_ssh  # the model can say True
        if ssh_key != (operations.OVER_SSH in entry.features):
            out.append(f"{kind}: over-ssh declared {not ssh_key} but its settings model says {ssh_key}")
    return out
