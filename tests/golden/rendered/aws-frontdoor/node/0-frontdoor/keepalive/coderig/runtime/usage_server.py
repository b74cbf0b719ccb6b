"""The relay's accounting: counts every exchange into the usage record, writes it every flush
interval, probes each model server's health (when nodes were awake), and serves the metrics
listener (stdlib only; runs inside coderig.runtime.sse_keepalive).

The metrics listener is never public: it binds a loopback address, or another address only with
`--metrics-allow CIDR` (the stack's admin network), and then answers only peers inside it. It
serves `GET /metrics` (Prometheus text: the record's counters and histograms, each node's awake
gauge, and each model server's own /metrics with a `replica` label) and `GET /usage` (the record as
JSON, what `coderig usage` reads). Developer keys never reach it: the gateway does not route there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from coderig.runtime import usage_record
from coderig.runtime.usage import Exchange, RequestReader, ResponseMeter
from coderig.runtime.usage_record import Ledger

DEFAULT_FLUSH_S = 10.0
DEFAULT_PROBE_S = 30.0
_SCRAPE_TIMEOUT_S = 3.0


class Accounting:
    """One per relay process: the ledger and what keeps it."""

    def __init__(
        self,
        path: Path | None,
        targets: Sequence[tuple[str, int]],
        flush_s: float = DEFAULT_FLUSH_S,
        probe_s: float = DEFAULT_PROBE_S,
        gateway: tuple[str, int] | None = None,
    ) -> None:
        self.path = path
        self.targets = list(targets)
        self.flush_s = flush_s
        self.probe_s = probe_s
        self.ledger = usage_record.load(path) if path is not None and path.exists() else Ledger()
        self.awake: dict[str, bool | None] = {f"{h}:{p}": None for h, p in self.targets}
        self.gateway = gateway  # the gateway's listener on this machine: accepts connections or not
        self.gateway_up: bool | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.loop = asyncio.get_running_loop()
        self._offset = time.time() - self.loop.time()  # monotonic -> epoch (for days)

    # ------------------------------------------------------------ per connection

    def reader(self) -> RequestReader:
        return RequestReader(self.loop.time)

    def meter(self, reader: RequestReader) -> ResponseMeter:
        return ResponseMeter(reader.exchanges, self.loop.time, self.done)

    def done(self, ex: Exchange) -> None:
        if ex.counted:
            self.ledger.add(ex, self._offset + (ex.finished or self.loop.time()))

    # ------------------------------------------------------------ background

    def start(self) -> None:
        self.tasks.append(self.loop.create_task(self._flusher()))
        self.tasks.append(self.loop.create_task(self._prober()))

    async def flush(self) -> None:
        """Write the record if it changed: the snapshot on the loop, the blocking write and fsyncs in a
        thread (a busy disk must not stall the streams)."""
        if self.path is None or not self.ledger.changed:
            return
        data = usage_record.snapshot(self.ledger)
        try:
            await asyncio.to_thread(_write, data, self.path)
        except OSError as exc:  # a full disk: keep counting, say so, try again next interval
            self.ledger.changed = True
            print(f"sse_keepalive: usage record not written: {exc}", file=sys.stderr, flush=True)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def _prober(self) -> None:
        while True:
            start = time.time()
            results = await asyncio.gather(*(_get(h, p, "/health") for h, p in self.targets))
            if self.gateway is not None:
                self.gateway_up = await _accepts(*self.gateway)
            for (h, p), (status, _body) in zip(self.targets, results, strict=True):
                self.awake[f"{h}:{p}"] = status == 200
            if any(status == 200 for status, _ in results):
                # awake until the next probe says otherwise (a stop is counted up to one interval late)
                self.ledger.mark_awake(start, start + self.probe_s, self.probe_s * 1.5)
            await asyncio.sleep(self.probe_s)

    # ------------------------------------------------------------ the metrics listener

    async def metrics_text(self) -> str:
        scraped = await asyncio.gather(*(_get(h, p, "/metrics") for h, p in self.targets))
        texts = [
            (f"{h}:{p}", body.decode("utf-8", "replace"))
            for (h, p), (status, body) in zip(self.targets, scraped, strict=True)
            if status == 200
        ]
        return usage_record.exposition(self.ledger, self.awake, self.gateway_up) + relabel(texts)

    async def serve_metrics(self, host: str, port: int, allow: Sequence[str]) -> asyncio.Server:
        networks = [ipaddress.ip_network(c, strict=False) for c in allow]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                peer = writer.get_extra_info("peername")[0]
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                method, _, rest = head.decode("latin-1").partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0]
                if not peer_allowed(peer, networks):
                    status, ctype, body = 403, "text/plain", b"forbidden\n"
                elif method != "GET":
                    status, ctype, body = 405, "text/plain", b"GET only\n"
                elif path == "/metrics":
                    status, ctype, body = 200, "text/plain; version=0.0.4", (await self.metrics_text()).encode()
                elif path == "/usage":
                    status, ctype, body = 200, "application/json", json.dumps(self.ledger.to_json()).encode()
                else:
                    status, ctype, body = 404, "text/plain", b"not found: /metrics or /usage\n"
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (status, ctype.encode(), len(body), body)
                )
                await writer.drain()
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, host, port, reuse_address=True)


_WRITING = threading.Lock()  # one write at a time, in snapshot order (a cancelled flush's thread runs on)


def _write(data: bytes, path: Path) -> None:
    with _WRITING:
        usage_record.write_atomic(data, path)


def peer_allowed(peer: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    address = ipaddress.ip_address(peer.split("%", 1)[0])
    if address.is_loopback:
        return True
    return any(address.version == n.version and address in n for n in networks)


def metrics_listen_error(host: str, allow: Sequence[str]) -> str | None:
    """Why the metrics listener may not bind here (None when it may)."""
    try:
        networks = [ipaddress.ip_network(c, strict=False) for c in allow]
    except ValueError as exc:
        return f"--metrics-allow: {exc}"
    if not (host == "localhost" or _is_loopback(host)) and not networks:
        return f"--metrics {host}: not loopback; give the admin network with --metrics-allow CIDR"
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?(\s.*)$")


def relabel(texts: Sequence[tuple[str, str]]) -> str:
    """Several model servers' expositions as one: every sample gets `replica="host:port"`, and each
    metric family's HELP/TYPE appears once with the samples of every replica under it (the text
    format wants a family's lines together)."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    for replica, text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    comments = families.setdefault(family, ([], []))[0]
                    if line not in comments:
                        comments.append(line)
                continue
            match = _SAMPLE.match(line)
            if not match:
                continue
            name, inner, rest = match.groups()
            labels = f'replica="{replica}"' + (f",{inner}" if inner else "")
            families.setdefault(family or name, ([], []))[1].append(f"{name}{{{labels}}}{rest}")
    out = [line for comments, samples in families.values() for line in (*comments, *samples)]
    return "\n".join(out) + ("\n" if out else "")


async def _accepts(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _SCRAPE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One GET on a model server (its health or metrics); (0, b"") when it does not answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _SCRAPE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return 0, b""
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(-1), _SCRAPE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return 0, b""
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(body[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)
