"""What keeps one bad peer from hurting the others at the gateway: bounds on the unauthenticated
(handshake and header time, connections per address, connection slots), an access log that stays
valid JSON whatever bytes a client sends, no LiteLLM internals in responses, and nginx's own
protocol errors answered in the client's JSON error shape. Pure: returns nginx config lines.

Pinned nginx (Debian bookworm's 1.22): there is no `ssl_handshake_timeout` (nginx 1.25.x added
it); in 1.22 the TLS handshake runs under `client_header_timeout` (ngx_http_ssl_handshake arms the
read timer with it), so that one short timeout bounds a connection that sends a partial ClientHello
or partial headers. `limit_conn` counts requests being processed per address (after the headers).
"""

from __future__ import annotations

import json

from coderig.frontdoor.native import session_chain

# A handshake plus request headers take milliseconds; a slow mobile link a few seconds.
HANDSHAKE_HEADER_TIMEOUT_S = 10
# Requests in progress from one address: an office behind one NAT address runs many developers'
# streams at once, so this bounds a runaway client, not a team.
CONNECTIONS_PER_ADDRESS = 512
# Connection slots per worker (each proxied request holds two: client and upstream): 4x what a flood
# of 8,400 half-open handshakes from one address took from 2 workers of 4,096 (issue 21), at ~0.5 KB
# of nginx's preallocated connection structures each (~8 MB per worker). Half-open connections go
# after HANDSHAKE_HEADER_TIMEOUT_S.
WORKER_CONNECTIONS = 16384

# Response headers LiteLLM adds (litellm 1.106.2, proxy/common_request_processing.py
# `get_custom_headers`): its version, the model id and api base, costs, key budgets, timings.
LITELLM_RESPONSE_HEADERS = (
    "x-litellm-version",
    "x-litellm-model-id",
    "x-litellm-model-name",
    "x-litellm-model-api-base",
    "x-litellm-model-region",
    "x-litellm-model-group",
    "x-litellm-call-id",
    "x-litellm-cache-key",
    "x-litellm-response-cost",
    "x-litellm-response-cost-original",
    "x-litellm-response-cost-input",
    "x-litellm-response-cost-output",
    "x-litellm-response-cost-cache-read",
    "x-litellm-response-cost-cache-creation",
    "x-litellm-response-cost-reasoning",
    "x-litellm-response-cost-tool-usage",
    "x-litellm-response-cost-discount-amount",
    "x-litellm-response-cost-margin-amount",
    "x-litellm-response-cost-margin-percent",
    "x-litellm-key-spend",
    "x-litellm-key-max-budget",
    "x-litellm-key-tpm-limit",
    "x-litellm-key-rpm-limit",
    "x-litellm-response-duration-ms",
    "x-litellm-overhead-duration-ms",
    "x-litellm-callback-duration-ms",
    "x-litellm-timing-llm-api-ms",
    "x-litellm-timing-pre-processing-ms",
    "x-litellm-timing-post-processing-ms",
    "x-litellm-timing-message-copy-ms",
    "x-litellm-timeout",
    "x-litellm-attempted-retries",
    "x-litellm-attempted-fallbacks",
    "x-litellm-max-fallbacks",
    "x-litellm-fastest_response_batch_completion",
    "x-litellm-classifier-cost",
    "llm_provider-x-litellm-response-cost",
)

# nginx's own answers to a request it cannot parse: 400 (bad request line or headers), 494 (headers
# too large; sent as 400), 501 (an unknown Transfer-Encoding), 505 (an HTTP version it does not speak)
_OWN_ERRORS = {
    400: (400, "bad request"),
    494: (400, "request headers too large"),
    501: (501, "transfer encoding not implemented"),
    505: (505, "HTTP version not supported"),
}
LOG_NOT_ASCII = "(not printable ASCII)"
# the first session header a client sent (coderig.frontdoor.native.SESSION_HEADERS order), "" when none
LOG_SESSION_RAW = "$coderig_log_session_sent"
OWN_ERROR_PATH = "/_coderig_error_"


def _quote(text: str) -> str:
    if "'" in text or "\\" in text:
        raise ValueError("nginx literal must not contain quotes or backslashes")
    return f"'{text}'"


def _bodies(message: str) -> tuple[str, str]:
    """(Anthropic, OpenAI) error bodies for one of nginx's own errors."""
    anthropic = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
    openai = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "bad_request"}}
    )
    return anthropic, openai


def http_lines() -> list[str]:
    """http context: the per-address zone, and the log fields taken from what a client sent, kept
    when they are printable ASCII (nginx's `escape=json` writes bytes >= 0x80 raw: invalid UTF-8)."""
    out = [
        "limit_conn_zone $binary_remote_addr zone=coderig_per_address:10m;",
        "limit_conn_status 429;",
        "map $uri $coderig_log_path {",
        '    "~^[ -~]*$" $uri;',
        f'    default "{LOG_NOT_ASCII}";',
        "}",
        # the session as the affinity key reads it: Claude Code's, Codex's or opencode's header
        *session_chain(LOG_SESSION_RAW, '""', "coderig_log_session_"),
        f"map {LOG_SESSION_RAW} $coderig_log_session {{",
        '    "" "";',  # nginx tries a map's regexes on non-empty values only (ngx_http_map_find)
        f'    "~^[ -~]*$" {LOG_SESSION_RAW};',
        f'    default "{LOG_NOT_ASCII}";',
        "}",
    ]
    for status, (_sent, message) in _OWN_ERRORS.items():
        anthropic, openai = _bodies(message)
        out += [
            f"map $request_uri $coderig_error_{status} {{",  # the request as sent (it may have no URI)
            f"    ~^/v1/messages {_quote(anthropic)};",
            f"    ~^/api/ {_quote(anthropic)};",
            f"    default {_quote(openai)};",
            "}",
        ]
    return out


def server_lines() -> list[str]:
    """server context: the per-address limit, LiteLLM's headers dropped, nginx's own errors as JSON."""
    return [
        f"limit_conn coderig_per_address {CONNECTIONS_PER_ADDRESS};",
        *(f"proxy_hide_header {name};" for name in LITELLM_RESPONSE_HEADERS),
        # a URI, not a named location: a request line nginx could not parse has no URI to carry over
        *(f"error_page {status} {OWN_ERROR_PATH}{status};" for status in _OWN_ERRORS),
    ]


def own_error_locations() -> list[str]:
    return [
        f"location = {OWN_ERROR_PATH}{status} {{ internal; return {sent} $coderig_error_{status}; }}"
        for status, (sent, _message) in _OWN_ERRORS.items()
    ]


def worker_connections(nofile_limit: int) -> int:
    """Connection slots per worker where the open-file limit is `nofile_limit` (its hard limit: nginx
    raises the soft one to 2 per slot + 1024 and cannot go above it unprivileged)."""
    return max(1024, min(WORKER_CONNECTIONS, (nofile_limit - 1024) // 2))
