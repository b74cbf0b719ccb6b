"""Per-developer daily token budgets at the gateway (`coderig:developers[].dailyTokens`). Pure: nginx
config lines.

Before every authenticated model request, on every route (native messages, count_tokens and
responses, chat, the LiteLLM routes, and so the claude-* fallback a native route replays to), nginx
asks the relay's usage listener (coderig.runtime.usage_budget) with an `auth_request` subrequest
carrying the developer's name and limit; no key and no body goes there. Over budget, the client gets
429 in its own error shape (Anthropic `rate_limit_error`, OpenAI `rate_limit_exceeded`) with the
relay's message (the limit, the tokens used, the reset time: 00:00 UTC), `retry-after` in seconds to
that reset and `x-should-retry: false` (the Anthropic and OpenAI SDKs, and so Claude Code, then
report it at once instead of retrying for hours). The answer is nginx's own, before any upstream is
contacted, so no `error_page` interception on a proxied route can swallow it, and a sleeping model is
not woken for a request that is refused.

Rendered only when some developer has a budget (one loopback subrequest per model request then).
When the listener does not answer (the relay is down, and with it every model route) the check lets
the request on, so the client gets the route's own 503 in its shape, not a bare 500; nginx's error
log names the failed check.
"""

from __future__ import annotations

from collections.abc import Sequence

from coderig.frontdoor.nginx import anthropic_error, nginx_quote, openai_error

BUDGET_LOCATION = "/_coderig_budget"
UPSTREAM = "coderig_budget"
LIMIT_VAR = "$coderig_daily_tokens"
MESSAGE_VAR = "$coderig_budget_message"
RETRY_VAR = "$coderig_budget_retry"
SHAPES = ("anthropic", "openai")
MODEL_PATHS = ("/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions", "/v1/responses")


def check_spec(daily_tokens: Sequence[tuple[str, int]], check: str, model_gate: bool) -> None:
    """ValueError when budgets cannot be rendered as asked."""
    if not daily_tokens:
        return
    if not check:
        raise ValueError("GatewaySpec.daily_tokens needs budget_check: the relay's usage listener HOST:PORT")
    if model_gate:
        raise ValueError("GatewaySpec.daily_tokens and model_gate_retry_after_s both need the one auth_request")


def http_lines(daily_tokens: Sequence[tuple[str, int]], check: str) -> list[str]:
    """Each developer's limit, by the name the keys include maps the key to ("" : no budget), and
    the relay's usage listener as an upstream with kept-alive connections."""
    if not daily_tokens:
        return []
    rows = [f'    "{name}" "{limit}";' for name, limit in sorted(daily_tokens)]
    # a few idle connections kept (the listener closes one silent for 10 s; nginx's own timeout is shorter)
    upstream = [
        f"upstream {UPSTREAM} {{",
        f"    server {check} max_fails=0;",
        "    keepalive 4;",
        "    keepalive_timeout 5s;",
        "}",
    ]
    return [f"map $coderig_developer {LIMIT_VAR} {{", '    default "";', *rows, "}", *upstream]


def guard(shape: str, daily_tokens: Sequence[tuple[str, int]], path: str) -> list[str]:
    """In each model route's location, after the key check and the per-developer rate limit (not on
    /v1/models: listing the model spends nothing)."""
    if not daily_tokens or path not in MODEL_PATHS:
        return []
    return [
        f"auth_request {BUDGET_LOCATION};",
        f"auth_request_set {MESSAGE_VAR} $upstream_http_x_coderig_budget;",
        f"auth_request_set {RETRY_VAR} $upstream_http_retry_after;",
        f"error_page 403 = @coderig_budget_{shape};",
    ]


def server_lines(daily_tokens: Sequence[tuple[str, int]]) -> list[str]:
    """The subrequest's location (the developer's name and limit only: both key headers are cleared)
    and the 429 answer in each shape."""
    if not daily_tokens:
        return []
    out = [
        f"location = {BUDGET_LOCATION} {{",
        "    internal;",
        "    proxy_method GET;",
        "    proxy_pass_request_body off;",
        '    proxy_set_header Content-Length "";',
        '    proxy_set_header Authorization "";',
        '    proxy_set_header x-api-key "";',
        "    proxy_set_header X-Coderig-Developer $coderig_developer;",
        f"    proxy_set_header X-Coderig-Daily-Tokens {LIMIT_VAR};",
        '    proxy_set_header Connection "";',  # keep-alive to the listener (upstream below)
        "    proxy_connect_timeout 2s;",
        "    proxy_read_timeout 5s;",
        # the listener is the relay's own: when it cannot answer, the relay, the one hop to the model,
        # is down too, and the request gets the route's own 503 in its shape rather than a bare 500
        "    proxy_intercept_errors on;",
        "    error_page 500 502 503 504 = @coderig_budget_unchecked;",
        f"    proxy_pass http://{UPSTREAM}/budget;",
        "}",
        "location @coderig_budget_unchecked { return 204; }",
    ]
    bodies = {
        "anthropic": anthropic_error("rate_limit_error", MESSAGE_VAR),
        "openai": openai_error("rate_limit_error", "rate_limit_exceeded", MESSAGE_VAR),
    }
    for shape in SHAPES:
        out.append(
            f"location @coderig_budget_{shape} {{ add_header Retry-After {RETRY_VAR} always; "
            f"add_header x-should-retry false always; return 429 {nginx_quote(bodies[shape])}; }}"
        )
    return out
