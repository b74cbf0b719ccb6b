"""The relay's accounting: counts every exchange into the usage record, writes it every flush
interval, probes each model server's health (when nodes were awake), and serves the metrics
listener (stdlib only; runs inside coderig.runtime.sse_keepalive).

The metrics listener is never public: it binds a loopback address, or another address only with
`--metrics-allow CIDR` (the stack's admin network), and then answers only peers inside it. It
serves `GET /metrics` (Prometheus text: the record's counters and histograms, each node's awake
gauge, and each model server's own /metrics with a `replica` label), `GET /usage` (the record as
JSON, what `coderig usage` reads) and `GET /budget` (the gateway's per-request daily budget check,
coderig.runtime.usage_budget). Developer keys never reach it: the gateway does not route there.
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
from typing import Any

from coderig.runtime import usage_budget, usage_record
from coderig.runtime.usage import Exchange, RequestReader, ResponseMeter
from coderig.runtime.usage_record import Ledger

DEFAULT_FLUSH_S = 10.0
DEFAULT_PROBE_S = 30.0
_SCRAPE_TIMEOUT_S = 3.0
_IDLE_S = 10.0  # a listener connection silent this long (before or between requests) is closed


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
        # the wake gate of each route (relay --wake), whose state says a model server that answers its
        # health probe is nonetheless asleep (vLLM sleep mode keeps answering /health)
        self.gates: dict[str, Any] = {}
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
                node = f"{h}:{p}"
                self.awake[node] = node_awake(status, self.gates.get(node))
            if any(self.awake.values()):
                # awake until the next probe says otherwise (a stop is counted up to one interval late)
                self.ledger.mark_awake(start, start + self.probe_s, self.probe_s * 1.5)
            await asyncio.sleep(self.probe_s)

    def budget(self, headers: dict[str, str]) -> usage_budget.Refusal | None:
        """The gateway's question before a model request: may this developer go on today?"""
        developer = headers.get(usage_budget.DEVELOPER_HEADER, "")
        limit = usage_budget.parse_limit(headers.get(usage_budget.LIMIT_HEADER, ""))
        now = time.time()
        return usage_budget.verdict(developer, limit, self.ledger.tokens_today(developer, now), now)

    def watch(self, gates: Sequence[Any]) -> None:
        """The wake gates (relay_wake.Gate or None), one per target in order."""
        self.gates = {f"{h}:{p}": g for (h, p), g in zip(self.targets, gates, strict=True) if g is not None}

    # ------------------------------------------------------------ the metrics listener

    async def metrics_text(self) -> str:
        scraped = await asyncio.gather(*(_get(h, p, "/metrics") for h, p in self.targets))
        texts = [
            (f"{h}:{p}", body.decode("utf-8", "replace"))
            for (h, p), (status, body) in zip(self.targets, scraped, strict=True)
            if status == 200
        ]
        return usage_record.exposition(self.ledger, self.awake, self.gateway_up) + relabel(texts)

    async def _answer(self, head: bytes, allowed: bool) -> tuple[int, str, bytes, list[tuple[str, str]], str]:
        """(status, content type, body, extra headers, path) for one request head."""
        method, _, rest = head.decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if not allowed:
            return 403, "text/plain", b"forbidden\n", [], path
        if method != "GET":
            return 405, "text/plain", b"GET only\n", [], path
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", (await self.metrics_text()).encode(), [], path
        if path == "/usage":
            return 200, "application/json", json.dumps(self.ledger.to_json()).encode(), [], path
        if path == usage_budget.BUDGET_PATH:
            status, extra = usage_budget.answer(self.budget(_headers(head)))
            return status, "text/plain", b"", extra, path
        return 404, "text/plain", b"not found: /metrics, /usage or /budget\n", [], path

    async def serve_metrics(self, host: str, port: int, allow: Sequence[str]) -> asyncio.Server:
        networks = [ipaddress.ip_network(c, strict=False) for c in allow]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                peer = writer.get_extra_info("peername")[0]
                # the gateway's budget checks keep their connection (one per model request otherwise);
                # anything else is one request per connection
                while True:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE_S)
                    status, ctype, body, extra, path = await self._answer(head, peer_allowed(peer, networks))
                    headers = _headers(head)
                    keep = path == usage_budget.BUDGET_PATH and headers.get("connection", "").lower() != "close"
                    more = "".join(f"{k}: {v}\r\n" for k, v in extra).encode("latin-1")
                    writer.write(
                        b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: %s\r\n\r\n%s"
                        % (status, ctype.encode(), len(body), more, b"keep-alive" if keep else b"close", body)
                    )
                    await writer.drain()
                    if not keep:
                        break
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, host, port, reuse_address=True)


_WRITING = threading.Lock()  # one write at a time, in snapshot order (a cancelled flush's thread runs on)


def node_awake(health_status: int, gate: Any = None) -> bool:
    """Awake: the model server answered its health probe (a dead or stopped one does not) and, where a
    wake gate holds its requests, the gate has not put it to sleep or stopped it (a sleeping vLLM
    still answers /health: its GPU memory is free all the same)."""
    return health_status == 200 and (gate is None or gate.state in ("awake", "waking"))


def _headers(head: bytes) -> dict[str, str]:
    """A request head's header fields, names lowercased (the last of a repeated one)."""
    out: dict[str, str] = {}
    for raw in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = raw.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


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
