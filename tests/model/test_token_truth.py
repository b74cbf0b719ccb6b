"""Token truth on a real tokenizer: what the gateway's /v1/messages/count_tokens says a request costs is
what the real model server then counts as that request's prompt tokens (the real 0.5B, its Qwen
tokenizer and chat template, behind `coderig frontdoor run` with llama.cpp's native routes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import realmodel
from frontdoor_fixtures import free_port, running_frontdoor

from coderig.core import engine
from coderig.core.settings import ModelSettings

pytestmark = pytest.mark.integration

KEYS = {"alice": "alice-tokens-0123456789abcdef"}
WRITE = {
    "name": "Write",
    "description": "Writes a file to the local filesystem.",
    "input_schema": {
        "type": "object",
        "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["file_path", "content"],
    },
}
REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {"messages": [{"role": "user", "content": "Say hello in French."}]},
    "system, tools, turns": {
        "system": [{"type": "text", "text": "You are a coding agent. Use the tools. " * 20}],
        "tools": [WRITE],
        "messages": [
            {"role": "user", "content": "Create notes.md with a haiku about pointers."},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Write",
                        "input": {"file_path": "notes.md", "content": "null and void\n"},
                    }
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
        ],
    },  # fmt: skip
}


def _prompt_tokens(usage: dict[str, int]) -> int:
    """llama-server's Anthropic usage splits the prompt into cached and newly read tokens."""
    return usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) + usage.get("cache_creation_input_tokens", 0)


def test_count_tokens_through_the_gateway_is_the_servers_prompt_count(tmp_path: Path) -> None:
    if realmodel.xllamacpp_python() is None or not (realmodel.CACHE / realmodel.QWEN_05B.file).exists():
        realmodel.require("xllamacpp and the Qwen GGUF files")
    model = ModelSettings(preset="qwen2.5-coder-0.5b-cpu", maxModelLen=4096)
    argv = engine.llamacpp_args(model, str(realmodel.CACHE / realmodel.QWEN_05B.file), port=free_port())
    native = ",".join(engine.NATIVE_APIS["llama.cpp"])
    with (
        realmodel.serve_argv(realmodel.QWEN_05B, argv, tmp_path) as srv,
        running_frontdoor(srv.url + "/v1", model.served_name, tmp_path / "door", KEYS, "--native-routes", native)
        as door,
    ):  # fmt: skip
        for name, request in REQUESTS.items():
            body = {"model": model.served_name, **request}
            counted = door.post("/v1/messages/count_tokens?beta=true", body, key=KEYS["alice"])
            assert counted.status == 200, counted.body
            tokens = counted.json()["input_tokens"]
            served = realmodel.post(srv.url + "/v1/messages", {**body, "max_tokens": 1, "temperature": 0})
            assert tokens == _prompt_tokens(served["usage"]), (name, tokens, served["usage"])
            assert tokens > len(str(request)) // 8  # real tokens, not a fixed answer
