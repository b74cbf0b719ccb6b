"""What the daily-budget check costs per request (a script, not a test): the same `coderig frontdoor
run` in front of the same stand-in, once without budgets and once with one (`--daily-tokens`), so
every model request also makes nginx's loopback subrequest to the relay's usage listener. Sequential
non-streamed `/v1/messages/count_tokens` requests over one keep-alive connection (the cheapest model
request: the check's share is largest there), in back-to-back ABBA pairs; reports the median request
time of each variant and the paired difference (median and interquartile range).

    uv run python bench/budget_bench.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.frontdoor_fixtures import running_frontdoor, standin_server  # noqa: E402

MODEL = "bench-model"
KEYS = {"alice": "crk-alice0123456789abcdefABCDEFbench0", "bob": "crk-bob0123456789abcdefABCDEFbench000"}


def median_ms(port: int, requests: int) -> float:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "count me"}]})
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEYS['alice']}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            conn.request("POST", "/v1/messages/count_tokens", body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            times.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="requests per run")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coderig-budget-bench-"))
    fast = ("--plain-http", "--rate-limit-per-minute", "6000000")  # the per-developer limit out of the way
    variants = {"no budget": fast, "budget check": (*fast, "--daily-tokens", "bob=1000000000")}
    results: dict[str, list[float]] = {name: [] for name in variants}
    with standin_server(model=MODEL) as model:
        doors = {}
        with (
            running_frontdoor(model.url, MODEL, work / "a", KEYS, *variants["no budget"]) as a,
            running_frontdoor(model.url, MODEL, work / "b", KEYS, *variants["budget check"]) as b,
        ):
            doors = {"no budget": a.port, "budget check": b.port}
            names = list(variants)
            for pair in range(args.pairs):
                for name in names[:: 1 if pair % 2 == 0 else -1]:
                    results[name].append(median_ms(doors[name], args.requests))
    print(
        f"# count_tokens through `coderig frontdoor run`, {args.requests} sequential requests per run, "
        f"{args.pairs} ABBA pairs"
    )
    for name, rows in results.items():
        print(f"{name}: median request {statistics.median(rows):.2f} ms (runs: {', '.join(f'{r:.2f}' for r in rows)})")
    diffs = [b - a for a, b in zip(results["no budget"], results["budget check"], strict=True)]
    q1, med, q3 = statistics.quantiles(diffs, n=4, method="inclusive")
    print(f"budget check, paired: {med:+.2f} ms per request (IQR {q1:+.2f} … {q3:+.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
