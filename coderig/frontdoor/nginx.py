"""The nginx gateway in front of LiteLLM and the model servers. Pure: the Pulumi components,
`coderig render` and `coderig frontdoor run` all write the text these return.

Request path: agent -> nginx (TLS, per-developer keys, rate limit, JSON log) -> LiteLLM
(Anthropic / Responses <-> OpenAI translation, `claude-*` routing) -> model server(s); OpenAI-native
/v1/chat/completions goes from nginx straight to the model servers.

Key material never appears in `render_gateway_conf`'s output: it lives in the separate include
rendered by `render_gateway_keys`, which callers write with mode 0600.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from coderig.frontdoor.litellm import DEFAULT_TIMEOUT_S
from coderig.frontdoor.native import (
    NATIVE_ROUTES,
    affinity_map,
    balanced_servers,
    failover,
    native_locations,
    native_upstream,
)

DEVELOPER_HEADER = "X-Coderig-Developer"
DEFAULT_MAX_BODY_MB = 32  # Claude Code's client cap

_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


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
    worker_connections: int = 4096
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
    # Routes (NATIVE_ROUTES keys) nginx sends to the model servers' own endpoints, through
    # `native_relays` (host:port of the SSE keepalive relay for each direct_chat_backends entry).
    native_routes: tuple[str, ...] = ()
    native_relays: tuple[str, ...] = ()
    daemon: bool = False  # False: nginx stays in the foreground (containers, child processes)
    # Scale-to-zero / model loading: when set, every model request first checks the model
    # server's health; if it is not ready the gateway answers 503 + Retry-After (client's error
    # shape) instead of LiteLLM's 500/502. None: no per-request check (one subrequest less).
    model_gate_retry_after_s: int | None = None


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


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def anthropic_error(kind: str, message: str) -> str:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}})


def openai_error(kind: str, code: str, message: str) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


_UNAUTHORIZED_MSG = "missing, invalid or revoked API key"
_RATE_MSG = "rate limit exceeded for this developer"
_UNAVAILABLE_MSG = "the model is not reachable through the gateway right now"


def _nginx_quote(text: str) -> str:
    """Single-quoted nginx string (our JSON bodies contain no single quotes or backslashes)."""
    if "'" in text or "\\" in text:
        raise ValueError("nginx literal must not contain quotes or backslashes")
    return f"'{text}'"


def _json_log_format() -> str:
    fields = {
        "time": "$time_iso8601",
        "developer": "$coderig_developer",
        "method": "$request_method",
        "path": "$uri",
        "status": "$status",
        "duration_s": "$request_time",
        "upstream_s": "$upstream_response_time",
        "bytes_sent": "$bytes_sent",
        "body_bytes_sent": "$body_bytes_sent",
        "request_bytes": "$request_length",
        "remote": "$remote_addr",
        "session": "$http_x_claude_code_session_id",
    }
    inner = ",".join(f'"{k}":"{v}"' for k, v in fields.items())
    return "log_format coderig_json escape=json '{" + inner + "}';"


def _listen_directive(spec: GatewaySpec) -> str:
    host, port = parse_listen(spec.listen)
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"listen {addr}{' ssl' if spec.tls_cert else ''};"


def _tls_block(spec: GatewaySpec) -> list[str]:
    if bool(spec.tls_cert) != bool(spec.tls_key):
        raise ValueError("GatewaySpec: tls_cert and tls_key must be given together")
    if not spec.tls_cert:
        return []
    return [
        f"ssl_certificate {spec.tls_cert};",
        f"ssl_certificate_key {spec.tls_key};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_session_cache shared:coderig_tls:10m;",
        "ssl_session_timeout 1h;",
    ]


def _auth_guard(shape: str, spec: GatewaySpec) -> list[str]:
    """Key check (rewrite phase, so before anything else), per-developer limit, model gate."""
    body = (
        anthropic_error("authentication_error", _UNAUTHORIZED_MSG)
        if shape == "anthropic"
        else openai_error("invalid_request_error", "invalid_api_key", _UNAUTHORIZED_MSG)
    )
    gate = (
        ["auth_request /_coderig_model_health;", f"error_page 500 = @coderig_gate_{shape};"]
        if spec.model_gate_retry_after_s
        else []
    )
    return [
        'if ($coderig_developer = "") {',
        f"    return 401 {_nginx_quote(body)};",
        "}",
        f"limit_req zone=coderig_per_developer burst={spec.rate_burst} nodelay;",
        f"error_page 429 = @coderig_429_{shape};",
        f"error_page 502 503 504 = @coderig_503_{shape};",
        *gate,
    ]


def proxy_headers(authorization: str) -> list[str]:
    """Headers for one proxying location. nginx drops inherited proxy_set_header lines as soon
    as a location sets any, so every proxying location carries the whole list."""
    return [
        'proxy_set_header Connection "";',  # upstream keepalive
        "proxy_set_header Host $host;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        # The developer's key never leaves the gateway: both key headers are replaced.
        f"proxy_set_header Authorization {authorization};",
        'proxy_set_header x-api-key "";',
        f"proxy_set_header {DEVELOPER_HEADER} $coderig_developer;",
    ]


def _proxy_common(spec: GatewaySpec) -> list[str]:
    t = f"{spec.timeout_s}s"
    return [
        "proxy_http_version 1.1;",
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_cache off;",
        "proxy_connect_timeout 10s;",
        f"proxy_read_timeout {t};",
        f"proxy_send_timeout {t};",
        "proxy_next_upstream off;",
    ]


def _named_errors(spec: GatewaySpec) -> list[str]:
    out = []
    for shape in ("anthropic", "openai"):
        if shape == "anthropic":
            rate = anthropic_error("rate_limit_error", _RATE_MSG)
            down = anthropic_error("overloaded_error", _UNAVAILABLE_MSG)
        else:
            rate = openai_error("rate_limit_error", "rate_limit_exceeded", _RATE_MSG)
            down = openai_error("server_error", "upstream_unavailable", _UNAVAILABLE_MSG)
        out += [
            f"location @coderig_429_{shape} {{ return 429 {_nginx_quote(rate)}; }}",
            f"location @coderig_503_{shape} {{ return 503 {_nginx_quote(down)}; }}",
        ]
        if spec.model_gate_retry_after_s:
            out.append(
                f"location @coderig_gate_{shape} {{ add_header Retry-After {spec.model_gate_retry_after_s} "
                f"always; return 503 {_nginx_quote(down)}; }}"
            )
    return out


def _indent(lines: list[str], level: int) -> list[str]:
    pad = "    " * level
    return [pad + line if line else line for line in lines]


def _location(header: str, body: list[str]) -> list[str]:
    return [f"location {header} {{", *_indent(body, 1), "}"]


def _server_block(spec: GatewaySpec) -> list[str]:
    t = f"{spec.timeout_s}s"
    guard_a, guard_o = _auth_guard("anthropic", spec), _auth_guard("openai", spec)
    to_litellm = [*proxy_headers("$coderig_upstream_authorization"), "proxy_pass http://coderig_litellm;"]
    not_found = openai_error("invalid_request_error", "not_found", "no such endpoint on this gateway")
    body: list[str] = [
        _listen_directive(spec),
        "server_name _;",
        *_tls_block(spec),
        "default_type application/json;",
        f"client_max_body_size {spec.max_body_mb}m;",
        "client_body_buffer_size 1m;",
        f"client_body_timeout {t};",
        f"send_timeout {t};",
        f"keepalive_timeout {t};",
        "gzip off;",
        "access_log " + spec.access_log + " coderig_json;",
        *_proxy_common(spec),
        "",
        "# Readiness: the model server's /health (subrequest) and LiteLLM's liveliness.",
        *_location(
            "= /healthz",
            [
                "access_log off;",
                "auth_request /_coderig_model_health;",
                "proxy_method GET;",
                "proxy_pass_request_body off;",
                *proxy_headers('""'),
                'proxy_set_header Content-Length "";',
                "proxy_pass http://coderig_litellm/health/liveliness;",
                "error_page 401 403 404 500 502 503 504 = @coderig_unready;",
            ],
        ),
        *_location(
            "= /_coderig_model_health",
            [
                "internal;",
                "proxy_method GET;",
                "proxy_pass_request_body off;",
                *proxy_headers('""'),
                'proxy_set_header Content-Length "";',
                "proxy_connect_timeout 2s;",
                "proxy_read_timeout 5s;",
                f"proxy_pass {spec.model_health_url};",
            ],
        ),
        "location @coderig_unready { return 503 " + _nginx_quote('{"status":"unready"}') + "; }",
        "",
        "# Claude Code's telemetry and connectivity probes: answered here, never forwarded.",
        *_location("= /api/hello", ["access_log off;", "return 200 " + _nginx_quote("{}") + ";"]),
        *_location("= /api/event_logging/batch", ["access_log off;", "return 200 " + _nginx_quote("{}") + ";"]),
        "",
        *_native_locations(spec, to_litellm),
        *_location("/v1/messages", [*guard_a, *to_litellm]),
    ]
    if spec.direct_chat_backends:
        body += _location(
            "= /v1/chat/completions",
            [
                *guard_o,
                *failover(),
                *_model_headers(spec),
                "proxy_pass http://coderig_model;",
            ],
        )
    body += [
        *_location("~ ^/v1/(chat/completions|completions|responses|models)(/|$)", [*guard_o, *to_litellm]),
        *_location("/", ["return 404 " + _nginx_quote(not_found) + ";"]),
        *_named_errors(spec),
    ]
    return ["server {", *_indent(body, 1), "}"]


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


def _upstreams(spec: GatewaySpec) -> list[str]:
    out = [
        "upstream coderig_litellm {",
        f"    server {spec.litellm} max_fails=0;",
        f"    keepalive {spec.upstream_keepalive};",
        f"    keepalive_timeout {UPSTREAM_IDLE_S}s;",
        "}",
    ]
    if spec.direct_chat_backends:
        servers = balanced_servers("coderig_model", spec.direct_chat_backends, spec.upstream_keepalive, UPSTREAM_IDLE_S)
        out += [*affinity_map(), "upstream coderig_model {", *servers, "}"]
    if spec.native_routes:
        out += native_upstream(spec.native_relays, spec.upstream_keepalive, UPSTREAM_IDLE_S)
    return out


def _model_headers(spec: GatewaySpec) -> list[str]:
    return proxy_headers("$coderig_model_authorization" if spec.direct_chat_authorization else '""')


def _native_locations(spec: GatewaySpec, to_litellm: list[str]) -> list[str]:
    if not spec.native_routes:
        return []
    if len(spec.native_relays) != len(spec.direct_chat_backends) or not spec.native_relays:
        raise ValueError("GatewaySpec: native_routes need one native_relays entry per direct_chat_backends entry")
    unknown = set(spec.native_routes) - set(NATIVE_ROUTES)
    if unknown:
        raise ValueError(f"GatewaySpec.native_routes: unknown {sorted(unknown)}; allowed {sorted(NATIVE_ROUTES)}")
    return native_locations(
        spec.native_routes,
        lambda shape: _auth_guard(shape, spec),
        _model_headers(spec),
        to_litellm[:-1],
        _location,
    )


def render_gateway_http(spec: GatewaySpec) -> str:
    """The http-level part: maps, limits, log format, upstreams and the server block."""
    lines = [
        "# Rendered by coderig (frontdoor). Holds no key material: see the keys include.",
        f"include {spec.keys_include};",
        "# Developer name from either key header (Bearer first); empty when neither matched.",
        "map $coderig_dev_bearer $coderig_developer {",
        '    "" $coderig_dev_xkey;',
        "    default $coderig_dev_bearer;",
        "}",
        _json_log_format(),
        f"limit_req_zone $coderig_developer zone=coderig_per_developer:10m rate={spec.rate_per_second}r/s;",
        "limit_req_status 429;",
        "server_tokens off;",
        *_temp_paths(spec),
        *_upstreams(spec),
        *_server_block(spec),
    ]
    return "\n".join(lines) + "\n"


def _temp_paths(spec: GatewaySpec) -> list[str]:
    if not spec.temp_dir:
        return []
    return [
        f"{kind}_temp_path {spec.temp_dir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    ]


def render_gateway_conf(spec: GatewaySpec) -> str:
    """A complete nginx.conf (main, events and http contexts)."""
    head = [
        *([f"user {spec.user};"] if spec.user else []),
        f"worker_processes {spec.worker_processes};",
        f"pid {spec.pid_path};",
        f"error_log {spec.error_log} warn;",
        *([] if spec.daemon else ["daemon off;"]),
        "events {",
        f"    worker_connections {spec.worker_connections};",
        "}",
        "http {",
    ]
    http = render_gateway_http(spec).rstrip("\n").split("\n")
    return "\n".join([*head, *_indent(http, 1), "}"]) + "\n"


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
