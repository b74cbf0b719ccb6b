"""Usage accounting's cost, side by side (a script, not a test): the same keepalive relay
(coderig/runtime/sse_keepalive.py) in front of the same stand-in model server, once without and once
with accounting (--usage-file, --metrics: every response parsed for its usage, the record written
every second, the health probe), streaming /v1/messages at 64 concurrent streams (Claude Code's
path). Only the relay differs between the two, so the difference is what accounting costs; the
gateway in front adds the same to both. Runs alternate (plain, accounted, accounted, plain, …) and the
medians are reported, with the relay's CPU per run. Target (issue #19): at most 2 % of throughput
and 2 ms of p50 time to first token.

    uv run python bench/usage_bench.py
    uv run python bench/usage_bench.py --streams 64 --runs 5 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontdoor_bench import MODEL, REPO, Target, cpu_seconds, free_port, level  # noqa: E402


def start(cmd: list[str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd[:4]} did not listen on {port}")


def parse_cost(tokens: int = 20_000) -> tuple[float, float]:
    """CPU µs per streamed token of the usage readers alone (no I/O, no other process: a figure the
    machine's load does not blur): (plain framing, framing + accounting)."""
    from coderig.runtime.http_framing import ResponseFramer
    from coderig.runtime.usage import Exchange, ResponseMeter

    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

    def event(name: str, data: dict[str, object]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    delta = event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " tok"}},
    )
    start = event("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 900}}})
    end = event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 64}})
    chunks = [head] + [b"%x\r\n%s\r\n" % (len(e), e) for e in [start, *[delta] * 64, end]] + [b"0\r\n\r\n"]
    streams = tokens // 64
    framer_t = time.process_time()
    for _ in range(streams):
        framer = ResponseFramer()
        for c in chunks:
            framer.feed(c)
    framer_t = time.process_time() - framer_t
    meter_t = time.process_time()
    for _ in range(streams):
        framer, meter = ResponseFramer(), ResponseMeter(deque([Exchange("a", "/v1/messages", 0.0)]), time.monotonic, id)
        for c in chunks:
            framer.feed(c)
            meter.feed(c)
    meter_t = time.process_time() - meter_t
    return framer_t / tokens * 1e6, meter_t / tokens * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="runs per variant (alternating)")
    ap.add_argument("--rounds", type=int, default=3, help="sequential streams per client in a run")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--token-delay", type=float, default=0.02, help="stand-in seconds per token")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="coderig-usage-bench-"))
    model_port, plain_port, counted_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    relay = [sys.executable, "-m", "coderig.runtime.sse_keepalive", "--interval", "15"]
    standin = [
        sys.executable,
        str(REPO / "tests" / "standin.py"),
        "--port",
        str(model_port),
        "--model",
        MODEL,
        "--delay",
        str(args.token_delay),
    ]
    procs = [start(standin, model_port)]
    try:
        procs.append(start([*relay, "--route", f"127.0.0.1:{plain_port}=127.0.0.1:{model_port}"], plain_port))
        counted = [
            *relay,
            "--route",
            f"127.0.0.1:{counted_port}=127.0.0.1:{model_port}",
            "--usage-file",
            str(work / "usage.json"),
            "--metrics",
            f"127.0.0.1:{metrics_port}",
            "--flush",
            "1",
            "--probe",
            "5",
        ]
        procs.append(start(counted, counted_port))
        variants = {
            "plain relay": (Target("plain", "127.0.0.1", plain_port, "/v1/messages", None, "anthropic"), procs[1]),
            "relay + accounting": (
                Target("counted", "127.0.0.1", counted_port, "/v1/messages", None, "anthropic"),
                procs[2],
            ),
        }
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
        for run in range(args.runs):  # ABBA order: neither variant always runs second on a warmer machine
            for name, (target, proc) in list(variants.items())[:: 1 if run % 2 == 0 else -1]:
                cpu = cpu_seconds(proc.pid)
                samples, wall = asyncio.run(level(target, args.streams, args.rounds, args.tokens))
                cpu = cpu_seconds(proc.pid) - cpu
                ttft = statistics.median(s.ttft * 1000 for s in samples)
                results[name].append((ttft, sum(s.tokens for s in samples) / wall, cpu * 1000))
        print(f"# machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
        print(
            f"# /v1/messages, {args.streams} streams, {args.tokens} tokens/stream, stand-in "
            f"{args.token_delay * 1000:.0f} ms/token, {args.rounds} streams per client per run, "
            f"{args.runs} alternating runs per variant (medians)"
        )
        print("| relay | TTFT p50 ms | tokens/s | relay CPU ms per run |")
        print("|---|---|---|---|")
        med = {}
        for name, rows in results.items():
            med[name] = tuple(statistics.median(r[i] for r in rows) for i in range(3))
            print(f"| {name} | {med[name][0]:.1f} | {med[name][1]:.0f} | {med[name][2]:.0f} |")
        framing, accounted = parse_cost()
        print(
            f"\nper streamed token, in-process: framing {framing:.1f} µs CPU, "
            f"framing + accounting {accounted:.1f} µs CPU"
        )
        plain, counted_m = med["plain relay"], med["relay + accounting"]
        print(
            f"\naccounting: {counted_m[0] - plain[0]:+.1f} ms p50 TTFT, "
            f"{100 * (counted_m[1] / plain[1] - 1):+.1f} % throughput, "
            f"{counted_m[2] - plain[2]:+.0f} ms relay CPU per run"
        )
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
