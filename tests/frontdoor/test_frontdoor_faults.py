"""`coderig frontdoor run` heals itself (real nginx, LiteLLM and relay in front of the stand-in): a
child killed with -9 leaves no process of its group behind, comes back on the same address, and
/healthz answers 503 meanwhile; a stream the model leaves silent ends at the gateway's read timeout
with an error event although keepalives flow; LiteLLM's failures log one line each."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from frontdoor_fixtures import FrontDoor, free_port, running_frontdoor, standin_server

from coderig.frontdoor import ModelRoute
from coderig.frontdoor.litellm import render_litellm_config
from coderig.frontdoor.run import ensure_litellm, http_ok, litellm_command, litellm_env
from coderig.frontdoor.supervise import group_members

pytestmark = pytest.mark.integration

MODEL = "fault-model"
KEYS = {"alice": "alice-key-0123456789abcdef"}
KEY = KEYS["alice"]


def children(pid: int) -> dict[str, int]:
    """The runner's children by what they are: nginx, LiteLLM, relay -> pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].split()[1] != str(pid):
            continue
        name = "nginx" if "nginx" in cmdline else "relay" if "sse_keepalive" in cmdline else "litellm"
        found[name] = int(entry.name)
    return found


def chat(door: FrontDoor) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        return door.post("/v1/chat/completions", body, KEY, timeout=10).status
    except OSError:
        return 0


def messages(door: FrontDoor) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    try:
        return door.post("/v1/messages", body, KEY, timeout=10).status
    except OSError:
        return 0


def models(door: FrontDoor) -> int:
    try:
        return door.request("GET", "/v1/models", key=KEY, timeout=10).status
    except OSError:
        return 0


def healthz(door: FrontDoor) -> int:
    try:
        return door.request("GET", "/healthz", timeout=5).status
    except OSError:
        return 0


def wait_for(check: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s")


def test_a_killed_child_leaves_no_orphan_and_comes_back_on_the_same_address(tmp_path: Path) -> None:
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(
            model.url,
            MODEL,
            tmp_path / "door",
            KEYS,
            "--litellm-workers",
            "2",
            "--startup-timeout",
            "300",
            tls=False,
            startup_s=300,
        ) as door,
    ):
        assert chat(door) == 200 and messages(door) == 200 and healthz(door) == 200
        groups = []
        for name, works in (("nginx", chat), ("litellm", models), ("relay", messages)):
            pid = children(door.proc.pid)[name]
            members = group_members(pid)
            if name != "relay":  # nginx: master + 2 workers; LiteLLM: master + 2 workers
                assert len(members) >= 3, (name, members)
            groups.append(pid)
            os.kill(pid, signal.SIGKILL)
            if name == "litellm":  # /healthz is 503 while it is down (the relay is back before the 1 s cache)
                assert wait_for(lambda: healthz(door) == 503, 5) < 5
            wait_for(lambda pid=pid: not group_members(pid), 15)  # the workers went with their master
            wait_for(lambda works=works: works(door) == 200, 300)  # the same address serves again (LiteLLM: slow start)
            assert children(door.proc.pid)[name] != pid
            wait_for(lambda: healthz(door) == 200, 60)
        said = [
            f"{name} {what}"
            for name in ("nginx", "LiteLLM", "keepalive relay")
            for what in ("exited (-9); restarting", "serves again")
        ]
        wait_for(lambda: all(line in door.logs() for line in said), 10)  # the runner's next poll says so
    for pgid in groups + list(children(door.proc.pid).values()):
        assert not group_members(pgid)  # nothing outlives the runner either


def test_a_wedged_stream_ends_at_the_read_timeout_although_keepalives_flow(tmp_path: Path) -> None:
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(
            model.url, MODEL, tmp_path / "door", KEYS, "--timeout", "3", "--keepalive", "0.5", startup_s=300
        ) as door,
    ):
        body = {
            "model": MODEL,
            "max_tokens": 16,
            "stream": True,
            "messages": [{"role": "user", "content": "[standin first_delay=40] hi"}],
        }
        started = time.monotonic()
        events = list(door.stream("/v1/messages", body, KEY, timeout=30))
        elapsed = time.monotonic() - started
        assert 2.5 < elapsed < 10, elapsed  # the bound, not the model's 40 s of silence
        assert events[-1][1] == "error" and events[-1][2]["error"]["type"] == "timeout_error"
        responses = {**body, "input": "[standin first_delay=40] hi"}
        del responses["messages"]
        events = list(door.stream("/v1/responses", responses, KEY, timeout=30))
        assert events[-1][1] == "error" and events[-1][2]["code"] == "timeout"


def test_a_litellm_failure_logs_one_line_and_answers_json(tmp_path: Path) -> None:
    """LiteLLM in the environment every target gives it, before a model server that refuses
    connections: each failing request answers JSON in the client's shape and logs one line (the
    traceback inside it), where plain logs wrote ~55 lines per request (issue 21)."""
    config = tmp_path / "config.yaml"
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    config.write_text(render_litellm_config(ModelRoute(MODEL, (dead,), 64)))
    port = free_port()
    env = litellm_env("sk-master-0123456789abcdef", {"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    log = tmp_path / "litellm.log"
    with log.open("w") as out:
        proc = subprocess.Popen(litellm_command(ensure_litellm(), config, port, 1), env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health/liveliness"), 120)
        before = len(log.read_text().splitlines())
        headers = {"authorization": "Bearer sk-master-0123456789abcdef", "content-type": "application/json"}
        for path, body, anthropic in (
            ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, False),
            ("/v1/messages", {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}, True),
        ):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", path, json.dumps(body), headers)
            resp = conn.getresponse()
            error = json.loads(resp.read())
            conn.close()
            assert resp.status == 500
            assert "Cannot connect to host" in error["error"]["message"]
            assert error.get("type") == ("error" if anthropic else None)
        time.sleep(1)  # the log line is written after the answer
        lines = log.read_text().splitlines()[before:]
    finally:
        proc.terminate()
        proc.wait(30)
    records = [json.loads(line) for line in lines]  # every line is one JSON record
    assert len(records) == 2, lines
    assert all("Traceback" in r.get("stacktrace", "") + r["message"] for r in records), records
    assert "sk-master" not in "".join(lines)
