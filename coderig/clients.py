"""Client side of a stack: the versioned stack-output schema, the developer bundle, and the files
`coderig onboard` writes for Claude Code, Codex and opencode. Pure: no Pulumi, no I/O.

Stack outputs (schema version `BUNDLE_SCHEMA_VERSION`):

- `clientBundle` (public): everything a developer needs except the token. Keys:
  `schema_version`, `kind` ("coderig.stack"), `project`, `stack`, `alias` (short name used in file
  and provider names), `endpoint` {`host`, `port`, `scheme`, `anthropic_base_url` (no /v1),
  `openai_base_url` (ends in /v1), `tls` ("self-signed" | "provided" | "none")}, `model`
  {`served_name`, `aliases`, `max_model_len`, `max_output_tokens`}, `ca_cert_pem` (PEM of the
  self-signed CA, else null), `client_env` (recommended environment, every value a string; a
  value starting with `~/` is a path under the developer's home that `coderig onboard` expands),
  `token_env` (the variable that carries the developer token), `developers` (names only),
  `plan` (capacity plan summary), `idle` (idle policy), `cost` {`usd_per_hour`, `basis`}.
- `developerTokens` (secret): {developer name: token}.

A developer bundle is the public part plus `kind` "coderig.developer", `developer` and `token`.
"""

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

BUNDLE_SCHEMA_VERSION = 1
BUNDLE_OUTPUT = "clientBundle"
TOKENS_OUTPUT = "developerTokens"
STACK_KIND = "coderig.stack"
DEVELOPER_KIND = "coderig.developer"
TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
CLAUDE_WILDCARD = "claude-*"  # the front door routes every claude-* name to the served model
DEFAULT_API_TIMEOUT_MS = 1_800_000  # the gateway's read timeout (30 min): long turns must not be cut
OPENAI_COMPATIBLE_NPM = "@ai-sdk/openai-compatible"
OPENCODE_SCHEMA = "https://opencode.ai/config.json"
DEPRECATED_ENV = ("ANTHROPIC_SMALL_FAST_MODEL",)
SECRET_PLACEHOLDER = "<secret, not shown>"  # noqa: S105 - what is printed instead

_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class BundleError(ValueError):
    """A stack-output set or bundle file that cannot be used; the message says what to do."""


# ---------------------------------------------------------------- stack outputs


def alias_for(stack: str) -> str:
    """A short, file- and TOML-safe name for a stack: 'Prod_EU' -> 'prod-eu'."""
    alias = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")[:40].strip("-")
    return alias or "coderig"


def base_urls(host: str, port: int, scheme: str = "https") -> tuple[str, str]:
    """(Anthropic base URL without /v1, OpenAI base URL with /v1)."""
    if not host:
        raise BundleError("endpoint host is empty")
    url_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    default = {"https": 443, "http": 80}[scheme]
    root = f"{scheme}://{url_host}" + ("" if port == default else f":{port}")
    return root, root + "/v1"


def ca_path(alias: str) -> str:
    """Where `coderig onboard` puts the CA, as a home-relative path."""
    return f"~/.config/coderig/{alias}/ca.pem"


def recommended_env(
    *,
    anthropic_base_url: str,
    served_name: str,
    max_model_len: int,
    max_output_tokens: int,
    api_timeout_ms: int,
    ca_file: str | None,
) -> dict[str, str]:
    """The Claude Code environment every developer should run with (token excluded)."""
    env = {
        "ANTHROPIC_BASE_URL": anthropic_base_url,
        # Claude Code prefers ANTHROPIC_AUTH_TOKEN (sent as Bearer); an empty ANTHROPIC_API_KEY
        # neutralises a leftover Anthropic key in the developer's shell.
        "ANTHROPIC_API_KEY": "",
        "ANTHROPIC_MODEL": served_name,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": served_name,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": served_name,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": served_name,
        "CLAUDE_CODE_SUBAGENT_MODEL": served_name,
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(max_output_tokens),
        # Claude Code does not know this model's window (it assumes a large one): compact in time.
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(max_model_len),
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "API_TIMEOUT_MS": str(api_timeout_ms),
    }
    if ca_file:
        env["NODE_EXTRA_CA_CERTS"] = ca_file
    return env


def stack_outputs(
    *,
    project: str,
    stack: str,
    host: str,
    port: int,
    served_name: str,
    max_model_len: int,
    max_output_tokens: int,
    developers: Sequence[str],
    plan: Mapping[str, Any],
    idle: Mapping[str, Any],
    usd_per_hour: float | None,
    ca_cert_pem: str | None = None,
    tls: str | None = None,
    scheme: str = "https",
    aliases: Sequence[str] = (),
    alias: str | None = None,
    api_timeout_ms: int = DEFAULT_API_TIMEOUT_MS,
) -> dict[str, Any]:
    """The public `clientBundle` stack output, from plain values."""
    if scheme not in ("https", "http"):
        raise BundleError(f"scheme must be https or http, got {scheme!r}")
    if not 0 < max_output_tokens < max_model_len:
        raise BundleError(
            f"max_output_tokens ({max_output_tokens}) must be positive and below max_model_len ({max_model_len})"
        )
    alias = alias or alias_for(stack)
    if not _ALIAS_RE.match(alias):
        raise BundleError(f"alias {alias!r}: use lowercase letters, digits and '-' (max 40)")
    anthropic, openai = base_urls(host, port, scheme)
    if tls is None:
        tls = "none" if scheme == "http" else ("self-signed" if ca_cert_pem else "provided")
    ca_file = ca_path(alias) if ca_cert_pem else None
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "kind": STACK_KIND,
        "project": project,
        "stack": stack,
        "alias": alias,
        "endpoint": {
            "host": host,
            "port": port,
            "scheme": scheme,
            "anthropic_base_url": anthropic,
            "openai_base_url": openai,
            "tls": tls,
        },
        "model": {
            "served_name": served_name,
            "aliases": list(dict.fromkeys([*aliases, CLAUDE_WILDCARD])),
            "max_model_len": max_model_len,
            "max_output_tokens": max_output_tokens,
        },
        "ca_cert_pem": ca_cert_pem or None,
        "client_env": recommended_env(
            anthropic_base_url=anthropic,
            served_name=served_name,
            max_model_len=max_model_len,
            max_output_tokens=max_output_tokens,
            api_timeout_ms=api_timeout_ms,
            ca_file=ca_file,
        ),
        "token_env": TOKEN_ENV,
        "developers": list(developers),
        "plan": dict(plan),
        "idle": dict(idle),
        "cost": {
            "usd_per_hour": usd_per_hour,
            "basis": "AWS on-demand list price, us-east-1, all replicas"
            if usd_per_hour is not None
            else "unknown for this target (your own hardware or an external endpoint)",
        },
    }


# ---------------------------------------------------------------- developer bundle


@dataclass(frozen=True)
class Bundle:
    """A validated developer bundle (the token included: never print `data`)."""

    data: dict[str, Any]

    @property
    def alias(self) -> str:
        return str(self.data["alias"])

    @property
    def stack(self) -> str:
        return str(self.data["stack"])

    @property
    def developer(self) -> str:
        return str(self.data["developer"])

    @property
    def token(self) -> str:
        return str(self.data["token"])

    @property
    def served_name(self) -> str:
        return str(self.data["model"]["served_name"])

    @property
    def anthropic_base_url(self) -> str:
        return str(self.data["endpoint"]["anthropic_base_url"])

    @property
    def openai_base_url(self) -> str:
        return str(self.data["endpoint"]["openai_base_url"])

    @property
    def host(self) -> str:
        return str(self.data["endpoint"]["host"])

    @property
    def port(self) -> int:
        return int(self.data["endpoint"]["port"])

    @property
    def scheme(self) -> str:
        return str(self.data["endpoint"]["scheme"])

    @property
    def ca_cert_pem(self) -> str | None:
        return self.data.get("ca_cert_pem") or None

    @property
    def client_env(self) -> dict[str, str]:
        return dict(self.data["client_env"])

    @property
    def max_model_len(self) -> int:
        return int(self.data["model"]["max_model_len"])

    @property
    def max_output_tokens(self) -> int:
        return int(self.data["model"]["max_output_tokens"])

    @property
    def token_env_for_tools(self) -> str:
        """Per-stack variable Codex reads the token from (`env_key`)."""
        return "CODERIG_" + self.alias.upper().replace("-", "_") + "_TOKEN"

    @property
    def provider_id(self) -> str:
        return f"coderig-{self.alias}"


def developer_bundle(outputs: Mapping[str, Any], developer: str) -> dict[str, Any]:
    """One developer's bundle from `pulumi stack output --json --show-secrets` (or a saved copy)."""
    public = outputs.get(BUNDLE_OUTPUT)
    if not isinstance(public, dict):
        raise BundleError(
            f"the stack outputs have no {BUNDLE_OUTPUT!r} object: is this a coderig stack, and was `pulumi up` run "
            "with this version of coderig?"
        )
    _check_public(public)
    tokens = outputs.get(TOKENS_OUTPUT)
    if not isinstance(tokens, dict):
        raise BundleError(
            f"the stack outputs have no readable {TOKENS_OUTPUT!r} map: export them with "
            "`pulumi stack output --json --show-secrets` (secrets are hidden without --show-secrets)"
        )
    if developer not in tokens:
        known = ", ".join(sorted(str(k) for k in tokens)) or "none"
        raise BundleError(
            f"no developer {developer!r} in stack {public.get('stack')!r} (developers: {known}); add the name to "
            "coderig:developers and run `pulumi up`"
        )
    token = tokens[developer]
    if not isinstance(token, str) or not token or token == "[secret]":  # noqa: S105 - pulumi masking
        raise BundleError(f"the token of {developer!r} is not readable: use --show-secrets")
    data = copy.deepcopy(public)
    data.update({"kind": DEVELOPER_KIND, "developer": developer, "token": token})
    return data


def _check_public(data: Mapping[str, Any]) -> None:
    version = data.get("schema_version")
    if version != BUNDLE_SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {version!r} is not supported by this coderig (it reads version "
            f"{BUNDLE_SCHEMA_VERSION}); upgrade coderig or regenerate the bundle with the matching version"
        )
    for path in (
        "alias", "stack", "endpoint.host", "endpoint.port", "endpoint.scheme", "endpoint.anthropic_base_url",
        "endpoint.openai_base_url", "model.served_name", "model.max_model_len", "model.max_output_tokens",
        "client_env",
    ):  # fmt: skip
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node in (None, ""):
            raise BundleError(f"bundle field {path!r} is missing")
    env = data["client_env"]
    if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
        raise BundleError("bundle field 'client_env' must map names to strings")
    if not _ALIAS_RE.match(str(data["alias"])):
        raise BundleError(f"bundle alias {data['alias']!r} is not a valid name")


def load_bundle(data: Any) -> Bundle:
    """Validate a developer bundle (parsed JSON)."""
    if not isinstance(data, dict):
        raise BundleError("a bundle is a JSON object")
    if data.get("kind") != DEVELOPER_KIND:
        raise BundleError(
            f"not a developer bundle (kind {data.get('kind')!r}); ops create one with "
            "`coderig bundle --stack STACK --developer NAME --out FILE`"
        )
    _check_public(data)
    if not isinstance(data.get("token"), str) or not data["token"] or not isinstance(data.get("developer"), str):
        raise BundleError("bundle has no developer token")
    return Bundle(data)


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
        raise BundleError("~/.claude/settings.json: 'env' is not an object; fix it by hand first")
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
        raise BundleError(f"~/.codex/config.toml is not valid TOML ({exc}); fix it first") from None
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
        raise BundleError("could not merge into ~/.codex/config.toml automatically; add the provider by hand") from None
    if any(after.get(k) != v for k, v in top.items()) or after.get("model_providers", {}).get(pid) != provider:
        raise BundleError("could not merge into ~/.codex/config.toml automatically; add the provider by hand")
    lost = _lost_keys(before, after, pid)
    if lost:
        raise BundleError(f"merging into ~/.codex/config.toml would change {lost}; add the provider by hand")
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
        raise BundleError("opencode.json: 'provider' is not an object; fix it by hand first")
    providers = dict(providers or {})
    providers[bundle.provider_id] = opencode_provider(bundle, paths)
    out["provider"] = providers
    out["model"] = f"{bundle.provider_id}/{bundle.served_name}"
    return out


def dumps_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
