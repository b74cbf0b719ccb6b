"""Usage accounting in the relay: the wire readers (pure, any split), the record file, and the relay
itself in front of the stand-in model server, counting what the server reported."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coderig.runtime import usage_record
from coderig.runtime.http_framing import ResponseFramer
from coderig.runtime.usage import Exchange, RequestReader, ResponseMeter, Usage, ask_for_usage, usage_from
from coderig.runtime.usage_record import Ledger, RecordError
from coderig.runtime.usage_server import relabel
from tests.frontdoor_fixtures import free_port, standin_server

REPO = Path(__file__).resolve().parents[2]
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(events: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def sse(obj: Any, event: str | None = None) -> bytes:
    return (f"event: {event}\n" if event else "").encode() + b"data: " + json.dumps(obj).encode() + b"\n\n"


ANTHROPIC = [
    sse(
        {
            "type": "message_start",
            "message": {"usage": {"input_tokens": 7, "cache_read_input_tokens": 90, "output_tokens": 1}},
        },
        "message_start",
    ),
    sse({"type": "content_block_delta", "delta": {"text": "the word usage"}}, "content_block_delta"),
    sse({"type": "message_delta", "usage": {"output_tokens": 12}}, "message_delta"),
    sse({"type": "message_stop"}, "message_stop"),
]
CHAT_USAGE = sse(
    {
        "choices": [],
        "usage": {"prompt_tokens": 40, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 32}},
    }
)
CHAT = [sse({"choices": [{"delta": {"content": "hi"}}]}), CHAT_USAGE, b"data: [DONE]\n\n"]
RESPONSES = [
    sse({"type": "response.created", "response": {"usage": None}}, "response.created"),
    sse(
        {
            "type": "response.completed",
            "response": {
                "usage": {"input_tokens": 30, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 0}}
            },
        }
    ),
]


def run_meter(wire: bytes, exchanges: list[Exchange], rng: random.Random) -> tuple[list[Exchange], bytes]:
    done: list[Exchange] = []
    meter = ResponseMeter(deque(exchanges), time.monotonic, done.append)
    cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randint(0, 30))))
    out, prev = b"", 0
    for cut in [*cuts, len(wire)]:
        out += meter.feed(wire[prev:cut])
        prev = cut
    return done, out


def test_usage_shapes() -> None:
    assert usage_from(
        {"input_tokens": 3, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2, "output_tokens": 9}
    ) == Usage(10, 5, 9)
    assert usage_from({"prompt_tokens": 4, "completion_tokens": 1}) == Usage(4, 0, 1)
    assert usage_from({"input_tokens": 4, "output_tokens": 1, "input_tokens_details": {"cached_tokens": 2}}) == Usage(
        4, 2, 1
    )
    assert usage_from(None) is None and usage_from({"total": 1}) is None


def test_meter_reads_every_api_in_any_split_on_one_connection() -> None:
    body = json.dumps({"content": [], "usage": {"input_tokens": 11, "output_tokens": 2}}).encode()
    plain = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    refused = b"HTTP/1.1 429 Too Many\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    wire = SSE_HEAD + chunked(ANTHROPIC) + plain + SSE_HEAD + chunked(RESPONSES) + refused + SSE_HEAD + chunked(CHAT)
    rng = random.Random(19)
    for _ in range(300):
        exchanges = [
            Exchange("alice", p, 0.0)
            for p in ("/v1/messages", "/v1/messages", "/v1/responses", "/v1/messages", "/v1/chat/completions")
        ]
        done, out = run_meter(wire, exchanges, rng)
        assert out == wire  # nothing changed on the way
        assert [(e.status, e.usage) for e in done] == [
            (200, Usage(97, 90, 12)),
            (200, Usage(11, 0, 2)),
            (200, Usage(30, 0, 4)),
            (429, None),
            (200, Usage(40, 32, 5)),
        ]
        assert all(e.first_byte is not None and e.finished is not None for e in done)


def test_meter_takes_out_the_usage_chunk_the_relay_asked_for() -> None:
    wire = SSE_HEAD + chunked(CHAT) + SSE_HEAD + chunked(CHAT)
    rng = random.Random(3)
    for _ in range(300):
        first, second = Exchange("bob", "/v1/chat/completions", 0.0, strip_usage=True), Exchange("bob", "/x", 0.0)
        done, out = run_meter(wire, [first, second], rng)
        assert out == SSE_HEAD + chunked([CHAT[0], CHAT[2]]) + SSE_HEAD + chunked(CHAT)
        assert [e.usage for e in done] == [Usage(40, 32, 5), Usage(40, 32, 5)]


def test_reader_asks_a_chat_stream_for_usage_and_leaves_others_untouched() -> None:
    chat = json.dumps({"model": "m", "stream": True, "messages": []}).encode()
    asked = json.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True}}).encode()
    msgs = json.dumps({"model": "m", "stream": True}).encode()

    def req(path: str, body: bytes) -> bytes:
        return b"POST %s HTTP/1.1\r\nX-Coderig-Developer: carol\r\nContent-Length: %d\r\n\r\n%s" % (
            path.encode(),
            len(body),
            body,
        )

    wire = req("/v1/chat/completions", chat) + req("/v1/messages?beta=true", msgs) + req("/v1/chat/completions", asked)
    rng = random.Random(5)
    for _ in range(200):
        reader, out, prev = RequestReader(time.monotonic), b"", 0
        for cut in [*sorted(rng.sample(range(1, len(wire)), rng.randint(0, 20))), len(wire)]:
            out += reader.feed(wire[prev:cut])
            prev = cut
        rewritten = ask_for_usage(chat)
        assert rewritten is not None and json.loads(rewritten)["stream_options"] == {"include_usage": True}
        assert out == req("/v1/chat/completions", rewritten) + req("/v1/messages?beta=true", msgs) + req(
            "/v1/chat/completions", asked
        )
        assert [(e.developer, e.path, e.strip_usage) for e in reader.exchanges] == [
            ("carol", "/v1/chat/completions", True),
            ("carol", "/v1/messages", False),
            ("carol", "/v1/chat/completions", False),
        ]


def test_record_round_trip_and_clear_errors(tmp_path: Path) -> None:
    ledger = Ledger(started=1_800_000_000.0)
    ex = Exchange("alice", "/v1/messages", 10.0, status=200, first_byte=10.3, finished=12.0, usage=Usage(100, 60, 7))
    ledger.add(ex, 1_800_000_100.0)
    ledger.mark_awake(1_800_000_000.0, 1_800_000_030.0, 45)
    ledger.mark_awake(1_800_000_060.0, 1_800_000_090.0, 45)
    path = tmp_path / "usage.json"
    usage_record.save(ledger, path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = usage_record.load(path)
    assert again.to_json() == ledger.to_json()
    assert again.awake == [[1_800_000_000.0, 1_800_000_090.0]]
    assert again.tokens == {("alice", "input"): 100, ("alice", "cached"): 60, ("alice", "output"): 7}
    path.write_text("{not json")
    with pytest.raises(RecordError, match="corrupt usage record"):
        usage_record.load(path)
    with pytest.raises(RecordError, match="no usage record yet"):
        usage_record.load(tmp_path / "missing.json")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    h = usage_record.Histogram((1.0, 2.0, 4.0))
    for v in (0.5, 1.5, 1.5, 3.0):
        h.observe(v)
    assert h.quantile(0.5) == pytest.approx(1.5)  # rank 2 of 4: half-way through the (1, 2] bucket
    assert usage_record.Histogram((1.0,)).quantile(0.5) is None


def test_replica_metrics_are_one_family_each_with_a_replica_label() -> None:
    name = "vllm:num_requests_running"
    a = f'# HELP {name} n\n# TYPE {name} gauge\n{name}{{model_name="m"}} 2\n'
    b = a.replace(" 2\n", " 0\n")
    assert relabel([("10.0.0.5:8000", a), ("10.0.0.6:8000", b)]).splitlines() == [
        "# HELP vllm:num_requests_running n",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{replica="10.0.0.5:8000",model_name="m"} 2',
        'vllm:num_requests_running{replica="10.0.0.6:8000",model_name="m"} 0',
    ]


# ---------------------------------------------------------------- the relay in front of the stand-in


@contextlib.contextmanager
def relay(target: str, record: Path, *extra: str) -> Iterator[tuple[int, int]]:
    port, metrics = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "coderig.runtime.sse_keepalive",
        "--route",
        f"127.0.0.1:{port}={target}",
        "--usage-file",
        str(record),
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--flush",
        "0.2",
        "--probe",
        "0.5",
        *extra,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready" in line, line + proc.stdout.read()
        yield port, metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def post(port: int, path: str, body: dict[str, Any], developer: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", "X-Coderig-Developer": developer}
        conn.request("POST", path, json.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:  # noqa: S310 - loopback
        return resp.read()


def test_relay_counts_what_the_model_server_reported(tmp_path: Path) -> None:
    record = tmp_path / "usage.json"
    msgs = [{"role": "user", "content": "say hello to the usage counter"}]
    with standin_server(model="m") as standin, relay(f"127.0.0.1:{standin.port}", record) as (port, metrics):
        for stream in (False, True):
            assert (
                post(
                    port, "/v1/messages", {"model": "m", "max_tokens": 50, "messages": msgs, "stream": stream}, "alice"
                )[0]
                == 200
            )
            assert (
                post(port, "/v1/responses", {"model": "m", "input": "hello there", "stream": stream}, "bob")[0] == 200
            )
            status, chat = post(port, "/v1/chat/completions", {"model": "m", "messages": msgs, "stream": stream}, "bob")
            assert status == 200
            if stream:  # the client did not ask for usage: it gets none, and the relay counted it anyway
                assert b'"usage"' not in chat and chat.rstrip().endswith(b"data: [DONE]")
        status, chat = post(
            port,
            "/v1/chat/completions",
            {"model": "m", "messages": msgs, "stream": True, "stream_options": {"include_usage": True}},
            "bob",
        )
        assert status == 200 and b'"usage"' in chat  # asked: kept
        assert post(port, "/v1/messages/count_tokens", {"model": "m", "messages": msgs}, "alice")[0] == 200
        assert post(port, "/v1/messages", {"model": "nope", "max_tokens": 5, "messages": msgs}, "alice")[0] == 404
        served = json.loads(get(metrics, "/usage"))
        text = get(metrics, "/metrics").decode()
    expected: dict[tuple[str, str], int] = {}
    for r in standin.reported:
        for kind in ("input", "output"):
            expected[(r["developer"], kind)] = expected.get((r["developer"], kind), 0) + r[kind]
    tokens = {(d, k): n for d, k, n in served["tokens"] if k != "cached"}
    assert tokens == expected and len(standin.reported) == 7
    requests = {(d, p, c): n for d, p, c, n in served["requests"]}
    assert requests[("alice", "/v1/messages", "200")] == 2 and requests[("alice", "/v1/messages", "404")] == 1
    assert requests[("alice", "/v1/messages/count_tokens", "200")] == 1
    assert requests[("bob", "/v1/chat/completions", "200")] == 3
    assert f'coderig_tokens_total{{developer="alice",kind="output"}} {expected[("alice", "output")]}' in text
    assert 'coderig_node_awake{node="127.0.0.1:' in text and "vllm:num_requests_running{replica=" in text
    # the record on disk (written on exit) holds the same, and a new relay starts from it
    assert usage_record.load(record).to_json()["tokens"] == served["tokens"]
    with standin_server(model="m") as standin, relay(f"127.0.0.1:{standin.port}", record) as (port, metrics):
        post(port, "/v1/messages", {"model": "m", "max_tokens": 50, "messages": msgs}, "alice")
        after = {(d, k): n for d, k, n in json.loads(get(metrics, "/usage"))["tokens"]}
    assert after[("alice", "output")] == expected[("alice", "output")] + standin.reported[0]["output"]


def test_relay_refuses_a_corrupt_record_and_a_public_metrics_listener(tmp_path: Path) -> None:
    record = tmp_path / "usage.json"
    record.write_text("[]")
    base = [sys.executable, "-m", "coderig.runtime.sse_keepalive", "--route", "127.0.0.1:1=127.0.0.1:2"]
    out = subprocess.run([*base, "--usage-file", str(record)], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "corrupt usage record" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([*base, "--metrics", "0.0.0.0:9"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--metrics-allow" in out.stderr


def test_a_killed_relay_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    """kill -9 (a host that loses power): what was counted one flush interval ago is on disk."""
    record = tmp_path / "usage.json"
    msgs = [{"role": "user", "content": "count me before the power goes"}]
    with standin_server(model="m") as standin:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "coderig.runtime.sse_keepalive",
            "--route",
            f"127.0.0.1:{port}=127.0.0.1:{standin.port}",
            "--usage-file",
            str(record),
            "--flush",
            "0.2",
        ]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None and "ready" in proc.stdout.readline()
            for dev in ("alice", "bob"):
                assert post(port, "/v1/messages", {"model": "m", "max_tokens": 20, "messages": msgs}, dev)[0] == 200
            time.sleep(1.0)  # more than one flush interval
        finally:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    tokens = {(d, k): n for d, k, n in usage_record.load(record).to_json()["tokens"]}
    for r in standin.reported:
        assert tokens[(r["developer"], "output")] == r["output"] and tokens[(r["developer"], "input")] == r["input"]
    assert os.stat(record).st_mode & 0o777 == 0o600


def node_gauge(metrics: int) -> str:
    lines = [x for x in get(metrics, "/metrics").decode().splitlines() if x.startswith("coderig_node_awake{")]
    assert len(lines) == 1, lines
    return lines[0].rsplit(" ", 1)[1]


def wait_gauge(metrics: int, value: str, within_s: float = 5) -> None:
    deadline = time.monotonic() + within_s
    while node_gauge(metrics) != value:
        assert time.monotonic() < deadline, f"coderig_node_awake never became {value}"
        time.sleep(0.1)


def test_node_awake_follows_the_health_probe_so_a_dead_model_server_shows_down(tmp_path: Path) -> None:
    standin = standin_server(model="m")
    server = standin.__enter__()
    try:
        with relay(f"127.0.0.1:{server.port}", tmp_path / "usage.json", "--probe", "0.2") as (_port, metrics):
            wait_gauge(metrics, "1")
            standin.__exit__(None, None, None)  # the model server dies
            wait_gauge(metrics, "0")
    finally:
        standin.__exit__(None, None, None)


def test_node_awake_is_down_while_the_wake_gate_has_the_model_asleep(tmp_path: Path) -> None:
    """vLLM in sleep mode still answers /health: the gate's state, not the probe alone, says asleep."""
    control = free_port()
    wake = ("--wake", "sleep", "--control", f"127.0.0.1:{control}", "--served-name", "m", "--probe", "0.2")
    with (
        standin_server(model="m", dev_mode=True) as standin,
        relay(f"127.0.0.1:{standin.port}", tmp_path / "usage.json", *wake) as (_port, metrics),
    ):
        wait_gauge(metrics, "1")
        req = urllib.request.Request(f"http://127.0.0.1:{control}/hold?route=0&state=sleeping", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            assert json.loads(resp.read())["ok"] is True
        with urllib.request.urlopen(f"{standin.url.removesuffix('/v1')}/health", timeout=10) as resp:  # noqa: S310
            assert resp.status == 200  # the model server still answers its health probe
        wait_gauge(metrics, "0")


def test_the_framer_hands_the_meter_every_head_body_byte_and_end_in_any_split() -> None:
    """The relay parses response framing once (http_framing.ResponseFramer); what it hands its sink
    is each response's head as sent, its body without chunk framing, and its end."""

    class Sink:
        def __init__(self) -> None:
            self.seen: list[tuple[str, bytes]] = []

        def on_head(self, status: int, ctype: bytes, raw: bytes, chunked: bool) -> None:
            self.seen.append(("head", raw))

        def on_body(self, piece: bytes) -> None:
            if self.seen[-1][0] == "body":
                self.seen[-1] = ("body", self.seen[-1][1] + piece)
            else:
                self.seen.append(("body", piece))

        def on_end(self) -> None:
            self.seen.append(("end", b""))

    body = b'{"usage": {"input_tokens": 1}}'
    plain = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    wire = interim + SSE_HEAD + chunked(ANTHROPIC) + plain + empty + SSE_HEAD + chunked(CHAT)
    want = [
        ("head", SSE_HEAD), ("body", b"".join(ANTHROPIC)), ("end", b""),
        ("head", plain[: -len(body)]), ("body", body), ("end", b""),
        ("head", empty), ("end", b""),
        ("head", SSE_HEAD), ("body", b"".join(CHAT)), ("end", b""),
    ]  # fmt: skip
    rng = random.Random(7)
    for _ in range(300):
        sink = Sink()
        framer = ResponseFramer(sink)
        cuts = sorted(rng.sample(range(1, len(wire)), rng.randint(0, 40)))
        for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            framer.feed(wire[a:b])
        assert sink.seen == want and framer.completed == 4 and not framer.broken
