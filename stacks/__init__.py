"""One module per target kind; `build` picks it from the kind's registry entry (coderig.targets).

Each target module exposes `build(ctx: StackContext) -> dict[str, object]` returning the stack
outputs. Config is read and validated once, here, before any resource is registered.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.runtime.config as runtime_config

from coderig.core import planner
from coderig.core.errors import UserError
from coderig.core.settings import NAMESPACE, SECRET, SECRET_KEYS, StackSettings
from coderig.targets import kind_of, parse_settings


@dataclass
class StackContext:
    settings: StackSettings
    stack: str
    project: str
    plan: planner.Plan
    secrets: dict[str, pulumi.Output[Any]] = field(default_factory=dict)


def _config_keys() -> dict[str, Any]:
    return {**(runtime_config.get_config_env() or {}), **runtime_config.CONFIG.get()}


def _raw_config() -> dict[str, Any]:
    """Every `coderig:` key Pulumi passed to the program (prefix stripped), JSON decoded."""
    merged = _config_keys()
    out: dict[str, Any] = {}
    for key, value in merged.items():
        ns, _, name = key.partition(":")
        if ns != NAMESPACE:
            continue
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # a plain string stays a string
                value = json.loads(value)
        out[name] = value
    return out


def read_settings() -> tuple[StackSettings, dict[str, pulumi.Output[Any]]]:
    """Validate the stack's config. Secrets are validated for presence and kept as secret Outputs."""
    raw = _raw_config()
    config = pulumi.Config(NAMESPACE)
    secrets: dict[str, pulumi.Output[Any]] = {}
    for key in SECRET_KEYS:
        if key in raw:
            raw[key] = SECRET
            secrets[key] = config.require_secret(key)
    return parse_settings(raw, _config_keys()), secrets


class ConfigError(pulumi.RunError):
    """Raised before any resource exists; pulumi prints the message (no stack trace) and stops."""


def build() -> dict[str, object]:
    try:
        settings, secrets = read_settings()
    except UserError as exc:
        raise ConfigError("invalid coderig config:\n  " + "\n  ".join(exc.problems)) from None
    for warning in settings.warnings:
        pulumi.log.warn(warning)
    p = planner.plan_stack(settings)
    if not p.fits:
        raise ConfigError(f"coderig:model: {p.reason}" + (f"; {p.suggestion}" if p.suggestion else ""))
    ctx = StackContext(settings, pulumi.get_stack(), pulumi.get_project(), p, secrets)
    module = importlib.import_module(kind_of(settings).stack_module)
    return module.build(ctx)
