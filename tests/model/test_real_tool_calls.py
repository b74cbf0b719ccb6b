"""Why the small Qwen2.5-Coder presets carry a chat template: against the real 0.5B model, served from the
llama-server command line coderig renders for the preset, a tool request gets a real tool call with the
fenced-call template and only a fenced JSON block in the text with the model's own (chatTemplate: model).
Also: the presets' architecture numbers are the GGUF header's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import realmodel
from frontdoor_fixtures import free_port

from coderig.core import catalog, engine
from coderig.core.settings import ModelSettings

pytestmark = pytest.mark.integration

WRITE_TOOL = {
    "type": "function",
    "function": {
        "name": "Write",
        "description": "Write a file to the local filesystem.",
        "parameters": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["file_path", "content"],
        },
    },
}
ASK = "Create the file /tmp/x/hello.txt containing exactly: hello from qwen"


def _installed() -> None:
    if realmodel.xllamacpp_python() is None or not (realmodel.CACHE / realmodel.QWEN_05B.file).exists():
        realmodel.require("xllamacpp and the Qwen GGUF files")


def rendered_argv(chat_template: str | None, port: int) -> list[str]:
    """coderig's llama-server arguments for the 0.5B preset, on a test port and a 4k context."""
    model = ModelSettings(preset="qwen2.5-coder-0.5b-cpu", maxModelLen=4096, chatTemplate=chat_template)
    return engine.llamacpp_args(model, str(realmodel.CACHE / realmodel.QWEN_05B.file), port=port)


def ask_for_a_file(argv: list[str], log_dir: Path) -> dict[str, Any]:
    with realmodel.serve_argv(realmodel.QWEN_05B, argv, log_dir) as srv:
        body = {"model": "coderig-dev", "temperature": 0, "max_tokens": 96, "tools": [WRITE_TOOL],
                "messages": [{"role": "user", "content": ASK}]}  # fmt: skip
        return realmodel.post(srv.url + "/v1/chat/completions", body)["choices"][0]


@pytest.mark.parametrize("preset", ["qwen2.5-coder-0.5b-cpu", "qwen2.5-coder-1.5b-cpu"])
def test_preset_numbers_are_the_gguf_headers(preset: str) -> None:
    p = catalog.PRESETS[preset]
    model = next(m for m in realmodel.MODELS.values() if m.file == p.gguf_file)
    path = realmodel.CACHE / model.file
    if not path.exists():
        realmodel.require("the Qwen GGUF files")
    meta = realmodel.gguf_metadata(path)
    a = p.attention
    assert meta["general.architecture"] == "qwen2"
    assert a.layers == meta["qwen2.block_count"]
    assert a.kv_heads == meta["qwen2.attention.head_count_kv"]
    assert a.attention_heads == meta["qwen2.attention.head_count"]
    assert a.head_dim == meta["qwen2.embedding_length"] // meta["qwen2.attention.head_count"]
    assert p.max_context == meta["qwen2.context_length"]
    assert p.weight_bytes == model.size == path.stat().st_size
    assert p.hf_repo == model.source


def test_without_the_fenced_template_there_is_no_tool_call(tmp_path: Path) -> None:
    _installed()
    own = ask_for_a_file(rendered_argv("model", free_port()), tmp_path)
    assert not own["message"].get("tool_calls"), own
    assert "```json" in own["message"]["content"] and '"Write"' in own["message"]["content"]


def test_with_it_llama_cpp_returns_the_tool_call(tmp_path: Path) -> None:
    _installed()
    argv = rendered_argv(None, free_port())
    assert "--chat-template" in argv
    fenced = ask_for_a_file(argv, tmp_path)
    assert fenced["finish_reason"] == "tool_calls", fenced
    (call,) = fenced["message"]["tool_calls"]
    assert call["function"]["name"] == "Write"
    assert json.loads(call["function"]["arguments"]) == {"file_path": "/tmp/x/hello.txt", "content": "hello from qwen"}
