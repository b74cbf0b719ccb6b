"""The gateway's routes and the nginx config served from them.

`ROUTES` is an allow-list of exact paths and methods, each with the error shape its clients read
(Anthropic or OpenAI) and a handler naming where it goes. Everything else is answered by nginx
itself before any upstream is contacted: 404 for a path not in the list, 405 (with `Allow`) for a
listed path and another method, both in the client's error shape. To serve another endpoint add a
`Route`; to send one somewhere new add a handler to `HANDLERS`.

Timeouts: every client gets short ones (headers, body, keepalive, sends); only proxied,
authenticated requests get the long read/send timeouts a many-minute turn needs. Request bodies are
buffered whole before anything is proxied (in memory up to `client_body_buffer_size`, then on disk),
so an oversize or trickled body never reaches, or holds, an upstream connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import coderig.frontdoor.budget as budget
from coderig.frontdoor.cidrs import http_lines as cidr_http_lines
from coderig.frontdoor.cidrs import server_lines as cidr_server_lines
from coderig.frontdoor.native import failover, fallback_location, native_route, replayable
from coderig.frontdoor.nginx import (
    DEVELOPER_HEADER,
    RATE_MSG,
    UNAUTHORIZED_MSG,
    UNAVAILABLE_MSG,
    GatewaySpec,
    anthropic_error,
    json_log_format,
    listen_directive,
    nginx_quote,
    openai_error,
    tls_block,
    upstream_blocks,
)
from coderig.frontdoor.nginx_hardening import HANDSHAKE_HEADER_TIMEOUT_S, http_lines, own_error_locations, server_lines

Shape = Literal["anthropic", "openai"]


@dataclass(frozen=True)
class Route:
    """One allow-listed endpoint: `location = path` (the query string is not part of the match)."""

    path: str
    methods: tuple[str, ...]
    shape: Shape  # the error shape its clients read
    handler: str  # a key of HANDLERS: where the request goes


ROUTES: tuple[Route, ...] = (
    Route("/v1/messages", ("POST",), "anthropic", "litellm"),
    Route("/v1/messages/count_tokens", ("POST",), "anthropic", "litellm"),
    Route("/v1/chat/completions", ("POST",), "openai", "chat"),
    Route("/v1/responses", ("POST",), "openai", "litellm"),
    Route("/v1/models", ("GET",), "openai", "litellm"),
    # Claude Code's connectivity probe and telemetry: answered here, never forwarded (GET on
    # /api/hello too: the node's container health check is busybox wget)
    Route("/api/hello", ("HEAD", "GET"), "anthropic", "answer"),
    Route("/api/event_logging/batch", ("POST",), "anthropic", "answer"),
    Route("/healthz", ("GET", "HEAD"), "openai", "healthz"),
    # the front door alone (nginx and LiteLLM answer), whatever the model does: container health checks
    Route("/healthz/front", ("GET", "HEAD"), "openai", "front_healthz"),
)

# The shape of the 404 for a path outside ROUTES, by prefix (nginx picks the longest match).
NOT_FOUND_SHAPES: tuple[tuple[str, Shape], ...] = (
    ("/v1/messages", "anthropic"),
    ("/api/", "anthropic"),
    ("/", "openai"),
)

CLIENT_TIMEOUT_S = 60  # headers, body (between two reads) and responses nginx answers itself
KEEPALIVE_TIMEOUT_S = 20  # an idle client connection between requests
CLIENT_BODY_BUFFER = "1m"  # bodies up to this stay in memory (Claude Code's are ~50 KB - 1 MB)
HEALTH_CACHE_S = 1  # /healthz asks its upstreams at most once per this many seconds
HEALTH_CACHE_ZONE = "coderig_health"
HEALTHZ_RATE = "5r/s"  # per client address, burst HEALTHZ_BURST (bounds probes while nothing is cached)
HEALTHZ_BURST = 20

_TOO_LARGE_MSG = "request body too large for this gateway"
_TRANSLATOR_MSG = "the translation layer of the gateway (LiteLLM) failed on this request; its log has the details"
_ERRORS: dict[tuple[Shape, int], str] = {
    ("anthropic", 404): anthropic_error("not_found_error", "no such endpoint on this gateway"),
    ("openai", 404): openai_error("invalid_request_error", "not_found", "no such endpoint on this gateway"),
    ("anthropic", 405): anthropic_error("invalid_request_error", "method not allowed on this endpoint"),
    ("openai", 405): openai_error("invalid_request_error", "method_not_allowed", "method not allowed on this endpoint"),
    ("anthropic", 413): anthropic_error("request_too_large", _TOO_LARGE_MSG),
    ("openai", 413): openai_error("invalid_request_error", "request_too_large", _TOO_LARGE_MSG),
    ("anthropic", 401): anthropic_error("authentication_error", UNAUTHORIZED_MSG),
    ("openai", 401): openai_error("invalid_request_error", "invalid_api_key", UNAUTHORIZED_MSG),
    ("anthropic", 429): anthropic_error("rate_limit_error", RATE_MSG),
    ("openai", 429): openai_error("rate_limit_error", "rate_limit_exceeded", RATE_MSG),
    ("anthropic", 500): anthropic_error("api_error", _TRANSLATOR_MSG),
    ("openai", 500): openai_error("server_error", "translator_error", _TRANSLATOR_MSG),
    ("anthropic", 503): anthropic_error("overloaded_error", UNAVAILABLE_MSG),
    ("openai", 503): openai_error("server_error", "upstream_unavailable", UNAVAILABLE_MSG),
}


def error_body(shape: Shape, status: int) -> str:
    return _ERRORS[(shape, status)]


def _return(shape: Shape, status: int) -> str:
    return f"return {status} {nginx_quote(error_body(shape, status))};"


def _indent(lines: list[str], level: int) -> list[str]:
    pad = "    " * level
    return [pad + line if line else line for line in lines]


def _location(header: str, body: list[str]) -> list[str]:
    return [f"location {header} {{", *_indent(body, 1), "}"]


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


# ---------------------------------------------------------------- pieces of a route's location


def _method_guard(route: Route) -> list[str]:
    """405 in the route's shape for any other method (rewrite phase: before the key check)."""
    return [
        f"if ($request_method !~ ^(?:{'|'.join(route.methods)})$) {{",
        f'    add_header Allow "{", ".join(route.methods)}" always;',
        f"    {_return(route.shape, 405)}",
        "}",
    ]


def _auth_guard(shape: Shape, spec: GatewaySpec, path: str) -> list[str]:
    """Key check (rewrite phase, so before anything else), per-developer limit, model gate."""
    gate = (
        ["auth_request /_coderig_model_health;", f"error_page 500 = @coderig_gate_{shape};"]
        if spec.model_gate_retry_after_s
        else []
    )
    return [
        'if ($coderig_developer = "") {',
        f"    {_return(shape, 401)}",
        "}",
        f"limit_req zone=coderig_per_developer burst={spec.rate_burst} nodelay;",
        *budget.guard(shape, spec.daily_tokens, path),
        f"error_page 413 = @coderig_413_{shape};",
        f"error_page 429 = @coderig_429_{shape};",
        f"error_page 502 503 504 = @coderig_503_{shape};",
        *gate,
    ]


def _long_timeouts(spec: GatewaySpec) -> list[str]:
    """Only where an authenticated request is proxied: a turn can be silent for many minutes."""
    t = f"{spec.timeout_s}s"
    return [f"proxy_read_timeout {t};", f"proxy_send_timeout {t};", f"send_timeout {t};"]


def _health_cache(key: str) -> list[str]:
    """Serve a health answer from a cache refreshed at most every HEALTH_CACHE_S; one request
    refreshes it while the others wait for (or are served the stale) answer."""
    return [
        "proxy_buffering on;",  # nginx caches only buffered responses
        f"proxy_cache {HEALTH_CACHE_ZONE};",
        f"proxy_cache_key {key};",
        f"proxy_cache_valid any {HEALTH_CACHE_S}s;",
        "proxy_cache_lock on;",
        "proxy_cache_lock_timeout 5s;",
        "proxy_cache_use_stale updating;",
        "proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires;",
    ]


def _health_request() -> list[str]:
    return [
        "proxy_method GET;",
        "proxy_pass_request_body off;",
        *proxy_headers('""'),
        'proxy_set_header Content-Length "";',
        "proxy_connect_timeout 2s;",
        "proxy_read_timeout 5s;",
    ]


# ---------------------------------------------------------------- handlers: where a route goes

Handler = Callable[[Route, GatewaySpec], list[str]]


def _to_litellm(route: Route, spec: GatewaySpec) -> list[str]:
    # the path is the route's own (nginx's normalized URI), never the raw request target
    return [
        *_auth_guard(route.shape, spec, route.path),
        *_long_timeouts(spec),
        *_litellm_errors(route.shape, spec),
        *proxy_headers("$coderig_upstream_authorization"),
        f"proxy_pass http://coderig_litellm{route.path};",
    ]


def _litellm_errors(shape: Shape, spec: GatewaySpec) -> list[str]:
    """LiteLLM's own failures (a plain-text 500 from its web server, 502-504) reach the client in its
    JSON error shape; its 4xx answers (a context too long, a bad request) pass as they are. With the
    model gate on, its 500 page is the gate's, so LiteLLM's errors pass as they are there."""
    if spec.model_gate_retry_after_s:
        return []
    return ["proxy_intercept_errors on;", f"error_page 500 = @coderig_500_{shape};"]


def _chat(route: Route, spec: GatewaySpec) -> list[str]:
    """OpenAI-native chat straight to the model servers when there are direct backends."""
    if not spec.direct_chat_backends:
        return _to_litellm(route, spec)
    return [
        *_auth_guard(route.shape, spec, route.path),
        *_long_timeouts(spec),
        *failover(),
        *_model_headers(spec),
        f"proxy_pass http://coderig_model{route.path};",
    ]


def _model_headers(spec: GatewaySpec) -> list[str]:
    return proxy_headers("$coderig_model_authorization" if spec.direct_chat_authorization else '""')


def _native(route: Route, spec: GatewaySpec, name: str, upstream: str) -> list[str]:
    """A route the model servers serve themselves (coderig.frontdoor.native): straight there (the
    streaming ones through the keepalive relay), replayed to LiteLLM on the model server's 404."""
    return [
        *_auth_guard(route.shape, spec, route.path),
        *_long_timeouts(spec),
        *replayable(name),
        *_model_headers(spec),
        f"proxy_pass http://{upstream}{route.path};",
    ]


def _answer(_route: Route, _spec: GatewaySpec) -> list[str]:
    return ["access_log off;", "return 200 " + nginx_quote("{}") + ";"]


def _healthz(route: Route, _spec: GatewaySpec) -> list[str]:
    """Readiness: the model server's /health (auth_request subrequest) and LiteLLM's liveliness,
    each from the health cache; unauthenticated, so also limited per client address."""
    return [
        "access_log off;",
        f"limit_req zone=coderig_healthz burst={HEALTHZ_BURST} nodelay;",
        f"error_page 429 = @coderig_429_{route.shape};",
        "auth_request /_coderig_model_health;",
        *_health_request(),
        *_health_cache("litellm_liveliness"),
        "proxy_pass http://coderig_litellm/health/liveliness;",
        "error_page 401 403 404 500 502 503 504 = @coderig_unready;",
    ]


def _front_healthz(route: Route, _spec: GatewaySpec) -> list[str]:
    """Liveness of the front door itself: LiteLLM's liveliness through nginx, not the model's health."""
    return [
        "access_log off;",
        f"limit_req zone=coderig_healthz burst={HEALTHZ_BURST} nodelay;",
        f"error_page 429 = @coderig_429_{route.shape};",
        *_health_request(),
        *_health_cache("litellm_liveliness"),
        "proxy_pass http://coderig_litellm/health/liveliness;",
        "error_page 401 403 404 500 502 503 504 = @coderig_unready;",
    ]


HANDLERS: dict[str, Handler] = {
    "litellm": _to_litellm,
    "chat": _chat,
    "answer": _answer,
    "healthz": _healthz,
    "front_healthz": _front_healthz,
}


# ---------------------------------------------------------------- server block and whole config


def _route_locations(spec: GatewaySpec, routes: tuple[Route, ...]) -> list[str]:
    paths = [r.path for r in routes]
    if len(set(paths)) != len(paths):
        raise ValueError(f"gateway routes: a path is listed twice: {paths}")
    out: list[str] = []
    for route in routes:
        native = native_route(route.path, spec.native_routes) if route.handler == "litellm" else None
        if native is None:
            out += _location(f"= {route.path}", [*_method_guard(route), *HANDLERS[route.handler](route, spec)])
            continue
        out += _location(f"= {route.path}", [*_method_guard(route), *_native(route, spec, *native)])
        litellm = proxy_headers("$coderig_upstream_authorization")
        out += fallback_location(native[0], route.path, litellm, _long_timeouts(spec))
    return out


def _named_errors(spec: GatewaySpec) -> list[str]:
    out: list[str] = []
    shapes: tuple[Shape, ...] = ("anthropic", "openai")
    for shape in shapes:
        for status in (413, 429, 500, 503):
            answer = nginx_quote(error_body(shape, status))
            out.append(f"location @coderig_{status}_{shape} {{ return {status} {answer}; }}")
        if spec.model_gate_retry_after_s:
            out.append(
                f"location @coderig_gate_{shape} {{ add_header Retry-After {spec.model_gate_retry_after_s} "
                f"always; return 503 {nginx_quote(error_body(shape, 503))}; }}"
            )
    return out


def _server_block(spec: GatewaySpec, routes: tuple[Route, ...]) -> list[str]:
    client = f"{CLIENT_TIMEOUT_S}s"
    body: list[str] = [
        listen_directive(spec),
        *cidr_server_lines(spec.allowed_cidrs),
        "server_name _;",
        *tls_block(spec),
        "default_type application/json;",
        f"client_max_body_size {spec.max_body_mb}m;",
        f"client_body_buffer_size {CLIENT_BODY_BUFFER};",
        f"client_header_timeout {HANDSHAKE_HEADER_TIMEOUT_S}s;",  # and the TLS handshake (nginx 1.22)
        f"client_body_timeout {client};",
        f"send_timeout {client};",
        f"keepalive_timeout {KEEPALIVE_TIMEOUT_S}s;",
        "reset_timedout_connection on;",
        *server_lines(),
        "gzip off;",
        "access_log " + spec.access_log + " coderig_json;",
        "proxy_http_version 1.1;",
        "proxy_buffering off;",  # responses (SSE streams) go out as they come
        "proxy_request_buffering on;",  # request bodies are read whole (size cap, 413) before any upstream
        "proxy_cache off;",
        "proxy_connect_timeout 10s;",
        "proxy_next_upstream off;",
        "",
        "# The allow-list: exact paths and methods (ROUTES in coderig/frontdoor/nginx_routes.py).",
        *_route_locations(spec, routes),
        *_location(
            "= /_coderig_model_health",
            ["internal;", *_health_request(), *_health_cache("model_health"), f"proxy_pass {spec.model_health_url};"],
        ),
        "location @coderig_unready { return 503 " + nginx_quote('{"status":"unready"}') + "; }",
        "",
        "# Anything else: 404 in the client's shape, never forwarded (LiteLLM's admin/UI routes included).",
        *[line for prefix, shape in NOT_FOUND_SHAPES for line in _location(prefix, [_return(shape, 404)])],
        *_named_errors(spec),
        *budget.server_lines(spec.daily_tokens),
        *own_error_locations(),
    ]
    return ["server {", *_indent(body, 1), "}"]


def _health_cache_dir(spec: GatewaySpec) -> str:
    return f"{spec.temp_dir or '/tmp'}/coderig_health"  # noqa: S108 - nginx creates it, for its workers


def _temp_paths(spec: GatewaySpec) -> list[str]:
    if not spec.temp_dir:
        return []
    return [
        f"{kind}_temp_path {spec.temp_dir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    ]


def render_gateway_http(spec: GatewaySpec, routes: tuple[Route, ...] = ROUTES) -> str:
    """The http-level part: maps, limits, log format, health cache, upstreams and the server block."""
    budget.check_spec(spec.daily_tokens, spec.budget_check, bool(spec.model_gate_retry_after_s))
    lines = [
        "# Rendered by coderig (frontdoor). Holds no key material: see the keys include.",
        f"include {spec.keys_include};",
        "# Developer name from either key header (Bearer first); empty when neither matched.",
        "map $coderig_dev_bearer $coderig_developer {",
        '    "" $coderig_dev_xkey;',
        "    default $coderig_dev_bearer;",
        "}",
        json_log_format(),
        *http_lines(),
        *cidr_http_lines(spec.allowed_cidrs),
        *budget.http_lines(spec.daily_tokens, spec.budget_check),
        f"limit_req_zone $coderig_developer zone=coderig_per_developer:10m rate={spec.rate_per_second}r/s;",
        f"limit_req_zone $binary_remote_addr zone=coderig_healthz:1m rate={HEALTHZ_RATE};",
        "limit_req_status 429;",
        f"proxy_cache_path {_health_cache_dir(spec)} levels=1 keys_zone={HEALTH_CACHE_ZONE}:1m max_size=4m "
        "inactive=1m use_temp_path=off;",
        "server_tokens off;",
        *_temp_paths(spec),
        *upstream_blocks(spec),
        *_server_block(spec, routes),
    ]
    return "\n".join(lines) + "\n"


def render_gateway_conf(spec: GatewaySpec, routes: tuple[Route, ...] = ROUTES) -> str:
    """A complete nginx.conf (main, events and http contexts)."""
    head = [
        *([f"user {spec.user};"] if spec.user else []),
        f"worker_processes {spec.worker_processes};",
        f"worker_rlimit_nofile {2 * spec.worker_connections + 1024};",  # a proxied request holds two
        f"pid {spec.pid_path};",
        f"error_log {spec.error_log} warn;",
        *([] if spec.daemon else ["daemon off;"]),
        "events {",
        f"    worker_connections {spec.worker_connections};",
        "}",
        "http {",
    ]
    http = render_gateway_http(spec, routes).rstrip("\n").split("\n")
    return "\n".join([*head, *_indent(http, 1), "}"]) + "\n"
