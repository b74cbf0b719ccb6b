"""Usage accounting's cost, side by side (a script, not a test): the same keepalive relay
(coderig/runtime/sse_keepalive.py) in front of the same stand-in model server, once without and once
with accounting (--usage-file, --metrics: every response parsed for its usage, the record written
every second, the health probe), streaming /v1/messages at 64 concurrent streams (Claude Code's
path). Only the relay differs between the two, so the difference is what accounting costs; the
gateway in front adds the same to both. Target (issue #19): at most 2 % of throughput and 2 ms of p50
time to first token.

Robust to a shared, noisy machine: the two variants run in short back-to-back pairs (ABBA order, so
neither always runs second), and each pair's difference is taken between two runs seconds apart,
which cancels the load drifting over minutes; the report gives each variant's median and spread
(interquartile range) and the median and spread of the paired differences, plus every run's raw
row. The in-process CPU per token of the readers (no I/O, not blurred by load) comes last.

    uv run python bench/usage_bench.py
    uv run python bench/usage_bench.py --streams 64 --pairs 12 --tokens 64
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
    for _ in range(streams):  # the meter feeds its own framer: the relay parses the framing once
        meter = ResponseMeter(deque([Exchange("a", "/v1/messages", 0.0)]), time.monotonic, id)
        for c in chunks:
            meter.feed(c)
    meter_t = time.process_time() - meter_t
    return framer_t / tokens * 1e6, meter_t / tokens * 1e6


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, med, q3


def spread(values: list[float], fmt: str) -> str:
    q1, med, q3 = quartiles(values)
    return f"{med:{fmt}} ({q1:{fmt}} … {q3:{fmt}})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=12, help="back-to-back pairs of runs (one of each variant)")
    ap.add_argument("--rounds", type=int, default=2, help="sequential streams per client in a run")
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
        names = list(variants)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
        raw: list[str] = []
        for pair in range(args.pairs):  # ABBA: neither variant always runs second on a warmer machine
            for name in names[:: 1 if pair % 2 == 0 else -1]:
                target, proc = variants[name]
                load = os.getloadavg()[0]
                cpu = cpu_seconds(proc.pid)
                samples, wall = asyncio.run(level(target, args.streams, args.rounds, args.tokens))
                cpu = cpu_seconds(proc.pid) - cpu
                row = (
                    statistics.median(s.ttft * 1000 for s in samples),
                    sum(s.tokens for s in samples) / wall,
                    cpu * 1000,
                )
                results[name].append(row)
                raw.append(f"| {pair} | {name} | {row[0]:.1f} | {row[1]:.0f} | {row[2]:.0f} | {load:.1f} |")
        print(f"# machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
        print(
            f"# /v1/messages, {args.streams} streams, {args.tokens} tokens/stream, stand-in "
            f"{args.token_delay * 1000:.0f} ms/token, {args.rounds} streams per client per run, "
            f"{args.pairs} back-to-back pairs of runs (ABBA)"
        )
        print("\n| relay | TTFT p50 ms: median (IQR) | tokens/s: median (IQR) | relay CPU ms per run |")
        print("|---|---|---|---|")
        for name in names:
            rows = results[name]
            print(
                f"| {name} | {spread([r[0] for r in rows], '.1f')} | {spread([r[1] for r in rows], '.0f')} "
                f"| {spread([r[2] for r in rows], '.0f')} |"
            )
        plain, counted_rows = results[names[0]], results[names[1]]
        d_ttft = [b[0] - a[0] for a, b in zip(plain, counted_rows, strict=True)]
        d_tput = [100 * (b[1] / a[1] - 1) for a, b in zip(plain, counted_rows, strict=True)]
        d_cpu = [b[2] - a[2] for a, b in zip(plain, counted_rows, strict=True)]
        print(
            f"\naccounting, paired (each pair's two runs seconds apart), median (IQR): "
            f"{spread(d_ttft, '+.1f')} ms p50 TTFT, {spread(d_tput, '+.1f')} % throughput, "
            f"{spread(d_cpu, '+.0f')} ms relay CPU per run"
        )
        framing, accounted = parse_cost()
        print(
            f"\nper streamed token, in-process: framing {framing:.1f} µs CPU, "
            f"framing + accounting (the meter feeding its framer) {accounted:.1f} µs CPU"
        )
        print("\nevery run:\n\n| pair | relay | TTFT p50 ms | tokens/s | relay CPU ms | load avg (1 min) |")
        print("|---|---|---|---|---|---|")
        print("\n".join(raw))
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
