"""The nginx gateway in front of LiteLLM and the model servers: its spec, the pieces of its config
(listen, TLS, upstreams, log format, error bodies) and the keys include. The routes and the server
block built from them are in `nginx_routes`. Pure: the Pulumi components, `coderig render` and
`coderig frontdoor run` all write the text these return.

Request path: agent -> nginx (TLS, per-developer keys, rate limit, JSON log) -> LiteLLM
(Anthropic / Responses <-> OpenAI translation, `claude-*` routing) -> model server(s); OpenAI-native
/v1/chat/completions goes from nginx straight to the model servers, and so do the routes they serve
natively (`native`: /v1/messages, count_tokens, /v1/responses on vLLM).

Key material never appears in `render_gateway_conf`'s output: it lives in the separate include
rendered by `render_gateway_keys`, which callers write with mode 0600.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from coderig.frontdoor.litellm import DEFAULT_TIMEOUT_S
from coderig.frontdoor.native import affinity_map, balanced_servers
from coderig.frontdoor.nginx_hardening import WORKER_CONNECTIONS

DEVELOPER_HEADER = "X-Coderig-Developer"
DEFAULT_MAX_BODY_MB = 32  # Claude Code's client cap

_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")


# ---------------------------------------------------------------- nginx gateway


@dataclass(frozen=True)
class GatewaySpec:
    """Everything the gateway config depends on; paths are parameters so the same text runs
    from a temporary prefix here and in the official nginx image on a node."""

    listen: str  # "0.0.0.0:443", "127.0.0.1:8443", "[::]:443"
    litellm: str  # host:port of LiteLLM, e.g. "127.0.0.1:4000"
    model_health_url: str  # e.g. "http://127.0.0.1:8000/health" (vLLM)
    keys_include: str  # path of the 0600 file from render_gateway_keys
    tls_cert: str | None = None  # both None -> plain HTTP (loopback only; callers enforce)
    tls_key: str | None = None
    pid_path: str = "/var/run/nginx.pid"
    error_log: str = "/var/log/nginx/error.log"
    access_log: str = "/var/log/nginx/access.log"
    temp_dir: str | None = None  # client_body/proxy temp paths; None -> nginx's compiled-in default
    user: str | None = None  # worker user directive; None -> omitted
    worker_processes: str = "auto"
    worker_connections: int = WORKER_CONNECTIONS
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_body_mb: int = DEFAULT_MAX_BODY_MB
    rate_per_second: int = 10  # per developer, sustained
    rate_burst: int = 100  # per developer, admitted at once
    upstream_keepalive: int = 128
    # Model servers (host:port) to send OpenAI-native /v1/chat/completions to directly,
    # bypassing LiteLLM; empty -> everything goes through LiteLLM.
    direct_chat_backends: tuple[str, ...] = ()
    # Direct chat to model servers that require their API key (`vllm --api-key`): send the
    # `$coderig_model_authorization` the keys include defines (render_gateway_keys(model_key=…)).
    direct_chat_authorization: bool = False
    # Routes (native.NATIVE_ROUTES keys) nginx sends to the model servers' own endpoints.
    native_routes: tuple[str, ...] = ()
    # host:port of the SSE keepalive relay in front of each direct_chat_backends entry: when set, every
    # hop nginx makes to a model server (chat, native routes) goes through it.
    native_routes: tuple[str, ...] = ()
    native_relays: tuple[str, ...] = ()
    daemon: bool = False  # False: nginx stays in the foreground (containers, child processes)
    # Scale-to-zero / model loading: when set, every model request first checks the model
    # server's health; if it is not ready the gateway answers 503 + Retry-After (client's error
    # shape) instead of LiteLLM's 500/502. None: no per-request check (one subrequest less).
    model_gate_retry_after_s: int | None = None
    allowed_cidrs: tuple[str, ...] = ()  # coderig:gateway.allowedCidrs (cidrs.py); () -> every address
    # (developer, tokens a UTC day) from coderig:developers[].dailyTokens, checked before every model
    # request against the relay's usage listener at `budget_check` (host:port; frontdoor.budget)
    daily_tokens: tuple[tuple[str, int], ...] = ()
    budget_check: str = ""


def upstream_hostport(backend: str) -> str:
    """'http://127.0.0.1:8000/v1' -> '127.0.0.1:8000' (for the direct chat upstream)."""
    rest = backend.split("://", 1)[-1].split("/", 1)[0]
    return rest if ":" in rest.lstrip("[").split("]")[-1] else rest + ":80"


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:8443' -> ('127.0.0.1', 8443); '[::1]:443' -> ('::1', 443)."""
    match = re.match(r"^\[(?P<h6>[^\]]+)\]:(?P<p6>\d+)$|^(?P<h>[^:\[\]]+):(?P<p>\d+)$", listen)
    if not match:
        raise ValueError(f"listen address {listen!r} must be HOST:PORT (IPv6 as [ADDR]:PORT)")
    host = match.group("h6") or match.group("h")
    port = int(match.group("p6") or match.group("p"))
    if not 0 < port < 65536:
        raise ValueError(f"listen address {listen!r}: port must be 1-65535")
    return host, port


def hostport(host: str, port: int) -> str:
    """host:port as nginx writes it ('[fd00::7]:8000' for an IPv6 address)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


WILDCARDS = ("0.0.0.0", "::", "*", "")  # noqa: S104 - naming the wildcard listen addresses, not binding one


def local_address(host: str) -> str:
    """The address this machine reaches a listener on `host` at: loopback for a wildcard."""
    if host not in WILDCARDS:
        return host
    return "::1" if host == "::" else "127.0.0.1"


def public_name(host: str) -> str:
    """How others name a listener on `host`: this machine's host name for a wildcard."""
    return socket.gethostname() if host in WILDCARDS else host


def is_loopback(host: str) -> bool:
    """An IP literal in 127.0.0.0/8, ::1, or exactly `localhost` (never a name that merely starts
    with "127.": `127.0.0.1.evil.test` resolves wherever its owner wants)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (address.version == 4 and address in _LOOPBACK_V4) or address == _LOOPBACK_V6


def anthropic_error(kind: str, message: str) -> str:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}})


def openai_error(kind: str, code: str, message: str) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


UNAUTHORIZED_MSG = "missing, invalid or revoked API key"
RATE_MSG = "rate limit exceeded for this developer"
UNAVAILABLE_MSG = "the model is not reachable through the gateway right now"


def nginx_quote(text: str) -> str:
    """Single-quoted nginx string (our JSON bodies contain no single quotes or backslashes)."""
    if "'" in text or "\\" in text:
        raise ValueError("nginx literal must not contain quotes or backslashes")
    return f"'{text}'"


def json_log_format() -> str:
    fields = {
        "time": "$time_iso8601",
        "developer": "$coderig_developer",
        "method": "$request_method",
        "path": "$coderig_log_path",  # printable ASCII or a marker (coderig.frontdoor.nginx_hardening)
        "status": "$status",
        "duration_s": "$request_time",
        "upstream_s": "$upstream_response_time",
        "bytes_sent": "$bytes_sent",
        "body_bytes_sent": "$body_bytes_sent",
        "request_bytes": "$request_length",
        "remote": "$remote_addr",
        "session": "$coderig_log_session",
    }
    inner = ",".join(f'"{k}":"{v}"' for k, v in fields.items())
    return "log_format coderig_json escape=json '{" + inner + "}';"


def listen_directive(spec: GatewaySpec) -> str:
    return f"listen {hostport(*parse_listen(spec.listen))}{' ssl' if spec.tls_cert else ''};"


# Mozilla "intermediate" (server-side TLS guidelines): TLS 1.2 + 1.3; on 1.2 only ECDHE with AEAD
# ciphers (no CBC/SHA1, CCM8, ARIA or Camellia). The DHE suites of that list are left out: they need
# a dhparam file, which nginx does not have by default.
TLS_CIPHERS_1_2 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def tls_block(spec: GatewaySpec) -> list[str]:
    if bool(spec.tls_cert) != bool(spec.tls_key):
        raise ValueError("GatewaySpec: tls_cert and tls_key must be given together")
    if not spec.tls_cert:
        return []
    return [
        f"ssl_certificate {spec.tls_cert};",
        f"ssl_certificate_key {spec.tls_key};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        f"ssl_ciphers {TLS_CIPHERS_1_2};",
        "ssl_ecdh_curve X25519:prime256v1:secp384r1;",
        "ssl_prefer_server_ciphers off;",
        "ssl_session_cache shared:coderig_tls:10m;",
        "ssl_session_timeout 1d;",
        "ssl_session_tickets off;",
    ]


# An idle pooled connection is dropped before the upstream's own idle close (uvicorn, which serves
# LiteLLM and vLLM, closes after 5 s): otherwise a request can land on a connection the server is
# closing and fail with 502. A busy stream is bounded by proxy_read_timeout, not by this.
UPSTREAM_IDLE_S = 4


def direct_chat_backend(backend: str) -> str | None:
    """host:port nginx can proxy /v1/chat/completions to as is, or None: only plain http with the
    path exactly /v1 (TLS upstreams and path prefixes stay on LiteLLM, which handles both)."""
    scheme, _, rest = backend.partition("://")
    host, _, path = rest.partition("/")
    if scheme != "http" or path.rstrip("/") != "v1":
        return None
    return upstream_hostport(backend)


def upstream_blocks(spec: GatewaySpec) -> list[str]:
    out = [
        "upstream coderig_litellm {",
        f"    server {spec.litellm} max_fails=0;",
        f"    keepalive {spec.upstream_keepalive};",
        f"    keepalive_timeout {UPSTREAM_IDLE_S}s;",
        "}",
    ]
    if spec.direct_chat_backends:
        # through the keepalive relay in front of each model server when there is one
        hops = spec.native_relays or spec.direct_chat_backends
        servers = balanced_servers("coderig_model", hops, spec.upstream_keepalive, UPSTREAM_IDLE_S)
        out += [*affinity_map(), "upstream coderig_model {", *servers, "}"]
    if spec.native_relays and len(spec.native_relays) != len(spec.direct_chat_backends):
        raise ValueError("GatewaySpec: native_relays need one entry per direct_chat_backends entry")
    return out


def validate_keys(keys: Mapping[str, str]) -> None:
    """Developer names and tokens must be safe inside nginx strings (and long enough)."""
    seen: dict[str, str] = {}
    for name, token in keys.items():
        if not _NAME_RE.match(name):
            raise ValueError(f"developer name {name!r}: use letters, digits, '.', '_', '@', '-'")
        if not _TOKEN_RE.match(token):
            raise ValueError(f"key of developer {name!r}: 16-512 characters from A-Z a-z 0-9 . _ ~ + / = -")
        if token in seen:
            raise ValueError(f"developers {seen[token]!r} and {name!r} share a key")
        seen[token] = name


def _regex(token: str) -> str:
    """A token (validated charset) as a PCRE literal."""
    return re.sub(r"([.+])", r"\\\1", token)


def render_gateway_keys(keys: Mapping[str, str], master_key: str, model_key: str | None = None) -> str:
    """The 0600 include: key -> developer maps, the header sent to LiteLLM and, with `model_key`,
    the one sent to the model servers on the direct chat path."""
    validate_keys(keys)
    for what, secret in (("master key", master_key), ("model key", model_key)):
        if secret is not None and not _TOKEN_RE.match(secret):
            raise ValueError(f"{what}: 16-512 characters from A-Z a-z 0-9 . _ ~ + / = -")
    model_map = (
        ["map $coderig_developer $coderig_model_authorization {", f'    default "Bearer {model_key}";', "}"]
        if model_key is not None
        else []
    )
    # Regexes, not plain strings: nginx matches map strings case-insensitively, which would
    # accept a key with its letters' case changed.
    bearer = [f'    "~^(?i:bearer) +{_regex(token)}$" "{name}";' for name, token in sorted(keys.items())]
    xkey = [f'    "~^{_regex(token)}$" "{name}";' for name, token in sorted(keys.items())]
    return (
        "\n".join(
            [
                "# coderig gateway keys: SECRET, mode 0600. One line per developer; removing it revokes the key.",
                "map $http_authorization $coderig_dev_bearer {",
                '    default "";',
                *bearer,
                "}",
                "map $http_x_api_key $coderig_dev_xkey {",
                '    default "";',
                *xkey,
                "}",
                "map $coderig_developer $coderig_upstream_authorization {",
                f'    default "Bearer {master_key}";',
                "}",
                *model_map,
            ]
        )
        + "\n"
    )
