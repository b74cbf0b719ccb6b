"""What `coderig usage` says about a usage record: per developer (or per day) requests, tokens,
cached share and median time to first token, and the period's GPU cost split by use. Pure.

Cost: the stack's hourly price (the plan's, or the operator's `--usd-per-hour`) times the time a
model server was awake in the period (the relay's health probes, coderig.runtime.usage_server).
The part of that time no request ran is the idle share; the rest is split between developers by
their share of the period's tokens (input + output), which is what kept the GPUs busy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coderig.runtime.usage_record import TTFT_BUCKETS, DayRow, Histogram, Ledger, utc_day

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """'7d' -> seconds; ValueError naming the option otherwise."""
    match = _SINCE.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--since {text!r}: expected a number and a unit, m h d or w (30m, 24h, 7d, 2w)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def overlap(intervals: list[list[float]], start: float, end: float) -> list[list[float]]:
    """The parts of `intervals` inside [start, end]."""
    return [[max(a, start), min(b, end)] for a, b in intervals if b > start and a < end]


def intersect(a: list[list[float]], b: list[list[float]]) -> float:
    """Seconds in both sets of sorted disjoint intervals."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


@dataclass(frozen=True)
class Period:
    start: float
    end: float

    @property
    def first_day(self) -> str:
        return utc_day(self.start)


def _sum(rows: list[DayRow]) -> dict[str, Any]:
    hist = Histogram(TTFT_BUCKETS)
    for r in rows:
        hist.counts = [x + y for x, y in zip(hist.counts, r.ttft.counts, strict=True)]
        hist.total += r.ttft.total
    inp, cached, out = sum(r.input for r in rows), sum(r.cached for r in rows), sum(r.output for r in rows)
    p50 = hist.quantile(0.5)
    return {
        "requests": sum(r.requests for r in rows),
        "errors": sum(r.errors for r in rows),
        "input_tokens": inp,
        "cached_tokens": cached,
        "output_tokens": out,
        "cached_share": round(cached / inp, 4) if inp else None,
        "p50_ttft_s": None if p50 is None else round(p50, 3),
    }


def build(ledger: Ledger, stack: str, period: Period, usd_per_hour: float | None, by: str) -> dict[str, Any]:
    """The report as one JSON-able dict (what `--json` prints; the table is made from it)."""
    rows = {key: row for key, row in ledger.days.items() if key[0] >= period.first_day}
    awake = overlap(ledger.awake, period.start, period.end)
    awake_s = sum(b - a for a, b in awake)
    busy_s = intersect(awake, overlap(ledger.busy, period.start, period.end))
    idle_s = max(0.0, awake_s - busy_s)
    price = usd_per_hour
    cost = None if price is None else awake_s / 3600 * price
    developers = sorted({d for _, d in rows})
    per_dev = {d: _sum([r for (_, dev), r in rows.items() if dev == d]) for d in developers}
    tokens = {d: v["input_tokens"] + v["output_tokens"] for d, v in per_dev.items()}
    all_tokens = sum(tokens.values())
    for d, v in per_dev.items():
        share = tokens[d] / all_tokens if all_tokens else 0.0
        v["cost_usd"] = None if price is None else round(busy_s / 3600 * price * share, 4)
    days = sorted({day for day, _ in rows})
    per_day = {day: _sum([r for (dd, _), r in rows.items() if dd == day]) for day in days}
    for day, v in per_day.items():
        v["by_developer"] = {d: rows[(day, d)].input + rows[(day, d)].output for d in developers if (day, d) in rows}
    return {
        "stack": stack,
        "since": period.start,
        "until": period.end,
        "by": by,
        "usd_per_hour": price,
        "awake_hours": round(awake_s / 3600, 4),
        "busy_hours": round(busy_s / 3600, 4),
        "idle_share": round(idle_s / awake_s, 4) if awake_s else None,
        "cost_usd": None if cost is None else round(cost, 4),
        "idle_cost_usd": None if price is None else round(idle_s / 3600 * price, 4),
        "developers": [{"developer": d, **v} for d, v in per_dev.items()],
        "days": [{"day": day, **v} for day, v in per_day.items()],
        "awake": awake,
    }


def _tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1e3:.1f}k" if n >= 10_000 else str(n)


def headline(report: dict[str, Any], since_text: str) -> str:
    awake, idle = report["awake_hours"], report["idle_share"]
    idle_text = "no awake time recorded" if idle is None else f"{idle:.0%} idle"
    if report["cost_usd"] is None:
        cost = "GPU cost unknown (no hourly price for this target: give --usd-per-hour)"
    else:
        cost = f"${report['cost_usd']:,.2f} of GPU time (${report['idle_cost_usd']:,.2f} idle)"
    hours = f"{awake:.1f} h awake, {report['busy_hours']:.1f} h serving"
    return f"{report['stack']}, last {since_text}: {cost}, {idle_text}; {hours}"


def table(report: dict[str, Any], since_text: str) -> str:
    """The headline, then one row per developer (or day)."""
    key = "developer" if report["by"] == "developer" else "day"
    rows = report["developers"] if key == "developer" else report["days"]
    head = [key, "requests", "errors", "tokens in", "tokens out", "cached", "p50 TTFT", "GPU $"]
    body = []
    for r in rows:
        share = "-" if r["cached_share"] is None else f"{r['cached_share']:.0%}"
        ttft = "-" if r["p50_ttft_s"] is None else f"{r['p50_ttft_s']:.2f}s"
        usd = r.get("cost_usd")
        body.append(
            [
                r[key],
                str(r["requests"]),
                str(r["errors"]),
                _tokens(r["input_tokens"]),
                _tokens(r["output_tokens"]),
                share,
                ttft,
                "-" if usd is None else f"{usd:,.2f}",
            ]
        )
    if not body:
        return headline(report, since_text) + "\nno requests in this period"
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in [head, *body]
    ]
    return "\n".join([headline(report, since_text), *lines])
