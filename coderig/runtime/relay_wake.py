"""The relay's hold/wake path (stdlib asyncio; ships with coderig.runtime.sse_keepalive).

The keepalive relay is the one hop to each model server on every path, so it is where a request
for a model that is not awake waits. Per model server a `Gate` keeps:
  - the state the idle mechanism left it in (awake, sleeping, stopped, waking) and since when;
  - the requests in flight and a request counter (what the node's reaper reads: GET /state on the
    relay's loopback control port);
  - at most one wake at a time: the first held request calls `Waker.wake()` (in a thread: it is
    blocking urllib), then /health is polled until ready or the start budget passes; every request
    held meanwhile waits for that one wake.

The reaper never sleeps or stops a model behind the relay's back: it first asks the relay to hold
the model (`POST /hold?route=N&state=sleeping`), which succeeds only when nothing is in flight and
from then on holds every new request; it then acts and says so (`POST /settled?route=N&state=…`;
`state=awake` when its action failed). A held request's wake waits for that settle (or
`SETTLE_WAIT_S`), so a wake never races a sleep.

While a request is held the client hears from the relay: a streaming request (`"stream": true`)
for the served model gets the stream's headers at once and an SSE comment every interval, and the
model's own stream is spliced in after the wake; a wake that fails ends the stream with an error
event in the client's shape (Anthropic on /v1/messages, OpenAI elsewhere) saying why. A request
that does not stream, or names another model (Claude Code's `claude-*` names, which nginx replays
to LiteLLM on the model server's 404), waits silently and gets a 503 in its shape on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coderig.runtime.wake import STATES, SleepWaker, StopWaker, WakeError, Waker

SETTLE_WAIT_S = 120.0  # how long a wake waits for the reaper to finish what it started
HEALTH_POLL_S = 0.25


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback/link http only
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Gate:
    """One model server's idle state as the relay sees it. All methods run on the event loop."""

    def __init__(self, target: str, waker: Waker | None, health_url: str, budget_s: float) -> None:
        self.target = target
        self.waker = waker
        self.health_url = health_url
        self.budget_s = budget_s
        self.served: tuple[str, ...] = ()  # the served model names (a held stream for another waits silently)
        self.state = "awake"
        self.since = _now_iso()
        self.inflight = 0
        self.requests_total = 0
        self.wakes_total = 0
        self.last_error = ""
        self.idle_conns: set[Callable[[], None]] = set()  # close callbacks of connections between requests
        self._settled: asyncio.Event | None = None
        self._wake: asyncio.Task[str | None] | None = None

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, _now_iso()

    @property
    def awake(self) -> bool:
        return self.state == "awake" or self.waker is None

    def status(self) -> dict[str, object]:
        return {
            "target": self.target,
            "mechanism": self.waker.name if self.waker else None,
            "state": self.state,
            "since": self.since,
            "inflight": self.inflight,
            "requests_total": self.requests_total,
            "wakes_total": self.wakes_total,
            "last_error": self.last_error,
        }

    # -- the reaper's side
    def hold(self, state: str) -> tuple[bool, str]:
        """Close the gate before the reaper sleeps or stops the model: only with nothing in flight."""
        if state not in ("sleeping", "stopped"):
            return False, f"state must be sleeping or stopped, not {state!r}"
        if self.waker is None:
            return False, "this relay has no wake mechanism for the route: nothing could wake it"
        if self.inflight or self._wake is not None:
            return False, f"busy: {self.inflight} requests in flight" + (", waking" if self._wake else "")
        if self.state != "awake":
            return False, f"already {self.state}"
        self._set(state)
        self._settled = asyncio.Event()
        for close in list(self.idle_conns):  # pooled connections would reach the model unheld
            close()
        return True, "held"

    def settled(self, state: str) -> tuple[bool, str]:
        if state not in STATES:
            return False, f"unknown state {state!r}"
        self._set(state)
        if self._settled is not None:
            self._settled.set()
            self._settled = None
        return True, state

    async def learn(self) -> None:
        """At the relay's start: a model left asleep or stopped before it (re)started is held, not hit."""
        if self.waker is None:
            return
        state = await asyncio.get_running_loop().run_in_executor(None, self.waker.state)
        if state in ("sleeping", "stopped"):
            self._set(state)

    # -- the request's side
    def begin(self) -> None:
        self.inflight += 1
        self.requests_total += 1

    def end(self) -> None:
        self.inflight = max(0, self.inflight - 1)

    # a relayed connection (sse_keepalive._Pair: busy, closed, close) as its requests come and go
    def started(self, pair: Any) -> None:
        if not pair.busy:
            pair.busy = True
            self.begin()
            self.idle_conns.discard(pair.close)

    def done(self, pair: Any) -> None:
        if pair.busy:
            pair.busy = False
            self.end()
        if not pair.closed:
            self.idle_conns.add(pair.close)

    def dropped(self, pair: Any) -> None:
        self.idle_conns.discard(pair.close)
        if pair.busy:
            pair.busy = False
            self.end()

    async def wait_awake(self) -> str | None:
        """None once the model is awake; else the one-line reason it could not be woken."""
        if self.awake:
            return None
        if self._wake is None:
            self._wake = asyncio.get_running_loop().create_task(self._do_wake())
        return await asyncio.shield(self._wake)

    async def _do_wake(self) -> str | None:
        assert self.waker is not None
        loop = asyncio.get_running_loop()
        try:
            if self._settled is not None:  # the reaper is still sleeping/stopping it: let it finish
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), SETTLE_WAIT_S)
            self._set("waking")
            self.wakes_total += 1
            deadline = loop.time() + self.budget_s
            try:
                await loop.run_in_executor(None, self.waker.wake)
            except WakeError as exc:
                return self._failed(str(exc))
            while loop.time() < deadline:
                if await loop.run_in_executor(None, _health_ok, self.health_url):
                    self._set("awake")
                    self.last_error = ""
                    return None
                now_state = await loop.run_in_executor(None, self.waker.state)
                if now_state == "stopped":
                    return self._failed("the model server stopped while waking (it exited or was killed)")
                await asyncio.sleep(HEALTH_POLL_S)
            return self._failed(f"the model server was not ready within the {self.budget_s:g} s start budget")
        finally:
            self._wake = None

    def _failed(self, why: str) -> str:
        self.last_error = why
        state = self.waker.state() if self.waker else "unknown"
        self._set(state if state in ("sleeping", "stopped") else "stopped")
        return f"could not wake the model: {why}"


# ---------------------------------------------------------------- what the held client sees


def request_info(data: bytes) -> tuple[str, bool, str] | None:
    """(path, streams, model) of the HTTP request at the start of `data` once its whole body is
    there; None while more bytes are needed. nginx sends buffered bodies with Content-Length."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    path = parts[1].split(b"?", 1)[0].decode("latin-1") if len(parts) > 1 else "/"
    length = 0
    for raw in lines[1:]:
        name, _, value = raw.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    if len(data) < end + 4 + length:
        return None
    try:
        body = json.loads(data[end + 4 : end + 4 + length] or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return path, body.get("stream") is True, str(body.get("model", ""))


def shape_of(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def error_json(shape: str, message: str) -> bytes:
    if shape == "anthropic":
        return json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": message}}).encode()
    err = {"message": message, "type": "server_error", "param": None, "code": "model_unavailable"}
    return json.dumps({"error": err}).encode()


def error_response(shape: str, message: str) -> bytes:
    body = error_json(shape, message)
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    return head + body


EARLY_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def error_event(shape: str, message: str) -> bytes:
    """An SSE error event and the stream's end, as the client's SDK reads one."""
    payload = error_json(shape, message)
    event = (b"event: error\ndata: %s\n\n" if shape == "anthropic" else b"data: %s\n\n") % payload
    return chunk(event) + b"0\r\n\r\n"


class Splice:
    """After early headers: turns the model server's response into the rest of the client's
    stream. A 200 chunked event stream loses its head (the client already has one); anything else
    becomes an error event carrying the model server's message."""

    def __init__(self, shape: str) -> None:
        self.shape = shape
        self.buf = b""
        self.done = False  # the head is handled: pass bytes through
        self.failed = False  # an error event replaced the response: drop the rest

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b"" if self.failed else data
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.buf[:end].lower(), self.buf[end + 4 :]
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
        if status == b"200" and b"text/event-stream" in head and b"chunked" in head:
            self.done = True
            return rest
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        if len(rest) < length:
            return b""
        self.done = self.failed = True
        message = _message_of(rest[:length]) or f"the model server answered HTTP {status.decode() or '?'}"
        return error_event(self.shape, message)


def _message_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:300]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", ""))[:300]
    return str(err or data.get("message", "") if isinstance(data, dict) else "")[:300]


def parse_control(target: str) -> tuple[str, dict[str, str]]:
    path, _, query = target.partition("?")
    params: dict[str, str] = {}
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key:
            params[key] = value
    return path, params


def control_answer(gates: list[Gate], method: str, target: str) -> tuple[int, dict[str, object]]:
    """The relay's loopback control API: GET /state; POST /hold and /settled (route=N, state=…)."""
    path, params = parse_control(target)
    if method == "GET" and path == "/state":
        return 200, {"at": _now_iso(), "routes": [g.status() for g in gates]}
    if method == "POST" and path in ("/hold", "/settled"):
        try:
            gate = gates[int(params.get("route", "0"))]
        except (ValueError, IndexError):
            return 400, {"error": f"route must be 0..{len(gates) - 1}"}
        state = params.get("state", "")
        ok, why = gate.hold(state) if path == "/hold" else gate.settled(state)
        return (200 if ok else 409), {"ok": ok, "detail": why, **gate.status()}
    return 404, {"error": f"no route {method} {path}"}


class Control(asyncio.Protocol):
    """A tiny HTTP/1.1 server for `control_answer` (one request per connection)."""

    def __init__(self, gates: list[Gate]) -> None:
        self.gates = gates
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf or self.transport is None:
            if len(self.buf) > 8192 and self.transport is not None:
                self.transport.close()
            return
        line = self.buf.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        status, body = control_answer(self.gates, line[0], line[1] if len(line) > 1 else "/")
        payload = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}[status]
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + payload
        )
        self.transport.close()


# ---------------------------------------------------------------- the relay's wiring (sse_keepalive --wake)

Route = tuple[tuple[str, int], tuple[str, int]]


@dataclass(frozen=True)
class WakeOptions:
    """How the relay holds and wakes its model servers."""

    mechanism: str  # "sleep": POST /wake_up on the target; "stop": the reaper's control port starts it
    budget_s: float  # the start budget: a wake that takes longer fails every held request
    control: str  # the relay's own control listener (host:port, loopback)
    reaper: str | None = None  # http://127.0.0.1:PORT of the node's reaper ("stop")
    served: tuple[str, ...] = ()  # the served model names (a held stream for another name waits silently)


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def waker_for(mechanism: str, target: tuple[str, int], reaper: str | None) -> Waker:
    if mechanism == "sleep":
        return SleepWaker(f"http://{hostport(*target)}")
    if mechanism == "stop":
        if not reaper:
            raise ValueError("--wake stop needs --reaper http://127.0.0.1:PORT (it alone starts containers)")
        return StopWaker(reaper)
    if mechanism == "scale":  # a Kubernetes Deployment at zero; ships only in the front-door pod
        from coderig.runtime.kube_wake import ScaleWaker  # noqa: PLC0415

        return ScaleWaker.from_env(os.environ)
    raise ValueError(f"--wake: {mechanism!r}; allowed: sleep, stop, scale")


def gates_for(routes: Sequence[Route], wake: WakeOptions) -> list[Gate | None]:
    gates: list[Gate | None] = []
    for _, t in routes:
        gate = Gate(
            hostport(*t), waker_for(wake.mechanism, t, wake.reaper), f"http://{hostport(*t)}/health", wake.budget_s
        )
        gate.served = wake.served
        gates.append(gate)
    return gates


def options(args: argparse.Namespace, routes: Sequence[Route]) -> WakeOptions:
    """The relay's --wake arguments; a bad --reaper is refused here, not on the first request."""
    wake = WakeOptions(args.wake, args.start_budget, args.control, args.reaper, tuple(args.served_name))
    gates_for(routes, wake)
    return wake


async def start(gates: Sequence[Gate | None], wake: WakeOptions, control: tuple[str, int]) -> asyncio.Server:
    """Learn each model's state, then listen for the reaper on the control port."""
    held = [g for g in gates if g is not None]
    for gate in held:
        await gate.learn()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Control(held), *control, reuse_address=True)


async def found_asleep(gate: Gate) -> bool:
    """A refused connect: asleep or stopped by someone else (a relay restart lost the state)?"""
    if gate.waker is None:
        return False
    state = await asyncio.get_running_loop().run_in_executor(None, gate.waker.state)
    if state not in ("sleeping", "stopped", "waking"):  # waking: started by another relay (front-door pod)
        return False
    gate.settled(state)
    return True


async def hold(conn: Any, gate: Gate, keepalive: bytes) -> bool:
    """Hold one relayed connection's request (sse_keepalive._Client: pair, pending, arrived, interval)
    until the model wakes; a stream hears keepalives meanwhile, a failure its error."""
    info = request_info(b"".join(conn.pending))
    while info is None and not conn.pair.closed:
        conn.arrived.clear()
        await conn.arrived.wait()
        info = request_info(b"".join(conn.pending))
    client = conn.pair.client
    if info is None or client is None:
        return False
    path, streams, model = info
    if path == "/health":  # a health probe (the gateway's /healthz) never wakes the model: it would wake
        body = json.dumps({"status": gate.state, "wakes_on_request": True}).encode()  # on the next request
        client.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body))
        client.write(b"Connection: close\r\n\r\n" + body)
        conn.pair.close()
        return False
    shape = shape_of(path)
    early = streams and (not gate.served or model in gate.served)
    ticker = None
    if early:
        client.write(EARLY_HEAD)
        ticker = asyncio.get_running_loop().create_task(_keepalives(conn, client, keepalive))
    why = await gate.wait_awake()
    if ticker is not None:
        ticker.cancel()
    if conn.pair.closed:
        return False
    if why is not None:
        client.write(error_event(shape, why) if early else error_response(shape, why))
        conn.pair.close()
        return False
    if early:
        conn.pair.splice = Splice(shape)
    return True


async def _keepalives(conn: Any, client: asyncio.Transport, keepalive: bytes) -> None:
    while not conn.pair.closed:
        await asyncio.sleep(conn.interval)
        if not conn.pair.closed:
            client.write(keepalive)
