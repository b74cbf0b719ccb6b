"""Idle detection, shared by every target that can stop paying for an unused GPU.

Pure: stdlib only (it ships inside the AWS reaper Lambda zip, where pydantic is not available).

Idle means no requests through the gateway and none running (or queued) in the model server for the
policy window -- not low GPU utilisation, not SSH sessions. When a signal is missing or stale the
answer is "keep", with the reason, never "stop".

Pieces:
- `parse_prometheus` / `metric_sum`: read Prometheus text exposition (vLLM `/metrics`, a gateway counter).
- `parse_stub_status`: read nginx `stub_status` text (a gateway without a Prometheus endpoint).
- `NodeCounters`, `read_node_counters`, `counter_delta`: what a node publishes per period.
- `OfficeHours`: a timezone-aware weekly window ("start inside, stop outside").
- `decide`: the decision for one node from its recent `Sample`s.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# --- Prometheus text -------------------------------------------------------------------------------

# vLLM (v1 engine) metric names. Counters carry the `_total` suffix in the exposition.
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_SUCCESS_TOTAL = "vllm:request_success_total"
# The gateway's request counter (Prometheus text). Counts API requests only (not /healthz, not scrapes).
GATEWAY_REQUESTS_TOTAL = "coderig_gateway_requests_total"


@dataclass(frozen=True)
class PromSample:
    name: str
    labels: Mapping[str, str]
    value: float


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LINE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})?\s+(?P<value>\S+)(?:\s+(?P<ts>-?\d+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class ReaperError(RuntimeError):
    """A reaper or publisher failure to report in one line (bad environment, an API call that failed)."""


class MetricsParseError(ValueError):
    """The text is not Prometheus exposition format."""


def _parse_labels(text: str, line_no: int) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            raise MetricsParseError(f"line {line_no}: bad label set {{{text}}}")
        labels[m.group(1)] = re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group(0)], m.group(2))
        pos = m.end()
    return labels


def parse_prometheus(text: str) -> list[PromSample]:
    """Parse Prometheus text exposition (version 0.0.4). Comments (# HELP / # TYPE) are skipped."""
    samples: list[PromSample] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise MetricsParseError(f"line {line_no}: not a metric sample: {line[:120]!r}")
        try:
            value = float(m.group("value"))
        except ValueError as exc:
            raise MetricsParseError(f"line {line_no}: bad value {m.group('value')!r}") from exc
        labels = _parse_labels(m.group("labels"), line_no) if m.group("labels") else {}
        samples.append(PromSample(m.group("name"), labels, value))
    return samples


def metric_sum(samples: Iterable[PromSample], name: str, match: Mapping[str, str] | None = None) -> float | None:
    """Sum of every sample called `name` whose labels include `match`; None when there is none.

    NaN samples are ignored (a gauge that has not been set yet)."""
    total: float | None = None
    for s in samples:
        if s.name != name or math.isnan(s.value):
            continue
        if match and any(s.labels.get(k) != v for k, v in match.items()):
            continue
        total = (total or 0.0) + s.value
    return total


_STUB = re.compile(
    r"Active connections:\s*(?P<active>\d+)\s*server accepts handled requests\s*"
    r"(?P<accepts>\d+)\s+(?P<handled>\d+)\s+(?P<requests>\d+)",
    re.MULTILINE,
)


def parse_stub_status(text: str) -> dict[str, int]:
    """Parse nginx `stub_status` output into {active, accepts, handled, requests}."""
    m = _STUB.search(text)
    if not m:
        raise MetricsParseError("not nginx stub_status text")
    return {k: int(v) for k, v in m.groupdict().items()}


# --- What a node publishes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCounters:
    """One scrape of a node. Any field is None when its source did not answer or lacks the metric."""

    gateway_requests_total: float | None
    completed_total: float | None
    running: float | None  # running + waiting (queued requests are in flight for the user)


def read_node_counters(
    vllm_text: str | None,
    gateway_text: str | None,
    *,
    model_name: str | None = None,
    gateway_metric: str = GATEWAY_REQUESTS_TOTAL,
) -> NodeCounters:
    """Pick the counters the idle decision needs out of a vLLM /metrics text and a gateway text.

    The gateway text may be Prometheus exposition (counter `gateway_metric`, summed over labels) or
    nginx stub_status (its `requests` number)."""
    running = completed = gateway = None
    if vllm_text is not None:
        samples = parse_prometheus(vllm_text)
        match = {"model_name": model_name} if model_name else None
        r = metric_sum(samples, VLLM_RUNNING, match)
        w = metric_sum(samples, VLLM_WAITING, match)
        running = None if r is None else r + (w or 0.0)
        completed = metric_sum(samples, VLLM_SUCCESS_TOTAL, match)
    if gateway_text is not None:
        if "server accepts handled requests" in gateway_text:
            gateway = float(parse_stub_status(gateway_text)["requests"])
        else:
            gateway = metric_sum(parse_prometheus(gateway_text), gateway_metric)
    return NodeCounters(gateway_requests_total=gateway, completed_total=completed, running=running)


def counter_delta(previous: float | None, current: float | None) -> float | None:
    """Increase of a monotonic counter between two scrapes.

    No previous value: the whole current value (the counter started with its process, so this only
    over-counts, which keeps a node up rather than stopping it). A decrease means the process restarted:
    the current value is what happened since."""
    if current is None:
        return None
    if previous is None or current < previous:
        return current
    return current - previous


# --- Office hours ------------------------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleError(ValueError):
    """An office-hours specification that cannot be used."""


def _parse_days(spec: str | Sequence[str]) -> frozenset[int]:
    parts = (
        [p.strip().lower() for p in spec.split(",")]
        if isinstance(spec, str)
        else [str(p).strip().lower() for p in spec]
    )
    days: set[int] = set()
    for part in parts:
        if not part:
            continue
        if "-" in part:
            a, b = (x.strip()[:3] for x in part.split("-", 1))
            if a not in _DAYS or b not in _DAYS:
                raise ScheduleError(f"days: {part!r} is not a day range like 'mon-fri'")
            i, j = _DAYS.index(a), _DAYS.index(b)
            days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        else:
            if part[:3] not in _DAYS:
                raise ScheduleError(f"days: {part!r} is not one of {', '.join(_DAYS)}")
            days.add(_DAYS.index(part[:3]))
    if not days:
        raise ScheduleError("days: no day given")
    return frozenset(days)


def _parse_time(key: str, value: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError as exc:
        raise ScheduleError(f"{key}: {value!r} is not a time like '08:30'") from exc


@dataclass(frozen=True)
class OfficeHours:
    """Weekly window in a time zone. `start > end` spans midnight (e.g. 22:00-06:00)."""

    timezone: str
    start: time
    end: time
    days: frozenset[int] = field(default_factory=lambda: frozenset(range(5)))  # 0 = Monday

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(f"timezone: {self.timezone!r} is not an IANA time zone") from exc
        if self.start == self.end:
            raise ScheduleError("start and end are equal: the window would be empty")

    @classmethod
    def from_dict(cls, spec: Mapping[str, object]) -> OfficeHours:
        """From `{timezone: Europe/Paris, days: mon-fri, start: "08:00", end: "19:00"}`."""
        unknown = set(spec) - {"timezone", "days", "start", "end"}
        if unknown:
            raise ScheduleError(f"unknown keys {sorted(unknown)}; allowed: timezone, days, start, end")
        for key in ("timezone", "start", "end"):
            if not isinstance(spec.get(key), str):
                raise ScheduleError(f"{key}: required, a string")
        days = spec.get("days", "mon-fri")
        if not isinstance(days, str | list | tuple):
            raise ScheduleError("days: a string like 'mon-fri' or a list of day names")
        return cls(
            timezone=str(spec["timezone"]),
            start=_parse_time("start", str(spec["start"])),
            end=_parse_time("end", str(spec["end"])),
            days=_parse_days(days),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "timezone": self.timezone,
            "days": ",".join(_DAYS[d] for d in sorted(self.days)),
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
        }

    def contains(self, now: datetime) -> bool:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        local = now.astimezone(ZoneInfo(self.timezone))
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= t < self.end
        # Overnight: the part after midnight belongs to the previous day's window.
        if t >= self.start:
            return local.weekday() in self.days
        if t < self.end:
            return (local.weekday() - 1) % 7 in self.days
        return False


# The idle window when a stack sets office hours but no stopAfterMinutes (every reaper, every target).
DEFAULT_STOP_AFTER_MINUTES = 45
DEFAULT_PERIOD_SECONDS = 60  # how often the ssh/local reaper looks (coderig:idle.periodSeconds)

# How the reapers (the AWS Lambda, the Kubernetes CronJob) receive the policy: environment variables.
ENV_SCHEDULE = "CODERIG_SCHEDULE"  # JSON of OfficeHours.to_dict(), or empty: no office hours
ENV_DRY_RUN = "CODERIG_DRY_RUN"


def policy_env(schedule: OfficeHours | None, dry_run: bool) -> dict[str, str]:
    return {
        ENV_SCHEDULE: json.dumps(schedule.to_dict()) if schedule else "",
        ENV_DRY_RUN: "true" if dry_run else "false",
    }


def schedule_from_env(env: Mapping[str, str]) -> OfficeHours | None:
    text = env.get(ENV_SCHEDULE, "").strip()
    if not text:
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"{ENV_SCHEDULE}: not JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ScheduleError(f"{ENV_SCHEDULE}: expected a JSON object")
    return OfficeHours.from_dict(spec)


def dry_run_from_env(env: Mapping[str, str]) -> bool:
    return env.get(ENV_DRY_RUN, "").strip().lower() in {"1", "true", "yes", "on"}


# --- The decision ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One period of a node's published metrics, stamped with the period's start.

    `gateway_requests` and `completed` are counts during the period; `running` is the most requests
    running or queued at once during it. None: the metric has no datapoint for this period."""

    at: datetime
    gateway_requests: float | None = None
    completed: float | None = None
    running: float | None = None


Action = Literal["stop", "keep", "start"]

# The signals a node publishes; `decide(required=...)` lists the ones that must be present and fresh.
SIGNALS: tuple[str, ...] = ("running", "completed", "gateway_requests")
_SIGNAL_LABELS = {
    "running": "running requests",
    "completed": "completed requests",
    "gateway_requests": "gateway requests",
}


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def _minutes(td: timedelta) -> str:
    return f"{td.total_seconds() / 60:.0f} min"


def decide(
    samples: Sequence[Sample],
    now: datetime,
    stop_after_minutes: float,
    schedule: OfficeHours | None = None,
    *,
    state: str = "running",
    period_seconds: int = 60,
    stale_after_seconds: int | None = None,
    required: Sequence[str] = SIGNALS,
    up_since: datetime | None = None,
) -> Decision:
    """What to do with one node.

    - `state` is the node's state ("running", "stopped", anything else is in transition: keep);
      `up_since` when it last started (a node up for less than the window is kept).
    - Office hours (optional): inside them a stopped node is started and a running one is kept; outside
      them, and with no schedule at all, the idle rule below applies.
    - Idle rule: stop only when metrics cover the whole window of `stop_after_minutes`, the newest
      datapoint of every `required` signal is fresh (within `stale_after_seconds`, default 3 periods
      plus 2 minutes of publishing lag), and no period in the window saw a gateway request, a
      completed request or a running one.
      Requests running in the newest period always keep the node, whatever the schedule says.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if stop_after_minutes <= 0:
        raise ValueError("stop_after_minutes must be positive")
    unknown = set(required) - set(SIGNALS)
    if unknown:
        raise ValueError(f"unknown signals {sorted(unknown)}; known: {', '.join(SIGNALS)}")
    inside = schedule.contains(now) if schedule else None
    hours = "inside office hours" if inside else "outside office hours"

    if state == "stopped":
        if inside:
            return Decision("start", f"stopped and {hours} ({_fmt_schedule(schedule)})")
        return Decision("keep", "stopped" + (f"; {hours}" if schedule else ""))
    if state != "running":
        return Decision("keep", f"instance is {state}; nothing to do until it settles")

    window = timedelta(minutes=stop_after_minutes)
    if stale_after_seconds is None:
        stale_after_seconds = 3 * period_seconds + 120
    stale = timedelta(seconds=stale_after_seconds)
    period = timedelta(seconds=period_seconds)
    ordered = sorted((s for s in samples if s.at <= now), key=lambda s: s.at)

    latest_running = next((s for s in reversed(ordered) if s.running is not None), None)
    if latest_running is not None and latest_running.running and now - latest_running.at <= stale:
        return Decision("keep", f"{latest_running.running:g} requests running or queued")

    if inside:
        return Decision("keep", f"{hours} ({_fmt_schedule(schedule)})")

    if up_since is not None and now - up_since < window:
        up = _minutes(now - up_since)
        return Decision("keep", f"up for {up}, less than the {_minutes(window)} idle window")
    if not ordered:
        return Decision("keep", "no metrics published by the node: not stopping without data")
    for attr in required:
        label = _SIGNAL_LABELS[attr]
        newest = next((s for s in reversed(ordered) if getattr(s, attr) is not None), None)
        if newest is None:
            return Decision("keep", f"no {label} metric from the node: not stopping without data")
        age = now - newest.at
        if age > stale:
            return Decision(
                "keep",
                f"{label} metric is stale: newest datapoint {_minutes(age)} old "
                f"(limit {_minutes(stale)}): not stopping without fresh data",
            )
    oldest = ordered[0].at
    if now - oldest + period < window:
        return Decision(
            "keep",
            f"metrics cover only {_minutes(now - oldest + period)} of the {_minutes(window)} idle window",
        )

    in_window = [s for s in ordered if s.at + period > now - window]
    busy = [s for s in in_window if any((getattr(s, a) or 0) > 0 for a in SIGNALS)]
    if busy:
        last = busy[-1]
        gw = sum(s.gateway_requests or 0 for s in in_window)
        done = sum(s.completed or 0 for s in in_window)
        return Decision(
            "keep",
            f"active in the last {_minutes(window)}: {gw:g} gateway requests, {done:g} completed, "
            f"last activity {_minutes(now - last.at)} ago",
        )
    why = f"idle for {_minutes(window)}: no gateway requests, no completed or running requests"
    return Decision("stop", why + (f"; {hours}" if schedule else ""))


def _fmt_schedule(schedule: OfficeHours | None) -> str:
    if schedule is None:
        return "no schedule"
    d = schedule.to_dict()
    return f"{d['days']} {d['start']}-{d['end']} {d['timezone']}"


def utcnow() -> datetime:
    return datetime.now(UTC)
