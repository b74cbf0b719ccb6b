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
``[standin tokens=200 delay=0.01 first_delay=65 think=1]`` (token count, seconds between tokens,
seconds of silence before the first token = the prefill, a thinking block first).

Strict like vLLM 0.28 (shapes read in the vLLM 0.28.0 wheel: vllm/entrypoints/anthropic/, openai/):
- endpoints ``POST /v1/chat/completions``, ``/v1/messages`` (+ ``/count_tokens``) and ``/v1/responses``,
  streaming and not, in vLLM's shapes (``standin_anthropic.py``, ``standin_responses.py``);
- streams send 200 + headers at once, then nothing until the first token (``first_delay``);
  ``/v1/responses`` sends ``response.created``/``response.in_progress`` before that silence;
- the served context is enforced: estimated prompt tokens + ``max_tokens`` > ``max_model_len``
  -> vLLM's 400 (``engine="llama.cpp"``: prompt >= ``max_model_len`` -> llama-server's
  ``exceed_context_size_error``). The estimate is ``ceil(utf-8 bytes of the JSON of the rendered
  messages (system included) + tools / 3)``: real tokenizers average more than 3 bytes per token on
  code and prose and the JSON adds punctuation a chat template does not, so it over-counts; a
  prompt that passes here passes the real server;
- model names are checked against the served names (``model`` + ``served_names``): 404 otherwise.

Use it from Python::

    srv = start_standin(delay=0.01)      # background thread, ephemeral port
    srv.url                               # "http://127.0.0.1:PORT/v1"
    srv.requests                          # list[SeenRequest]; srv.seen("/v1/messages")
    srv.last_prompt_tokens, srv.max_prompt_tokens_seen   # the estimate (see above)
    srv.stop()

Options (all keyword): model, served_names=(), delay=0.0, max_reply_tokens=16, record=None,
api_key=None, max_model_len=131072, engine="vllm" | "llama.cpp", dev_mode=False (vLLM's sleep
routes, standin_sleep.py), wake_delay=0.0 (what /wake_up takes), load_delay=0.0 (before it listens).

or as a process: ``python tests/standin.py --port 8000 --delay 0.02 --model umans-coder-v0``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import standin_anthropic as anthropic  # noqa: E402
import standin_responses as responses  # noqa: E402
import standin_sleep  # noqa: E402
from standin_context import estimate_prompt_tokens, llama_cpp_length_error, openai_error, vllm_length_error  # noqa: E402
from standin_responses import META, PRE, TOKEN, hex16  # noqa: E402

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
    thinking: str = ""
    finish: str = "stop"  # chat finish_reason: stop | length | tool_calls


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


THINKING = "Let me think about what is asked here."


def plan_reply(body: dict[str, Any], max_reply_tokens: int, think: bool = False) -> Plan:
    """Decide the reply to a chat-completions request body (``think``: the client asked for thinking)."""
    messages: list[dict[str, Any]] = list(body.get("messages") or [])
    knobs = directive(messages)
    plan = Plan(delay=knobs.get("delay"), first_delay=knobs.get("first_delay", 0.0))
    if think or knobs.get("think"):
        plan.thinking = THINKING
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
            plan.tool_name, plan.finish = "Write", "tool_calls"
            plan.tool_args = {"file_path": path, "content": content}
            return plan
        for shell in ("exec_command", "shell", "shell_command"):
            if shell in names:
                plan.tool_name, plan.finish = shell, "tool_calls"
                plan.tool_args = _shell_tool_args(shell, path, content)
                return plan
    cap = body.get("max_tokens") or body.get("max_completion_tokens") or max_reply_tokens
    plan.tokens = int(knobs.get("tokens", min(int(cap), max_reply_tokens)))
    if "tokens" not in knobs and int(cap) < max_reply_tokens:
        plan.finish = "length"  # cut by the request's max_tokens, as vLLM reports it
    plan.text = " ".join(f"tok{i}" for i in range(plan.tokens))
    return plan


def split_args(arguments: str, piece: int = 7) -> list[str]:
    """Tool-call arguments as vLLM streams them: a JSON string cut into small pieces."""
    return [arguments[i : i + piece] for i in range(0, len(arguments), piece)] or [""]


def word_tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


@dataclass
class Reply:
    """A plan cut into what goes on the wire: token pieces, tool id, token counts."""

    plan: Plan
    prompt_tokens: int
    tool_id: str = field(default_factory=lambda: f"chatcmpl-tool-{hex16()}")

    @property
    def words(self) -> list[str]:
        return word_tokens(self.plan.text)

    @property
    def thinking(self) -> list[str]:
        return word_tokens(self.plan.thinking)

    @property
    def output_tokens(self) -> int:
        tool = math.ceil(len(json.dumps(self.plan.tool_args)) / 4) if self.plan.tool_name else 0
        return len(self.words) + len(self.thinking) + tool

    def usage(self) -> dict[str, int]:
        out = self.output_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": out, "total_tokens": self.prompt_tokens + out}

    def anthropic_tool_pieces(self) -> tuple[str, str, list[str]] | None:
        if not self.plan.tool_name:
            return None
        return self.tool_id, self.plan.tool_name, split_args(json.dumps(self.plan.tool_args))

    def responses_tool_pieces(self) -> tuple[str, list[str]] | None:
        if not self.plan.tool_name:
            return None
        return self.plan.tool_name, split_args(json.dumps(self.plan.tool_args))


# ---------------------------------------------------------------- server

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


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
        max_model_len: int = 131072,
        served_names: Sequence[str] = (),
        engine: str = "vllm",
        dev_mode: bool = False,
        wake_delay: float = 0.0,
        load_delay: float = 0.0,
    ) -> None:
        if engine not in ("vllm", "llama.cpp"):
            raise ValueError(f"engine must be 'vllm' or 'llama.cpp', not {engine!r}")
        self.host = host
        self.api_key = api_key  # like `vllm --api-key`: /v1/* needs "Authorization: Bearer <key>"
        self.port = port
        self.model = model  # the first --served-model-name: what every answer reports
        self.served_names = [model, *(n for n in served_names if n != model)]  # accepted in requests
        self.max_model_len = max_model_len  # vLLM --max-model-len / llama.cpp per-slot n_ctx
        self.engine = engine
        self.delay = delay
        self.max_reply_tokens = max_reply_tokens
        # vLLM sleep mode (standin_sleep): dev_mode is VLLM_SERVER_DEV_MODE=1 + --enable-sleep-mode;
        # load_delay is how long the process takes before it listens (vLLM loads the weights first)
        self.sleep = standin_sleep.SleepState(dev_mode=dev_mode, wake_delay=wake_delay)
        self.load_delay = load_delay
        self.requests: list[SeenRequest] = []
        self.record = record  # optional JSONL file of every request seen (for debugging agents)
        self.running = 0
        self.completed = 0
        self.generated_tokens = 0
        # the usage every generating answer reported: {"api", "developer" (the gateway's header), "input", "output"}
        self.reported: list[dict[str, Any]] = []
        self.last_prompt_tokens = 0  # the estimate of the last generation / count_tokens request
        self.max_prompt_tokens_seen = 0  # the largest estimate so far (rejected requests included)
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
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
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
                    keep = await self._admin_or_route(method, target, body, headers, writer)
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
        reason = REASONS.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        return True

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, obj: Any) -> bool:
        return await self._send(writer, status, anthropic.dumps(obj).encode(), "application/json")

    async def _route(
        self, method: str, path: str, body: Any, headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        if method == "GET" and path == "/health":
            return await self._send(writer, 200, b"", "text/plain")
        if method == "GET" and path == "/v1/models":
            return await self._send_json(writer, 200, self._models())
        if method == "GET" and path == "/metrics":
            return await self._send(writer, 200, self.metrics().encode(), "text/plain; version=0.0.4")
        api = {"/v1/chat/completions": "chat", "/v1/messages": "messages", "/v1/responses": "responses",
               "/v1/messages/count_tokens": "count"}.get(path)  # fmt: skip
        if method == "POST" and api and isinstance(body, dict):
            return await self._generate(api, body, headers, writer)
        return await self._send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})

    async def _admin_or_route(
        self, method: str, target: str, body: Any, headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        path, _, query = target.partition("?")
        admin = await standin_sleep.route(self.sleep, self.running, method, path, query)
        if admin is not None:
            status, answer = admin
            if answer is None:
                return await self._send(writer, status, b"", "application/json")
            return await self._send_json(writer, status, answer)
        if self.sleep.sleeping and path.startswith("/v1/") and method == "POST":
            self.sleep.served_asleep += 1
            return await self._send_json(writer, 503, {"error": {"message": "model is sleeping", "code": 503}})
        return await self._route(method, path, body, headers, writer)

    def _models(self) -> dict[str, Any]:
        owner = "llamacpp" if self.engine == "llama.cpp" else "vllm"
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "owned_by": owner, "max_model_len": self.max_model_len}
                for name in self.served_names
            ],
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

    # -- validation, in vLLM's order: body, model name, max_tokens, prompt length
    def _refusal(self, api: str, body: dict[str, Any], chat: dict[str, Any], prompt: int) -> tuple[int, Any] | None:
        shape_anthropic = api in ("messages", "count")
        if self.engine == "llama.cpp":  # llama-server ignores the model name and max_tokens
            llama = llama_cpp_length_error(self.max_model_len, prompt)
            return (400, llama) if llama and api != "count" else None
        if api == "messages" and not isinstance(body.get("max_tokens"), int):
            message = (
                "1 validation error:\n  {'type': 'missing', 'loc': ('body', 'max_tokens'), 'msg': 'Field required'}"
            )
            return 400, openai_error(400, "Bad Request", message, "body.max_tokens")
        name = body.get("model")
        if (name or shape_anthropic) and name not in self.served_names:
            message = f"The model `{name}` does not exist."
            if shape_anthropic:
                return 404, anthropic.error_body("NotFoundError", message)
            return 404, openai_error(404, "NotFoundError", message, "model")
        if api == "count":
            return None
        max_tokens = chat.get("max_tokens") or body.get("max_completion_tokens")
        length = vllm_length_error(self.max_model_len, prompt, int(max_tokens) if max_tokens else None)
        if length is None:
            return None
        message, param = length
        if shape_anthropic:
            return 400, anthropic.error_body("BadRequestError", message)
        return 400, openai_error(400, "BadRequestError", message, param)

    # -- every generating endpoint: one plan, encoded per API
    async def _generate(
        self, api: str, body: dict[str, Any], headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        think = False
        if api in ("messages", "count"):
            chat, think = anthropic.to_chat(body), anthropic.wants_thinking(body)
        elif api == "responses":
            chat = responses.to_chat(body)
        else:
            chat = body
        prompt = estimate_prompt_tokens(chat)
        with self._lock:
            self.last_prompt_tokens = prompt
            self.max_prompt_tokens_seen = max(self.max_prompt_tokens_seen, prompt)
        refusal = self._refusal(api, body, chat, prompt)
        if refusal:
            return await self._send_json(writer, *refusal)
        if api == "count":
            return await self._send_json(
                writer, 200, {"input_tokens": prompt, "context_management": {"original_input_tokens": prompt}}
            )
        plan = plan_reply(chat, self.max_reply_tokens, think)
        delay = self.delay if plan.delay is None else plan.delay
        rid = f"chatcmpl-{headers.get('x-request-id') or hex16()}"
        reply = Reply(plan, prompt)
        with self._lock:
            self.running += 1
            developer = headers.get("x-coderig-developer", "")
            self.reported.append({"api": api, "developer": developer, "input": prompt, "output": reply.output_tokens})
        try:
            if body.get("stream"):
                if api == "messages":
                    frames = anthropic.message_frames(
                        rid, self.model, reply.thinking, reply.words, reply.anthropic_tool_pieces(),
                        plan.finish, (prompt, reply.output_tokens),
                    )  # fmt: skip
                elif api == "responses":
                    frames = responses.response_frames(
                        body, self.model, reply.thinking, reply.words, reply.responses_tool_pieces(),
                        (prompt, reply.output_tokens, len(reply.thinking)),
                    )  # fmt: skip
                else:
                    frames = self._chat_frames(rid, body, reply)
                return await self._stream(writer, frames, plan.first_delay, delay)
            await asyncio.sleep(plan.first_delay + delay * reply.output_tokens)
            if api == "messages":
                tool = (reply.tool_id, plan.tool_name, plan.tool_args) if plan.tool_name else None
                answer = anthropic.message_json(
                    rid, self.model, plan.thinking, plan.text, tool, plan.finish, (prompt, reply.output_tokens)
                )
            elif api == "responses":
                call = (plan.tool_name, json.dumps(plan.tool_args)) if plan.tool_name else None
                usage = (prompt, reply.output_tokens, len(reply.thinking))
                answer = responses.response_json(body, self.model, plan.thinking, plan.text, call, usage)
            else:
                answer = self._completion(rid, reply)
            return await self._send_json(writer, 200, answer)
        finally:
            with self._lock:
                self.running -= 1
                self.completed += 1
                self.generated_tokens += reply.output_tokens

    # -- chat completions
    def _base(self, rid: str) -> dict[str, Any]:
        return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": self.model}

    def _completion(self, rid: str, reply: Reply) -> dict[str, Any]:
        plan = reply.plan
        message: dict[str, Any] = {"role": "assistant", "content": plan.text or None}
        if plan.thinking:
            message["reasoning"] = plan.thinking
        if plan.tool_name:
            message["tool_calls"] = [
                {
                    "id": reply.tool_id,
                    "type": "function",
                    "function": {"name": plan.tool_name, "arguments": json.dumps(plan.tool_args)},
                }
            ]
        return {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": plan.finish}],
            "usage": reply.usage(),
        }

    def _chat_frames(self, rid: str, body: dict[str, Any], reply: Reply) -> Iterator[tuple[bytes, int]]:
        plan = reply.plan

        def data(choices: list[dict[str, Any]], kind: int, **extra: Any) -> tuple[bytes, int]:
            return f"data: {json.dumps({**self._base(rid), 'choices': choices, **extra})}\n\n".encode(), kind

        yield data([{"index": 0, "delta": {"role": "assistant", "content": ""}}], META)
        for word in reply.thinking:
            yield data([{"index": 0, "delta": {"reasoning": word}}], TOKEN)
        for word in reply.words:
            yield data([{"index": 0, "delta": {"content": word}}], TOKEN)
        if plan.tool_name:
            call = {"index": 0, "id": reply.tool_id, "type": "function",
                    "function": {"name": plan.tool_name, "arguments": ""}}  # fmt: skip
            yield data([{"index": 0, "delta": {"tool_calls": [call]}}], TOKEN)
            for piece in split_args(json.dumps(plan.tool_args)):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                yield data([{"index": 0, "delta": delta}], TOKEN)
        yield data([{"index": 0, "delta": {}, "finish_reason": plan.finish}], META)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield data([], META, usage=reply.usage())
        yield b"data: [DONE]\n\n", META

    async def _stream(
        self, writer: asyncio.StreamWriter, frames: Iterator[tuple[bytes, int]], first_delay: float, delay: float
    ) -> bool:
        """200 + headers now (as uvicorn flushes them before the engine's first output), PRE frames,
        then ``first_delay`` of silence (queue + prefill), then the rest with ``delay`` between tokens."""
        writer.write(SSE_HEADERS)
        await writer.drain()
        prefilled, first_token = False, True
        for payload, kind in frames:
            if kind != PRE and not prefilled:
                prefilled = True
                if first_delay:
                    await asyncio.sleep(first_delay)
            if kind == TOKEN:
                if not first_token and delay:
                    await asyncio.sleep(delay)
                first_token = False
            await self._write_chunk(writer, payload)
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
        await asyncio.sleep(self.load_delay)  # like vLLM: nothing listens until the weights are loaded
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
    parser.add_argument("--api-key", help="like `vllm --api-key`: /v1/* needs Authorization: Bearer KEY")
    parser.add_argument("--max-model-len", type=int, default=131072, help="the served context, enforced")
    parser.add_argument("--served-name", action="append", default=[], help="another accepted model name")
    parser.add_argument("--engine", choices=("vllm", "llama.cpp"), default="vllm", help="whose error shapes")
    parser.add_argument("--dev-mode", action="store_true", help="VLLM_SERVER_DEV_MODE=1 + --enable-sleep-mode")
    parser.add_argument("--wake-delay", type=float, default=0.0, help="seconds /wake_up takes")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds before it listens (loading)")
    args = parser.parse_args(argv)
    server = StandIn(
        args.host, args.port, args.model, args.delay, args.tokens, args.record, args.api_key,
        max_model_len=args.max_model_len, served_names=args.served_name, engine=args.engine,
        dev_mode=args.dev_mode, wake_delay=args.wake_delay, load_delay=args.load_delay,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
