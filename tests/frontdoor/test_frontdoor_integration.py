"""The front door for real: `coderig frontdoor run` (nginx from Debian + the pinned LiteLLM) in
front of the stand-in model server, all on loopback, driven by HTTP clients, Claude Code and Codex.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from frontdoor_fixtures import (
    NPM_PREFIX,
    FrontDoor,
    require_tool,
    running_frontdoor,
    standin_server,
)
from standin import StandIn

from coderig import frontdoor

pytestmark = pytest.mark.integration

MODEL = "umans-coder-v0"
KEYS = {
    "alice": "alice-0123456789abcdefABCDEF",
    "bob": "bob.0123456789+abcdefABCDEF",
    "carol": "carol-0123456789abcdefABCDEF",
}
MSG = "/v1/messages"
USER_HI = [{"role": "user", "content": "hi"}]


@pytest.fixture()
def quiet(standin: StandIn) -> StandIn:
    standin.clear()
    return standin


def anthropic_body(model: str = "claude-sonnet-4-5", text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def assert_anthropic_401(resp: Any) -> None:
    assert resp.status == 401, resp.body
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"


def assert_openai_401(resp: Any) -> None:
    assert resp.status == 401, resp.body
    body = resp.json()
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------- authentication

BAD_KEYS = {
    "no key": None,
    "wrong key": "not-a-key-0123456789abcdef",
    "right key, wrong case": KEYS["alice"].upper(),
    "prefix of a key": KEYS["alice"][:-1],
}


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
@pytest.mark.parametrize("label", list(BAD_KEYS))
def test_bad_keys_get_401_in_the_right_shape_and_nothing_is_forwarded(
    door: FrontDoor, quiet: StandIn, label: str, header: str
) -> None:
    key = BAD_KEYS[label]
    assert_anthropic_401(door.post(MSG, anthropic_body(), key, header=header))
    assert_anthropic_401(door.post(MSG + "/count_tokens?beta=true", anthropic_body(), key, header=header))
    chat = {"model": MODEL, "messages": USER_HI}
    assert_openai_401(door.post("/v1/chat/completions", chat, key, header=header))
    assert_openai_401(door.post("/v1/responses", {"model": MODEL, "input": "hi"}, key, header=header))
    assert_openai_401(door.request("GET", "/v1/models", None, key, header=header))
    assert quiet.seen("/") == []


def test_revoked_key_gets_401_after_reload_and_others_keep_working(door: FrontDoor, quiet: StandIn) -> None:
    assert door.post(MSG, anthropic_body(), KEYS["carol"]).status == 200
    door.write_keys({k: v for k, v in KEYS.items() if k != "carol"})  # SIGHUP: re-read keys
    deadline = time.monotonic() + 15
    while door.request("GET", "/v1/models", None, KEYS["carol"]).status != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.2)
    quiet.clear()
    assert_anthropic_401(door.post(MSG, anthropic_body(), KEYS["carol"]))
    assert_openai_401(door.post("/v1/chat/completions", {"model": MODEL, "messages": USER_HI}, KEYS["carol"]))
    assert quiet.seen("/") == []
    assert door.post(MSG, anthropic_body(), KEYS["alice"]).status == 200
    door.write_keys(KEYS)


def test_probes_are_answered_by_the_gateway(door: FrontDoor, quiet: StandIn) -> None:
    assert door.request("HEAD", "/api/hello").status == 200
    batch = door.post("/api/event_logging/batch", {"events": [{"x": 1}]}, KEYS["alice"])
    assert batch.status == 200
    assert door.request("GET", "/healthz").status == 200
    # LiteLLM's admin and UI routes are not reachable through the gateway, even with a key.
    for path in ("/key/generate", "/ui", "/config/update", "/model/new", "/health"):
        assert door.post(path, {}, KEYS["alice"]).status == 404, path
    # nothing reached the model server but /healthz's own probe (--health-path: GET /v1/models by default)
    assert [(r.method, r.path) for r in quiet.seen("/v1/")] in ([], [("GET", "/v1/models")])


# ---------------------------------------------------------------- valid keys


def test_messages_plain_for_claude_names_and_the_key_is_not_forwarded(door: FrontDoor, quiet: StandIn) -> None:
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5-20251001", "claude-opus-4-1", MODEL):
        resp = door.post(
            MSG + "?beta=true",
            anthropic_body(model),
            KEYS["bob"],
            header="x-api-key",
            extra_headers={"anthropic-beta": "claude-code-20250219"},
        )
        assert resp.status == 200, (model, resp.body)
        body = resp.json()
        assert body["type"] == "message" and body["role"] == "assistant"
        assert body["content"][0]["type"] == "text" and body["content"][0]["text"].startswith("tok0")
    seen = quiet.seen("/v1/chat/completions")
    assert len(seen) == 4
    assert {r.body["model"] for r in seen} == {MODEL}  # every claude-* name reached the served model
    for request in seen:
        assert not any(KEYS["bob"] in v for v in request.headers.values())


def test_messages_streamed(door: FrontDoor, quiet: StandIn) -> None:
    events = list(door.stream(MSG, anthropic_body("claude-haiku-4-5", stream=True), KEYS["alice"]))
    names = [e for _, e, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    text = "".join(d["delta"]["text"] for _, e, d in events if e == "content_block_delta")
    assert text == " ".join(f"tok{i}" for i in range(16))
    assert quiet.seen("/v1/chat/completions")[0].body["stream"] is True


def test_count_tokens(door: FrontDoor) -> None:
    resp = door.post(
        MSG + "/count_tokens?beta=true", anthropic_body("claude-sonnet-4-5", "hello " * 100), KEYS["alice"]
    )
    assert resp.status == 200, resp.body
    assert resp.json()["input_tokens"] > 50


def test_tool_call_arguments_split_across_chunks_reassemble(door: FrontDoor, quiet: StandIn) -> None:
    write_tool = {
        "name": "Write",
        "description": "Write a file",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
        },
    }
    body = anthropic_body(
        "claude-sonnet-4-5", "Create a file /tmp/x/notes.txt containing it works", stream=True, tools=[write_tool]
    )
    events = list(door.stream(MSG, body, KEYS["alice"]))
    parts = [
        d["delta"]["partial_json"]
        for _, e, d in events
        if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    assert len(parts) > 3  # really streamed in pieces
    assert json.loads("".join(parts)) == {"file_path": "/tmp/x/notes.txt", "content": "it works\n"}
    stop = [d for _, e, d in events if e == "message_delta"]
    assert stop[-1]["delta"]["stop_reason"] == "tool_use"


def test_chat_completions_plain_and_streamed(door: FrontDoor, quiet: StandIn) -> None:
    """Sent straight to the model server by default (--direct-chat): no key of any kind reaches it."""
    resp = door.post("/v1/chat/completions", {"model": MODEL, "messages": USER_HI}, KEYS["alice"])
    assert resp.status == 200, resp.body
    assert resp.json()["choices"][0]["message"]["content"].startswith("tok0")
    seen = quiet.seen("/v1/chat/completions")[0]
    assert "authorization" not in seen.headers and "x-api-key" not in seen.headers
    chunks = list(
        door.stream("/v1/chat/completions", {"model": MODEL, "messages": USER_HI, "stream": True}, KEYS["alice"])
    )
    assert chunks[-1][2] == "[DONE]"
    text = "".join(
        (c["choices"][0]["delta"].get("content") or "")
        for _, _, c in chunks
        if isinstance(c, dict) and c.get("choices")
    )
    assert text.startswith("tok0 tok1")


def test_responses_plain_and_streamed(door: FrontDoor, quiet: StandIn) -> None:
    resp = door.post("/v1/responses", {"model": MODEL, "input": "hi"}, KEYS["alice"])
    assert resp.status == 200, resp.body
    out = resp.json()["output"]
    assert out[0]["content"][0]["text"].startswith("tok0")
    events = list(door.stream("/v1/responses", {"model": MODEL, "input": "hi", "stream": True}, KEYS["alice"]))
    kinds = [d["type"] for _, _, d in events if isinstance(d, dict)]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert {r.path for r in quiet.seen("/v1/")} == {"/v1/chat/completions"}


# ---------------------------------------------------------------- streaming, timeouts, sizes


def test_first_event_arrives_while_the_model_is_still_generating(door: FrontDoor, standin: StandIn) -> None:
    body = anthropic_body("claude-sonnet-4-5", "[standin tokens=30 delay=0.1]", stream=True)
    first_at = last_at = None
    running_at_first = None
    for at, event, _ in door.stream(MSG, body, KEYS["alice"]):
        if event == "content_block_delta" and first_at is None:
            first_at, running_at_first = at, standin.running
        last_at = at
    assert first_at is not None and last_at is not None
    assert running_at_first == 1, "the first token reached us only after the stand-in had finished"
    assert first_at < 1.5 and last_at - first_at > 2.0


def test_silence_longer_than_nginx_default_read_timeout_survives(door: FrontDoor, quiet: StandIn) -> None:
    """A request during which the model sends nothing for 65 s still completes.

    nginx's default proxy_read_timeout (and send/client timeouts) is 60 s *between two reads*: a
    stream that keeps producing tokens never hits it, but a long silence does — prefill of a huge
    context, a queue in vLLM, or a model "thinking" without streamed output. So the honest test of
    "longer than the defaults" is a silence, not a long stream: 65 s beats nginx's 60 s default
    (a config that forgot proxy_read_timeout fails here with 503; see the next test for proof the
    knob is what decides). LiteLLM's defaults (OpenAI client 600 s, litellm.request_timeout 6000 s)
    are too long to wait out in a test; the rendered config sets every LiteLLM timeout to 1800 s
    (checked in tests/test_frontdoor.py), and this request also proves LiteLLM keeps a silent
    upstream open past a minute.
    """
    body = anthropic_body("claude-sonnet-4-5", "[standin first_delay=65 tokens=3]", stream=True)
    events = list(door.stream(MSG, body, KEYS["alice"], timeout=200))
    first_delta = next(at for at, e, _ in events if e == "content_block_delta")
    assert first_delta > 60
    assert events[-1][1] == "message_stop"


def test_twenty_megabyte_body_is_accepted_and_oversize_refused(door: FrontDoor, quiet: StandIn) -> None:
    big = "x" * (20 * 1024 * 1024)
    resp = door.post(
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": big}], "max_tokens": 2},
        KEYS["alice"],
        timeout=120,
    )
    # the whole body reached the model server, which refuses it as vLLM would: over the served context
    assert resp.status == 400, resp.body[:300]
    assert "maximum context length is 131072 tokens" in resp.json()["error"]["message"]
    assert len(quiet.seen("/v1/chat/completions")[0].body["messages"][0]["content"]) == len(big)
    huge = b'{"model":"m","messages":[{"role":"user","content":"' + b"y" * (33 * 1024 * 1024) + b'"}]}'
    assert door.post("/v1/chat/completions", huge, KEYS["alice"]).status == 413


def test_access_log_is_json_with_developer_and_no_key(door: FrontDoor) -> None:
    door.post(MSG, anthropic_body(), KEYS["bob"], extra_headers={"x-claude-code-session-id": "sess-1"})
    deadline = time.monotonic() + 10
    while True:  # nginx logs a request after its last byte went out: the client can be first
        entries = [json.loads(line) for line in (door.state_dir / "gateway-access.log").read_text().splitlines()]
        mine = [e for e in entries if e["developer"] == "bob" and e["session"] == "sess-1"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert mine and mine[-1]["status"] == "200" and mine[-1]["path"] == MSG
    assert float(mine[-1]["duration_s"]) >= 0 and int(mine[-1]["bytes_sent"]) > 0
    assert any(e["developer"] == "" and e["status"] == "401" for e in entries)
    everything = door.logs()
    for key in KEYS.values():
        assert key not in everything


# ---------------------------------------------------------------- knobs that bite (second front door)


def test_short_gateway_timeout_rate_limit_and_readiness(tmp_path: Path) -> None:
    """The same front door with a 3 s gateway timeout and 1 request/s per developer: a 5 s
    silence now fails (so the 65 s test above passes because of the rendered timeout, not by
    luck), limits are per developer, and /healthz follows the model server."""
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(
            model.url,
            MODEL,
            tmp_path / "fd",
            KEYS,
            "--timeout",
            "3",
            "--rate-limit-per-minute",
            "60",
            "--rate-burst",
            "2",
            "--no-direct-chat",
            tls=False,
        ) as fd,
    ):
        # chat/completions through LiteLLM (the module's front door sends it straight to the model)
        chat = fd.post("/v1/chat/completions", {"model": "claude-haiku-4-5", "messages": USER_HI}, KEYS["alice"])
        assert chat.status == 200 and chat.json()["choices"][0]["message"]["content"].startswith("tok0")
        assert model.seen("/v1/chat/completions")[-1].body["model"] == MODEL
        time.sleep(1.1)  # let alice's rate-limit bucket refill
        # not streamed: nothing reaches the client before the 3 s timeout (a stream would already have
        # its message_start, sent by LiteLLM on the model's first, empty chunk, and be cut mid-way)
        slow = fd.post(MSG, anthropic_body("claude-sonnet-4-5", "[standin first_delay=5]"), KEYS["alice"])
        assert slow.status == 503 and slow.json()["error"]["type"] == "overloaded_error"

        statuses = [fd.post(MSG, anthropic_body(), KEYS["bob"]).status for _ in range(6)]
        assert 429 in statuses and statuses[0] == 200
        limited = fd.post(MSG, anthropic_body(), KEYS["bob"])
        assert limited.status == 429 and limited.json()["error"]["type"] == "rate_limit_error"
        chat_limited = fd.post("/v1/chat/completions", {"model": MODEL, "messages": USER_HI}, KEYS["bob"])
        assert chat_limited.status == 429 and chat_limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert fd.post(MSG, anthropic_body(), KEYS["carol"]).status == 200  # others unaffected

        assert fd.request("GET", "/healthz").status == 200
        model.stop()
        deadline = time.monotonic() + 2 * frontdoor.HEALTH_CACHE_S + 1  # the status is cached for a second
        while fd.request("GET", "/healthz").status != 503:
            assert time.monotonic() < deadline, "/healthz still 200 with the model server gone"
            time.sleep(0.2)


def test_plain_http_refused_on_a_non_loopback_address(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coderig.cli",
            "frontdoor",
            "run",
            "--backend",
            "http://127.0.0.1:9/v1",
            "--model",
            MODEL,
            "--listen",
            "0.0.0.0:8443",
            "--keys-file",
            str(keys),
            "--plain-http",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    assert "--plain-http is only allowed on a loopback address" in proc.stderr


# ---------------------------------------------------------------- real agents


def agent_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def test_claude_code_creates_a_file_through_the_front_door(door: FrontDoor, quiet: StandIn, tmp_path: Path) -> None:
    claude = require_tool("claude")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = agent_env(
        home,
        {
            "ANTHROPIC_BASE_URL": door.url,
            "ANTHROPIC_AUTH_TOKEN": KEYS["alice"],
            "ANTHROPIC_MODEL": MODEL,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": MODEL,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": MODEL,
            "CLAUDE_CODE_SUBAGENT_MODEL": MODEL,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
            "NODE_EXTRA_CA_CERTS": str(door.ca),
        },
    )
    proc = subprocess.run(
        [
            claude,
            "-p",
            "Create a file hello.txt containing hello from claude code",
            "--permission-mode",
            "acceptEdits",
            "--output-format",
            "json",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["subtype"] == "success" and result["is_error"] is False
    assert (work / "hello.txt").read_text() == "hello from claude code\n"
    calls = quiet.seen("/v1/chat/completions")
    assert any("Write" in [t["function"]["name"] for t in r.body.get("tools", [])] for r in calls)
    assert any(m["role"] == "tool" for m in calls[-1].body["messages"])  # the Write result came back


def test_codex_exec_creates_a_file_through_responses(door: FrontDoor, quiet: StandIn, tmp_path: Path) -> None:
    codex = require_tool("codex")
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    (home / ".codex" / "config.toml").write_text(
        f'model = "{MODEL}"\nmodel_provider = "coderig"\n\n[model_providers.coderig]\nname = "coderig"\n'
        f'base_url = "{door.url}/v1"\nenv_key = "CODERIG_API_KEY"\nwire_api = "responses"\n'
    )
    env = agent_env(home, {"CODERIG_API_KEY": KEYS["alice"], "SSL_CERT_FILE": str(door.ca)})
    proc = subprocess.run(
        [
            codex,
            "exec",
            "--skip-git-repo-check",
            "-s",
            "workspace-write",
            "Create a file hello.txt containing hello from codex",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (work / "hello.txt").read_text() == "hello from codex\n"
    time.sleep(0.5)  # the access log line follows the response
    log = [json.loads(line) for line in (door.state_dir / "gateway-access.log").read_text().splitlines()]
    assert any(e["path"] == "/v1/responses" and e["developer"] == "alice" and e["status"] == "200" for e in log)
    calls = quiet.seen("/v1/chat/completions")
    assert any(m["role"] == "tool" for m in calls[-1].body["messages"])
