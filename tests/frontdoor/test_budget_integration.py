"""Daily token budgets, for real: `coderig frontdoor run` (TLS, nginx, LiteLLM, the relay keeping the
usage record) in front of the stand-in. alice has a small budget and bob none: once alice's counted
tokens reach it, every model route answers 429 in its client's shape (the limit, the reset time,
`retry-after`), nothing of hers reaches the model server, bob goes on, and a restarted front door
still refuses her (the budget is the usage record)."""

from __future__ import annotations

import calendar
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coderig import frontdoor
from coderig.frontdoor.assemble import FrontDoorInputs, GatewayPaths, assemble, relay_command
from tests.frontdoor_fixtures import (
    NPM_PREFIX,
    FrontDoor,
    Response,
    free_port,
    require_tool,
    running_frontdoor,
    standin_server,
)

pytestmark = pytest.mark.integration

MODEL = "umans-coder-v0"
KEYS = {"alice": "crk-alice0123456789abcdefABCDEFbudget", "bob": "crk-bob0123456789abcdefABCDEFbudget00"}
REPO = Path(__file__).resolve().parents[2]
LIMIT = 30  # below one answer's input + output: alice's first request reaches it
MSGS = [{"role": "user", "content": "say hello to the budget"}]
BODIES = {
    "/v1/messages": {"model": MODEL, "max_tokens": 20, "messages": MSGS},
    "/v1/messages/count_tokens": {"model": MODEL, "messages": MSGS},
    "/v1/chat/completions": {"model": MODEL, "max_tokens": 20, "messages": MSGS},
    "/v1/responses": {"model": MODEL, "input": "say hello to the budget"},
}


def seconds_to_utc_midnight() -> float:
    now = time.time()
    today = time.gmtime(now)
    return calendar.timegm((today.tm_year, today.tm_mon, today.tm_mday, 0, 0, 0)) + 86400 - now


def assert_refused(resp: Response, path: str) -> None:
    assert resp.status == 429, (path, resp.status, resp.body[:300])
    body = resp.json()
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
        message = body["error"]["message"]
    else:
        assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded", body
        message = body["error"]["message"]
    assert "developer alice: " in message and f" of {LIMIT} tokens used today" in message, message
    reset = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + seconds_to_utc_midnight() + 1))
    assert f"resets at {reset} (00:00 UTC)" in message, message
    assert abs(int(resp.headers["retry-after"]) - seconds_to_utc_midnight()) < 120, resp.headers
    assert resp.headers["x-should-retry"] == "false"


def alice_requests(model_requests: list[object]) -> int:
    return sum(1 for r in model_requests if getattr(r, "headers", {}).get("x-coderig-developer") == "alice")


def check_refusals(door: FrontDoor) -> None:
    for path, body in BODIES.items():
        assert_refused(door.post(path, body, key=KEYS["alice"]), path)
        assert_refused(door.post(path, {**body, "stream": True}, key=KEYS["alice"]), path)
    # the claude-* fallback (LiteLLM's route) is refused before the model server's 404 too
    haiku = {**BODIES["/v1/messages"], "model": "claude-haiku-4-5"}
    assert_refused(door.post("/v1/messages", haiku, key=KEYS["alice"], header="x-api-key"), "/v1/messages")
    # listing the model spends nothing: still answered
    assert door.request("GET", "/v1/models", key=KEYS["alice"]).status == 200


def claude_code(door: FrontDoor, key: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The real Claude Code CLI, headless, pointed at the front door with one developer's key."""
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": door.url,
        "ANTHROPIC_AUTH_TOKEN": key,
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "NODE_EXTRA_CA_CERTS": str(door.ca),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    return subprocess.run(
        ["claude", "-p", "say hello"], cwd=home, env=env, capture_output=True, text=True, timeout=180,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_over_budget_gets_429_in_its_clients_shape_on_every_route_and_after_a_restart(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    args = ("--daily-tokens", f"alice={LIMIT}", "--metrics-listen", metrics)
    with standin_server(model=MODEL) as model:
        with running_frontdoor(model.url, MODEL, tmp_path / "fd", KEYS, *args) as door:
            first = door.post("/v1/messages", BODIES["/v1/messages"], key=KEYS["alice"])
            assert first.status == 200, first.body
            used = first.json()["usage"]
            assert used["input_tokens"] + used["output_tokens"] >= LIMIT  # the premise of the test
            seen = alice_requests(list(model.requests))
            check_refusals(door)
            assert alice_requests(list(model.requests)) == seen, "a refused request reached the model server"
            for path, body in BODIES.items():  # bob has no budget
                assert door.post(path, body, key=KEYS["bob"]).status == 200, path
            haiku = {**BODIES["/v1/messages"], "model": "claude-haiku-4-5"}
            assert door.post("/v1/messages", haiku, key=KEYS["bob"]).status == 200
            # Claude Code itself shows the developer why, at once (x-should-retry: false), and exits non-zero
            require_tool("claude")
            started = time.monotonic()
            proc = claude_code(door, KEYS["alice"], tmp_path / "home-alice")
            shown = proc.stdout + proc.stderr
            assert proc.returncode != 0 and "API Error: Request rejected (429) · daily token budget" in shown, shown
            assert "daily token budget reached for developer alice" in shown and "00:00 UTC" in shown, shown[-2000:]
            assert time.monotonic() - started < 60, "Claude Code retried a refusal it was told not to"
            assert alice_requests(list(model.requests)) == seen
            # the refused requests are the gateway's own answers: in its access log, never counted as usage
            lines = [json.loads(x) for x in (tmp_path / "fd" / "gateway-access.log").read_text().splitlines()]
            refused = [x["path"] for x in lines if x["developer"] == "alice" and x["status"] == "429"]
            assert len(refused) == 2 * len(BODIES) + 2 and set(refused) == set(BODIES), refused  # + Claude Code once
            assert not [x for x in lines if x["developer"] == "bob" and x["status"] != "200"]
        # a new front door on the same state directory reads the record: alice is still over budget
        with running_frontdoor(model.url, MODEL, tmp_path / "fd", KEYS, *args) as door:
            seen = alice_requests(list(model.requests))
            check_refusals(door)
            assert alice_requests(list(model.requests)) == seen
            assert door.post("/v1/messages", BODIES["/v1/messages"], key=KEYS["bob"]).status == 200


def test_an_unanswered_budget_check_lets_the_route_answer_for_itself(tmp_path: Path) -> None:
    """The check asks the relay's listener; when nothing answers there, nginx lets the request on: with
    the model hop up it is served, with it down the client gets the route's 503 in its shape (never
    nginx's bare 500 page), and the error log names the failed check."""
    nginx = require_tool("nginx")
    relay_port, gateway, closed = free_port(), free_port(), free_port()
    with standin_server(model=MODEL) as model:
        inputs = FrontDoorInputs(
            served_name=MODEL, backends=(model.url,), max_tokens=64, listen=f"127.0.0.1:{gateway}",
            litellm=f"127.0.0.1:{free_port()}", health_url=f"http://127.0.0.1:{model.port}/health",
            rate_per_second=1000, direct_chat=(f"127.0.0.1:{model.port}",),
            native_routes=("messages", "count_tokens", "responses"), relay_port=relay_port,
            daily_tokens=(("alice", 1),), budget_check=f"127.0.0.1:{closed}",
        )  # fmt: skip
        (tmp_path / "keys.conf").write_text(frontdoor.render_gateway_keys(KEYS, "sk-" + "m" * 40))
        paths = GatewayPaths(
            keys_include=str(tmp_path / "keys.conf"), pid_path=str(tmp_path / "nginx.pid"),
            error_log=str(tmp_path / "error.log"), access_log=str(tmp_path / "access.log"),
            temp_dir=str(tmp_path / "tmp"),
        )  # fmt: skip
        _, spec = assemble(inputs, paths, worker_processes="1")
        (tmp_path / "tmp").mkdir()
        (tmp_path / "nginx.conf").write_text(frontdoor.render_gateway_conf(spec))
        relay = subprocess.Popen(relay_command(spec, sys.executable), cwd=REPO)
        gate = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], text=True)
        try:
            for port in (gateway, relay_port):
                deadline = time.monotonic() + 20
                while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                    assert time.monotonic() < deadline, f"nothing listens on {port}"
                    time.sleep(0.1)
            door = FrontDoor(f"http://127.0.0.1:{gateway}", "127.0.0.1", gateway, None, tmp_path, tmp_path, gate)
            assert door.post("/v1/messages", BODIES["/v1/messages"], key=KEYS["alice"]).status == 200
            relay.terminate()
            relay.wait(10)
            down = door.post("/v1/messages", BODIES["/v1/messages"], key=KEYS["alice"])
            assert down.status == 503 and down.json()["error"]["type"] == "overloaded_error", down.body
            down = door.post("/v1/chat/completions", BODIES["/v1/chat/completions"], key=KEYS["alice"])
            assert down.status == 503 and down.json()["error"]["code"] == "upstream_unavailable", down.body
            assert "/_coderig_budget" in (tmp_path / "error.log").read_text()
        finally:
            for proc in (gate, relay):
                proc.terminate()
                proc.wait(10)
