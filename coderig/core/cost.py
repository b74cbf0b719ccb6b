"""What a stack costs: $/hour, $/month always on, and $/month under its office hours and idle policy.

Pure: the stack's `coderig:cost` block, its hosts, its idle policy and whether its target stops (or puts
to sleep) an idle model are the only inputs, so `coderig plan`, the rendered plan, the developer bundle
and the office-week bench all use the same figures.

- Rate per host (one model replica: an `ssh` host, an AWS instance, a Kubernetes replica):
  `coderig:cost.usdPerHour` when set (your own hardware: power + amortisation; on AWS a reserved or
  negotiated rate), else the instance type's on-demand list price on `aws` (catalog.AWS_INSTANCES,
  us-east-1, checked 2026-11), else unknown: the plan says which key to set.
- While the idle policy has a host stopped or asleep it costs `coderig:cost.stoppedUsdPerHour`
  (default 0: amortisation and idle power on your own hardware; EBS and the Elastic IP on AWS).
- Awake hours: every hour, unless the target has an idle mechanism (settings `idle_mechanism`) and
  the stack an idle policy. Then a host is awake through the office hours and, after each day's end,
  for the idle window before the reaper stops it (an upper bound: nobody works outside the hours).
  With `stopAfterMinutes` alone the hours of requests are unknown; the estimate assumes the default
  office hours (Mon–Fri 08:00–19:00, `idle.OfficeHours`' defaults) and says so.
- A month is 730 hours (8760 / 12), the convention of AWS's own pricing pages and calculator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from pydantic import Field

from coderig.core.settings_base import Model

HOURS_PER_MONTH = 730.0  # 8760 h / 12, as AWS prices a month
HOURS_PER_WEEK = 168.0
WEEKS_PER_MONTH = HOURS_PER_MONTH / HOURS_PER_WEEK
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CostSettings(Model):
    """`coderig:cost`: what one host costs, per hour, awake and stopped."""

    usdPerHour: float | None = Field(default=None, ge=0, le=100_000, description="per host, while serving")
    stoppedUsdPerHour: float = Field(default=0.0, ge=0, le=100_000, description="per host, stopped or asleep")


@dataclass(frozen=True)
class Window:
    """The weekly hours a host is awake for: office days, start and end (start > end spans midnight)."""

    days: tuple[str, ...]
    start: str  # "HH:MM"
    end: str
    timezone: str = "UTC"

    def hours_per_day(self) -> float:
        a, b = (datetime.combine(datetime.min, time.fromisoformat(t)) for t in (self.start, self.end))
        span = (b - a).total_seconds() / 3600
        return span if span > 0 else span + 24

    def label(self) -> str:
        idx = sorted({DAY_NAMES.index(d) for d in self.days})
        consecutive = len(idx) > 2 and idx == list(range(idx[0], idx[-1] + 1))
        days = f"{DAY_NAMES[idx[0]]}–{DAY_NAMES[idx[-1]]}" if consecutive else ",".join(DAY_NAMES[i] for i in idx)
        return f"{days} {self.start}–{self.end} {self.timezone}"


DEFAULT_WINDOW = Window(("mon", "tue", "wed", "thu", "fri"), "08:00", "19:00")


@dataclass(frozen=True)
class Awake:
    hours_per_week: float
    why: str  # how the hours were found, for the plan line


def awake_hours(
    *, mechanism: str | None, policy_enabled: bool, window: Window | None, stop_after_minutes: int
) -> Awake:
    """Awake hours a week of one host under the idle policy (168 when nothing stops it)."""
    if mechanism is None:
        return Awake(HOURS_PER_WEEK, "always on: this target does not stop an idle model")
    if not policy_enabled:
        return Awake(HOURS_PER_WEEK, "always on: no coderig:idle policy")
    assumed = window is None
    w = window or DEFAULT_WINDOW
    days = len(set(w.days))
    hours = min(HOURS_PER_WEEK, days * (w.hours_per_day() + stop_after_minutes / 60))
    basis = f"{w.label()} + {stop_after_minutes} min idle window after each day"
    if assumed:
        basis += "; assumed hours of use: set coderig:idle.officeHours to state yours"
    return Awake(hours, f"awake ~{hours:.0f} of 168 h a week: {basis}")


@dataclass(frozen=True)
class Estimate:
    hosts: int
    usd_per_host_hour: float | None  # None: unknown (own hardware without coderig:cost.usdPerHour)
    basis: str  # where the hourly rate comes from
    stopped_usd_per_host_hour: float
    awake: Awake

    @property
    def usd_per_hour(self) -> float | None:
        return None if self.usd_per_host_hour is None else self.usd_per_host_hour * self.hosts

    @property
    def usd_per_month_always_on(self) -> float | None:
        return None if self.usd_per_hour is None else self.usd_per_hour * HOURS_PER_MONTH

    @property
    def usd_per_month_with_idle(self) -> float | None:
        if self.usd_per_host_hour is None:
            return None
        awake = self.awake.hours_per_week * WEEKS_PER_MONTH
        per_host = self.usd_per_host_hour * awake + self.stopped_usd_per_host_hour * (HOURS_PER_MONTH - awake)
        return per_host * self.hosts

    def summary(self) -> dict[str, object]:
        """The JSON form (plan --json, the bundle's `cost`)."""
        r = _round
        return {
            "usd_per_hour": r(self.usd_per_hour),
            "usd_per_host_hour": r(self.usd_per_host_hour),
            "hosts": self.hosts,
            "basis": self.basis,
            "usd_per_month_always_on": r(self.usd_per_month_always_on),
            "usd_per_month_with_idle": r(self.usd_per_month_with_idle),
            "awake_hours_per_week": round(self.awake.hours_per_week, 1),
            "awake": self.awake.why,
            "hours_per_month": HOURS_PER_MONTH,
        }

    def lines(self) -> list[str]:
        """The plan's cost lines."""
        if self.usd_per_hour is None:
            return [f"  cost               {self.basis}"]
        hosts = "1 host" if self.hosts == 1 else f"{self.hosts} hosts"
        return [
            f"  cost               ${self.usd_per_hour:,.2f}/h for {hosts} (${self.usd_per_host_hour:,.2f} per host: "
            f"{self.basis})",
            f"  cost per month     ${self.usd_per_month_always_on:,.0f} always on; "
            f"${self.usd_per_month_with_idle:,.0f} under the idle policy ({self.awake.why})",
        ]


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def estimate(
    cost: CostSettings | None,
    *,
    hosts: int,
    list_price_per_host: float | None,
    list_basis: str,
    awake: Awake,
    serves_model: bool = True,
) -> Estimate:
    cost = cost or CostSettings()
    if cost.usdPerHour is not None:
        rate, basis = cost.usdPerHour, "coderig:cost.usdPerHour"
    elif list_price_per_host is not None:
        rate, basis = list_price_per_host, list_basis
    elif serves_model:
        rate = None
        basis = "unknown: set coderig:cost.usdPerHour (per host: power + amortisation) for $/hour and $/month"
    else:
        rate = None
        basis = "unknown: the model runs on the external endpoint; set coderig:cost.usdPerHour to what it costs you"
    return Estimate(max(1, hosts), rate, basis, cost.stoppedUsdPerHour, awake)
