"""Reading a `Pulumi.<stack>.yaml` without the Pulumi engine: the `coderig:` keys with their prefix
stripped and secrets kept opaque, then validated by `coderig.core.settings.parse_settings`, so
`coderig plan` / `coderig render` see exactly what the Pulumi program sees."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from coderig.core.errors import UserError
from coderig.core.settings import NAMESPACE, SECRET, Kinds, StackSettings, misspelt_namespaces, parse_settings


def _opaque_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET
        return {k: _opaque_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_opaque_secrets(v) for v in value]
    return value


def namespace_from_stack_file(data: dict[str, Any]) -> dict[str, Any]:
    """The `coderig:` keys of a parsed `Pulumi.<stack>.yaml`, prefix stripped, secrets opaque."""
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise UserError(["config: expected a mapping of keys to values"])
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in config.items():
        ns, sep, name = str(key).partition(":")
        if not sep:
            problems.append(f"{key}: config keys need a namespace, e.g. {NAMESPACE}:{key}")
            continue
        if ns != NAMESPACE:
            continue  # aws:region, kubernetes:context… belong to providers
        out[name] = _opaque_secrets(value)
    if problems:
        raise UserError(problems + misspelt_namespaces(map(str, config)))
    return out


def load_stack_file(path: str | Path, *, kinds: Kinds) -> StackSettings:
    """Read and validate `Pulumi.<stack>.yaml`, the file `coderig plan/render` take, for a target of one
    of `kinds` (coderig.targets.load_stack_file passes the registry's)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise UserError([f"{p}: no such file (expected a Pulumi.<stack>.yaml)"]) from None
    except yaml.YAMLError as exc:
        raise UserError([f"{p}: not valid YAML: {exc}"]) from None
    except UnicodeDecodeError:
        raise UserError([f"{p}: not a text file (expected a Pulumi.<stack>.yaml)"]) from None
    if not isinstance(data, dict):
        raise UserError([f"{p}: expected a mapping with a config: section"])
    config = data.get("config")
    other_keys = map(str, config if isinstance(config, dict) else {})
    return parse_settings(namespace_from_stack_file(data), other_keys, kinds=kinds)


def stack_name_from_path(path: str | Path) -> str:
    name = Path(path).name
    m = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", name)
    return m.group(1) if m else Path(path).stem
