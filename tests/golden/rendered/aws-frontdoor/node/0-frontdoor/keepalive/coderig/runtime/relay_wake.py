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
to LiteLLM on the model server's 404), waits silently and gets an error in its shape on failure
(Anthropic's 529 overloaded_error, OpenAI's 503; coderig.runtime.relay_shapes).

Between requests each Gate keeps asking its model what state it is in (every `probe_s`, never while
a wake or a reaper's hold is underway), so GET /state tells the truth about a model that came up
after the relay, or was started or stopped by someone else.

Mechanisms (coderig.runtime.wake): `sleep` and `stop` on the machine that runs the model; `ec2` on
the `aws` front-door machine, where one Ec2Waker (coderig.runtime.aws_wake) starts the stack's
stopped GPU instances for every route: the replicas behind the links.
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

from coderig.runtime.relay_shapes import EARLY_HEAD, Splice, error_event, error_response, request_info, shape_of
from coderig.runtime.wake import STATES, SleepWaker, StopWaker, WakeError, Waker

SETTLE_WAIT_S = 120.0  # how long a wake waits for the reaper to finish what it started
HEALTH_POLL_S = 0.25
PROBE_S = 10.0  # between requests: how often a gate asks its model what state it is in


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
        self._changes = 0  # every state decision: a probe that began before one is stale

    def _set(self, state: str) -> None:
        self._changes += 1
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

    async def probe(self) -> None:
        """Between requests: what state is the model in now? Skipped while anything is in flight,
        waking or held by the reaper, and dropped if the gate's state was decided meanwhile. A model
        whose mechanism says awake but whose /health does not answer yet is waking (a booting
        instance, a loading container): the next request waits for it like any wake."""
        if self.waker is None or self.inflight or self._wake is not None or self._settled is not None:
            return
        before, loop = self._changes, asyncio.get_running_loop()
        state = await loop.run_in_executor(None, self.waker.state)
        if state == "awake" and not await loop.run_in_executor(None, _health_ok, self.health_url):
            state = "waking"
        busy = self.inflight or self._wake is not None or self._settled is not None
        if state in ("awake", "sleeping", "stopped", "waking") and not busy and before == self._changes:
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
                return await self._failed(str(exc))
            # the mechanism's own state is asked less often where each look is an API call (ec2)
            every, asked = float(getattr(self.waker, "poll_seconds", HEALTH_POLL_S)), loop.time()
            while loop.time() < deadline:
                if await loop.run_in_executor(None, _health_ok, self.health_url):
                    self._set("awake")
                    self.last_error = ""
                    return None
                if loop.time() - asked >= every:
                    asked = loop.time()
                    if await loop.run_in_executor(None, self.waker.state) == "stopped":
                        return await self._failed("the model server stopped while waking (it exited or was killed)")
                await asyncio.sleep(HEALTH_POLL_S)
            return await self._failed(f"the model server was not ready within the {self.budget_s:g} s start budget")
        finally:
            self._wake = None

    async def _failed(self, why: str) -> str:
        self.last_error = why
        state = await asyncio.get_running_loop().run_in_executor(None, self.waker.state) if self.waker else "unknown"
        self._set(state if state in ("sleeping", "stopped") else "stopped")
        return f"could not wake the model: {why}"


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

    mechanism: str  # "sleep": POST /wake_up on the target; "stop": the reaper's control port starts it;
    # "ec2": start the stack's stopped GPU instances (the aws front door)
    budget_s: float  # the start budget: a wake that takes longer fails every held request
    control: str  # the relay's own control listener (host:port, loopback)
    reaper: str | None = None  # http://127.0.0.1:PORT of the node's reaper ("stop")
    served: tuple[str, ...] = ()  # the served model names (a held stream for another name waits silently)
    probe_s: float = PROBE_S  # between requests, how often each gate asks its model's state
    aws_stack: str = "auto"  # ec2: the coderig:stack tag of the GPU instances; auto: the front door's own
    aws_region: str = "auto"  # ec2: auto reads it from instance metadata
    aws_imds: str = ""  # ec2: the instance metadata URL ("" : the real one)


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
    raise ValueError(f"--wake: {mechanism!r}; allowed: sleep, stop, ec2, scale")


def ec2_waker(wake: WakeOptions) -> Waker:
    """One waker for every route of the aws front door: the GPU instances are the stack's, found by
    tag, whichever replica a request was for. boto3 comes with the relay's image (LiteLLM's
    requirements.txt pins it for Bedrock/SageMaker)."""
    from coderig.runtime import aws_wake  # noqa: PLC0415 - boto3 only where --wake ec2 runs
    from coderig.runtime.idle import ReaperError  # noqa: PLC0415

    try:
        return aws_wake.waker(wake.aws_stack, wake.aws_region, wake.aws_imds or aws_wake.IMDS_URL)
    except (ReaperError, ImportError) as exc:
        raise ValueError(f"--wake ec2: {exc}") from exc


def gates_for(routes: Sequence[Route], wake: WakeOptions) -> list[Gate | None]:
    gates: list[Gate | None] = []
    shared = ec2_waker(wake) if wake.mechanism == "ec2" else None
    for _, t in routes:
        waker = shared or waker_for(wake.mechanism, t, wake.reaper)
        gate = Gate(hostport(*t), waker, f"http://{hostport(*t)}/health", wake.budget_s)
        gate.served = wake.served
        gates.append(gate)
    return gates


def options(args: argparse.Namespace, routes: Sequence[Route]) -> WakeOptions:
    """The relay's --wake arguments; a bad --reaper is refused here, not on the first request."""
    aws = (args.aws_stack, args.aws_region, args.aws_imds_url)
    wake = WakeOptions(
        args.wake, args.start_budget, args.control, args.reaper, tuple(args.served_name), args.probe_interval, *aws
    )
    gates_for(routes, wake)  # ec2: boto3 and the region are there (no EC2 call yet)
    return wake


async def start(gates: Sequence[Gate | None], wake: WakeOptions, control: tuple[str, int]) -> asyncio.Server:
    """Learn each model's state, then listen for the reaper on the control port."""
    held = [g for g in gates if g is not None]
    for gate in held:
        await gate.learn()
    loop = asyncio.get_running_loop()
    _probing.add(loop.create_task(_keep_probing(held, wake.probe_s)))
    return await loop.create_server(lambda: Control(held), *control, reuse_address=True)


_probing: set[asyncio.Task[None]] = set()  # the probe loop of each running relay (kept referenced)


async def _keep_probing(gates: Sequence[Gate], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for gate in gates:
            with contextlib.suppress(Exception):  # a probe that fails leaves the state as it was
                await gate.probe()


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
