"""A small OpenAI-compatible stand-in for a vLLM model server (stdlib only).

It streams token by token (SSE), emits tool calls whose JSON arguments are split across
chunks, can be made slow, exposes vLLM-shaped ``GET /health``, ``GET /v1/models`` and
``GET /metrics``, and records every request it saw so a test can assert "it saw nothing".

Scripted behaviour (so real agents can be driven end to end):
- the last user message asks to create a file (``create a file /abs/path containing TEXT``)
  and the client offered a tool that writes files (Claude Code's ``Write`` with
  ``file_path``/``content``, or a shell tool such as Codex's ``exec_command``/``shell``)
  -> the answer is a tool call to that tool;
- once the conversation holds a tool result -> the answer is plain text (``Done.``).
- otherwise it streams ``max_reply_tokens`` words (capped by the request's ``max_tokens``).

A directive inside any message controls one request, and survives every translation layer:
``[standin tokens=200 delay=0.01 first_delay=65]`` (token count, seconds between tokens,
seconds of silence before the first token).

Use it from Python::

    srv = start_standin(delay=0.01)      # background thread, ephemeral port
    srv.url                               # "http://127.0.0.1:PORT/v1"
    srv.requests                          # list[SeenRequest]
    srv.stop()

or as a process: ``python tests/standin.py --port 8000 --delay 0.02 --model umans-coder-v0``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shlex
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODEL = "standin-model"
_DIRECTIVE = re.compile(r"\[standin((?:\s+\w+=[\d.]+)*)\s*\]")
_CREATE = re.compile(
    r"create (?:a |the )?(?:new )?file (?:at |named |called )?(?P<path>[^\s'\"`]*[./][^\s'\"`]*)"
    r"(?: (?:containing|with content|with the content|with text)[: ]+(?P<content>.+))?",
    re.IGNORECASE | re.DOTALL,
)
_CWD = re.compile(r"(?:Working directory|cwd)\s*[:=]\s*(?P<cwd>/[^\s<]+)", re.IGNORECASE)


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Plan:
    """What the stand-in will answer to one chat request (decided by a pure function)."""

    text: str = ""
    tool_name: str | None = None
    tool_args: dict[str, Any] = field(default_factory=dict)
    tokens: int = 0
    delay: float | None = None
    first_delay: float = 0.0


# ---------------------------------------------------------------- pure decision logic


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for item in content:
            if isinstance(item, dict):
                parts.append(str(item.get("text") or item.get("content") or ""))
            else:
                parts.append(str(item))
        return "\n".join(parts)
    return "" if content is None else str(content)


def directive(messages: list[dict[str, Any]]) -> dict[str, float]:
    """The last ``[standin k=v ...]`` directive found in any message."""
    found: dict[str, float] = {}
    for message in messages:
        for match in _DIRECTIVE.finditer(_text_of(message.get("content"))):
            for pair in match.group(1).split():
                key, _, value = pair.partition("=")
                found[key] = float(value)
    return found


def _tool_names(tools: list[dict[str, Any]] | None) -> list[str]:
    names = []
    for tool in tools or []:
        fn = tool.get("function", tool)
        if isinstance(fn, dict) and fn.get("name"):
            names.append(str(fn["name"]))
    return names


def _shell_tool_args(name: str, path: str, content: str) -> dict[str, Any]:
    script = f"printf %s {shlex.quote(content)} > {shlex.quote(path)}"
    if name == "shell":
        return {"command": ["bash", "-lc", script]}
    return {"cmd": script}


def plan_reply(body: dict[str, Any], max_reply_tokens: int) -> Plan:
    """Decide the reply to a chat-completions request body."""
    messages: list[dict[str, Any]] = list(body.get("messages") or [])
    knobs = directive(messages)
    plan = Plan(delay=knobs.get("delay"), first_delay=knobs.get("first_delay", 0.0))
    if any(m.get("role") == "tool" for m in messages):
        plan.text = "Done."
        plan.tokens = 1
        return plan
    wanted = None
    for message in reversed(messages):  # the current turn: user messages after the last answer
        if message.get("role") == "assistant":
            break
        if message.get("role") == "user":
            wanted = _CREATE.search(_text_of(message.get("content")))
            if wanted:
                break
    names = _tool_names(body.get("tools"))
    if wanted:
        path = wanted.group("path").rstrip(".,;")
        content = (wanted.group("content") or "created by the stand-in").strip()
        content = content.rstrip(".").strip("'\"`") + "\n"
        if not path.startswith("/"):
            every = "\n".join(_text_of(m.get("content")) for m in messages)
            cwd = _CWD.search(every)
            if cwd:
                path = cwd.group("cwd").rstrip("/") + "/" + path
        if "Write" in names:
            plan.tool_name = "Write"
            plan.tool_args = {"file_path": path, "content": content}
            return plan
        for shell in ("exec_command", "shell", "shell_command"):
            if shell in names:
                plan.tool_name = shell
                plan.tool_args = _shell_tool_args(shell, path, content)
                return plan
    cap = body.get("max_tokens") or body.get("max_completion_tokens") or max_reply_tokens
    plan.tokens = int(knobs.get("tokens", min(int(cap), max_reply_tokens)))
    plan.text = " ".join(f"tok{i}" for i in range(plan.tokens))
    return plan


def split_args(arguments: str, piece: int = 7) -> list[str]:
    """Tool-call arguments as vLLM streams them: a JSON string cut into small pieces."""
    return [arguments[i : i + piece] for i in range(0, len(arguments), piece)] or [""]


def word_tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


# ---------------------------------------------------------------- server


class StandIn:
    """The server; run it with :func:`start_standin` or :meth:`serve_forever`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = DEFAULT_MODEL,
        delay: float = 0.0,
        max_reply_tokens: int = 16,
        record: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.api_key = api_key  # like `vllm --api-key`: /v1/* needs "Authorization: Bearer <key>"
        self.port = port
        self.model = model
        self.delay = delay
        self.max_reply_tokens = max_reply_tokens
        self.requests: list[SeenRequest] = []
        self.record = record  # optional JSONL file of every request seen (for debugging agents)
        self.running = 0
        self.completed = 0
        self.generated_tokens = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stopped = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def seen(self, path_prefix: str = "/v1/") -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- HTTP plumbing
    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        elif headers.get("content-length"):
            body = await reader.readexactly(int(headers["content-length"]))
        return method, target, headers, body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task:
            self._tasks.add(task)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                method, target, headers, raw = request
                path = target.split("?", 1)[0]
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                seen = SeenRequest(method, path, headers, body)
                with self._lock:
                    self.requests.append(seen)
                    if self.record:
                        with open(self.record, "a") as log:
                            log.write(json.dumps(seen.__dict__) + "\n")
                unauthorized = headers.get("authorization") != f"Bearer {self.api_key}"
                if self.api_key and path.startswith("/v1/") and unauthorized:
                    keep = await self._send_json(writer, 401, {"error": "Unauthorized"})
                else:
                    keep = await self._route(method, path, body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if task:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: bytes, ctype: str) -> bool:
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 400: "Bad Request"}.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        return True

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, obj: Any) -> bool:
        return await self._send(writer, status, json.dumps(obj).encode(), "application/json")

    async def _route(self, method: str, path: str, body: Any, writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path == "/health":
            return await self._send(writer, 200, b"", "text/plain")
        if method == "GET" and path == "/v1/models":
            return await self._send_json(writer, 200, self._models())
        if method == "GET" and path == "/metrics":
            return await self._send(writer, 200, self.metrics().encode(), "text/plain; version=0.0.4")
        if method == "POST" and path == "/v1/chat/completions" and isinstance(body, dict):
            return await self._chat(body, writer)
        return await self._send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})

    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "owned_by": "vllm", "max_model_len": 131072}],
        }

    def metrics(self) -> str:
        labels = f'{{model_name="{self.model}"}}'
        with self._lock:
            running, done, tokens = self.running, self.completed, self.generated_tokens
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{labels} {float(running)}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{labels} 0.0\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{labels} {min(1.0, running * 0.01)}\n"
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{finished_reason="stop",model_name="{self.model}"}} {float(done)}\n'
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total{labels} {float(tokens)}\n"
        )

    # -- chat completions
    async def _chat(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        plan = plan_reply(body, self.max_reply_tokens)
        delay = self.delay if plan.delay is None else plan.delay
        with self._lock:
            self.running += 1
        try:
            if plan.first_delay:
                await asyncio.sleep(plan.first_delay)
            if body.get("stream"):
                return await self._stream(body, plan, delay, writer)
            if delay and plan.tokens:
                await asyncio.sleep(delay * plan.tokens)
            return await self._send_json(writer, 200, self._completion(body, plan))
        finally:
            with self._lock:
                self.running -= 1
                self.completed += 1
                self.generated_tokens += plan.tokens

    def _base(self, rid: str) -> dict[str, Any]:
        return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": self.model}

    @staticmethod
    def _usage(body: dict[str, Any], plan: Plan) -> dict[str, int]:
        prompt = max(1, len(json.dumps(body.get("messages") or [])) // 4)
        completion = plan.tokens + (len(json.dumps(plan.tool_args)) // 4 if plan.tool_name else 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, body: dict[str, Any], plan: Plan) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text or None}
        finish = "stop"
        if plan.tool_name:
            finish = "tool_calls"
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "type": "function",
                    "function": {"name": plan.tool_name, "arguments": json.dumps(plan.tool_args)},
                }
            ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self._usage(body, plan),
        }

    def _chunks(self, body: dict[str, Any], plan: Plan) -> Iterator[tuple[dict[str, Any], bool]]:
        """(chunk, is_token) pairs for a streamed reply."""
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        yield {**self._base(rid), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, False
        for word in word_tokens(plan.text):
            yield {**self._base(rid), "choices": [{"index": 0, "delta": {"content": word}}]}, True
        finish = "stop"
        if plan.tool_name:
            finish = "tool_calls"
            call = {
                "index": 0,
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": plan.tool_name, "arguments": ""},
            }
            yield {**self._base(rid), "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}, True
            for piece in split_args(json.dumps(plan.tool_args)):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                yield {**self._base(rid), "choices": [{"index": 0, "delta": delta}]}, True
        yield {**self._base(rid), "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}, False
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**self._base(rid), "choices": [], "usage": self._usage(body, plan)}, False

    async def _stream(self, body: dict[str, Any], plan: Plan, delay: float, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        first = True
        for chunk, is_token in self._chunks(body, plan):
            if is_token and not first and delay:
                await asyncio.sleep(delay)
            first = first and not is_token
            await self._write_chunk(writer, f"data: {json.dumps(chunk)}\n\n".encode())
        await self._write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    async def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    # -- lifecycle
    async def _main(self, ready: threading.Event | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=64 * 2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        if ready:
            ready.set()
        async with self._server:
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.serve_forever()
        self._stopped.set()

    def serve_forever(self) -> None:
        asyncio.run(self._main(None))

    def _shutdown(self) -> None:  # runs on the server's loop
        if self._server:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    def stop(self) -> None:
        """Stop listening and drop open connections (idempotent)."""
        loop = self._loop
        if loop is None or self._stopped.is_set():
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(self._shutdown)
        self._stopped.wait(5)


def start_standin(**options: Any) -> StandIn:
    """Start a stand-in on a background thread; returns once it listens (``.port`` is set)."""
    server = StandIn(**options)
    ready = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(server._main(ready)), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("stand-in did not start")
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OpenAI-compatible stand-in for a vLLM server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--tokens", type=int, default=16, help="reply length when not capped by max_tokens")
    parser.add_argument("--record", metavar="FILE", help="append every request seen to FILE (JSON lines)")
    args = parser.parse_args(argv)
    server = StandIn(args.host, args.port, args.model, args.delay, args.tokens, args.record)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
