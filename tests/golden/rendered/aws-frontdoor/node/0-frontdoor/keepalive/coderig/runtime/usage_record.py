"""The usage record: per-developer counters the relay keeps, the file they live in, and their
Prometheus exposition (stdlib only).

The record is one JSON file (mode 0600, on the gateway machine's host volume), rewritten whole and
atomically (temporary file, fsync, rename, fsync of the directory) every flush interval and on
exit; the relay loads it at start, so counters survive a restart and a host reboot loses at most
one interval. A developer removed from the stack keeps every row: nothing is ever deleted.

It holds numbers only: per developer and path, requests by status; per developer and UTC day,
requests and tokens (input, cached input, output) and a time-to-first-token histogram; when the
model server answered its health probe (awake intervals). Never a prompt, a completion or a key.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coderig.runtime.usage import Exchange

VERSION = 1
# seconds; first token of a coding turn is 0.1 s (cache hit) to minutes (a long prefill in a queue)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
TOKEN_KINDS = ("input", "cached", "output")


class RecordError(ValueError):
    """The record file cannot be read as a usage record (one line, names the file)."""


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, plus +Inf last (not cumulative)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket holding the q-th observation (as Prometheus'
        histogram_quantile does); None without observations."""
        n = self.count
        if not n:
            return None
        rank, seen = q * n, 0
        for i, c in enumerate(self.counts):
            if seen + c >= rank and c:
                lo = self.bounds[i - 1] if i else 0.0
                hi = self.bounds[i] if i < len(self.bounds) else self.bounds[-1]
                return lo + (hi - lo) * (rank - seen) / c
            seen += c
        return self.bounds[-1]

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "sum": round(self.total, 6)}

    @classmethod
    def from_json(cls, bounds: tuple[float, ...], obj: Any) -> Histogram:
        counts = [int(c) for c in obj["counts"]]
        if len(counts) != len(bounds) + 1:
            raise ValueError("histogram buckets do not match")
        return cls(bounds, counts, float(obj["sum"]))


@dataclass
class DayRow:
    requests: int = 0
    errors: int = 0
    input: int = 0
    cached: int = 0
    output: int = 0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "input": self.input,
            "cached": self.cached,
            "output": self.output,
            "ttft": self.ttft.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> DayRow:
        return cls(
            int(obj["requests"]),
            int(obj["errors"]),
            int(obj["input"]),
            int(obj["cached"]),
            int(obj["output"]),
            Histogram.from_json(TTFT_BUCKETS, obj["ttft"]),
        )


BUSY_GAP_S = 60.0  # requests less than this apart make one busy interval (bounds the record's size)


def merge_interval(intervals: list[list[float]], start: float, end: float, gap: float) -> None:
    """Add [start, end] to sorted, disjoint intervals, joining any it overlaps or comes within `gap`
    of (intervals arrive nearly in order: the scan starts at the end)."""
    i = len(intervals)
    while i > 0 and intervals[i - 1][1] + gap >= start:
        i -= 1
    joined = [start, end]
    while i < len(intervals) and intervals[i][0] - gap <= end:
        joined = [min(joined[0], intervals[i][0]), max(joined[1], intervals[i][1])]
        del intervals[i]
    intervals.insert(i, joined)


def utc_day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


@dataclass
class Ledger:
    """Everything counted since the record began (monotonic counters, as Prometheus expects)."""

    started: float = field(default_factory=time.time)
    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (developer, path, code)
    tokens: dict[tuple[str, str], int] = field(default_factory=dict)  # (developer, kind)
    ttft: dict[str, Histogram] = field(default_factory=dict)  # developer
    duration: dict[str, Histogram] = field(default_factory=dict)  # developer
    days: dict[tuple[str, str], DayRow] = field(default_factory=dict)  # (UTC day, developer)
    awake: list[list[float]] = field(default_factory=list)  # [start, end] epochs, merged
    busy: list[list[float]] = field(default_factory=list)  # when requests ran: [start, end] epochs, merged
    changed: bool = False

    def add(self, ex: Exchange, now: float) -> None:
        """One finished exchange (the relay's clock is monotonic: durations only)."""
        dev, code = ex.developer, str(ex.status)
        key = (dev, ex.path, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.changed = True
        if ex.status == 404:
            # the model server does not serve that name (Claude Code's claude-haiku-…): the gateway
            # replays the request to LiteLLM, whose own hop through the relay is the one counted
            return
        row = self.days.setdefault((utc_day(now), dev), DayRow())
        row.requests += 1
        if ex.status >= 400 or ex.status == 0:
            row.errors += 1
        u = ex.usage
        if u is not None:
            for kind, n in (("input", u.input), ("cached", u.cached), ("output", u.output)):
                self.tokens[(dev, kind)] = self.tokens.get((dev, kind), 0) + n
            row.input, row.cached, row.output = row.input + u.input, row.cached + u.cached, row.output + u.output
        if ex.first_byte is not None and 200 <= ex.status < 300:
            ttft = max(0.0, ex.first_byte - ex.started)
            self.ttft.setdefault(dev, Histogram(TTFT_BUCKETS)).observe(ttft)
            row.ttft.observe(ttft)
        if ex.finished is not None:
            took = max(0.0, ex.finished - ex.started)
            self.duration.setdefault(dev, Histogram(DURATION_BUCKETS)).observe(took)
            merge_interval(self.busy, now - took, now, BUSY_GAP_S)
        self.changed = True

    def tokens_today(self, developer: str, now: float) -> int:
        row = self.days.get((utc_day(now), developer))
        return 0 if row is None else row.input + row.output

    def mark_awake(self, start: float, end: float, gap: float) -> None:
        """The model server answered between start and end; joins the last interval when the gap
        since it is at most `gap` seconds (one probe interval and a margin)."""
        merge_interval(self.awake, start, end, gap)
        self.changed = True

    # ------------------------------------------------------------ file

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "started": self.started,
            "requests": [[d, p, c, n] for (d, p, c), n in sorted(self.requests.items())],
            "tokens": [[d, k, n] for (d, k), n in sorted(self.tokens.items())],
            "ttft": {d: h.to_json() for d, h in sorted(self.ttft.items())},
            "duration": {d: h.to_json() for d, h in sorted(self.duration.items())},
            "days": [[day, d, row.to_json()] for (day, d), row in sorted(self.days.items())],
            "awake": [[round(a, 3), round(b, 3)] for a, b in self.awake],
            "busy": [[round(a, 3), round(b, 3)] for a, b in self.busy],
        }

    @classmethod
    def from_json(cls, obj: Any) -> Ledger:
        if not isinstance(obj, dict) or obj.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} usage record")
        return cls(
            started=float(obj["started"]),
            requests={(str(d), str(p), str(c)): int(n) for d, p, c, n in obj["requests"]},
            tokens={(str(d), str(k)): int(n) for d, k, n in obj["tokens"]},
            ttft={str(d): Histogram.from_json(TTFT_BUCKETS, h) for d, h in obj["ttft"].items()},
            duration={str(d): Histogram.from_json(DURATION_BUCKETS, h) for d, h in obj["duration"].items()},
            days={(str(day), str(d)): DayRow.from_json(row) for day, d, row in obj["days"]},
            awake=[[float(a), float(b)] for a, b in obj["awake"]],
            busy=[[float(a), float(b)] for a, b in obj["busy"]],
        )


def load(path: Path) -> Ledger:
    """The record at `path`; RecordError (one line) when it is unreadable or not a record."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecordError(f"{path}: no usage record yet (the gateway writes it after its first request)") from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot read the usage record ({exc.strerror})") from None
    try:
        return Ledger.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError(f"{path}: corrupt usage record ({str(exc).splitlines()[0][:120]})") from None


def save(ledger: Ledger, path: Path) -> None:
    """Atomic, durable replace: a reader sees the old record or the new one, never half."""
    write_atomic(snapshot(ledger), path)


def snapshot(ledger: Ledger) -> bytes:
    """The record's bytes as of now (marks the ledger written: a change after this is the next one's)."""
    ledger.changed = False
    return json.dumps(ledger.to_json(), separators=(",", ":")).encode()


def write_atomic(data: bytes, path: Path) -> None:
    """Temporary file, fsync, rename, fsync of the directory (blocking: the relay runs it in a thread)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ---------------------------------------------------------------- Prometheus text format 0.0.4


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(name: str, help_text: str, hists: dict[str, Histogram]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for dev, h in sorted(hists.items()):
        lab = f'developer="{_label(dev)}"'
        acc = 0
        for bound, c in zip(h.bounds, h.counts, strict=False):
            acc += c
            out.append(f'{name}_bucket{{{lab},le="{bound:g}"}} {acc}')
        out.append(f'{name}_bucket{{{lab},le="+Inf"}} {h.count}')
        out.append(f"{name}_sum{{{lab}}} {h.total:.6f}")
        out.append(f"{name}_count{{{lab}}} {h.count}")
    return out


def _gateway_lines(up: bool | None) -> list[str]:
    if up is None:
        return []
    return [
        "# HELP coderig_gateway_up 1 when the gateway's listener accepted the last probe.",
        "# TYPE coderig_gateway_up gauge",
        f"coderig_gateway_up {int(up)}",
    ]


def exposition(ledger: Ledger, awake: dict[str, bool | None], gateway_up: bool | None = None) -> str:
    """The relay's own metrics; `awake`: node (model server address) -> answered its last probe;
    `gateway_up`: the gateway's listener accepted the last probe (None: not probed)."""
    tokens, nodes = sorted(ledger.tokens.items()), sorted(awake.items())
    out = [
        "# HELP coderig_requests_total Model requests through the gateway, by developer, path and status.",
        "# TYPE coderig_requests_total counter",
        *(
            f'coderig_requests_total{{developer="{_label(d)}",path="{_label(p)}",code="{c}"}} {n}'
            for (d, p, c), n in sorted(ledger.requests.items())
        ),
        "# HELP coderig_tokens_total Tokens the model server reported, by developer and kind "
        "(input: every prompt token; cached: of which read from the prefix cache; output).",
        "# TYPE coderig_tokens_total counter",
        *(f'coderig_tokens_total{{developer="{_label(d)}",kind="{k}"}} {n}' for (d, k), n in tokens),
        *_histogram("coderig_ttft_seconds", "Time from the request to the first response byte.", ledger.ttft),
        *_histogram("coderig_request_duration_seconds", "Time to the response's end.", ledger.duration),
        "# HELP coderig_node_awake 1 when the node's model server answered its last health probe and is not asleep.",
        "# TYPE coderig_node_awake gauge",
        *(f'coderig_node_awake{{node="{_label(n)}"}} {int(bool(a))}' for n, a in nodes if a is not None),
        *_gateway_lines(gateway_up),
        "# HELP coderig_usage_record_start_seconds When the usage record began (Unix time).",
        "# TYPE coderig_usage_record_start_seconds gauge",
        f"coderig_usage_record_start_seconds {ledger.started:.3f}",
    ]
    return "\n".join(out) + "\n"
