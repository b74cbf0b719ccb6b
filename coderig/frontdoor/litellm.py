"""LiteLLM's proxy config and command line for the front door. Pure.

LiteLLM translates Anthropic /v1/messages and OpenAI /v1/responses to the model server's
/v1/chat/completions, routes `claude-*` names to the served model, and balances over replicas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from coderig.core.engine import CLAUDE_WILDCARD

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
DEFAULT_TIMEOUT_S = 1800  # every hop: >= 30 min (a Claude Code turn can run many minutes)

# The proxy's environment on every target (litellm 1.106.2). JSON_LOGS: one JSON line per record,
# the traceback inside it (`litellm/_logging.py` JsonFormatter): a failing request logs 1 line, not
# ~55 (measured: 2 failures to a dead backend wrote 110 lines in plain mode, 2 with JSON_LOGS).
# LITELLM_LOCAL_MODEL_COST_MAP: no fetch of the cost map from the internet at start (nodes may have
# none). The admin UI and API docs are off: nginx's allow-list never routes to them anyway.
LITELLM_ENV = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "JSON_LOGS": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
}


@dataclass(frozen=True)
class ModelRoute:
    """One served model as LiteLLM sees it."""

    served_name: str
    backends: tuple[str, ...]  # OpenAI base URLs ending in /v1, one per model replica
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    aliases: tuple[str, ...] = ()
    # what LiteLLM sends the model servers: "none" for an unkeyed server on loopback, or
    # "os.environ/VAR" for a key (`vllm --api-key`, an external endpoint's key) kept in the environment
    api_key: str = "none"
    timeout_s: int = DEFAULT_TIMEOUT_S
    # /v1/responses: translate to chat/completions in LiteLLM (the path every tool parser
    # supports) instead of passing through to the model server's own /v1/responses.
    responses_via_chat: bool = True
    # our own model servers (behind the usage relay): LiteLLM forwards the gateway's x- headers, so
    # X-Coderig-Developer (set by the gateway, replacing any a client sent) reaches the relay and
    # the fallback path is counted too; off for an external endpoint, which is told nothing
    forward_developer: bool = False


def model_names(route: ModelRoute) -> list[str]:
    """Every model name a client may ask for, in order: served name, aliases, `claude-*`."""
    names = [route.served_name, *route.aliases, CLAUDE_WILDCARD]
    return list(dict.fromkeys(names))


def validate_route(route: ModelRoute) -> None:
    if not route.backends:
        raise ValueError("ModelRoute.backends: at least one model server URL is required")
    for url in route.backends:
        if not re.match(r"^https?://[^/\s]+(/.*)?/v1$", url):
            raise ValueError(f"ModelRoute.backends: {url!r} must be an http(s) URL ending in /v1")
    if route.max_tokens < 1:
        raise ValueError(f"ModelRoute.max_tokens: must be >= 1, got {route.max_tokens}")
    if route.timeout_s < 1:
        raise ValueError(f"ModelRoute.timeout_s: must be >= 1, got {route.timeout_s}")


def _litellm_params(route: ModelRoute, backend: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": f"hosted_vllm/{route.served_name}",
        "api_base": backend,
        "api_key": route.api_key,
        "timeout": route.timeout_s,
        "stream_timeout": route.timeout_s,
        "max_tokens": route.max_tokens,  # a default: a request's own max_tokens wins
    }
    if route.temperature is not None:
        params["temperature"] = route.temperature
    if route.top_p is not None:
        params["top_p"] = route.top_p
    if route.chat_template_kwargs:
        params["extra_body"] = {"chat_template_kwargs": dict(route.chat_template_kwargs)}
    if route.responses_via_chat:
        params["use_chat_completions_api"] = True
    return params


def litellm_config(route: ModelRoute) -> dict[str, Any]:
    """LiteLLM proxy config as a dict: one deployment per (model name, replica)."""
    validate_route(route)
    model_list = []
    for name in model_names(route):
        for index, backend in enumerate(route.backends):
            model_list.append(
                {
                    "model_name": name,
                    "litellm_params": _litellm_params(route, backend),
                    # Explicit zero rates: a self-hosted model costs nothing per token, and LiteLLM
                    # skips its per-request "zero cost" diagnosis (measurable CPU per request).
                    "model_info": {"id": f"{name}#{index}", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
                }
            )
    return {
        "model_list": model_list,
        "litellm_settings": {
            "drop_params": True,
            "request_timeout": route.timeout_s,
            "num_retries": 0,
            "telemetry": False,
        },
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "num_retries": 0,
            "timeout": route.timeout_s,
            "stream_timeout": route.timeout_s,
        },
        "general_settings": {
            # No database: keys are checked by the gateway; LiteLLM only knows the master key.
            "master_key": f"os.environ/{MASTER_KEY_ENV}",
            "disable_spend_logs": True,
            # litellm/proxy/litellm_pre_call_utils.py (add_litellm_data_for_backend_llm_call): every
            # x- header but x-stainless-* goes to the model server
            **({"forward_client_headers_to_llm_api": True} if route.forward_developer else {}),
        },
    }


# Measured (bench/frontdoor_bench.py): LiteLLM spends ~1.4 ms of CPU per streamed chunk, so one
# worker carries ~600 tokens/s of /v1/messages streams; agents stream ~50 tokens/s each.
TOKENS_PER_S_PER_WORKER = 600
TOKENS_PER_S_PER_STREAM = 50
MAX_LITELLM_WORKERS = 16


def litellm_workers(concurrent_streams: int) -> int:
    """Workers for a front door expected to carry `concurrent_streams` streams at once."""
    need = -(-max(concurrent_streams, 1) * TOKENS_PER_S_PER_STREAM // TOKENS_PER_S_PER_WORKER)
    return max(1, min(MAX_LITELLM_WORKERS, need))


def litellm_args(config_path: str, host: str, port: int, workers: int) -> list[str]:
    """Arguments after the `litellm` executable (the image's entrypoint takes the same)."""
    args = ["--config", config_path, "--host", host, "--port", str(port), "--num_workers", str(workers)]
    if workers > 1:
        # uvicorn kills workers that miss a 5 s health check; LiteLLM's import alone takes ~10 s
        # per worker on loaded cores, so several workers never come up without this.
        args += ["--timeout_worker_healthcheck", "300"]
    return args


def render_litellm_config(route: ModelRoute) -> str:
    return yaml.safe_dump(litellm_config(route), sort_keys=False)
