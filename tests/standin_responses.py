"""The stand-in's OpenAI ``/v1/responses`` surface, shaped like vLLM 0.28 serves it (stdlib only).

:func:`to_chat` turns a Responses body (``instructions`` + ``input`` items) into the chat body the
stand-in plans on; :func:`response_json` / :func:`response_frames` encode the answer. vLLM's
stream (``entrypoints/openai/responses``): every frame has an ``event:`` line and a
``sequence_number``; ``response.created`` and ``response.in_progress`` go out at once (before the
prefill), then silence until the first token; then per output item ``output_item.added`` ...
``output_item.done``; ``response.completed`` carries the whole response with usage. No pings,
no ``[DONE]``; nulls are kept (not ``exclude_none``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

PRE, META, TOKEN = 0, 1, 2


def hex16() -> str:
    return f"{uuid.uuid4().int & (2**64 - 1):016x}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "\n".join(parts)


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat body for a Responses request (function_call_output items become ``role: tool``)."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message":
            role = "system" if item.get("role") == "developer" else item.get("role")
            messages.append({"role": role, "content": _text(item.get("content"))})
        elif kind in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input", ""))
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": args},
            }
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": _text(item.get("output"))})
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages,
                            "max_tokens": body.get("max_output_tokens")}  # fmt: skip
    if body.get("tools"):
        chat["tools"] = [t for t in body["tools"] if isinstance(t, dict)]
    return chat


def _response(body: dict[str, Any], rid: str, model: str, created: int) -> dict[str, Any]:
    return {
        "id": rid, "created_at": created, "incomplete_details": None, "instructions": body.get("instructions"),
        "metadata": body.get("metadata"), "model": model, "object": "response", "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "temperature": body.get("temperature"),
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [], "top_p": body.get("top_p"),
        "background": False, "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
        "previous_response_id": body.get("previous_response_id"), "prompt": None, "reasoning": body.get("reasoning"),
        "service_tier": "auto", "status": "in_progress", "text": body.get("text"), "top_logprobs": None,
        "truncation": "disabled", "usage": None, "user": None,
    }  # fmt: skip


def _usage(prompt: int, output: int, reasoning: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": prompt + output}  # fmt: skip


def _items(thinking: str, text: str, tool: tuple[str, str] | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if thinking:
        content = [{"text": thinking, "type": "reasoning_text"}]
        items.append({"id": hex16(), "summary": [], "type": "reasoning", "content": content,
                      "encrypted_content": None, "status": "completed"})  # fmt: skip
    if text:
        part = {"annotations": [], "text": text, "type": "output_text", "logprobs": []}
        items.append({"id": hex16(), "content": [part], "role": "assistant", "status": "completed", "type": "message"})
    if tool:
        name, args = tool
        items.append({"arguments": args, "call_id": f"call_{hex16()}", "name": name, "type": "function_call",
                      "id": hex16(), "namespace": None, "status": "completed"})  # fmt: skip
    return items


def response_json(
    body: dict[str, Any], model: str, thinking: str, text: str, tool: tuple[str, str] | None,
    usage: tuple[int, int, int],
) -> dict[str, Any]:  # fmt: skip
    out = _response(body, f"resp_{hex16()}", model, int(time.time()))
    out.update(status="completed", output=_items(thinking, text, tool), usage=_usage(*usage))
    return out


def response_frames(
    body: dict[str, Any], model: str, thinking: list[str], text: list[str], tool: tuple[str, list[str]] | None,
    usage: tuple[int, int, int],
) -> Iterator[tuple[bytes, int]]:  # fmt: skip
    """(frame, kind) pairs of a streamed answer; PRE frames go out before the prefill silence."""
    seq = 0

    def ev(kind: str, when: int, **data: Any) -> tuple[bytes, int]:
        nonlocal seq
        payload = {"type": kind, "sequence_number": seq, **data}
        seq += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode(), when

    response = _response(body, f"resp_{hex16()}", model, int(time.time()))
    yield ev("response.created", PRE, response=response)
    yield ev("response.in_progress", PRE, response=response)
    whole = "".join(tool[1]) if tool else ""
    items = _items("".join(thinking), "".join(text), (tool[0], whole) if tool else None)
    for index, item in enumerate(items):
        iid, kind = item["id"], item["type"]
        common = {"item_id": iid, "output_index": index}
        if kind == "reasoning":
            yield ev("response.output_item.added", META, output_index=index,
                     item={**item, "content": None, "status": "in_progress"})  # fmt: skip
            yield ev(
                "response.reasoning_part.added",
                META,
                **common,
                content_index=0,
                part={"text": "", "type": "reasoning_text"},
            )
            for piece in thinking:
                yield ev("response.reasoning_text.delta", TOKEN, **common, content_index=0, delta=piece)
            done_text = item["content"][0]["text"]
            yield ev("response.reasoning_text.done", META, **common, content_index=0, text=done_text)
            yield ev("response.reasoning_part.done", META, **common, content_index=0, part=item["content"][0])
        elif kind == "message":
            yield ev("response.output_item.added", META, output_index=index,
                     item={**item, "content": [], "status": "in_progress"})  # fmt: skip
            empty = {"annotations": [], "text": "", "type": "output_text", "logprobs": []}
            yield ev("response.content_part.added", META, **common, content_index=0, part=empty)
            for piece in text:
                yield ev("response.output_text.delta", TOKEN, **common, content_index=0, delta=piece, logprobs=[])
            yield ev(
                "response.output_text.done",
                META,
                **common,
                content_index=0,
                text=item["content"][0]["text"],
                logprobs=[],
            )
            yield ev("response.content_part.done", META, **common, content_index=0, part=item["content"][0])
        else:
            assert tool is not None
            yield ev("response.output_item.added", META, output_index=index,
                     item={**item, "arguments": "", "status": "in_progress"})  # fmt: skip
            for piece in tool[1]:
                yield ev("response.function_call_arguments.delta", TOKEN, **common, delta=piece)
            yield ev("response.function_call_arguments.done", META, **common, arguments=whole, name=item["name"])
        yield ev("response.output_item.done", META, output_index=index, item=item)
    final = {**response, "status": "completed", "output": items, "usage": _usage(*usage)}
    yield ev("response.completed", META, response=final)
