"""Claude Code, Codex and opencode configuration from a developer bundle. Pure."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coderig.client.bundle import (
    DEFAULT_API_TIMEOUT_MS,
    DEPRECATED_ENV,
    OPENAI_COMPATIBLE_NPM,
    OPENCODE_SCHEMA,
    SECRET_PLACEHOLDER,
    TOKEN_ENV,
    Bundle,
)
from coderig.core.errors import UserError

# ---------------------------------------------------------------- client files


@dataclass(frozen=True)
class ClientPaths:
    """Where each client's file lives for one developer home."""

    home: Path
    claude_dir: Path
    codex_dir: Path
    config_dir: Path  # XDG config home (opencode, coderig)

    @classmethod
    def for_home(cls, home: Path, env: Mapping[str, str] | None = None) -> ClientPaths:
        """Honour CLAUDE_CONFIG_DIR, CODEX_HOME and XDG_CONFIG_HOME when `env` is given."""
        env = env or {}
        return cls(
            home=home,
            claude_dir=Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home / ".claude",
            codex_dir=Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else home / ".codex",
            config_dir=Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config",
        )

    def coderig_dir(self, alias: str) -> Path:
        return self.config_dir / "coderig" / alias

    def token_file(self, alias: str) -> Path:
        return self.coderig_dir(alias) / "token"

    def ca_file(self, alias: str) -> Path:
        return self.coderig_dir(alias) / "ca.pem"

    def use_script(self, alias: str) -> Path:
        return self.config_dir / "coderig" / f"use-{alias}.sh"

    @property
    def claude_settings(self) -> Path:
        return self.claude_dir / "settings.json"

    @property
    def codex_config(self) -> Path:
        return self.codex_dir / "config.toml"

    @property
    def opencode_config(self) -> Path:
        return self.config_dir / "opencode" / "opencode.json"

    def expand(self, value: str) -> str:
        return str(self.home / value[2:]) if value.startswith("~/") else value


def resolved_env(bundle: Bundle, paths: ClientPaths) -> dict[str, str]:
    """The bundle's client environment with home-relative paths made absolute (no token)."""
    env = {k: paths.expand(v) for k, v in bundle.client_env.items()}
    if bundle.ca_cert_pem:
        env["NODE_EXTRA_CA_CERTS"] = str(paths.ca_file(bundle.alias))
    return env


def claude_settings(existing: Mapping[str, Any] | None, bundle: Bundle, paths: ClientPaths) -> dict[str, Any]:
    """`~/.claude/settings.json` with the env block merged in; every other key is kept."""
    out = copy.deepcopy(dict(existing or {}))
    env = out.get("env")
    if env is not None and not isinstance(env, dict):
        raise UserError("~/.claude/settings.json: 'env' is not an object; fix it by hand first")
    env = dict(env or {})
    for name in DEPRECATED_ENV:
        env.pop(name, None)
    env.update(resolved_env(bundle, paths))
    env[TOKEN_ENV] = bundle.token
    out["env"] = env
    return out


def env_changes(old: Mapping[str, Any], new: Mapping[str, Any], secret_keys: Sequence[str]) -> list[str]:
    """Human lines describing what changed in an env block; secret values are never shown."""

    def show(key: str, value: Any) -> str:
        return SECRET_PLACEHOLDER if key in secret_keys else json.dumps(value)

    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            lines.append(f"env.{key}: removed")
        elif key not in old:
            lines.append(f"env.{key} = {show(key, new[key])}")
        elif old[key] != new[key]:
            lines.append(f"env.{key}: {show(key, old[key])} -> {show(key, new[key])}")
    return lines


def use_script(bundle: Bundle, paths: ClientPaths) -> str:
    """A POSIX-sh file to source (bash, zsh, dash). Holds no secret: the token comes from its 0600 file."""
    q = shlex.quote
    token_file = paths.token_file(bundle.alias)
    name = f"use-{bundle.alias}.sh"
    lines = [
        f"# {name}: point Claude Code, Codex and opencode at coderig stack {bundle.stack!r}",
        f"# (model {bundle.served_name}, {bundle.anthropic_base_url}). Written by `coderig onboard`;",
        "# run it again to update this file. Use it with:",
        f"#   . {paths.use_script(bundle.alias)}",
        "# It holds no secret: the token is read from a file only you can read (mode 0600).",
        f"_coderig_token_file={q(str(token_file))}",
        'if [ -r "$_coderig_token_file" ]; then',
        f'  {TOKEN_ENV}="$(cat "$_coderig_token_file")"',
        f"  export {TOKEN_ENV}",
        f'  {bundle.token_env_for_tools}="${TOKEN_ENV}"',
        f"  export {bundle.token_env_for_tools}",
        "else",
        f'  echo "{name}: cannot read $_coderig_token_file; run coderig onboard again" >&2',
        "fi",
        "unset _coderig_token_file",
        "# A leftover Anthropic key would be sent as x-api-key next to the token: drop it.",
        "unset ANTHROPIC_API_KEY",
    ]
    for key, value in resolved_env(bundle, paths).items():
        if key == "ANTHROPIC_API_KEY":
            continue
        lines.append(f"export {key}={q(value)}")
    if bundle.ca_cert_pem:
        lines.append("# Codex (Rust) reads its extra CA from CODEX_CA_CERTIFICATE.")
        lines.append(f"export CODEX_CA_CERTIFICATE={q(str(paths.ca_file(bundle.alias)))}")
    return "\n".join(lines) + "\n"


# -- Codex: ~/.codex/config.toml


def codex_provider(bundle: Bundle) -> dict[str, Any]:
    return {
        "name": f"coderig {bundle.stack} ({bundle.served_name})",
        "base_url": bundle.openai_base_url,
        "env_key": bundle.token_env_for_tools,
        "wire_api": "responses",
        "stream_idle_timeout_ms": DEFAULT_API_TIMEOUT_MS,
        "request_max_retries": 2,
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


_HEADER_RE = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(#.*)?$")


def _header_path(name: str) -> list[str]:
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', name)
    return [a or b or c for a, b, c in parts]


def codex_config(existing_text: str, bundle: Bundle) -> str:
    """config.toml with our provider table and `model`/`model_provider`/`model_context_window` set; the rest
    of the text (other keys, tables, comments) is kept as it was."""
    try:
        before = tomllib.loads(existing_text) if existing_text.strip() else {}
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"~/.codex/config.toml is not valid TOML ({exc}); fix it first") from None
    pid = bundle.provider_id
    provider = codex_provider(bundle)
    top = {"model_provider": pid, "model": bundle.served_name, "model_context_window": bundle.max_model_len}
    if all(before.get(k) == v for k, v in top.items()) and before.get("model_providers", {}).get(pid) == provider:
        return existing_text
    lines = existing_text.splitlines()
    # 1. drop our old table (and its sub-tables)
    kept: list[str] = []
    skipping = False
    for line in lines:
        m = _HEADER_RE.match(line)
        if m:
            path = _header_path(m.group("name"))
            skipping = path[:2] == ["model_providers", pid]
        if not skipping:
            kept.append(line)
    # 2. set the top-level keys (they must stay above the first table)
    first_table = next((i for i, line in enumerate(kept) if _HEADER_RE.match(line)), len(kept))
    head, tail = kept[:first_table], kept[first_table:]
    for key, value in top.items():
        pattern = re.compile(rf"^\s*{key}\s*=")
        new_line = f"{key} = {_toml_value(value)}"
        for i, line in enumerate(head):
            if pattern.match(line):
                head[i] = new_line
                break
        else:
            insert_at = len(head)
            while insert_at and not head[insert_at - 1].strip():
                insert_at -= 1
            head.insert(insert_at, new_line)
    while tail and not tail[-1].strip():
        tail.pop()
    block = [f"[model_providers.{pid}]", *(f"{k} = {_toml_value(v)}" for k, v in provider.items())]
    body = head + tail
    while body and not body[-1].strip():
        body.pop()
    text = "\n".join([*body, *([""] if body else []), *block]) + "\n"
    try:
        after = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise UserError("could not merge into ~/.codex/config.toml automatically; add the provider by hand") from None
    if any(after.get(k) != v for k, v in top.items()) or after.get("model_providers", {}).get(pid) != provider:
        raise UserError("could not merge into ~/.codex/config.toml automatically; add the provider by hand")
    lost = _lost_keys(before, after, pid)
    if lost:
        raise UserError(f"merging into ~/.codex/config.toml would change {lost}; add the provider by hand")
    return text


def _lost_keys(before: Mapping[str, Any], after: Mapping[str, Any], pid: str) -> list[str]:
    """Keys the merge must not have touched but did (a safety net over the text edit)."""
    ours = {"model", "model_provider", "model_context_window", "model_providers"}
    lost = [k for k in before if k not in ours and before[k] != after.get(k)]
    old_providers = before.get("model_providers") or {}
    new_providers = after.get("model_providers") or {}
    lost += [f"model_providers.{k}" for k in old_providers if k != pid and old_providers[k] != new_providers.get(k)]
    return lost


# -- opencode: ~/.config/opencode/opencode.json


def opencode_provider(bundle: Bundle, paths: ClientPaths) -> dict[str, Any]:
    return {
        "npm": OPENAI_COMPATIBLE_NPM,
        "name": f"coderig {bundle.stack}",
        "options": {
            "baseURL": bundle.openai_base_url,
            "apiKey": "{file:" + str(paths.token_file(bundle.alias)) + "}",
            "timeout": DEFAULT_API_TIMEOUT_MS,
        },
        "models": {
            bundle.served_name: {
                "name": f"{bundle.served_name} (coderig {bundle.stack})",
                "tool_call": True,
                "limit": {"context": bundle.max_model_len, "output": bundle.max_output_tokens},
            }
        },
    }


def opencode_config(existing: Mapping[str, Any] | None, bundle: Bundle, paths: ClientPaths) -> dict[str, Any]:
    out = copy.deepcopy(dict(existing or {}))
    if not existing:
        out["$schema"] = OPENCODE_SCHEMA
    providers = out.get("provider")
    if providers is not None and not isinstance(providers, dict):
        raise UserError("opencode.json: 'provider' is not an object; fix it by hand first")
    providers = dict(providers or {})
    providers[bundle.provider_id] = opencode_provider(bundle, paths)
    out["provider"] = providers
    out["model"] = f"{bundle.provider_id}/{bundle.served_name}"
    return out


def dumps_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
