"""The ssh/local reaper's period and the relay's hold/wake pieces, pure (the same code runs for real in
test_wake_integration.py): a missing signal keeps the model awake and says why, dry run acts on nothing,
a request in flight refuses the hold, and a held client's error is in its own shape."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from coderig.runtime import idle, node_reaper, relay_shapes, relay_wake
from coderig.runtime.wake import WakeError

NOW = idle.utcnow()
BASE = "http://127.0.0.1:8000"
RELAY = "http://127.0.0.1:4190"
IDLE_METRICS = 'vllm:num_requests_running{model_name="m"} 0\nvllm:num_requests_waiting{model_name="m"} 0\n'
IDLE_METRICS += 'vllm:request_success_total{model_name="m"} 5\n'


class FakeWaker:
    name = "sleep"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def state(self) -> str:
        return "awake"

    def wake(self) -> None:
        self.calls.append("wake")

    def sleep(self) -> None:
        self.calls.append("sleep")


def idle_node() -> node_reaper.Node:
    node = node_reaper.Node(requests_total=3.0, completed_total=5.0)
    node.history = [idle.Sample(NOW - timedelta(minutes=m), 0, 0, 0) for m in range(40, 0, -1)]
    return node


def relay_state(**route: Any) -> str:
    since = (NOW - timedelta(hours=2)).isoformat()
    base = {"target": "127.0.0.1:8000", "state": "awake", "since": since, "inflight": 0, "requests_total": 3}
    return json.dumps({"routes": [base | route]})


def run_tick(
    relay: str | None, metrics: str | None, dry_run: bool = False
) -> tuple[idle.Decision, list[str], FakeWaker]:
    cfg = node_reaper.Config(relay=RELAY, models=(BASE,), action="sleep", stop_after_minutes=30, dry_run=dry_run)
    posts: list[str] = []

    def get(url: str) -> str | None:
        return relay if url.endswith("/state") else metrics

    def post(url: str) -> tuple[int, dict[str, Any]]:
        posts.append(url)
        return 200, {}

    waker = FakeWaker()
    (d,) = node_reaper.tick(cfg, [idle_node()], [waker], NOW, get=get, post=post, log=lambda _: None)
    return d, posts, waker


def test_an_idle_model_is_held_then_slept_then_settled() -> None:
    d, posts, waker = run_tick(relay_state(), IDLE_METRICS)
    assert d.action == "stop"
    assert posts == [f"{RELAY}/hold?route=0&state=sleeping", f"{RELAY}/settled?route=0&state=sleeping"]
    assert waker.calls == ["sleep"]


def test_dry_run_decides_and_does_nothing() -> None:
    d, posts, waker = run_tick(relay_state(), IDLE_METRICS, dry_run=True)
    assert d.action == "stop" and posts == [] and waker.calls == []


@pytest.mark.parametrize(
    ("relay", "metrics", "why"),
    [
        (None, IDLE_METRICS, "the relay's state did not answer"),
        (relay_state(inflight=1), IDLE_METRICS, "1 requests running or queued"),
        (relay_state(), IDLE_METRICS.replace("vllm:num_requests_running", "x"), "no running-requests metric"),
        (relay_state(), None, "no running-requests metric"),
    ],
)
def test_a_missing_signal_or_a_request_in_flight_keeps_it_awake(relay: str | None, metrics: str, why: str) -> None:
    d, posts, waker = run_tick(relay, metrics)
    assert d.action == "keep" and why in d.reason, d.reason
    assert posts == [] and waker.calls == []


def test_a_failed_sleep_reopens_the_relay() -> None:
    cfg = node_reaper.Config(relay=RELAY, models=(BASE,), action="sleep", stop_after_minutes=30)
    posts: list[str] = []

    class Refusing(FakeWaker):
        def sleep(self) -> None:
            raise WakeError("model server refused /sleep: HTTP 404")

    def post(url: str) -> tuple[int, dict[str, Any]]:
        posts.append(url)
        return 200, {}

    assert not node_reaper.put_down(cfg, 0, Refusing(), post, lambda _: None)
    assert posts[-1] == f"{RELAY}/settled?route=0&state=awake"


def test_bad_reaper_configs_are_refused() -> None:
    with pytest.raises(idle.ReaperError, match="shorter than the reaper's period"):
        node_reaper.Config(relay=RELAY, models=(BASE,), action="sleep", stop_after_minutes=5, period_seconds=600)
    with pytest.raises(idle.ReaperError, match="one model server"):
        node_reaper.Config(relay=RELAY, models=(BASE, BASE), action="stop", stop_after_minutes=30, container="c")


# ---------------------------------------------------------------- the relay's side


def test_the_gate_refuses_to_hold_a_model_with_a_request_in_flight() -> None:
    async def go() -> None:
        gate = relay_wake.Gate("127.0.0.1:8000", FakeWaker(), "http://127.0.0.1:1/health", 5)
        gate.begin()
        ok, why = gate.hold("sleeping")
        assert not ok and "1 requests in flight" in why and gate.state == "awake"
        gate.end()
        assert gate.hold("sleeping") == (True, "held") and gate.state == "sleeping"
        status, body = relay_wake.control_answer([gate], "GET", "/state")
        assert status == 200 and body["routes"][0]["state"] == "sleeping"  # type: ignore[index]

    asyncio.run(go())


def test_request_info_waits_for_the_whole_body() -> None:
    body = json.dumps({"model": "m", "stream": True}).encode()
    head = b"POST /v1/messages?beta=true HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert relay_shapes.request_info(head + body[:-1]) is None
    assert relay_shapes.request_info(head + body) == ("/v1/messages", True, "m")


def test_a_model_error_after_early_headers_becomes_an_error_event_in_the_clients_shape() -> None:
    splice = relay_shapes.Splice("anthropic")
    err = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": "too long"}}).encode()
    out = splice.feed(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(err) + err)
    assert b"event: error\ndata: " in out and b"too long" in out and out.endswith(b"0\r\n\r\n") and splice.failed
    ok = relay_shapes.Splice("openai")
    stream = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\ndata:\r\n"
    assert ok.feed(stream) == b"5\r\ndata:\r\n" and not ok.failed
    assert json.loads(relay_shapes.error_json("openai", "why"))["error"]["message"] == "why"


def test_ec2_stops_the_machines_only_when_every_route_is_held_and_releases_them_otherwise() -> None:
    """The aws front door: the GPU instances stop together, so every route is held first; a refusal
    (a request in flight on one) or a stop AWS refuses reopens every route held so far."""
    cfg = node_reaper.Config(relay=RELAY, models=(BASE, "http://127.0.0.1:4201"), action="ec2", stop_after_minutes=30)

    def run(refuse_route: int | None, waker: FakeWaker) -> list[str]:
        posts: list[str] = []

        def post(url: str) -> tuple[int, dict[str, Any]]:
            posts.append(url)
            refused = refuse_route is not None and f"hold?route={refuse_route}&" in url
            return (409, {"detail": "busy: 1 requests in flight"}) if refused else (200, {})

        node_reaper.put_down_machines(cfg, waker, post, lambda _: None)
        return posts

    ok = FakeWaker()
    assert run(None, ok) == [
        f"{RELAY}/hold?route=0&state=stopped",
        f"{RELAY}/hold?route=1&state=stopped",
        f"{RELAY}/settled?route=0&state=stopped",
        f"{RELAY}/settled?route=1&state=stopped",
    ]
    assert ok.calls == ["sleep"]
    busy = FakeWaker()
    assert run(1, busy)[-1] == f"{RELAY}/settled?route=0&state=awake" and busy.calls == []

    class Refused(FakeWaker):
        def sleep(self) -> None:
            raise WakeError("could not stop i-1: UnauthorizedOperation")

    assert run(None, Refused())[-2:] == [f"{RELAY}/settled?route=0&state=awake", f"{RELAY}/settled?route=1&state=awake"]


def test_ec2_acts_once_for_all_routes_and_only_when_all_are_idle() -> None:
    cfg = node_reaper.Config(relay=RELAY, models=(BASE, "http://127.0.0.1:4201"), action="ec2", stop_after_minutes=30)
    two = json.loads(relay_state())["routes"] * 2
    posts: list[str] = []

    def post(url: str) -> tuple[int, dict[str, Any]]:
        posts.append(url)
        return 200, {}

    def tick(busy_second: bool) -> list[idle.Decision]:
        routes = [two[0], {**two[1], "inflight": 1 if busy_second else 0}]
        waker = FakeWaker()
        return node_reaper.tick(
            cfg, [idle_node(), idle_node()], [waker, waker], NOW,
            get=lambda u: json.dumps({"routes": routes}) if u.endswith("/state") else IDLE_METRICS,
            post=post, log=lambda _: None,
        )  # fmt: skip

    assert [d.action for d in tick(busy_second=True)] == ["stop", "keep"] and posts == []
    assert [d.action for d in tick(busy_second=False)] == ["stop", "stop"]
    assert [p.rsplit("/", 1)[1] for p in posts] == [
        "hold?route=0&state=stopped", "hold?route=1&state=stopped",
        "settled?route=0&state=stopped", "settled?route=1&state=stopped",
    ]  # fmt: skip
