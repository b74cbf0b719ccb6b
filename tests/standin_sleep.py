"""The stand-in's vLLM sleep mode (stdlib only): what vLLM 0.28 serves with VLLM_SERVER_DEV_MODE=1
and --enable-sleep-mode, read in entrypoints/serve/dev/sleep/api_router.py:

    POST /sleep?level=1&mode=abort  -> 200, empty body (mode defaults to "abort": whatever runs is aborted)
    POST /wake_up                   -> 200, empty body, once the engine is awake again
    GET  /is_sleeping               -> 200 {"is_sleeping": bool}

Without dev mode those routes do not exist: FastAPI's 404 {"detail": "Not Found"}. The other dev-mode
admin routes (/collective_rpc, /reset_prefix_cache, …) answer 200 here so a test can see whether any of
them got through a gateway. While asleep, generation is refused with a 503 (vLLM's sleep-mode docs list
the generation endpoints as unavailable while sleeping); `served_asleep` counts such requests and
`aborted` the generations a /sleep cut off, so a test asserts the relay never let either happen.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

SLEEP_ROUTES = ("/sleep", "/wake_up", "/is_sleeping")
# dev-mode and admin routes of vLLM 0.28's API server (entrypoints/serve/: dev/{sleep,rpc,cache,
# server_info}, elastic_ep, pause, lora, tokenize); none is an API a coding agent needs
ADMIN_ROUTES = (
    *SLEEP_ROUTES,
    "/collective_rpc",
    "/reset_prefix_cache",
    "/reset_mm_cache",
    "/server_info",
    "/scale_elastic_ep",
    "/is_scaling_elastic_ep",
    "/pause",
    "/resume",
    "/is_paused",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/tokenize",
    "/detokenize",
    "/version",
    "/ping",
    "/invocations",
    "/v1/completions",
    "/update_weights",
    "/metrics",
)


@dataclass
class SleepState:
    dev_mode: bool = False  # VLLM_SERVER_DEV_MODE=1 with --enable-sleep-mode
    wake_delay: float = 0.0  # seconds /wake_up takes (weights back from host RAM)
    sleeping: bool = False
    sleeps: int = 0
    wakes: int = 0
    aborted: int = 0  # generations running when /sleep came (mode=abort)
    served_asleep: int = 0  # generation requests that arrived while asleep (refused)


async def route(state: SleepState, running: int, method: str, path: str, query: str) -> tuple[int, Any] | None:
    """(status, JSON body or None for an empty 200) for an admin route; None: not one of them."""
    if path not in ADMIN_ROUTES or path in ("/metrics", "/v1/completions"):
        return None
    if not state.dev_mode:
        return 404, {"detail": "Not Found"}
    if method == "POST" and path == "/sleep":
        if parse_qs(query).get("mode", ["abort"])[0] == "abort":
            state.aborted += running
        state.sleeping, state.sleeps = True, state.sleeps + 1
        return 200, None
    if method == "POST" and path == "/wake_up":
        await asyncio.sleep(state.wake_delay)
        state.sleeping, state.wakes = False, state.wakes + (1 if state.sleeping else 0)
        return 200, None
    if method == "GET" and path == "/is_sleeping":
        return 200, {"is_sleeping": state.sleeping}
    if path in SLEEP_ROUTES:
        return 405, {"detail": "Method Not Allowed"}
    return 200, {}
