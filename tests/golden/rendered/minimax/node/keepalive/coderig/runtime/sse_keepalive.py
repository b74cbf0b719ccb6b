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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coderig.runtime.usage import RequestReader, ResponseMeter
    from coderig.runtime.usage_server import Accounting

DEFAULT_INTERVAL_S = 15.0
COMMENT = b": keepalive\n\n"
KEEPALIVE_CHUNK = b"%x\r\n%s\r\n" % (len(COMMENT), COMMENT)
_HIGH_WATER = 1 << 20  # pause the other side when this much is queued for writing
_HEAD_LIMIT = 1 << 16

# response parser states
_HEAD, _SIZE, _DATA, _TRAILER, _LENGTH, _UNTIL_CLOSE = range(6)


class _Pair:
    """The two transports of one relayed connection and their back-pressure."""

    def __init__(self, accounting: Accounting | None = None) -> None:
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.closed = False
        # usage accounting (coderig.runtime.usage): request side and response side of this connection
        self.reader: RequestReader | None = accounting.reader() if accounting else None
        self.meter: ResponseMeter | None = accounting.meter(self.reader) if accounting and self.reader else None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t in (self.client, self.upstream):
            if t is not None:
                t.close()
        if self.meter is not None:
            self.meter.close()


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
        if self.pair.meter is not None:
            data = self.pair.meter.feed(data)
        client = self.pair.client
        if client is not None and not self.pair.closed and data:
            client.write(data)

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

    def __init__(self, target: tuple[str, int], interval: float, accounting: Accounting | None = None) -> None:
        self.target = target
        self.interval = interval
        self.pair = _Pair(accounting)
        self.pending: list[bytes] = []
        self.connect: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pair.client = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.connect = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(self.pair, self.interval), *self.target), 10
            )
        except (TimeoutError, OSError):
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


async def serve(
    routes: list[tuple[tuple[str, int], tuple[str, int]]], interval: float, accounting: Accounting | None = None
) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    servers = []
    for (lhost, lport), target in routes:
        servers.append(
            await loop.create_server(
                lambda target=target: _Client(target, interval, accounting),
                lhost,
                lport,
                reuse_address=True,
                backlog=1024,
            )
        )
    return servers


async def _main(
    routes: list[tuple[tuple[str, int], tuple[str, int]]], interval: float, args: argparse.Namespace | None = None
) -> None:
    accounting = await _accounting(routes, args) if args is not None else None
    servers = await serve(routes, interval, accounting)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    names = ", ".join(f"{lh}:{lp} -> {th}:{tp}" for (lh, lp), (th, tp) in routes)
    print(f"sse_keepalive: ready ({names}; keepalive after {interval:g}s of silence)", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    if accounting is not None:
        await accounting.stop()


async def _accounting(
    routes: list[tuple[tuple[str, int], tuple[str, int]]], args: argparse.Namespace
) -> Accounting | None:
    """Usage accounting and the metrics listener (coderig.runtime.usage_server), when asked for."""
    if not (args.usage_file or args.metrics):
        return None
    from coderig.runtime.usage_server import Accounting  # noqa: PLC0415 - only when accounting is on

    gateway = parse_hostport(args.gateway) if args.gateway else None
    record = Path(args.usage_file) if args.usage_file else None
    accounting = Accounting(record, [t for _, t in routes], args.flush, args.probe, gateway)
    accounting.start()
    if args.metrics:
        host, port = parse_hostport(args.metrics)
        await accounting.serve_metrics(host, port, args.metrics_allow)
    return accounting


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SSE keepalive relay (loopback only)")
    ap.add_argument("--route", action="append", required=True, help="LISTEN_HOST:PORT=TARGET_HOST:PORT (repeatable)")
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds of silence before a comment")
    ap.add_argument("--usage-file", help="usage record (JSON, 0600), loaded at start, written every --flush s")
    ap.add_argument("--metrics", help="HOST:PORT serving /metrics and /usage (loopback, or see --metrics-allow)")
    ap.add_argument("--metrics-allow", action="append", default=[], help="CIDR allowed to reach --metrics (repeatable)")
    ap.add_argument("--flush", type=float, default=10.0, help="seconds between usage record writes")
    ap.add_argument("--gateway", help="HOST:PORT of the gateway's listener, probed for coderig_gateway_up")
    ap.add_argument("--probe", type=float, default=30.0, help="seconds between model server health probes")
    args = ap.parse_args(argv)
    try:
        routes = [parse_route(r) for r in args.route]
        problem = _usage_problem(args)
    except ValueError as exc:
        print(f"sse_keepalive: {exc}", file=sys.stderr)
        return 2
    if args.interval <= 0:
        problem = "--interval must be > 0"
    if problem:
        print(f"sse_keepalive: {problem}", file=sys.stderr)
        return 2
    asyncio.run(_main(routes, args.interval, args))
    return 0


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.flush <= 0 or args.probe <= 0:
        return "--flush and --probe must be > 0"
    if args.metrics:
        from coderig.runtime.usage_server import metrics_listen_error  # noqa: PLC0415

        return metrics_listen_error(parse_hostport(args.metrics)[0], args.metrics_allow)
    if args.usage_file:
        from coderig.runtime.usage_record import RecordError, load  # noqa: PLC0415

        if Path(args.usage_file).exists():
            try:
                load(Path(args.usage_file))
            except RecordError as exc:
                return f"{exc}; move it aside to start a new record"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
