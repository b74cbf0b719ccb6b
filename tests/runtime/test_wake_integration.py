"""Wake on request, for real: nginx (the rendered gateway) -> the keepalive relay with `--wake sleep`
-> the stand-in model server with vLLM 0.28's sleep routes (dev mode) and a wake that takes time.
The reaper's own functions put the model to sleep, as they do on a node."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from frontdoor_fixtures import NPM_PREFIX, free_port, require_tool
from standin_sleep import ADMIN_ROUTES
from wake_rig import DEV_KEY, MODEL, standin_rig, start_model_process, wake_rig

from coderig.runtime import idle, node_reaper
from coderig.runtime.wake import SleepWaker

pytestmark = pytest.mark.integration

MSG = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def test_a_sleeping_model_is_woken_by_a_stream_that_hears_keepalives_meanwhile(tmp_path: Path) -> None:
    with standin_rig(tmp_path, wake_delay=2.0, interval_s=0.5) as (model, rig):
        assert rig.post("/v1/chat/completions", MSG)[0] == 200  # awake: straight through
        assert rig.put_to_sleep()
        assert model.sleep.sleeping and model.sleep.sleeps == 1 and model.sleep.aborted == 0
        assert rig.relay_state()["state"] == "sleeping"
        conn = http.client.HTTPConnection("127.0.0.1", rig.relay_port, timeout=10)  # what /healthz asks
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200 and model.sleep.wakes == 0  # a probe never wakes it
        conn.close()
        status, lines = rig.stream_raw("/v1/messages", {**MSG, "stream": True})
        assert status == 200
        keepalives = [t for t, line in lines if line == ": keepalive"]
        first_data = next(t for t, line in lines if line.startswith("data:"))
        assert len(keepalives) >= 2 and keepalives[0] < 1.5 and first_data >= 2.0  # alive during the wake
        events = [line.removeprefix("event: ") for _, line in lines if line.startswith("event:")]
        assert events[0] == "message_start" and events[-1] == "message_stop"
        assert model.sleep.wakes == 1 and model.sleep.served_asleep == 0 and not model.sleep.sleeping
        state = rig.relay_state()
        assert state["state"] == "awake" and state["wakes_total"] == 1 and state["inflight"] == 0


def test_a_relay_restarted_while_the_model_sleeps_holds_and_wakes_it(tmp_path: Path) -> None:
    with standin_rig(tmp_path, wake_delay=1.0) as (model, rig):
        assert rig.put_to_sleep()
        rig.restart_relay()
        assert rig.relay_state()["state"] == "sleeping"  # asked the model (GET /is_sleeping), not assumed awake
        assert rig.post("/v1/messages", MSG)[0] == 200
        assert model.sleep.wakes == 1 and model.sleep.served_asleep == 0


def test_twenty_requests_during_one_wake_get_one_wake_and_twenty_completions(tmp_path: Path) -> None:
    with standin_rig(tmp_path, wake_delay=3.0) as (model, rig):
        assert rig.put_to_sleep()
        kinds = [
            ("/v1/messages", {**MSG, "stream": True}),
            ("/v1/messages", MSG),
            ("/v1/chat/completions", {**MSG, "stream": True}),
            ("/v1/chat/completions", MSG),
            ("/v1/messages/count_tokens", {"model": MODEL, "messages": MSG["messages"]}),
            ("/v1/responses", {"model": MODEL, "input": "hi", "stream": True}),
        ]
        results: list[tuple[int, bytes]] = [(0, b"")] * 20

        def one(i: int) -> None:
            results[i] = rig.post(*kinds[i % len(kinds)])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [s for s, _ in results] == [200] * 20, [b[:200] for s, b in results if s != 200]
        assert all(b"keepalive" not in b or b"data:" in b for _, b in results)
        assert model.sleep.wakes == 1 and model.sleep.served_asleep == 0
        assert rig.relay_state()["wakes_total"] == 1
        assert len([r for r in model.seen() if r.path.startswith("/v1/")]) == 20


def test_the_model_killed_during_a_wake_ends_held_requests_with_why_and_the_next_request_wakes_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = start_model_process(port, "--wake-delay", "4")
    try:
        with wake_rig(tmp_path, port) as rig:
            assert rig.put_to_sleep()
            out: dict[str, object] = {}
            streamer = threading.Thread(
                target=lambda: out.update(s=rig.stream_raw("/v1/messages", {**MSG, "stream": True}))
            )
            plain = threading.Thread(target=lambda: out.update(p=rig.post("/v1/chat/completions", MSG)))
            streamer.start()
            plain.start()
            time.sleep(1.5)  # both held, /wake_up under way
            proc.kill()
            proc.wait(10)
            streamer.join(30)
            plain.join(30)
            status, lines = out["s"]  # type: ignore[misc]
            assert status == 200  # the stream's head went out while it was held
            error = next(json.loads(line[5:]) for _, line in lines if line.startswith("data:"))
            assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
            assert "could not wake the model" in error["error"]["message"]
            pstatus, pbody = out["p"]  # type: ignore[misc]
            assert pstatus == 503
            assert "could not wake the model" in json.loads(pbody)["error"]["message"]
            assert rig.relay_state()["state"] == "stopped"
            # the model server comes back (its container restarts): the next request wakes it again
            proc = start_model_process(port)
            assert rig.post("/v1/messages", MSG)[0] == 200
            state = rig.relay_state()
            assert state["state"] == "awake" and state["wakes_total"] == 2
    finally:
        proc.kill()
        proc.wait(10)


def test_the_reaper_never_sleeps_a_model_with_a_request_in_flight(tmp_path: Path) -> None:
    with standin_rig(tmp_path) as (model, rig):
        slow = {**MSG, "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "[standin tokens=40 delay=0.05] go"}]}  # fmt: skip
        t = threading.Thread(target=rig.stream_raw, args=("/v1/messages", slow))
        t.start()
        time.sleep(0.5)
        assert rig.relay_state()["inflight"] == 1
        assert not rig.put_to_sleep()  # the relay refuses to hold it: busy
        assert model.sleep.sleeps == 0 and model.sleep.aborted == 0
        t.join(30)
        assert rig.relay_state()["inflight"] == 0
        assert rig.put_to_sleep() and model.sleep.sleeps == 1 and model.sleep.aborted == 0


def test_no_admin_route_of_the_model_server_passes_the_gateway(tmp_path: Path) -> None:
    with standin_rig(tmp_path) as (model, rig):
        assert [r.path for r in model.requests] == ["/is_sleeping"]  # the relay's own look at start (loopback)
        model.clear()
        tried = 0
        for route in ADMIN_ROUTES:
            for path in (route, f"{route}?level=1", f"/v1/..{route}", f"/v1/messages/../..{route}", f"/{route}"):
                for method in ("GET", "POST"):
                    conn = http.client.HTTPConnection("127.0.0.1", rig.gateway, timeout=10)
                    conn.request(method, path, b"{}", headers={"authorization": f"Bearer {DEV_KEY}"})
                    status = conn.getresponse().status
                    conn.close()
                    assert status in (400, 404, 405), (method, path, status)
                    tried += 1
        assert tried == len(ADMIN_ROUTES) * 10
        assert [r.path for r in model.requests] == []  # not one reached the model server
        assert rig.post("/v1/messages", MSG)[0] == 200 and len(model.requests) == 1  # the gateway works


def test_reaper_sleeps_an_idle_model_wakes_it_at_office_hours_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    with standin_rig(tmp_path) as (model, rig):
        waker = SleepWaker(rig.model_base)
        cfg = rig.reaper_config(period_seconds=60, dry_run=True)
        lines: list[str] = []
        # ten idle minutes already seen; "later" is past the window since the relay came up (decide()
        # keeps a model up for less than the window awake)
        later = idle.utcnow() + timedelta(minutes=10)
        node = node_reaper.Node(requests_total=float(rig.relay_state()["requests_total"]), completed_total=0.0)
        node.history = [idle.Sample(later - timedelta(minutes=m), 0, 0, 0) for m in range(10, 0, -1)]
        nodes = [node]
        (d,) = node_reaper.tick(cfg, nodes, [waker], later, log=lines.append)
        assert d.action == "stop" and "[dry run]" in lines[-1]
        assert model.sleep.sleeps == 0 and rig.relay_state()["state"] == "awake"  # dry run: nothing done
        (d,) = node_reaper.tick(rig.reaper_config(period_seconds=60), nodes, [waker], later, log=lines.append)
        assert d.action == "stop" and model.sleep.sleeping and rig.relay_state()["state"] == "sleeping"
        # office hours that hold `later`: the reaper wakes it at their start, no request needed
        start = (later - timedelta(minutes=1)).strftime("%H:%M")
        end = (later + timedelta(minutes=30)).strftime("%H:%M")
        hours = idle.OfficeHours.from_dict({"timezone": "UTC", "start": start, "end": end,
                                            "days": "mon,tue,wed,thu,fri,sat,sun"})  # fmt: skip
        (d,) = node_reaper.tick(rig.reaper_config(schedule=hours), nodes, [waker], later, log=lines.append)
        assert d.action == "start", d.reason
        assert not model.sleep.sleeping and model.sleep.wakes == 1 and rig.relay_state()["state"] == "awake"


def test_claude_code_turn_wakes_a_sleeping_model_and_completes(tmp_path: Path) -> None:
    claude = require_tool("claude")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (tmp_path / "rig").mkdir()
    with standin_rig(tmp_path / "rig", wake_delay=3.0) as (model, rig):
        assert rig.put_to_sleep()
        aliases = ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
                   "ANTHROPIC_DEFAULT_OPUS_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL")  # fmt: skip
        env = {
            "PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{rig.gateway}", "ANTHROPIC_AUTH_TOKEN": DEV_KEY,
            **dict.fromkeys(aliases, MODEL), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_ATTRIBUTION_HEADER": "0", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "4096",
        }  # fmt: skip
        proc = subprocess.run(
            [claude, "-p", "Create a file woken.txt containing good morning", "--permission-mode", "acceptEdits",
             "--output-format", "json"],
            cwd=work, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert (work / "woken.txt").read_text() == "good morning\n"
        assert model.sleep.wakes == 1 and model.sleep.served_asleep == 0
        assert len(model.seen("/v1/messages")) >= 2
