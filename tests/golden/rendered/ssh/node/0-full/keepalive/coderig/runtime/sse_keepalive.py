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

When the model server cannot be reached the relay closes the client connection without a byte,
which nginx counts as a failed attempt (`proxy_next_upstream error`) and retries on another replica.
Listen addresses must be loopback: the relay has no authentication of its own.

It is the one hop to a model server on every path (chat, native routes, LiteLLM's), so with
`--wake sleep|stop` it also holds the requests for a model the node's reaper put to sleep or
stopped, and wakes it (coderig.runtime.relay_wake, coderig.runtime.wake).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: a relay without --wake runs from this one file
    from coderig.runtime import relay_wake
    from coderig.runtime.wake import Waker

DEFAULT_INTERVAL_S = 15.0
COMMENT = b": keepalive\n\n"
KEEPALIVE_CHUNK = b"%x\r\n%s\r\n" % (len(COMMENT), COMMENT)
_HIGH_WATER = 1 << 20  # pause the other side when this much is queued for writing
_HEAD_LIMIT = 1 << 16

# response parser states
_HEAD, _SIZE, _DATA, _TRAILER, _LENGTH, _UNTIL_CLOSE = range(6)


class _Pair:
    """The two transports of one relayed connection and their back-pressure."""

    def __init__(self, gate: relay_wake.Gate | None = None) -> None:
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.closed = False
        self.gate = gate
        self.busy = False  # a request is in flight on this connection (counted in the gate)
        self.splice: relay_wake.Splice | None = None  # the client already has a stream's head

    def request_started(self) -> None:
        if self.gate is not None and not self.busy:
            self.busy = True
            self.gate.begin()
            self.gate.idle_conns.discard(self.close)

    def request_done(self) -> None:
        if self.gate is not None and self.busy:
            self.busy = False
            self.gate.end()
            if not self.closed:
                self.gate.idle_conns.add(self.close)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.gate is not None:
            self.gate.idle_conns.discard(self.close)
            if self.busy:
                self.busy = False
                self.gate.end()
        for t in (self.client, self.upstream):
            if t is not None:
                t.close()


class ResponseFramer:
    """Follows HTTP/1.1 response framing in the bytes it is fed (any split) and says when the
    stream sits between SSE events inside a chunked event-stream body. Pure: no I/O."""

    __slots__ = ("state", "buf", "remaining", "sse", "at_event_end", "tail")

    def __init__(self) -> None:
        self.state = _HEAD
        self.buf = b""
        self.remaining = 0
        self.sse = False
        self.at_event_end = True
        self.tail = b""

    def can_inject(self) -> bool:
        return self.sse and self.state == _SIZE and not self.buf and self.at_event_end

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            st = self.state
            if st == _DATA:
                take = min(self.remaining, n - pos)
                payload = min(take, self.remaining - 2) if self.remaining > 2 else 0
                if payload and self.sse:
                    end = pos + payload
                    self.tail = (self.tail + data[max(pos, end - 4) : end])[-4:]
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self.state = _SIZE
                    self.at_event_end = self.tail.endswith(b"\n\n") or self.tail == b"\r\n\r\n"
                continue
            if st == _LENGTH:
                take = min(self.remaining, n - pos)
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self.state = _HEAD
                continue
            if st == _UNTIL_CLOSE:
                return
            # line-oriented states: head, chunk size, trailer
            sep = b"\r\n\r\n" if st == _HEAD else b"\r\n"
            if self.buf:
                data, pos, n = self.buf + data[pos:], 0, len(self.buf) + n - pos
                self.buf = b""
            idx = data.find(sep, pos)
            if idx < 0:
                self.buf = data[pos:]
                if len(self.buf) > _HEAD_LIMIT:  # not HTTP framing we understand: stop looking
                    self.state, self.sse, self.buf = _UNTIL_CLOSE, False, b""
                return
            line, pos = data[pos:idx], idx + len(sep)
            if st == _HEAD:
                self._head(line)
            elif st == _SIZE:
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.remaining, self.state = size + 2, _DATA  # data + CRLF
            elif st == _TRAILER and not line:
                self.state, self.sse = _HEAD, False

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        chunked, length, sse = False, None, False
        for raw in lines[1:]:
            name, _, value = raw.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-length":
                length = int(value.strip() or b"0")
            elif name == b"content-type":
                sse = value.strip().lower().startswith(b"text/event-stream")
        if 100 <= status < 200 or status in (204, 304):
            self.state = _HEAD
        elif chunked:
            self.state, self.sse, self.at_event_end, self.tail = _SIZE, sse, True, b""
        elif length is not None:
            self.state, self.remaining = (_LENGTH, length) if length else (_HEAD, 0)
        else:
            self.state = _UNTIL_CLOSE


class _Upstream(asyncio.Protocol):
    """Model server -> client: forwards every byte, keeps the framer current, injects keepalives."""

    def __init__(self, pair: _Pair, interval: float) -> None:
        self.pair = pair
        self.framer = ResponseFramer()
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pair.upstream = transport
        self.timer = self.loop.call_later(self.interval, self._tick)

    def data_received(self, data: bytes) -> None:
        self.last = self.loop.time()
        self.framer.feed(data)
        client = self.pair.client
        out = data if self.pair.splice is None else self.pair.splice.feed(data)
        if client is not None and not self.pair.closed and out:
            client.write(out)
        if self.framer.state == _HEAD and not self.framer.buf:  # the response ended
            splice, self.pair.splice = self.pair.splice, None
            self.pair.request_done()
            if splice is not None and splice.failed:
                self.pair.close()
        elif self.pair.splice is not None and self.pair.splice.failed:
            self.pair.close()

    def _tick(self) -> None:
        if self.pair.closed:
            return
        idle = self.loop.time() - self.last
        if idle >= self.interval - 0.01:
            client = self.pair.client
            if self.framer.can_inject() and client is not None:
                client.write(KEEPALIVE_CHUNK)
            self.last = self.loop.time()
            idle = 0.0
        self.timer = self.loop.call_later(self.interval - idle, self._tick)

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
        self, target: tuple[str, int], interval: float, gate: relay_wake.Gate | None = None, served: Sequence[str] = ()
    ) -> None:
        self.target = target
        self.interval = interval
        self.pair = _Pair(gate)
        self.pending: list[bytes] = []
        self.connect: asyncio.Task[None] | None = None
        self.served = served  # model names the model server serves (a held stream gets early headers)
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
        if gate is not None and not gate.awake and not await self._hold(gate):
            return
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(self.pair, self.interval), *self.target), 10
            )
        except (TimeoutError, OSError):
            if retry and gate is not None and await self._found_asleep(gate):
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

    async def _found_asleep(self, gate: relay_wake.Gate) -> bool:
        """A refused connect: asleep or stopped by someone else (a relay restart lost the state)?"""
        if gate.waker is None:
            return False
        state = await asyncio.get_running_loop().run_in_executor(None, gate.waker.state)
        if state not in ("sleeping", "stopped"):
            return False
        gate.settled(state)
        return True

    async def _hold(self, gate: relay_wake.Gate) -> bool:
        """Wait for the model to wake; the client hears keepalives meanwhile (a stream) or an error."""
        from coderig.runtime import relay_wake

        info = relay_wake.request_info(b"".join(self.pending))
        while info is None and not self.pair.closed:
            self.arrived.clear()
            await self.arrived.wait()
            info = relay_wake.request_info(b"".join(self.pending))
        client = self.pair.client
        if info is None or client is None:
            return False
        path, streams, model = info
        shape = relay_wake.shape_of(path)
        early = streams and (not self.served or model in self.served)
        ticker = None
        if early:
            client.write(relay_wake.EARLY_HEAD)
            ticker = asyncio.get_running_loop().create_task(self._keepalives(client))
        why = await gate.wait_awake()
        if ticker is not None:
            ticker.cancel()
        if self.pair.closed:
            return False
        if why is not None:
            client.write(relay_wake.error_event(shape, why) if early else relay_wake.error_response(shape, why))
            self.pair.close()
            return False
        if early:
            self.pair.splice = relay_wake.Splice(shape)
        return True

    async def _keepalives(self, client: asyncio.Transport) -> None:
        while not self.pair.closed:
            await asyncio.sleep(self.interval)
            if not self.pair.closed:
                client.write(KEEPALIVE_CHUNK)

    def data_received(self, data: bytes) -> None:
        self.pair.request_started()
        self.arrived.set()
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


@dataclass(frozen=True)
class WakeOptions:
    """How the relay holds and wakes its model servers (None: it only relays)."""

    mechanism: str  # "sleep": POST /wake_up on the target; "stop": the reaper's control port starts it
    budget_s: float  # the start budget: a wake that takes longer fails every held request
    control: str | None = None  # the relay's own control listener (host:port, loopback)
    reaper: str | None = None  # http://127.0.0.1:PORT of the node's reaper ("stop")
    served: tuple[str, ...] = ()  # the served model names (a held stream for another name waits silently)


def waker_for(mechanism: str, target: tuple[str, int], reaper: str | None) -> Waker:
    from coderig.runtime.wake import SleepWaker, StopWaker

    if mechanism == "sleep":
        return SleepWaker(f"http://{hostport(*target)}")
    if mechanism == "stop":
        if not reaper:
            raise ValueError("--wake stop needs --reaper http://127.0.0.1:PORT (it alone starts containers)")
        return StopWaker(reaper)
    raise ValueError(f"--wake: {mechanism!r}; allowed: sleep, stop")


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gates_for(routes: Sequence[Route], wake: WakeOptions | None) -> list[relay_wake.Gate | None]:
    if wake is None:
        return [None for _ in routes]
    from coderig.runtime import relay_wake

    return [
        relay_wake.Gate(
            hostport(*target), waker_for(wake.mechanism, target, wake.reaper), f"http://{hostport(*target)}/health",
            wake.budget_s,
        )
        for _, target in routes
    ]  # fmt: skip


async def serve(routes: Sequence[Route], interval: float, wake: WakeOptions | None = None) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    servers = []
    gates = gates_for(routes, wake)
    served = wake.served if wake else ()
    for gate in gates:
        if gate is not None:
            await gate.learn()
    for ((lhost, lport), target), gate in zip(routes, gates, strict=True):
        servers.append(
            await loop.create_server(
                lambda target=target, gate=gate: _Client(target, interval, gate, served),
                lhost, lport, reuse_address=True, backlog=1024,
            )
        )  # fmt: skip
    if wake is not None and wake.control:
        chost, cport = parse_hostport(wake.control)
        from coderig.runtime.relay_wake import Control

        held = [g for g in gates if g is not None]
        servers.append(await loop.create_server(lambda: Control(held), chost, cport, reuse_address=True))
    return servers


async def _main(routes: Sequence[Route], interval: float, wake: WakeOptions | None = None) -> None:
    servers = await serve(routes, interval, wake)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SSE keepalive relay (loopback only)")
    ap.add_argument("--route", action="append", required=True, help="LISTEN_HOST:PORT=TARGET_HOST:PORT (repeatable)")
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds of silence before a comment")
    ap.add_argument("--wake", choices=("sleep", "stop"), help="hold and wake requests for an idle model")
    ap.add_argument("--start-budget", type=float, default=600.0, help="seconds a wake may take")
    ap.add_argument("--control", help="loopback HOST:PORT of the control API (GET /state, POST /hold, /settled)")
    ap.add_argument("--reaper", help="http://127.0.0.1:PORT of the node's reaper (--wake stop)")
    ap.add_argument("--served-name", action="append", default=[], help="a model name the model server serves")
    args = ap.parse_args(argv)
    try:
        routes = [parse_route(r) for r in args.route]
        wake = None
        if args.wake:
            if not args.control or not parse_route(f"{args.control}=127.0.0.1:1"):
                raise ValueError("--wake needs --control HOST:PORT (loopback)")
            wake = WakeOptions(args.wake, args.start_budget, args.control, args.reaper, tuple(args.served_name))
            gates_for(routes, wake)  # a bad --reaper is refused here, not on the first request
    except ValueError as exc:
        print(f"sse_keepalive: {exc}", file=sys.stderr)
        return 2
    if args.interval <= 0 or args.start_budget <= 0:
        print("sse_keepalive: --interval and --start-budget must be > 0", file=sys.stderr)
        return 2
    asyncio.run(_main(routes, args.interval, wake))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
