"""The stand-in's Anthropic ``/v1/messages`` surface, shaped like vLLM 0.28 serves it (stdlib only).

vLLM converts a Messages request into a chat-completions request and re-encodes the chat stream
as Anthropic events (``vllm/entrypoints/anthropic/serving.py``). This module does the same for
the stand-in: :func:`to_chat` turns an Anthropic body into the chat body the stand-in plans on,
:func:`message_json` / :func:`message_frames` encode the answer. Shapes and order follow
vllm/entrypoints/anthropic/ in the vLLM 0.28.0 wheel:

- ids are ``chatcmpl-<16 hex>`` and tool ids ``chatcmpl-tool-<16 hex>``; ``model`` is the served name;
- content order thinking -> text -> tool_use, never empty (``[{"type":"text","text":""}]``);
- no ``stop_sequence`` key in the final message or in ``message_delta``;
- every SSE frame carries an ``event:`` line, keys in vLLM's model order (``index`` after
  ``delta``/``content_block``), compact JSON, no ``ping``, no ``[DONE]``;
- errors are ``{"type":"error","error":{"type":"<vLLM class name>","message":...}}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

BILLING_HEADER = "x-anthropic-billing-header"
# kinds of frame for the stand-in's paced writer
META, TOKEN = 1, 2


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {dumps(data)}\n\n".encode()


def error_body(err_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": err_type, "message": message}}


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type", "text") == "text" and block.get("text"):
            out.append(str(block["text"]))
    return out


def _kept(texts: list[str]) -> str:
    return "".join(t for t in texts if not t.startswith(BILLING_HEADER))


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body vLLM renders for an Anthropic request.

    ``system`` (string or text blocks, billing-header blocks dropped) and every ``role: system``
    message inside ``messages`` are joined with ``""`` into one leading system message (vLLM's
    ``_detect_merge_inline_system`` with no custom template); ``tool_result`` blocks become
    ``role: tool`` messages, ``tool_use`` blocks become ``tool_calls``.
    """
    system = [_kept(_texts(body.get("system")))]
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if role == "system":
            system.append(_kept(_texts(content)))
            continue
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        reasoning: list[str] = []
        for block in content or []:
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "thinking":
                reasoning.append(str(block.get("thinking", "")))
            elif kind == "tool_use":
                function = {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}
                calls.append({"id": block.get("id"), "type": "function", "function": function})
            elif kind == "tool_result":
                result = block.get("content")
                text = "\n".join(_texts(result)) if isinstance(result, list) else str(result or "")
                messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        if texts or calls or not messages or messages[-1]["role"] != "tool":
            out: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
            if calls:
                out["tool_calls"] = calls
            if reasoning:
                out["reasoning"] = "".join(reasoning)
            messages.append(out)
    joined = "".join(system)
    if joined:
        messages.insert(0, {"role": "system", "content": joined})
    tools = [
        {"type": "function", "function": {"name": t.get("name"), "description": t.get("description"),
                                          "parameters": t.get("input_schema")}}
        for t in body.get("tools") or []
    ]  # fmt: skip
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_tokens")}
    if tools:
        chat["tools"] = tools
    return chat


def wants_thinking(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def message_json(
    rid: str, model: str, thinking: str, text: str, tool: tuple[str, str, dict[str, Any]] | None,
    finish: str, usage: tuple[int, int],
) -> dict[str, Any]:  # fmt: skip
    """The non-streaming ``/v1/messages`` answer (``model_dump(exclude_none=True)``)."""
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": uuid.uuid4().hex})
    if text:
        content.append({"type": "text", "text": text})
    if tool:
        tid, name, args = tool
        content.append({"type": "tool_use", "id": tid, "name": name, "input": args})
    if not content:
        content.append({"type": "text", "text": ""})
    out: dict[str, Any] = {"id": rid, "type": "message", "role": "assistant", "content": content, "model": model}
    if finish in STOP_REASON:
        out["stop_reason"] = STOP_REASON[finish]
    out["usage"] = {"input_tokens": usage[0], "output_tokens": usage[1]}
    return out


def message_frames(
    rid: str, model: str, thinking: list[str], text: list[str], tool: tuple[str, str, list[str]] | None,
    finish: str, usage: tuple[int, int],
) -> Iterator[tuple[bytes, int]]:  # fmt: skip
    """(frame, kind) pairs of a streamed ``/v1/messages`` answer, in vLLM's order.

    ``thinking`` and ``text`` are token pieces, ``tool`` is (id, name, argument pieces).
    """
    start = {"id": rid, "type": "message", "role": "assistant", "content": [], "model": model,
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": usage[0], "output_tokens": 0}}  # fmt: skip
    yield frame("message_start", {"type": "message_start", "message": start}), META
    index = 0

    def block(kind: str, opening: dict[str, Any], deltas: Iterator[dict[str, Any]]) -> Iterator[tuple[bytes, int]]:
        yield (
            frame("content_block_start", {"type": "content_block_start", "content_block": opening, "index": index}),
            META,
        )
        for delta in deltas:
            kind_of = TOKEN if delta.get("type") != "signature_delta" else META
            yield frame("content_block_delta", {"type": "content_block_delta", "delta": delta, "index": index}), kind_of
        yield frame("content_block_stop", {"type": "content_block_stop", "index": index}), META

    if thinking:
        signature = uuid.uuid4().hex
        deltas = [{"type": "thinking_delta", "thinking": t} for t in thinking if t]
        deltas.append({"type": "signature_delta", "signature": signature})
        yield from block("thinking", {"type": "thinking", "thinking": ""}, iter(deltas))
        index += 1
    if text:
        yield from block("text", {"type": "text", "text": ""}, ({"type": "text_delta", "text": t} for t in text if t))
        index += 1
    if tool:
        tid, name, pieces = tool
        opening = {"type": "tool_use", "id": tid, "name": name, "input": {}}
        yield from block("tool", opening, ({"type": "input_json_delta", "partial_json": p} for p in pieces if p))
        index += 1
    delta = {"type": "message_delta", "delta": {"stop_reason": STOP_REASON.get(finish)},
             "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}  # fmt: skip
    yield frame("message_delta", delta), META
    yield frame("message_stop", {"type": "message_stop"}), META
