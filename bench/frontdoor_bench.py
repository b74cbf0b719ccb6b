"""Front-door benchmark (a script, not a test): what each path through the gateway adds to streaming.

Starts the stand-in model server (tests/standin.py, its own process), `coderig frontdoor run` in
front of it (TLS) and claude-code-router 2.0.0 (a peer front door users pick for Claude Code on
a self-hosted model, translating to the stand-in's /v1/chat/completions; installed into
.coderig/npm on first use), then at 1, 16 and 64 concurrent streams measures, in one run:
  direct            straight to the stand-in's /v1/chat/completions (the ceiling)
  chat              gateway -> keepalive relay -> model server /v1/chat/completions (opencode)
  messages          gateway -> keepalive relay -> model server /v1/messages (Claude Code, default)
  messages/litellm  gateway -> (404 for a claude-* name) -> LiteLLM translation -> chat (fallback)
  responses         gateway -> keepalive relay -> model server /v1/responses (Codex)
  count_tokens      gateway -> keepalive relay -> model server /v1/messages/count_tokens (never streams)
  ccr messages      claude-code-router (plain HTTP) -> stand-in /v1/chat/completions
Figures: time to first token (TTFT) p50/p99 (request sent -> first content token; count_tokens:
-> whole answer), added p50 vs direct (count_tokens: vs the stand-in's own count_tokens),
streamed tokens/s of the level and its share of direct's. The stand-in paces tokens
(--token-delay) like a real model, so "direct" is the ceiling.

    uv run python bench/frontdoor_bench.py
    uv run python bench/frontdoor_bench.py --paths chat,messages --levels 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-0123456789abcdefABCDEF"
MODEL = "bench-model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CCR_VERSION = "2.0.0"
CCR_PACKAGE = f"@musistudio/claude-code-router@{CCR_VERSION}"
NPM_PREFIX = REPO / ".coderig" / "npm"
ALL_PATHS = "chat,messages,messages/litellm,responses,count_tokens,ccr"


@dataclass
class Target:
    name: str
    host: str
    port: int
    path: str
    ssl_ctx: ssl.SSLContext | None
    api: str  # chat | anthropic | responses | count
    model: str = MODEL


@dataclass
class Sample:
    ttft: float
    tokens: int


class Conn:
    """One keep-alive HTTP/1.1 connection (agents reuse theirs, so the TLS handshake is not per request)."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.t.host, self.t.port, ssl=self.t.ssl_ctx, limit=2**20
            )
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        self.reader = self.writer = None


def count_token(t: Target, line: bytes) -> int:
    if not line.startswith(b"data:") or line.startswith(b"data: [DONE]"):
        return 0
    if (b"delta" not in line) or (t.api == "anthropic" and b"text_delta" not in line):
        return 0  # cheap pre-filter: the client's CPU is the servers' CPU on a 2-core machine
    data = json.loads(line[5:])
    if t.api == "anthropic":
        return int(data.get("type") == "content_block_delta" and bool(data["delta"].get("text")))
    if t.api == "responses":
        return int(data.get("type") == "response.output_text.delta" and bool(data.get("delta")))
    choices = data.get("choices") or [{}]
    return int(bool((choices[0].get("delta") or {}).get("content")))


def request_body(t: Target, tokens: int) -> dict[str, object]:
    prompt = f"[standin tokens={tokens}]"
    if t.api == "count":
        return {"model": t.model, "messages": [{"role": "user", "content": prompt}]}
    if t.api == "responses":
        return {"model": t.model, "max_output_tokens": tokens, "stream": True, "input": prompt}
    return {"model": t.model, "max_tokens": tokens, "stream": True, "messages": [{"role": "user", "content": prompt}]}


async def read_body(reader: asyncio.StreamReader, headers: bytes) -> bytes:
    if b"transfer-encoding: chunked" not in headers:
        length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
        return await reader.readexactly(length)
    out = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        out += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")
    return out


async def one_stream(t: Target, tokens: int, conn: Conn) -> Sample:
    payload = json.dumps(request_body(t, tokens)).encode()
    head = (
        f"POST {t.path} HTTP/1.1\r\nHost: {t.host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nanthropic-version: 2023-06-01\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    reader, writer = await conn.open()
    writer.write(head + payload)
    await writer.drain()
    headers = (await reader.readuntil(b"\r\n\r\n")).lower()
    if not headers.startswith(b"http/1.1 200"):
        raise RuntimeError(f"{t.name}: {headers[:60]!r} {await reader.read(300)!r}")
    if t.api == "count":
        answer = json.loads(await read_body(reader, headers))
        if "input_tokens" not in answer:
            raise RuntimeError(f"{t.name}: {answer}")
        return Sample(time.perf_counter() - started, 1)
    ttft = None
    count = 0
    pending = b""
    while True:  # chunked transfer encoding, SSE lines inside
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            break
        pending += data[:-2]
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if count_token(t, line):
                count += 1
                if ttft is None:
                    ttft = time.perf_counter() - started
    if ttft is None:
        raise RuntimeError(f"{t.name}: no tokens received")
    return Sample(ttft, count)


async def level(t: Target, concurrency: int, rounds: int, tokens: int) -> tuple[list[Sample], float]:
    """`concurrency` keep-alive clients, each warmed by one short request (connection and TLS
    handshake, as an agent's long-lived connection is), then `rounds` measured streams each."""
    samples: list[Sample] = []
    conns = [Conn(t) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(one_stream(t, 2, c) for c in conns))

        async def worker(conn: Conn) -> None:
            for _ in range(rounds):
                samples.append(await one_stream(t, tokens, conn))

        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return samples, time.perf_counter() - started
    finally:
        for conn in conns:
            conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_pids(needle: str) -> list[int]:
    """Processes whose command line contains `needle` (the relay, nginx workers of this run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
    return found


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_ready(proc: subprocess.Popen[str], needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("process exited before it was ready")
        if needle in line:
            return
    raise RuntimeError("timed out waiting for readiness")


def ensure_ccr() -> str:
    """claude-code-router's CLI, installed into the project's npm prefix when missing."""
    exe = NPM_PREFIX / "bin" / "ccr"
    pkg = NPM_PREFIX / "lib" / "node_modules" / "@musistudio" / "claude-code-router" / "package.json"
    if not (exe.exists() and pkg.exists() and json.loads(pkg.read_text()).get("version") == CCR_VERSION):
        npm = shutil.which("npm")
        if not npm:
            raise RuntimeError("npm not found: it installs claude-code-router")
        subprocess.run(
            [npm, "install", "-g", "--silent", "--no-fund", "--no-audit", "--prefix", str(NPM_PREFIX), CCR_PACKAGE],
            check=True,
        )
    return str(exe)


def start_ccr(work: Path, model_port: int, port: int) -> subprocess.Popen[str]:
    """claude-code-router translating /v1/messages to the stand-in's chat endpoint (its own HOME)."""
    home = work / "ccr-home"
    (home / ".claude-code-router").mkdir(parents=True)
    config = {
        "LOG": False,
        "HOST": "127.0.0.1",
        "PORT": port,
        "APIKEY": KEY,
        "API_TIMEOUT_MS": 600000,
        "Providers": [
            {
                "name": "standin",
                "api_base_url": f"http://127.0.0.1:{model_port}/v1/chat/completions",
                "api_key": "none",
                "models": [MODEL],
            }
        ],
        "Router": {"default": f"standin,{MODEL}"},
    }
    (home / ".claude-code-router" / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.Popen(
        [ensure_ccr(), "start"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc
        time.sleep(0.2)
    raise RuntimeError("claude-code-router did not start")


def targets_for(
    paths: list[str], model_port: int, door_port: int, ccr_port: int, ctx: ssl.SSLContext | None
) -> list[Target]:
    door = ("127.0.0.1", door_port)
    table = {
        "chat": Target("chat", *door, "/v1/chat/completions", ctx, "chat"),
        "messages": Target("messages (native)", *door, "/v1/messages", ctx, "anthropic"),
        "messages/litellm": Target(
            "messages via LiteLLM", *door, "/v1/messages", ctx, "anthropic", "claude-sonnet-4-5"
        ),
        "responses": Target("responses (native)", *door, "/v1/responses", ctx, "responses"),
        "count_tokens": Target("count_tokens (native)", *door, "/v1/messages/count_tokens", ctx, "count"),
        "ccr": Target("claude-code-router messages", "127.0.0.1", ccr_port, "/v1/messages", None, "anthropic"),
    }
    return [table[p] for p in paths]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=5, help="sequential streams per concurrent client")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    ap.add_argument("--token-delay", type=float, default=0.02, help="stand-in seconds per token")
    ap.add_argument("--litellm-workers", type=int, default=1)
    ap.add_argument("--plain-http", action="store_true", help="no TLS on the gateway")
    ap.add_argument("--paths", default=ALL_PATHS, help=f"comma list from {ALL_PATHS}")
    args = ap.parse_args()
    paths = [p for p in args.paths.split(",") if p]

    work = Path(tempfile.mkdtemp(prefix="coderig-bench-"))
    keys = work / "keys.json"
    keys.write_text(json.dumps({"bench": KEY}))
    os.chmod(keys, 0o600)
    model_port, door_port, ccr_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[str]] = []
    ccr = None
    try:
        standin = [sys.executable, str(REPO / "tests" / "standin.py"), "--port", str(model_port), "--model", MODEL,
                   "--delay", str(args.token_delay)]  # fmt: skip
        procs.append(subprocess.Popen(standin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        cmd = [
            sys.executable, "-m", "coderig.cli", "frontdoor", "run",
            "--backend", f"http://127.0.0.1:{model_port}/v1", "--model", MODEL,
            "--listen", f"127.0.0.1:{door_port}", "--keys-file", str(keys), "--state-dir", str(work / "state"),
            "--rate-limit-per-minute", "6000000", "--rate-burst", "100000",
            "--litellm-workers", str(args.litellm_workers),
        ]  # fmt: skip
        cmd += ["--plain-http"] if args.plain_http else []
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        wait_ready(procs[-1], "coderig frontdoor: ready", 180)
        if "ccr" in paths:
            ccr = start_ccr(work, model_port, ccr_port)
            procs.append(ccr)
        ctx = None
        if not args.plain_http:
            ctx = ssl.create_default_context(cafile=str(work / "state" / "tls" / "ca.pem"))
        direct = Target("direct", "127.0.0.1", model_port, "/v1/chat/completions", None, "chat")
        model = ("127.0.0.1", model_port)
        direct_count = Target("direct count_tokens", *model, "/v1/messages/count_tokens", None, "count")
        direct_same = {  # the same API straight to the stand-in: what the gateway adds, not the API's own cost
            "anthropic": Target("direct messages", *model, "/v1/messages", None, "anthropic"),
            "responses": Target("direct responses", *model, "/v1/responses", None, "responses"),
        }
        relay = find_pids(f"=127.0.0.1:{model_port}")  # the keepalive relay's route to the stand-in
        targets = targets_for(paths, model_port, door_port, ccr_port, ctx)

        print(
            f"# machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}, "
            f"python {platform.python_version()}"
        )
        print(
            f"# {args.tokens} tokens/stream, stand-in {args.token_delay * 1000:.0f} ms/token, "
            f"{args.rounds} streams per client (10 at 1 stream), keep-alive clients, "
            f"litellm workers={args.litellm_workers}, "
            f"gateway tls={not args.plain_http}, claude-code-router {CCR_VERSION} plain http"
        )
        print(
            "| streams | path | TTFT p50 ms | TTFT p99 ms | added p50 ms | tokens/s | % of direct | "
            "% of same API direct | relay CPU ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for conc in [int(c) for c in args.levels.split(",")]:
            base: dict[str, tuple[float, float]] = {}
            level_targets = [direct, *([direct_count] if "count_tokens" in paths else [])]
            level_targets += [
                direct_same[api] for api in ("anthropic", "responses") if any(t.api == api for t in targets)
            ]
            level_targets += targets
            for t in level_targets:
                relay_cpu = sum(cpu_seconds(p) for p in relay)
                rounds = max(args.rounds, 10 // conc)  # at least 10 samples for a p50 at 1 stream
                samples, wall = asyncio.run(level(t, conc, rounds, args.tokens))
                relay_cpu = sum(cpu_seconds(p) for p in relay) - relay_cpu
                ttfts = [s.ttft * 1000 for s in samples]
                tps = sum(s.tokens for s in samples) / wall
                p50 = statistics.median(ttfts)
                if t in (direct, direct_count, *direct_same.values()):
                    base[t.api] = (p50, tps)
                ref_p50, ref_tps = base["count" if t.api == "count" else "chat"]
                same = base.get(t.api, (0.0, 0.0))[1] if "claude-code-router" not in t.name else 0.0
                rate = f"{tps:.0f} req/s" if t.api == "count" else f"{tps:.0f}"
                print(
                    f"| {conc} | {t.name} | {p50:.1f} | {pct(ttfts, 0.99):.1f} | {p50 - ref_p50:+.1f} | "
                    f"{rate} | {100 * tps / ref_tps:.1f}% | {f'{100 * tps / same:.1f}%' if same else ''} | "
                    f"{1000 * relay_cpu:.0f} |",
                    flush=True,
                )
        return 0
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                if proc is ccr:  # its own session: node and whatever it spawned
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
