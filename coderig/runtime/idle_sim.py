"""Replay requests against an idle policy: what a GPU machine costs and what developers wait for.

Pure and stdlib only. The decision is the real one (`idle.decide`), fed per-period samples the way
a reaper reads them (its period, its metrics lag); each mechanism (vLLM sleep, a container stop, an
EC2 stop) adds its own timings. Used by bench/idle_week.py and by `awake_hours`, the model a plan
prices a week with (one model for both: tests check that they agree).

Times are seconds from the start of the replay (`t0`, a timezone-aware datetime, anchors office
hours and `decide`'s clock).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coderig.runtime import idle


@dataclass(frozen=True)
class Request:
    """One developer's turn. Closed loop: a turn with `gap` is sent `gap` seconds after the same
    developer's previous answer (so a wait delays what follows); without one it is sent at `at`, or
    as soon as the previous answer came if that is later."""

    at: float  # when it is sent if nothing waits
    duration: float  # model time once it runs
    who: int = 0
    gap: float | None = None  # think time after the previous turn's answer


@dataclass(frozen=True)
class Mechanism:
    """How one target puts a model to rest and brings it back, and where its reaper reads from."""

    name: str
    wake_s: float  # from the wake call to the model answering /health
    rest_s: float  # from the stop/sleep call until the machine is at rest (still billed meanwhile)
    period_s: int = 60  # the reaper's period
    lag_s: float = 0.0  # metrics the reaper reads are this old (CloudWatch: the publisher's minute + delivery)
    holds: bool = True  # a gateway stays up and holds requests while the model wakes
    manual_start_s: float = 300.0  # holds=False: a developer notices and runs `coderig start` after this
    recheck: bool = True  # the reaper reads the in-flight count right before acting (a local reaper does)


@dataclass
class Result:
    mechanism: str
    on_s: float = 0.0  # awake, waking or coming to rest: billed (cloud) / held (own hardware)
    busy_s: float = 0.0  # at least one request running
    stops: int = 0
    stops_in_flight: int = 0
    worst_overshoot_s: float = 0.0  # longest idle-before-stop beyond the window
    waits: list[float] = field(default_factory=list)  # added latency of each held request
    lost: int = 0  # refused (the gateway was down) or ended by a stop
    served: int = 0

    @property
    def idle_s(self) -> float:
        return self.on_s - self.busy_s


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def p50(values: Sequence[float]) -> float:
    return _percentile(values, 0.50)


def p99(values: Sequence[float]) -> float:
    return _percentile(values, 0.99)


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


class _Periods:
    """Per-period counters as a node publishes them: gateway arrivals, completions, requests running."""

    def __init__(self, period: int, horizon: float) -> None:
        self.period = period
        n = int(horizon // period) + 2
        self.arrived, self.done, self.running = [0] * n, [0] * n, [0] * n

    def index(self, t: float) -> int:
        return min(len(self.arrived) - 1, int(t // self.period))

    def add(self, arrival: float, start: float, end: float) -> None:
        self.arrived[self.index(arrival)] += 1
        self.done[self.index(end)] += 1
        for i in range(self.index(start), self.index(end) + 1):
            self.running[i] += 1

    def samples(self, t0: datetime, now: float, lag: float, window_s: float, since: float) -> list[idle.Sample]:
        last = self.index(now - lag) - 1  # the newest complete period the reaper can read
        first = max(self.index(since), self.index(now - window_s) - 3)
        return [
            idle.Sample(
                at=t0 + timedelta(seconds=i * self.period),
                gateway_requests=self.arrived[i],
                completed=self.done[i],
                running=self.running[i],
            )
            for i in range(first, last + 1)
        ]


def simulate(
    requests: Sequence[Request],
    mech: Mechanism,
    *,
    t0: datetime,
    horizon_s: float,
    stop_after_minutes: float = idle.DEFAULT_STOP_AFTER_MINUTES,
    schedule: idle.OfficeHours | None = None,
) -> Result:
    """Replay `requests` (any order) from a machine that is awake at 0 until `horizon_s`."""
    res = Result(mech.name)
    window = stop_after_minutes * 60
    periods = _Periods(mech.period_s, horizon_s + 86400)
    chains: dict[int, list[Request]] = {}
    for r in sorted(requests, key=lambda r: r.at):
        chains.setdefault(r.who, []).append(r)
    heap = [(c[0].at, who, 0, c[0].at) for who, c in chains.items()]  # (sent, who, turn, first sent)
    heapq.heapify(heap)
    running: list[tuple[float, float]] = []  # (start, end) of every served request
    state, since = "awake", 0.0  # awake | rest | waking; `since`: when it last became awake
    ready_at = rest_until = 0.0  # waking: when the model answers; rest: billed until (stopping)
    on: list[tuple[float, float]] = []  # stretches the machine is on (billed / GPUs held)
    on_from: float | None = 0.0
    last_end = 0.0

    def wake(at: float) -> None:
        nonlocal state, ready_at, on_from
        begin = max(at, rest_until)  # an instance still stopping is started once stopped
        state, ready_at = "waking", begin + mech.wake_s
        if on_from is None:
            on_from = begin

    def follow(who: int, k: int, answered: float) -> None:
        chain = chains[who]
        if k + 1 < len(chain):
            n = chain[k + 1]
            at = answered + n.gap if n.gap is not None else max(n.at, answered)
            heapq.heappush(heap, (at, who, k + 1, at))

    tick = float(mech.period_s)
    while heap or tick <= horizon_s:
        if heap and (heap[0][0] < tick or tick > horizon_s):
            at, who, k, first = heapq.heappop(heap)
            r = chains[who][k]
            if state == "waking" and at >= ready_at:
                state, since = "awake", ready_at
            if state == "rest":
                wake(at if mech.holds else at + mech.manual_start_s)
            if state == "waking" and not mech.holds:
                # connection refused: the gateway is down with the model. The developer sends the
                # turn again once someone's `coderig start` has brought it back.
                res.lost += 1
                heapq.heappush(heap, (ready_at, who, k, first))
                continue
            start = at if state == "awake" else ready_at
            if start > first:
                res.waits.append(start - first)
            end = start + r.duration
            running.append((start, end))
            periods.add(at, start, end)
            res.served += 1
            last_end = max(last_end, end)
            follow(who, k, end)
            continue
        now = tick
        tick += mech.period_s
        if state == "waking" and now >= ready_at:
            state, since = "awake", ready_at
        clock = t0 + timedelta(seconds=now)
        if state == "rest":
            if idle.decide([], clock, stop_after_minutes, schedule, state="stopped").action == "start":
                wake(now)  # office hours began
            continue
        if state != "awake":
            continue
        samples = periods.samples(t0, now, mech.lag_s, window, since)
        d = idle.decide(
            samples,
            clock,
            stop_after_minutes,
            schedule,
            period_seconds=mech.period_s,
            up_since=t0 + timedelta(seconds=since),
        )
        if d.action != "stop" or (mech.recheck and last_end > now):
            continue
        cut = sum(1 for _, e in running[-256:] if e > now)
        res.stops += 1
        res.stops_in_flight += int(cut > 0)
        res.lost += cut  # a stop with requests in flight ends them
        res.worst_overshoot_s = max(res.worst_overshoot_s, now - max(last_end, since) - window)
        state, rest_until = "rest", now + mech.rest_s
        on.append((on_from if on_from is not None else now, rest_until))
        on_from = None
    if on_from is not None:
        on.append((on_from, max(horizon_s, last_end)))
    res.on_s = _union(on)
    res.busy_s = _union(running)
    return res


def awake_hours(
    busy: Sequence[tuple[float, float]],
    *,
    stop_after_minutes: float,
    period_s: int,
    wake_s: float,
    rest_s: float,
    lag_s: float = 0.0,
) -> float:
    """The plan's model of the same thing: a machine is on from each wake through the last request
    of a burst, then the idle window, the reaper's metrics lag, half a reaper period on average
    before the reaper sees it, and the time it takes to come to rest. Bursts closer than that stay
    one awake stretch."""
    tail = stop_after_minutes * 60 + lag_s + period_s / 2 + rest_s
    stretches: list[tuple[float, float]] = []
    for s, e in sorted(busy):
        if stretches and s <= stretches[-1][1]:
            stretches[-1] = (stretches[-1][0], max(stretches[-1][1], e + tail))
        else:
            stretches.append((s - (wake_s if stretches else 0.0), e + tail))
    return _union(stretches) / 3600
