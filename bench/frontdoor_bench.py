"""Front-door benchmark (a script, not a test): what the gateway + LiteLLM add to streaming.

Starts the stand-in model server (tests/standin.py, its own process) and `coderig frontdoor run`
in front of it, then at 1, 16 and 64 concurrent streams measures, straight to the stand-in and
through the front door:
  - time to first token (TTFT) p50/p99: request sent -> first content token received;
  - streamed tokens/s: content tokens received by all streams / wall time of the level.
The stand-in paces tokens (--token-delay) like a real model, so "direct" is the ceiling.

    uv run python bench/frontdoor_bench.py                       # chat/completions + messages
    uv run python bench/frontdoor_bench.py --litellm-workers 2 --no-direct-chat
"""

from __future__ import annotations

import argparse
import asyncio
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


@dataclass
class Target:
    name: str
    host: str
    port: int
    path: str
    ssl_ctx: ssl.SSLContext | None
    anthropic: bool


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
    data = json.loads(line[5:])
    if t.anthropic:
        return int(data.get("type") == "content_block_delta" and bool(data["delta"].get("text")))
    choices = data.get("choices") or [{}]
    return int(bool((choices[0].get("delta") or {}).get("content")))


async def one_stream(t: Target, tokens: int, conn: Conn) -> Sample:
    prompt = f"[standin tokens={tokens}]"
    body = {
        "model": "claude-sonnet-4-5" if t.anthropic else MODEL,
        "max_tokens": tokens,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    payload = json.dumps(body).encode()
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
        raise RuntimeError(f"{t.name}: {headers[:60]!r}")
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
    samples: list[Sample] = []

    async def worker() -> None:
        conn = Conn(t)
        try:
            for _ in range(rounds):
                samples.append(await one_stream(t, tokens, conn))
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=3, help="sequential streams per concurrent client")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    ap.add_argument("--token-delay", type=float, default=0.02, help="stand-in seconds per token")
    ap.add_argument("--litellm-workers", type=int, default=1)
    ap.add_argument(
        "--direct-chat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gateway sends chat/completions straight to the model (frontdoor's default)",
    )
    ap.add_argument("--plain-http", action="store_true", help="no TLS on the gateway")
    ap.add_argument("--paths", default="chat,messages", help="chat (/v1/chat/completions), messages")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="coderig-bench-"))
    keys = work / "keys.json"
    keys.write_text(json.dumps({"bench": KEY}))
    os.chmod(keys, 0o600)
    model_port, door_port = free_port(), free_port()
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "tests" / "standin.py"),
                    "--port",
                    str(model_port),
                    "--model",
                    MODEL,
                    "--delay",
                    str(args.token_delay),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
        cmd = [
            sys.executable,
            "-m",
            "coderig.cli",
            "frontdoor",
            "run",
            "--backend",
            f"http://127.0.0.1:{model_port}/v1",
            "--model",
            MODEL,
            "--listen",
            f"127.0.0.1:{door_port}",
            "--keys-file",
            str(keys),
            "--state-dir",
            str(work / "state"),
            "--rate-limit-per-minute",
            "6000000",
            "--rate-burst",
            "100000",
            "--litellm-workers",
            str(args.litellm_workers),
        ]
        cmd += ["--plain-http"] if args.plain_http else []
        cmd += ["--direct-chat"] if args.direct_chat else ["--no-direct-chat"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        wait_ready(procs[-1], "coderig frontdoor: ready", 180)
        ctx = None
        if not args.plain_http:
            ctx = ssl.create_default_context(cafile=str(work / "state" / "tls" / "ca.pem"))
        direct = Target("direct", "127.0.0.1", model_port, "/v1/chat/completions", None, False)
        targets = [direct]
        if "chat" in args.paths:
            targets.append(Target("door chat", "127.0.0.1", door_port, "/v1/chat/completions", ctx, False))
        if "messages" in args.paths:
            targets.append(Target("door messages", "127.0.0.1", door_port, "/v1/messages", ctx, True))

        print(
            f"# machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}, "
            f"python {platform.python_version()}"
        )
        print(
            f"# {args.tokens} tokens/stream, stand-in {args.token_delay * 1000:.0f} ms/token, "
            f"{args.rounds} streams per client, litellm workers={args.litellm_workers}, "
            f"direct_chat={args.direct_chat}, tls={not args.plain_http}"
        )
        print("| streams | path | TTFT p50 ms | TTFT p99 ms | added p50 ms | tokens/s | % of direct |")
        print("|---|---|---|---|---|---|---|")
        for conc in [int(c) for c in args.levels.split(",")]:
            base_p50 = base_tps = 0.0
            for t in targets:
                asyncio.run(level(t, min(conc, 4), 1, 4))  # warm connections and caches
                samples, wall = asyncio.run(level(t, conc, args.rounds, args.tokens))
                ttfts = [s.ttft * 1000 for s in samples]
                tps = sum(s.tokens for s in samples) / wall
                p50 = statistics.median(ttfts)
                if t is direct:
                    base_p50, base_tps = p50, tps
                print(
                    f"| {conc} | {t.name} | {p50:.1f} | {pct(ttfts, 0.99):.1f} | {p50 - base_p50:+.1f} | "
                    f"{tps:.0f} | {100 * tps / base_tps:.1f}% |",
                    flush=True,
                )
        return 0
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
