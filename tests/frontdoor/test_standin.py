"""The stand-in model server itself, against vLLM 0.28's shapes (vllm/entrypoints/anthropic/):
native /v1/messages (+ count_tokens) and /v1/responses, the served context, names, timing; and the
real Claude Code and Codex CLIs talking to its native endpoints directly."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from frontdoor_fixtures import NPM_PREFIX, require_tool, standin_server
from standin import StandIn, estimate_prompt_tokens

MODEL = "umans-coder-v0"
HEX16 = re.compile(r"[0-9a-f]{16}")
WRITE = {"name": "Write", "description": "Write a file", "input_schema": {"type": "object", "properties": {}}}
CREATE = "create a file /tmp/standin-test.txt containing hello there"


@pytest.fixture(scope="module")
def srv() -> Iterator[StandIn]:
    with standin_server(model=MODEL, max_model_len=4096, served_names=["claude-haiku-4-5"]) as server:
        yield server


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, at_headers: float, chunks: list[Any]):
        self.status, self.headers, self.body = status, headers, body
        self.at_headers, self.chunks = at_headers, chunks  # (seconds since the request, bytes)

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(event line, data) of each SSE frame; asserts every frame has both and they agree."""
        out = []
        for raw in self.body.decode().split("\n\n"):
            if not raw:
                continue
            lines = raw.split("\n")
            assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), raw
            event, data = lines[0][7:], json.loads(lines[1][6:])
            assert data["type"] == event
            out.append((event, data))
        return out


def call(srv: StandIn, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    started = time.monotonic()
    conn.request("POST", path, payload, {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    at_headers = time.monotonic() - started
    chunks, data = [], b""
    while True:
        piece = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not piece:
            break
        chunks.append((time.monotonic() - started, piece))
        data += piece
    conn.close()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, at_headers, chunks)


def msg(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}], **extra}


# ---------------------------------------------------------------- /v1/messages, not streamed


def test_messages_plain_shape(srv: StandIn) -> None:
    reply = call(srv, "/v1/messages", msg("hi [standin tokens=3]"), {"x-api-key": "ignored"})
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert list(body) == ["id", "type", "role", "content", "model", "stop_reason", "usage"]  # no stop_sequence
    assert body["id"].startswith("chatcmpl-") and HEX16.fullmatch(body["id"][9:])
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", MODEL)
    assert body["content"] == [{"type": "text", "text": "tok0 tok1 tok2"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": srv.last_prompt_tokens, "output_tokens": 3}
    assert b": " not in reply.body  # compact JSON like Starlette's JSONResponse


def test_messages_plain_tool_use_then_done_and_max_tokens(srv: StandIn) -> None:
    body = call(srv, "/v1/messages", msg(CREATE, tools=[WRITE])).json()
    assert body["stop_reason"] == "tool_use"
    (block,) = body["content"]
    assert block["type"] == "tool_use" and block["name"] == "Write"
    assert block["id"].startswith("chatcmpl-tool-") and HEX16.fullmatch(block["id"][14:])
    assert block["input"] == {"file_path": "/tmp/standin-test.txt", "content": "hello there\n"}
    history = [
        {"role": "user", "content": CREATE},
        {"role": "assistant", "content": body["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "ok"}]},
    ]
    done = call(srv, "/v1/messages", {**msg(""), "messages": history, "tools": [WRITE]}).json()
    assert done["content"] == [{"type": "text", "text": "Done."}] and done["stop_reason"] == "end_turn"
    cut = call(srv, "/v1/messages", msg("hi", max_tokens=2)).json()
    assert cut["stop_reason"] == "max_tokens" and cut["usage"]["output_tokens"] == 2


def test_messages_plain_thinking_block_first(srv: StandIn) -> None:
    body = call(srv, "/v1/messages", msg("hi", thinking={"type": "enabled", "budget_tokens": 1024})).json()
    thinking, text = body["content"]
    assert list(thinking) == ["type", "thinking", "signature"] and thinking["thinking"]
    assert re.fullmatch(r"[0-9a-f]{32}", thinking["signature"])
    assert text["type"] == "text"
    directive = call(srv, "/v1/messages", msg("hi [standin think=1]")).json()
    assert directive["content"][0]["type"] == "thinking"


# ---------------------------------------------------------------- /v1/messages, streamed


def test_messages_stream_events_in_vllm_order(srv: StandIn) -> None:
    reply = call(srv, "/v1/messages", msg("hi [standin tokens=4]", stream=True))
    assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert b"[DONE]" not in reply.body and b"ping" not in reply.body
    events = reply.events()
    names = [e for e, _ in events]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 4 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["stop_sequence"] is None
    assert start["usage"] == {"input_tokens": srv.last_prompt_tokens, "output_tokens": 0}
    assert start["model"] == MODEL and HEX16.fullmatch(start["id"][9:])
    assert list(events[1][1]) == ["type", "content_block", "index"]  # vLLM's field order: index last
    assert list(events[2][1]) == ["type", "delta", "index"]
    assert "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta") == "tok0 tok1 tok2 tok3"
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"input_tokens": srv.last_prompt_tokens, "output_tokens": 4},
    }
    assert events[-1][1] == {"type": "message_stop"}


def test_messages_stream_tool_use_arguments_split_over_input_json_deltas(srv: StandIn) -> None:
    events = call(srv, "/v1/messages", msg(CREATE, tools=[WRITE], stream=True)).events()
    opening = next(d for e, d in events if e == "content_block_start")
    assert opening["content_block"]["type"] == "tool_use" and opening["content_block"]["input"] == {}
    assert opening["content_block"]["id"].startswith("chatcmpl-tool-")
    parts = [d["delta"]["partial_json"] for e, d in events if e == "content_block_delta"]
    assert len(parts) >= 2 and all(parts)
    assert json.loads("".join(parts)) == {"file_path": "/tmp/standin-test.txt", "content": "hello there\n"}
    assert all(d["delta"]["type"] == "input_json_delta" for e, d in events if e == "content_block_delta")
    assert next(d for e, d in events if e == "message_delta")["delta"] == {"stop_reason": "tool_use"}


def test_messages_stream_thinking_then_signature_then_text(srv: StandIn) -> None:
    events = call(
        srv, "/v1/messages", msg("hi [standin tokens=2]", stream=True, thinking={"type": "adaptive"})
    ).events()
    starts = [d for e, d in events if e == "content_block_start"]
    assert starts[0] == {
        "type": "content_block_start",
        "content_block": {"type": "thinking", "thinking": ""},
        "index": 0,
    }
    assert starts[1]["content_block"] == {"type": "text", "text": ""} and starts[1]["index"] == 1
    block0 = [d["delta"] for e, d in events if e == "content_block_delta" and d["index"] == 0]
    assert all(d["type"] == "thinking_delta" for d in block0[:-1]) and len(block0) >= 2
    assert block0[-1]["type"] == "signature_delta" and re.fullmatch(r"[0-9a-f]{32}", block0[-1]["signature"])
    stop0 = next(i for i, (e, d) in enumerate(events) if e == "content_block_stop")
    assert events[stop0 - 1][1]["delta"]["type"] == "signature_delta"  # right before its stop


def test_headers_at_once_then_silence_until_the_first_token(srv: StandIn) -> None:
    for path, body in [
        ("/v1/messages", msg("hi [standin first_delay=1.5 tokens=2]", stream=True)),
        ("/v1/chat/completions", {**msg("hi [standin first_delay=1.5 tokens=2]"), "stream": True}),
    ]:
        reply = call(srv, path, body)
        assert reply.status == 200
        assert reply.at_headers < 0.5, path
        assert reply.chunks[0][0] >= 1.5, path  # not one byte (no ping, no comment) during the prefill
    reply = call(srv, "/v1/responses", {"model": MODEL, "input": "hi [standin first_delay=1.5]", "stream": True})
    assert reply.at_headers < 0.5
    early = b"".join(c for at, c in reply.chunks if at < 1.0)
    assert [e for e, _ in Reply(200, {}, early, 0, []).events()] == ["response.created", "response.in_progress"]
    assert all(at >= 1.5 for at, c in reply.chunks if b"output_item" in c)


# ---------------------------------------------------------------- errors, names, the served context


def test_unknown_model_is_404_and_aliases_report_the_first_served_name(srv: StandIn) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        reply = call(srv, path, {**msg("hi", stream=True), "model": "claude-sonnet-4-5"})
        assert reply.status == 404
        assert reply.json() == {
            "type": "error",
            "error": {"type": "NotFoundError", "message": "The model `claude-sonnet-4-5` does not exist."},
        }
    chat = call(srv, "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status == 404
    assert chat.json()["error"] == {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    alias = call(srv, "/v1/messages", {**msg("hi"), "model": "claude-haiku-4-5"})
    assert alias.status == 200 and alias.json()["model"] == MODEL


def _over(srv: StandIn) -> str:
    return "x" * (3 * srv.max_model_len)


def test_prompt_over_the_served_context_gets_vllms_400_on_every_api(srv: StandIn) -> None:
    big = _over(srv)
    max_input = 4096 - 256
    text = (
        "This model's maximum context length is 4096 tokens. However, you requested 256 output tokens and your "
        f"prompt contains at least {max_input + 1} input tokens, for a total of at least 4097 tokens. Please reduce "
        "the length of the input prompt or the number of requested output tokens. "
        f"(parameter=input_tokens, value={max_input + 1})"
    )
    for stream in (False, True):
        reply = call(srv, "/v1/messages", msg(big, stream=stream))
        assert reply.status == 400
        assert reply.json() == {"type": "error", "error": {"type": "BadRequestError", "message": text}}
        chat = call(srv, "/v1/chat/completions", {**msg(big), "stream": stream})
        assert chat.status == 400
        assert chat.json() == {
            "error": {"message": text, "type": "BadRequestError", "param": "input_tokens", "code": 400}
        }
        resp = call(srv, "/v1/responses", {"model": MODEL, "input": big, "max_output_tokens": 256, "stream": stream})
        assert resp.status == 400 and resp.json()["error"]["message"] == text
    assert srv.max_prompt_tokens_seen >= estimate_prompt_tokens({"messages": [{"role": "user", "content": big}]})
    too_many = call(srv, "/v1/messages", msg("hi", max_tokens=5000))
    assert too_many.status == 400
    assert too_many.json()["error"]["message"] == (
        "max_completion_tokens=5000 cannot be greater than max_model_len=max_total_tokens=4096. "
        "Please request fewer output tokens. (parameter=max_completion_tokens, value=5000)"
    )


def test_a_prompt_that_just_fits_passes_and_one_more_token_does_not(srv: StandIn) -> None:
    # the estimate counts the JSON of the rendered messages: 3 bytes a token
    base = {"messages": [{"role": "user", "content": ""}]}
    overhead = len(json.dumps(base["messages"]).encode())
    fits = "a" * ((4096 - 256) * 3 - overhead)
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": fits}]}) == 4096 - 256
    assert call(srv, "/v1/messages", msg(fits)).status == 200
    assert call(srv, "/v1/messages", msg(fits + "a")).status == 400


def test_llama_cpp_mode_answers_over_context_like_llama_server() -> None:
    with standin_server(model=MODEL, max_model_len=2048, engine="llama.cpp") as llama:
        big = "y" * 9000
        for path, body in [
            ("/v1/chat/completions", {"model": "anything", "messages": [{"role": "user", "content": big}]}),
            ("/v1/messages", msg(big, stream=True)),
        ]:
            reply = call(llama, path, body)
            assert reply.status == 400
            n = llama.last_prompt_tokens
            assert reply.json() == {
                "error": {
                    "code": 400,
                    "message": f"request ({n} tokens) exceeds the available context size (2048 tokens), "
                    "try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": n,
                    "n_ctx": 2048,
                }
            }
        # llama-server checks only the prompt, and ignores the model name
        assert call(llama, "/v1/messages", {**msg("hi"), "model": "x", "max_tokens": 64000}).status == 200


def test_missing_max_tokens_is_an_openai_shaped_400(srv: StandIn) -> None:
    reply = call(srv, "/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["type"] == "Bad Request" and error["param"] == "body.max_tokens" and error["code"] == 400


# ---------------------------------------------------------------- count_tokens, system handling


def test_count_tokens_matches_the_messages_estimate(srv: StandIn) -> None:
    body = {"model": MODEL, "system": "be brief", "messages": [{"role": "user", "content": "hello"}], "tools": [WRITE]}
    reply = call(srv, "/v1/messages/count_tokens?beta=true", body)
    assert reply.status == 200
    n = reply.json()["input_tokens"]
    assert reply.json() == {"input_tokens": n, "context_management": {"original_input_tokens": n}}
    answer = call(srv, "/v1/messages", {**body, "max_tokens": 16}).json()
    assert answer["usage"]["input_tokens"] == n


def test_billing_header_dropped_and_inline_system_messages_accepted(srv: StandIn) -> None:
    plain = {"model": MODEL, "system": [{"type": "text", "text": "You are Claude Code."}], "messages": [
        {"role": "user", "content": "hi"}]}  # fmt: skip
    billed = {**plain, "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=abc;"},
                                  *plain["system"]]}  # fmt: skip
    count = [call(srv, "/v1/messages/count_tokens", b).json()["input_tokens"] for b in (plain, billed)]
    assert count[0] == count[1]
    inline = {**msg("hi"), "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "agents: x"}]}
    assert call(srv, "/v1/messages", inline).status == 200


# ---------------------------------------------------------------- /v1/responses


def test_responses_stream_text_and_function_call(srv: StandIn) -> None:
    reply = call(srv, "/v1/responses", {"model": MODEL, "input": "hi [standin tokens=3]", "stream": True})
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = reply.events()
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert [e for e, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0][1]["response"]
    assert created["id"].startswith("resp_") and created["status"] == "in_progress" and created["usage"] is None
    assert events[7][1]["text"] == "tok0 tok1 tok2"
    done = events[-1][1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "tok0 tok1 tok2"
    assert done["usage"]["output_tokens"] == 3 and done["usage"]["input_tokens"] == srv.last_prompt_tokens

    shell = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
    body = {"model": MODEL, "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": CREATE}]}], "tools": [shell], "stream": True}  # fmt: skip
    events = call(srv, "/v1/responses", body).events()
    deltas = [d["delta"] for e, d in events if e == "response.function_call_arguments.delta"]
    assert len(deltas) >= 2
    finished = next(d for e, d in events if e == "response.function_call_arguments.done")
    assert finished["arguments"] == "".join(deltas) and finished["name"] == "exec_command"
    item = next(d["item"] for e, d in events if e == "response.output_item.done")
    assert item["type"] == "function_call" and item["call_id"].startswith("call_")
    assert "hello there" in json.loads(item["arguments"])["cmd"]
    follow = {"model": MODEL, "tools": [shell], "input": [*body["input"], item,
              {"type": "function_call_output", "call_id": item["call_id"], "output": "ok"}]}  # fmt: skip
    plain = call(srv, "/v1/responses", follow).json()
    assert plain["status"] == "completed" and plain["output"][0]["content"][0]["text"] == "Done."


# ---------------------------------------------------------------- metrics, requests seen, auth


def test_metrics_and_seen_count_every_api() -> None:
    with standin_server(model=MODEL) as fresh:
        call(fresh, "/v1/messages", msg("hi"))
        call(fresh, "/v1/responses", {"model": MODEL, "input": "hi", "stream": True})
        call(fresh, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        call(fresh, "/v1/messages/count_tokens", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert [r.path for r in fresh.seen()] == [
            "/v1/messages",
            "/v1/responses",
            "/v1/chat/completions",
            "/v1/messages/count_tokens",
        ]
        assert fresh.completed == 3 and fresh.running == 0
        assert 'vllm:request_success_total{finished_reason="stop",model_name="umans-coder-v0"} 3.0' in fresh.metrics()


def test_api_key_is_bearer_only() -> None:
    with standin_server(model=MODEL, api_key="k-123") as locked:
        assert call(locked, "/v1/messages", msg("hi"), {"x-api-key": "k-123"}).status == 401
        assert call(locked, "/v1/messages", msg("hi"), {"authorization": "Bearer k-123"}).status == 200


# ---------------------------------------------------------------- the real clients, natively


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    return {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


@pytest.mark.integration
def test_claude_code_round_trip_on_the_native_messages_endpoint(tmp_path: Path) -> None:
    claude = require_tool("claude")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with standin_server(model=MODEL, api_key="native-key") as native:
        env = _env(home, {
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{native.port}", "ANTHROPIC_AUTH_TOKEN": "native-key",
            **{k: MODEL for k in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
                                  "ANTHROPIC_DEFAULT_OPUS_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL")},
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        })  # fmt: skip
        proc = subprocess.run(
            [claude, "-p", "Create a file hello.txt containing hello native", "--permission-mode", "acceptEdits",
             "--output-format", "json"],
            cwd=work, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert (work / "hello.txt").read_text() == "hello native\n"
        turns = native.seen("/v1/messages")
        assert turns and all(r.path == "/v1/messages" for r in turns)
        assert any(b.get("type") == "tool_result" for b in turns[-1].body["messages"][-1]["content"])
        assert native.max_prompt_tokens_seen > 5000  # Claude Code's system prompt + tools


@pytest.mark.integration
def test_codex_round_trip_on_the_native_responses_endpoint(tmp_path: Path) -> None:
    codex = require_tool("codex")
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    with standin_server(model=MODEL, api_key="native-key") as native:
        (home / ".codex" / "config.toml").write_text(
            f'model = "{MODEL}"\nmodel_provider = "native"\n\n[model_providers.native]\nname = "native"\n'
            f'base_url = "{native.url}"\nenv_key = "NATIVE_KEY"\nwire_api = "responses"\n'
        )
        proc = subprocess.run(
            [codex, "exec", "--skip-git-repo-check", "-s", "workspace-write",
             "Create a file hello.txt containing hello native codex"],
            cwd=work, env=_env(home, {"NATIVE_KEY": "native-key"}), capture_output=True, text=True, timeout=180,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert (work / "hello.txt").read_text() == "hello native codex\n"
        turns = native.seen("/v1/responses")
        assert len(turns) >= 2
        assert any(i.get("type") == "function_call_output" for i in turns[-1].body["input"])
