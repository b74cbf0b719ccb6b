"""Client side of a stack: the versioned stack-output schema, the developer bundle, and the files
the client configs come from (coderig.client.configs). Pure: no Pulumi, no I/O.

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
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from coderig.core.engine import CLAUDE_WILDCARD
from coderig.core.errors import UserError
from coderig.core.files import read_json_file

BUNDLE_SCHEMA_VERSION = 1
BUNDLE_OUTPUT = "clientBundle"
TOKENS_OUTPUT = "developerTokens"
STACK_KIND = "coderig.stack"
DEVELOPER_KIND = "coderig.developer"
TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
DEFAULT_API_TIMEOUT_MS = 1_800_000  # the gateway's read timeout (30 min): long turns must not be cut
OPENAI_COMPATIBLE_NPM = "@ai-sdk/openai-compatible"
OPENCODE_SCHEMA = "https://opencode.ai/config.json"
DEPRECATED_ENV = ("ANTHROPIC_SMALL_FAST_MODEL",)
SECRET_PLACEHOLDER = "<secret, not shown>"  # noqa: S105 - what is printed instead

_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


# ---------------------------------------------------------------- stack outputs


def alias_for(stack: str) -> str:
    """A short, file- and TOML-safe name for a stack: 'Prod_EU' -> 'prod-eu'."""
    alias = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")[:40].strip("-")
    return alias or "coderig"


def base_urls(host: str, port: int, scheme: str = "https") -> tuple[str, str]:
    """(Anthropic base URL without /v1, OpenAI base URL with /v1)."""
    if not host:
        raise UserError("endpoint host is empty")
    url_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    default = {"https": 443, "http": 80}[scheme]
    root = f"{scheme}://{url_host}" + ("" if port == default else f":{port}")
    return root, root + "/v1"


def ca_path(alias: str) -> str:
    """Where `coderig onboard` puts the CA, as a home-relative path."""
    return f"~/.config/coderig/{alias}/ca.pem"


# Claude Code 2.1.330 compacts when the conversation reaches
#     threshold = W − min(CLAUDE_CODE_MAX_OUTPUT_TOKENS, 20000) − 13000
# where W is CLAUDE_CODE_MAX_CONTEXT_TOKENS for a model it does not know (no lower bound), while
# CLAUDE_CODE_AUTO_COMPACT_WINDOW is raised to at least 100000 and only ever shrinks W, so it cannot
# describe a smaller window (read in the JavaScript embedded in its native binary, bin/claude.exe).
# The conversation is counted as the server's last usage.input_tokens plus Claude Code's own
# estimate of what was added since, so W is the served context less a margin for the estimate's
# tokenizer.
CC_OUTPUT_RESERVE_CAP = 20_000
CC_COMPACT_BUFFER = 13_000
CC_TOKENIZER_MARGIN = 0.05  # of the served context: Claude Code's estimate vs the model's tokenizer


def claude_code_window(max_model_len: int) -> int:
    """CLAUDE_CODE_MAX_CONTEXT_TOKENS: the served context less the tokenizer margin."""
    return max_model_len - math.ceil(max_model_len * CC_TOKENIZER_MARGIN)


def claude_code_compact_threshold(max_model_len: int, max_output_tokens: int) -> int:
    """The conversation size (tokens) at which Claude Code compacts with the bundle's settings. Any
    request sent below it fits the server: threshold + max_tokens ≤ max_model_len − 13000."""
    reserve = min(max_output_tokens, CC_OUTPUT_RESERVE_CAP)
    return claude_code_window(max_model_len) - reserve - CC_COMPACT_BUFFER


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
        # Claude Code does not know this model's window (it assumes 1M): give it the served one, less
        # a tokenizer margin, so it compacts before the server rejects a prompt (see claude_code_window).
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(claude_code_window(max_model_len)),
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "API_TIMEOUT_MS": str(api_timeout_ms),
    }
    if ca_file:
        env["NODE_EXTRA_CA_CERTS"] = ca_file
    return env


def model_picker_env(*, served_name: str, stack: str, endpoint: str, max_model_len: int) -> dict[str, str]:
    """Claude Code's `/model` picker: the served model as one labelled row naming the stack, so two
    onboarded stacks (a cluster, a laptop) are told apart. It does not silence Claude Code's
    `[claude-code:unrecognized_model]` stderr line: no setting of the pinned version does."""
    return {
        "ANTHROPIC_CUSTOM_MODEL_OPTION": served_name,
        "ANTHROPIC_CUSTOM_MODEL_OPTION_NAME": f"{served_name} (coderig {stack})",
        "ANTHROPIC_CUSTOM_MODEL_OPTION_DESCRIPTION": (
            f"self-hosted by coderig, stack {stack}: {endpoint}, {max_model_len}-token context"
        ),
    }


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
    cost: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The public `clientBundle` stack output, from plain values; `cost` is the stack's cost estimate
    (core/cost.py, with its own `usd_per_hour` and `basis`) when the caller has one."""
    if scheme not in ("https", "http"):
        raise UserError(f"scheme must be https or http, got {scheme!r}")
    if not 0 < max_output_tokens < max_model_len:
        raise UserError(
            f"max_output_tokens ({max_output_tokens}) must be positive and below max_model_len ({max_model_len})"
        )
    alias = alias or alias_for(stack)
    if not _ALIAS_RE.match(alias):
        raise UserError(f"alias {alias!r}: use lowercase letters, digits and '-' (max 40)")
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
        "client_env": {
            **recommended_env(
                anthropic_base_url=anthropic,
                served_name=served_name,
                max_model_len=max_model_len,
                max_output_tokens=max_output_tokens,
                api_timeout_ms=api_timeout_ms,
                ca_file=ca_file,
            ),
            **model_picker_env(served_name=served_name, stack=stack, endpoint=anthropic, max_model_len=max_model_len),
        },
        "token_env": TOKEN_ENV,
        "developers": list(developers),
        "plan": dict(plan),
        "idle": dict(idle),
        "cost": dict(cost)
        if cost is not None
        else {
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
        raise UserError(
            f"the stack outputs have no {BUNDLE_OUTPUT!r} object: is this a coderig stack, and was `pulumi up` run "
            "with this version of coderig?"
        )
    _check_public(public)
    tokens = outputs.get(TOKENS_OUTPUT)
    if not isinstance(tokens, dict):
        raise UserError(
            f"the stack outputs have no readable {TOKENS_OUTPUT!r} map: export them with "
            "`pulumi stack output --json --show-secrets` (secrets are hidden without --show-secrets)"
        )
    if developer not in tokens:
        known = ", ".join(sorted(str(k) for k in tokens)) or "none"
        raise UserError(
            f"no developer {developer!r} in stack {public.get('stack')!r} (developers: {known}); add the name to "
            "coderig:developers and run `pulumi up`"
        )
    token = tokens[developer]
    if not isinstance(token, str) or not token or token == "[secret]":  # noqa: S105 - pulumi masking
        raise UserError(f"the token of {developer!r} is not readable: use --show-secrets")
    data = copy.deepcopy(public)
    data.update({"kind": DEVELOPER_KIND, "developer": developer, "token": token})
    return data


def _check_public(data: Mapping[str, Any]) -> None:
    version = data.get("schema_version")
    if version != BUNDLE_SCHEMA_VERSION:
        raise UserError(
            f"bundle schema version {version!r} is not supported by this coderig (it reads version "
            f"{BUNDLE_SCHEMA_VERSION}); upgrade coderig or regenerate the bundle with the matching version"
        )
    for path in (
        "alias",
        "stack",
        "endpoint.host",
        "endpoint.port",
        "endpoint.scheme",
        "endpoint.anthropic_base_url",
        "endpoint.openai_base_url",
        "model.served_name",
        "model.max_model_len",
        "model.max_output_tokens",
        "client_env",
    ):
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node in (None, ""):
            raise UserError(f"bundle field {path!r} is missing")
    env = data["client_env"]
    if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
        raise UserError("bundle field 'client_env' must map names to strings")
    if not _ALIAS_RE.match(str(data["alias"])):
        raise UserError(f"bundle alias {data['alias']!r} is not a valid name")


def load_bundle(data: Any) -> Bundle:
    """Validate a developer bundle (parsed JSON)."""
    if not isinstance(data, dict):
        raise UserError("a bundle is a JSON object")
    if data.get("kind") != DEVELOPER_KIND:
        raise UserError(
            f"not a developer bundle (kind {data.get('kind')!r}); ops create one with "
            "`coderig bundle --stack STACK --developer NAME --out FILE`"
        )
    _check_public(data)
    if not isinstance(data.get("token"), str) or not data["token"] or not isinstance(data.get("developer"), str):
        raise UserError("bundle has no developer token")
    return Bundle(data)


def load_bundle_file(path: str) -> Bundle:
    return load_bundle(read_json_file(Path(path)))


# ---------------------------------------------------------------- `coderig frontdoor run --bundles-dir`

FRONTDOOR_PROJECT = "coderig-frontdoor"


def frontdoor_bundles(
    *,
    name: str,
    base_url: str,
    served_name: str,
    aliases: Sequence[str],
    max_model_len: int,
    max_output_tokens: int,
    ca_cert_pem: str | None,
    tokens: Mapping[str, str],
    backends: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """{developer: bundle} for a `coderig frontdoor run` front door: the same schema `coderig bundle`
    makes from stack outputs, `name` standing for the stack."""
    parsed = urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(f"front door URL {base_url!r} is not an http(s) URL")
    scheme = parsed.scheme
    port = parsed.port or {"https": 443, "http": 80}[scheme]
    public = stack_outputs(
        project=FRONTDOOR_PROJECT,
        stack=name,
        host=parsed.hostname,
        port=port,
        scheme=scheme,
        served_name=served_name,
        aliases=aliases,
        max_model_len=max_model_len,
        max_output_tokens=max_output_tokens,
        developers=sorted(tokens),
        plan={"source": "coderig frontdoor run", "backends": list(backends)},
        idle={},
        usd_per_hour=None,
        ca_cert_pem=ca_cert_pem,
    )
    outputs = {BUNDLE_OUTPUT: public, TOKENS_OUTPUT: dict(tokens)}
    return {developer: developer_bundle(outputs, developer) for developer in sorted(tokens)}
