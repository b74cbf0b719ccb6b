"""The served context, enforced like vLLM 0.28 and llama-server (stdlib only; see tests/standin.py)."""

from __future__ import annotations

import json
import math
from typing import Any


def estimate_prompt_tokens(chat: dict[str, Any]) -> int:
    """Conservative prompt size: ceil(utf-8 bytes of the rendered messages + tools JSON / 3).

    Over-counts what real tokenizers produce (see the module docstring), so a request that fits
    here fits the real server.
    """
    text = json.dumps(chat.get("messages") or [], ensure_ascii=False)
    if chat.get("tools"):
        text += json.dumps(chat["tools"], ensure_ascii=False)
    return max(1, math.ceil(len(text.encode()) / 3))


def vllm_length_error(max_model_len: int, prompt: int, max_tokens: int | None) -> tuple[str, str] | None:
    """(message, parameter) of vLLM 0.28's 400 for a request that does not fit, else None.

    vLLM tokenizes with ``truncation=True, max_length=max_input_tokens + 1``, so an overflowing
    prompt is reported as "at least max_input_tokens + 1" tokens (``renderers/params.py``).
    """
    out = max_tokens or 0
    if out > max_model_len:
        return (
            f"max_completion_tokens={out} cannot be greater than max_model_len=max_total_tokens={max_model_len}. "
            f"Please request fewer output tokens. (parameter=max_completion_tokens, value={out})",
            "max_completion_tokens",
        )
    max_input = max_model_len - out
    if prompt <= max_input:
        return None
    count = max_input + 1
    return (
        f"This model's maximum context length is {max_model_len} tokens. However, you requested {out} output "
        f"tokens and your prompt contains at least {count} input tokens, for a total of at least {count + out} "
        "tokens. Please reduce the length of the input prompt or the number of requested output tokens. "
        f"(parameter=input_tokens, value={count})",
        "input_tokens",
    )


def llama_cpp_length_error(n_ctx: int, prompt: int) -> dict[str, Any] | None:
    """llama-server's 400 body when the prompt does not fit the slot's context (it ignores max_tokens)."""
    if prompt < n_ctx:
        return None
    message = f"request ({prompt} tokens) exceeds the available context size ({n_ctx} tokens), try increasing it"
    return {"error": {"code": 400, "message": message, "type": "exceed_context_size_error",
                      "n_prompt_tokens": prompt, "n_ctx": n_ctx}}  # fmt: skip


def openai_error(status: int, err_type: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}
