"""The gateway's native routes: nginx sends Anthropic `/v1/messages` (+ `count_tokens`) and OpenAI
`/v1/responses` straight to the model servers that speak them (vLLM does), through the SSE
keepalive relay (coderig.runtime.sse_keepalive, one loopback listener per model server, the one hop
to a model server on every path), with the developer's session pinned to one replica. Pure: returns
nginx config lines.

Why (bench/frontdoor_bench.py, bench/results/): LiteLLM translating Anthropic <-> OpenAI costs ~1.4 ms
of CPU per streamed chunk, a third to a half of the direct throughput at 64 streams on 2 cores; the
model server's own endpoint costs the gateway nothing per chunk.

A name the model server does not serve (Claude Code's `claude-haiku-…` background calls) gets a
404 "The model `X` does not exist." from vLLM: the request body is buffered, so nginx replays the
same request to LiteLLM, which maps every `claude-*` name to the served model.
"""

from __future__ import annotations

from collections.abc import Sequence

# route name -> (exact path, error shape, upstream): every route goes to the model servers' upstream,
# whose servers are the keepalive relays (count_tokens too: a sleeping model is woken for it as well)
NATIVE_ROUTES: dict[str, tuple[str, str, str]] = {
    "messages": ("/v1/messages", "anthropic", "coderig_model"),
    "count_tokens": ("/v1/messages/count_tokens", "anthropic", "coderig_model"),
    "responses": ("/v1/responses", "openai", "coderig_model"),
}
# what each engine serves natively (pinned versions): vLLM 0.28 all three; llama.cpp server b9603 the
# Anthropic pair (ggml-org/llama.cpp#17570, 2025-11) but no /v1/responses (ggml-org/llama.cpp#19138)
AFFINITY_VAR = "$coderig_affinity"


# The session header each agent CLI sends on every model request, checked in the pinned CLIs'
# own code (.coderig/npm; the versions .ci/frontdoor-deps.sh installs):
# - Claude Code 2.1.330: `X-Claude-Code-Session-Id`;
# - Codex 0.169.0 (codex-rs, a Rust binary): `session-id` (the header name sits beside the Responses
#   client's `x-client-request-id` / `x-codex-routing-hint` strings; `strings codex | grep session-id`);
# - opencode 1.18.33 (bun bundle): for any provider but its own, `{"x-session-affinity": sessionID,
#   "X-Session-Id": sessionID, ...}` (and `session-id` too for the built-in `openai` provider).
# First match wins; a request with none of them gets its own $request_id (it spreads).
SESSION_HEADERS: tuple[tuple[str, str], ...] = (
    ("claude_code", "x_claude_code_session_id"),
    ("codex", "session_id"),
    ("opencode", "x_session_id"),
)


def session_chain(result: str, fallback: str, prefix: str) -> list[str]:
    """A chain of maps over SESSION_HEADERS, last header first, each falling back to the next one's
    value: `result` holds the first header sent (in SESSION_HEADERS' order), else `fallback`. The
    intermediate variables are named `$<prefix><client>`."""
    out: list[str] = []
    for i, (client, header) in enumerate(reversed(SESSION_HEADERS)):
        var = result if i == len(SESSION_HEADERS) - 1 else f"${prefix}{client}"
        out += [f"map $http_{header} {var} {{", f'    "" {fallback};', f"    default $http_{header};", "}"]
        fallback = var
    return out


def affinity_map() -> list[str]:
    """One replica per agent session (its prefix cache), whichever client sent it; session-less
    clients spread (their own $request_id)."""
    return session_chain(AFFINITY_VAR, "$request_id", "coderig_session_")


FAIL_TIMEOUT_S = 30  # a replica that failed once gets no request for this long (rolling restarts wait it out)


def balanced_servers(zone: str, servers: Sequence[str], keepalive: int, idle_s: int) -> list[str]:
    """The body of an upstream block over model replicas: session-keyed consistent hash; a replica
    that fails once is left alone for 30 s (its sessions move to the next point on the ring). The
    shared zone makes that one failure count for every nginx worker, not one per worker."""
    return [
        f"    zone {zone} 64k;",
        f"    hash {AFFINITY_VAR} consistent;",
        *(f"    server {s} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;" for s in servers),
        f"    keepalive {keepalive};",
        f"    keepalive_timeout {idle_s}s;",
    ]


def failover() -> list[str]:
    """A failed connect (or a relay that closes without a byte because its replica is down) moves
    the request to the next replica once. Safe for POST here: the body is buffered, and inference
    has no side effects, so a request the first replica never answered can run on another."""
    return [
        "proxy_next_upstream error timeout non_idempotent;",
        "proxy_next_upstream_tries 2;",
    ]


def native_route(path: str, enabled: Sequence[str]) -> tuple[str, str] | None:
    """(route name, upstream) when `path` is one of the enabled native routes, else None."""
    for name in enabled:
        if name not in NATIVE_ROUTES:
            raise ValueError(f"GatewaySpec.native_routes: unknown {name!r}; allowed {sorted(NATIVE_ROUTES)}")
    for name in enabled:
        route_path, _shape, upstream = NATIVE_ROUTES[name]
        if route_path == path:
            return name, upstream
    return None


def fallback_name(name: str) -> str:
    return f"@coderig_litellm_{name}"


def replayable(name: str) -> list[str]:
    """What makes a native route's request replayable to LiteLLM on the model server's 404 and to
    another replica on a failed connect."""
    return [
        "proxy_request_buffering on;  # the body can be replayed (fallback, failover)",
        "proxy_intercept_errors on;",
        f"error_page 404 = {fallback_name(name)};  # a name the model server does not serve: claude-*",
        *failover(),
    ]


def fallback_location(name: str, path: str, litellm_headers: list[str], timeouts: list[str]) -> list[str]:
    """The named location the 404 replays to: LiteLLM maps every `claude-*` name to the served
    model. The URI is the route's own path (a named location's proxy_pass takes no URI)."""
    return [
        f"location {fallback_name(name)} {{",
        "    proxy_intercept_errors off;",
        f"    rewrite ^ {path} break;",
        *(f"    {line}" for line in [*timeouts, *litellm_headers]),
        "    proxy_pass http://coderig_litellm;",
        "}",
    ]
