"""SSE keepalive relay: bytes reach the client while the model is silent (stdlib only; ships and
runs on its own: `python3 -m coderig.runtime.sse_keepalive --route 127.0.0.1:9101=127.0.0.1:8000`).

vLLM sends a streaming response's headers at once and then nothing until the first output token:
queueing plus a long prefill is minutes of silence, and a proxy or load balancer between the
developer and the gateway that cuts connections idle for 60 s drops the turn. nginx cannot inject
bytes into a proxied response, so it proxies the native streaming routes through this relay, one
loopback listener per model server (nginx keeps choosing the replica: session affinity and
failover stay in its upstream block).

Per connection it forwards the request bytes untouched and parses only the HTTP/1.1 response
framing (status line, headers, chunked encoding). In a `text/event-stream` response with chunked
encoding, when nothing has come from the model server for `--interval` seconds and the stream is at
an event boundary, it inserts one chunk holding the SSE comment `: keepalive` (every SSE client
ignores comment lines: Claude Code, the OpenAI and Anthropic SDKs, browsers). No per-event
parsing, no JSON: one timestamp per received buffer and a scan of chunk-size lines.

Keepalives must not make a wedged model immortal: when the model server has sent nothing at all for
`--silence` seconds (the gateway's read timeout), the relay ends the stream itself: at an event
boundary with one error event in the client's shape (Anthropic `event: error` on /v1/messages, the
Responses API's `error` event otherwise) and the chunked terminator, mid-event by dropping the
connection. A malformed chunk size or content-length drops that one connection, never the others.

When the model server cannot be reached the relay closes the client connection without a byte,
which nginx counts as a failed attempt (`proxy_next_upstream error`) and retries on another replica.
Listen addresses must be loopback: the relay has no authentication of its own.

The one hop to a model server on every path: with `--wake sleep|stop|ec2|scale` it also holds the
requests for a model put to sleep, stopped, on a stopped GPU instance or scaled to zero, and wakes it
(coderig.runtime.relay_wake).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import signal
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from coderig.runtime.http_framing import ResponseFramer

if TYPE_CHECKING:  # imported where used: a relay without --wake or accounting runs from this one file
    from coderig.runtime import relay_wake
    from coderig.runtime.usage import RequestReader, ResponseMeter
    from coderig.runtime.usage_server import Accounting

DEFAULT_INTERVAL_S = 15.0
COMMENT = b": keepalive\n\n"
KEEPALIVE_CHUNK = b"%x\r\n%s\r\n" % (len(COMMENT), COMMENT)
SILENCE_MESSAGE = "the model server sent nothing for {:g} s; the stream was ended"
_HIGH_WATER = 1 << 20  # pause the other side when this much is queued for writing


def silence_error(anthropic: bool, silence_s: float) -> bytes:
    """The chunks that end a stream the model server left silent: one SSE error event in the client's
    shape (Anthropic's `error` event; the Responses API's `error` event) and the chunked terminator."""
    message = SILENCE_MESSAGE.format(silence_s)
    if anthropic:
        data = {"type": "error", "error": {"type": "timeout_error", "message": message}}
    else:
        data = {"type": "error", "code": "timeout", "message": message, "param": None, "sequence_number": 0}
    event = b"event: error\ndata: %s\n\n" % json.dumps(data).encode()
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event)


class _Pair:
    """The two transports of one relayed connection, their back-pressure, and which API the request
    in flight speaks (its request line: nginx sends one request at a time per connection)."""

    def __init__(self, gate: relay_wake.Gate | None = None, accounting: Accounting | None = None) -> None:
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.closed = False
        # usage accounting (coderig.runtime.usage): request side and response side of this connection
        self.reader: RequestReader | None = accounting.reader() if accounting else None
        self.meter: ResponseMeter | None = accounting.meter(self.reader) if accounting and self.reader else None
        self.gate = gate
        self.busy = False  # a request is in flight on this connection (counted in the gate)
        self.splice: relay_wake.Splice | None = None  # the client already has a stream's head
        self.requests = 0  # request lines seen
        self.responses = 0  # responses the framer saw complete
        self.line = b""  # the start of the request in flight, until its request line is whole
        self.anthropic = False  # the request in flight is /v1/messages
        self.started = 0.0  # loop time the request in flight began

    def request_bytes(self, data: bytes) -> None:
        """Keep track of the request line of each new request (cheap: only its first bytes)."""
        if not self.line and self.requests > self.responses:
            return  # the rest of a request whose line is known
        if not self.line:
            self.requests += 1
            self.started = asyncio.get_running_loop().time()
        self.line = (self.line + data)[:8192]
        end = self.line.find(b"\r\n")
        if end >= 0 or len(self.line) >= 8192:
            target = self.line[: end if end >= 0 else None].split(b" ")
            self.anthropic = len(target) > 1 and target[1].startswith(b"/v1/messages")
            self.line = b""

    def close(self) -> None:
        if not self.closed:
            self._end(lambda t: t.close())

    def abort(self) -> None:
        """Close both sides now, dropping what is queued (nginx sees a truncated response)."""
        self._end(lambda t: t.abort())

    def _end(self, how: Callable[[asyncio.Transport], None]) -> None:
        """The connection is over: tell the wake gate and the usage meter, then end both transports."""
        self.closed = True
        if self.gate is not None:
            self.gate.dropped(self)
        if self.meter is not None:
            self.meter.close()
        for t in (self.client, self.upstream):
            if t is not None:
                how(t)


class _Upstream(asyncio.Protocol):
    """Model server -> client: forwards every byte, keeps the framer current, injects keepalives."""

    def __init__(self, pair: _Pair, interval: float, silence: float = 0) -> None:
        self.pair = pair
        # one parser of the response framing: the usage meter's, when accounting is on
        self.framer = pair.meter.framer if pair.meter is not None else ResponseFramer()
        self.interval = interval
        self.silence = silence  # > 0: end a response the model server left silent this long
        self.loop = asyncio.get_running_loop()
        self.last = self.heard = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pair.upstream = transport
        self.timer = self.loop.call_later(self.interval, self._tick)

    def data_received(self, data: bytes) -> None:
        self.last = self.heard = self.loop.time()
        if self.pair.meter is not None:
            data = self.pair.meter.feed(data)  # feeds the framer; the bytes to pass on
        else:
            self.framer.feed(data)
        self.pair.responses = self.framer.completed
        if self.framer.broken:  # malformed framing: drop this one connection, never guess
            self.pair.abort()
            return
        client = self.pair.client
        out = data if self.pair.splice is None else self.pair.splice.feed(data)
        if client is not None and not self.pair.closed and out:
            client.write(out)
        if self.framer.between_responses:  # the response ended
            splice, self.pair.splice = self.pair.splice, None
            if self.pair.gate is not None:
                self.pair.gate.done(self.pair)
            if splice is not None and splice.failed:
                self.pair.close()
        elif self.pair.splice is not None and self.pair.splice.failed:
            self.pair.close()

    def _tick(self) -> None:
        if self.pair.closed:
            return
        if self.silence > 0 and self._silenced():
            return
        idle = self.loop.time() - self.last
        if idle >= self.interval - 0.01:
            client = self.pair.client
            if self.framer.can_inject() and client is not None:
                client.write(KEEPALIVE_CHUNK)
            self.last = self.loop.time()
            idle = 0.0
        wait = self.interval - idle
        if self.silence > 0:
            since = max(self.heard, self.pair.started)
            wait = min(wait, max(0.01, since + self.silence - self.loop.time()))
        self.timer = self.loop.call_later(wait, self._tick)

    def _silenced(self) -> bool:
        """End a response in progress the model server has left silent for `silence` seconds (an
        idle keep-alive connection between responses is not a stream: nginx closes those)."""
        in_flight = self.pair.requests > self.pair.responses
        if not in_flight or self.loop.time() - max(self.heard, self.pair.started) < self.silence - 0.01:
            return False
        client = self.pair.client
        if self.framer.can_inject() and client is not None:
            client.write(silence_error(self.pair.anthropic, self.silence))
            self.pair.close()
        else:  # mid-event, not an event stream, or before the headers: nginx sees the upstream fail
            self.pair.abort()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.pair.close()

    def pause_writing(self) -> None:
        if self.pair.client is not None:
            self.pair.client.pause_reading()

    def resume_writing(self) -> None:
        if self.pair.client is not None and not self.pair.closed:
            self.pair.client.resume_reading()


class _Client(asyncio.Protocol):
    """nginx -> model server: connects on accept; request bytes pass through untouched."""

    def __init__(
        self,
        target: tuple[str, int],
        interval: float,
        silence: float = 0,
        gate: Any = None,
        accounting: Accounting | None = None,
    ) -> None:
        self.target = target
        self.interval = interval
        self.silence = silence
        self.pair = _Pair(gate, accounting)
        self.pending: list[bytes] = []
        self.connect: asyncio.Task[None] | None = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pair.client = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        if self.pair.gate is not None:
            self.pair.gate.idle_conns.add(self.pair.close)
        self.connect = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self, retry: bool = True) -> None:
        loop = asyncio.get_running_loop()
        gate = self.pair.gate
        if gate is not None and not gate.awake and not await relay_wake_module().hold(self, gate, KEEPALIVE_CHUNK):
            return
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(self.pair, self.interval, self.silence), *self.target), 10
            )
        except (TimeoutError, OSError):
            if retry and gate is not None and await relay_wake_module().found_asleep(gate):
                await self._connect(retry=False)  # held and woken like any other request
                return
            # no byte back: nginx counts a failed attempt and tries the next replica
            self.pair.close()
            return
        if self.pair.closed:
            transport.close()
            return
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.pair.request_bytes(data)
        if self.pair.gate is not None:
            self.pair.gate.started(self.pair)
        self.arrived.set()
        if self.pair.reader is not None:
            data = self.pair.reader.feed(data)
        upstream = self.pair.upstream
        if upstream is None:
            self.pending.append(data)
        elif not self.pair.closed:
            upstream.write(data)

    def eof_received(self) -> bool | None:
        if self.pair.upstream is not None and self.pair.upstream.can_write_eof():
            self.pair.upstream.write_eof()
            return True
        self.pair.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.pair.close()
        if self.connect is not None and not self.connect.done():
            self.connect.cancel()

    def pause_writing(self) -> None:
        if self.pair.upstream is not None:
            self.pair.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.pair.upstream is not None and not self.pair.closed:
            self.pair.upstream.resume_reading()


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def parse_route(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """'127.0.0.1:9101=10.0.0.6:8000' -> ((listen host, port), (target host, port))."""
    listen, sep, target = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: expected LISTEN_HOST:PORT=TARGET_HOST:PORT")
    lhost, lport = parse_hostport(listen)
    if not (lhost.startswith("127.") or lhost in ("::1", "localhost")):
        raise ValueError(f"{text!r}: the relay listens on loopback only (it has no authentication)")
    return (lhost, lport), parse_hostport(target)


Route = tuple[tuple[str, int], tuple[str, int]]


def relay_wake_module() -> ModuleType:
    """The hold/wake path, imported only by a relay started with --wake (one file ships otherwise)."""
    from coderig.runtime import relay_wake

    return relay_wake


async def serve(
    routes: Sequence[Route],
    interval: float,
    silence: float = 0,
    wake: relay_wake.WakeOptions | None = None,
    accounting: Accounting | None = None,
) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    servers = []
    gates = relay_wake_module().gates_for(routes, wake) if wake else [None for _ in routes]
    if accounting is not None:
        accounting.watch(gates)  # the node-awake gauge: health probe and the gate's state
    for ((lhost, lport), target), gate in zip(routes, gates, strict=True):
        client = functools.partial(_Client, target, interval, silence, gate, accounting)
        servers.append(await loop.create_server(client, lhost, lport, reuse_address=True, backlog=1024))
    if wake is not None:
        servers.append(await relay_wake_module().start(gates, wake, parse_hostport(wake.control)))
    return servers


async def _main(
    routes: Sequence[Route],
    interval: float,
    silence: float,
    wake: relay_wake.WakeOptions | None = None,
    args: argparse.Namespace | None = None,
) -> None:
    usage = _usage_module()
    accounting = await usage.start_accounting([t for _, t in routes], args) if usage and args else None
    servers = await serve(routes, interval, silence, wake, accounting)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    names = ", ".join(f"{lh}:{lp} -> {th}:{tp}" for (lh, lp), (th, tp) in routes)
    waking = f"; wakes by {wake.mechanism}, control {wake.control}" if wake else ""
    print(f"sse_keepalive: ready ({names}; keepalive after {interval:g}s of silence{waking})", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    if accounting is not None:
        await accounting.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SSE keepalive relay (loopback only)")
    ap.add_argument("--route", action="append", required=True, help="LISTEN_HOST:PORT=TARGET_HOST:PORT (repeatable)")
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds of silence before a comment")
    ap.add_argument("--wake", choices=("sleep", "stop", "ec2", "scale"), help="hold and wake requests to an idle model")
    ap.add_argument("--start-budget", type=float, default=600.0, help="--wake: seconds a wake may take")
    ap.add_argument("--control", help="--wake: loopback HOST:PORT of the control API (GET /state, POST /hold)")
    ap.add_argument("--reaper", help="--wake stop: http://127.0.0.1:PORT of the node's reaper")
    ap.add_argument("--served-name", action="append", default=[], help="--wake: a model name it serves")
    ap.add_argument("--probe-interval", type=float, default=10.0, help="--wake: seconds between state probes")
    ap.add_argument("--aws-stack", default="auto", help="--wake ec2: the GPU instances' coderig:stack tag")
    ap.add_argument("--aws-region", default="auto", help="--wake ec2: 'auto' reads it from instance metadata")
    ap.add_argument("--aws-imds-url", default="", help=argparse.SUPPRESS)  # tests: a stand-in metadata service
    ap.add_argument(
        "--silence", type=float, default=0, help="end a response the model server left silent this long (0: never)"
    )
    usage = _usage_module()
    if usage is not None:
        usage.usage_arguments(ap)
    args = ap.parse_args(argv)
    try:
        routes = [parse_route(r) for r in args.route]
        wake = None
        if args.wake:
            if not args.control or not parse_route(f"{args.control}=127.0.0.1:1"):
                raise ValueError("--wake needs --control HOST:PORT (loopback)")
            wake = relay_wake_module().options(args, routes)
        problem = usage.usage_problem(args) if usage is not None else None
    except ValueError as exc:
        print(f"sse_keepalive: {exc}", file=sys.stderr)
        return 2
    if args.interval <= 0 or args.silence < 0 or args.start_budget <= 0 or args.probe_interval <= 0:
        problem = "--interval, --start-budget and --probe-interval must be > 0 and --silence >= 0"
    if problem:
        print(f"sse_keepalive: {problem}", file=sys.stderr)
        return 2
    asyncio.run(_main(routes, args.interval, args.silence, wake, args))
    return 0


def _usage_module() -> ModuleType | None:
    """coderig.runtime.usage_args, or None where the relay ships alone (no accounting flags then)."""
    try:
        from coderig.runtime import usage_args  # noqa: PLC0415
    except ImportError:
        return None
    return usage_args


if __name__ == "__main__":
    raise SystemExit(main())
