"""An office week, simulated (a script, not a test): what each way of resting an idle GPU costs, and
what developers wait for.

A seeded week of N developers (Monday 00:00 to Sunday 24:00, Europe/Paris) is replayed through the
real idle decision (coderig.runtime.idle.decide, via coderig.runtime.idle_sim) with each mechanism's
reaper period, metrics lag and timings, and, in the same run, under SkyPilot autostop's and dstack
idle_duration's semantics. The model: DeepSeek V3.2 (coderig's catalog size) on one p5en.48xlarge
(8×H200, the catalog's on-demand price).

Workload (every figure below is a parameter of `workload`):
- gaps between the turns of a session: lognormal with median 2 s and p99 11.4 min, the published
  Claude Code trace figures quoted in issue #18; sessions of 5-60 turns, 3-30 min breaks between them;
- office days: arrive 08:30-09:30, leave 17:30-18:45, lunch 45-75 min starting 12:00-12:45, one or two
  30-60 min meetings; developer 0 also works Wednesday 20:00-22:30; one request on Saturday 15:07;
- model time per request: lognormal, median 8 s, p99 90 s (a streamed turn of a few hundred tokens).

    uv run python bench/idle_week.py                     # 10 developers, seed 1
    uv run python bench/idle_week.py --developers 25 --seed 7 --window 30
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from coderig.core import budgets, catalog
from coderig.core.frontdoor_machine import DEFAULT_FRONT_DOOR_TYPE, HOURS_PER_MONTH, monthly_cost
from coderig.runtime import idle
from coderig.runtime.idle_sim import Mechanism, Request, Result, awake_hours, p50, p99, simulate
from coderig.targets import parse_settings
from coderig.targets.aws import resources as aws_resources

DAY = 86400.0
WEEK = 7 * DAY
TZ = "Europe/Paris"
WEEK_START = datetime(2026, 11, 30, tzinfo=ZoneInfo(TZ))  # a Monday
PRESET = "deepseek-v3.2"
INSTANCE = "p5en.48xlarge"
GIB = 1024**3
MIB = 1024**2

# --- workload ----------------------------------------------------------------------------------------

GAP_MEDIAN_S, GAP_P99_S = 2.0, 11.4 * 60  # issue #18: published Claude Code traces
Z99 = 2.3263478740408408  # the standard normal's 99th percentile
RUN_MEDIAN_S, RUN_P99_S = 8.0, 90.0


def lognormal(rng: random.Random, median: float, p99_: float, cap: float) -> float:
    sigma = math.log(p99_ / median) / Z99
    return min(cap, rng.lognormvariate(math.log(median), sigma))


def _busy_spans(rng: random.Random, day: float, late: bool) -> list[tuple[float, float]]:
    """One developer's office day as the stretches they are at the keyboard (seconds from Monday)."""
    h = 3600.0
    arrive, leave = day + rng.uniform(8.5, 9.5) * h, day + rng.uniform(17.5, 18.75) * h
    lunch = day + rng.uniform(12.0, 12.75) * h
    away = [(lunch, lunch + rng.uniform(45, 75) * 60)]
    for _ in range(rng.choice((1, 2))):
        m = day + rng.uniform(9.5, 16.5) * h
        away.append((m, m + rng.uniform(30, 60) * 60))
    spans, t = [], arrive
    for a, b in sorted(away):
        if a > t:
            spans.append((t, min(a, leave)))
        t = max(t, b)
    if t < leave:
        spans.append((t, leave))
    if late:
        spans.append((day + 20 * h, day + 22.5 * h))
    return spans


def workload(developers: int, seed: int) -> list[Request]:
    """The week's requests, every developer, in arrival order."""
    rng = random.Random(seed)
    out: list[Request] = []
    for who in range(developers):
        for d in range(5):
            for start, end in _busy_spans(rng, d * DAY, late=(who == 0 and d == 2)):
                t = start + rng.uniform(0, 600)
                gap: float | None = None  # the first turn of a stretch is sent at its time
                while t < end:
                    for _ in range(rng.randint(5, 60)):  # one session
                        if t >= end:
                            break
                        run = lognormal(rng, RUN_MEDIAN_S, RUN_P99_S, 600)
                        out.append(Request(t, run, who, gap))
                        gap = lognormal(rng, GAP_MEDIAN_S, GAP_P99_S, 7200)
                        t += run + gap
                    pause = rng.uniform(3, 30) * 60  # a break between sessions
                    t += pause
                    gap = (gap or 0.0) + pause
    out.append(Request(5 * DAY + 15 * 3600 + 7 * 60, 12.0, min(1, developers - 1)))  # Saturday 15:07
    return sorted(out, key=lambda r: r.at)


# --- timings (each cited) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    weights_per_gpu: float
    sleep_wake_s: float
    container_start_s: float
    ec2_wake_s: float
    ec2_stop_s: float
    lines: tuple[str, ...]


def timings() -> Timings:
    preset = catalog.PRESETS[PRESET]
    inst = catalog.AWS_INSTANCES[INSTANCE]
    per_gpu = preset.weight_bytes / inst.gpu_count
    # llm-d Fast Model Actuation wraps vLLM sleep/wake: ~3 s to wake 64 GiB per GPU (issue #18); the
    # same copy back to host RAM on sleep. Each GPU copies its own shard, in parallel.
    h2d = 64 * GIB / 3.0
    sleep_wake = per_gpu / h2d
    # A stopped container restarts the engine: read the weights from the local cache volume and warm
    # up (CUDA graphs, torch.compile), at coderig's own budgets (conservative: upper bounds).
    docker_start = 5.0  # `docker start` + vLLM's Python start; small next to the load
    load = preset.weight_bytes / budgets.LOAD_BYTES_PER_S
    container = docker_start + load + budgets.ENGINE_WARMUP_S
    # EC2: stopped -> running and OS boot: ~1-2 min for current types with encrypted EBS
    # (martysweet.co.uk/ec2-launch-times, 2023); GPU types with 8 GPUs and EFA boot slower: 180 s.
    # Then the weights are read from the gp3 volume at the throughput coderig provisions for it.
    settings = parse_settings({"target": {"kind": "aws", "instanceType": INSTANCE}, "model": {"preset": PRESET}})
    gp3 = aws_resources.weights_volume(settings).throughput_mibs * MIB
    ec2_boot = 180.0
    ec2 = ec2_boot + docker_start + preset.weight_bytes / gp3 + budgets.ENGINE_WARMUP_S
    # Stopping: ACPI shutdown, then "stopping" -> "stopped"; a hard stop after a few minutes at most
    # (docs.aws.amazon.com/AWSEC2/latest/UserGuide/how-ec2-instance-stop-start-works.html): 60 s.
    ec2_stop = 60.0
    lines = (
        f"model {PRESET}: {preset.weight_bytes / 1e9:.0f} GB of weights, {per_gpu / 1e9:.1f} GB per GPU on {INSTANCE}",
        f"vLLM sleep level 1 wake: {per_gpu / GIB:.1f} GiB per GPU at 64 GiB / 3 s (llm-d FMA) = {sleep_wake:.1f} s",
        f"container start: {docker_start:.0f} s + load {load:.0f} s at {budgets.LOAD_BYTES_PER_S / 1e6:.0f} MB/s "
        f"+ warm-up {budgets.ENGINE_WARMUP_S} s (coderig.core.budgets) = {container:.0f} s",
        f"EC2 start: boot {ec2_boot:.0f} s + {docker_start:.0f} s + EBS gp3 read at "
        f"{gp3 / MIB:.0f} MiB/s {preset.weight_bytes / gp3:.0f} s + warm-up {budgets.ENGINE_WARMUP_S} s = {ec2:.0f} s; "
        f"stop {ec2_stop:.0f} s",
    )
    return Timings(per_gpu, sleep_wake, container, ec2, ec2_stop, lines)


# --- the targets ---------------------------------------------------------------------------------------


def mechanisms(t: Timings) -> list[tuple[str, Mechanism]]:
    """(row label, mechanism). On ssh/local, and on the aws front door, the reaper runs next to the
    gateway: it reads the relay's counters directly each minute and holds the model (refused while a
    request is in flight) before acting. On a single aws machine the reaper is the Lambda: it reads
    CloudWatch every 5 minutes (aws_resources.REAPER_SCHEDULE), whose newest datapoints are a
    publisher minute plus delivery old (2 min), and stops without a second look."""
    lam = Mechanism("ec2-single", t.ec2_wake_s, t.ec2_stop_s, period_s=300, lag_s=120, recheck=False, holds=False)
    return [
        ("ssh/local · vLLM sleep (gateway holds)", Mechanism("sleep", t.sleep_wake_s, t.sleep_wake_s)),
        ("ssh/local · container stop (gateway holds)", Mechanism("stop", t.container_start_s, 10.0)),
        ("aws · front door + EC2 stop (held)", Mechanism("ec2", t.ec2_wake_s, t.ec2_stop_s)),
        ("aws · single machine (refused)", lam),
    ]


def skypilot_autostop(reqs: list[Request], t: Timings, idle_minutes: float) -> tuple[Result, Result]:
    """SkyPilot autostop: a cluster is idle when no job is pending or running (and, by default, no SSH
    session) for `idle_minutes`; the skylet checks every minute; a stopped cluster starts again only
    on `sky start` (docs.skypilot.co/en/latest/reference/auto-stop.html). A vLLM server is the
    cluster's job, running all week: it never idles. The second row is the best case, as if every
    request were a job: the stop is right, and whoever finds it stopped restarts it by hand."""
    as_served = Result("skypilot-served", on_s=WEEK, busy_s=simulate(reqs, _never(), t0=_t0(), horizon_s=WEEK).busy_s)
    best = simulate(
        reqs,
        Mechanism("skypilot-best", t.ec2_wake_s, t.ec2_stop_s, holds=False, recheck=True),
        t0=_t0(),
        horizon_s=WEEK,
        stop_after_minutes=idle_minutes,
    )
    return as_served, best


def dstack_idle(reqs: list[Request], t: Timings) -> Result:
    """dstack: a service with `replicas: 0..1` scales its replica down `scale_down_delay` (10 min by
    default, dstack core/models/configurations.py ScalingSpec) after its last request; the instance
    then waits in its fleet for `idle_duration` (5 min for a fleet a run created, dstack docs
    concepts/fleets) and is terminated, not stopped. Counted here as one 15-minute window, then a
    cold start on the next request: a new instance whose weights come from a network volume (the
    EC2 start path; without a volume it downloads them again). The gateway is assumed to hold the
    request meanwhile."""
    return simulate(
        reqs, Mechanism("dstack", t.ec2_wake_s, t.ec2_stop_s), t0=_t0(), horizon_s=WEEK, stop_after_minutes=10 + 5
    )


def _never() -> Mechanism:
    return Mechanism("never", 0.0, 0.0)


def _t0() -> datetime:
    return WEEK_START.astimezone(UTC)


# --- report --------------------------------------------------------------------------------------------


def row(label: str, r: Result, gpus: int, usd_per_hour: float) -> str:
    on_h, idle_h = r.on_s / 3600, r.idle_s / 3600
    waits = f"{len(r.waits)} | {p50(r.waits):.0f} | {p99(r.waits):.0f}" if r.waits else "0 | – | –"
    over = f"{r.worst_overshoot_s / 60:.1f}" if r.stops else "–"
    return (
        f"| {label} | {on_h * gpus:,.0f} | {idle_h * gpus:,.0f} | ${on_h * usd_per_hour:,.0f} | {r.stops} | {over} | "
        f"{waits} | {r.lost} | {r.stops_in_flight} |"
    )


HEADER = (
    "| target · mechanism | GPU-hours on | of them idle | week on demand | stops | worst overshoot min | "
    "waited for a wake | added p50 s | added p99 s | refused or lost | stops in flight |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def run(developers: int, seed: int, window: float, out: Callable[[str], None] = print) -> dict[str, Result]:
    reqs = workload(developers, seed)
    t = timings()
    inst = catalog.AWS_INSTANCES[INSTANCE]
    gpus, usd = inst.gpu_count, inst.usd_per_hour
    results: dict[str, Result] = {}
    out(
        f"{developers} developers, seed {seed}, {len(reqs)} requests, idle window {window:g} min, {TZ} week of "
        f"{WEEK_START:%Y-%m-%d}; {INSTANCE} ({gpus} GPUs) at ${usd:.2f}/h"
    )
    for line in t.lines:
        out(f"  {line}")
    out("")
    out(HEADER)
    always = Result("always-on", on_s=WEEK, busy_s=simulate(reqs, _never(), t0=_t0(), horizon_s=WEEK).busy_s)
    results["always-on"] = always
    out(row("no idle policy (always on)", always, gpus, usd))
    for label, mech in mechanisms(t):
        r = simulate(reqs, mech, t0=_t0(), horizon_s=WEEK, stop_after_minutes=window)
        results[mech.name] = r
        out(row(label, r, gpus, usd))
    office = idle.OfficeHours.from_dict({"timezone": TZ, "days": "mon-fri", "start": "08:00", "end": "19:00"})
    r = simulate(reqs, mechanisms(t)[2][1], t0=_t0(), horizon_s=WEEK, stop_after_minutes=window, schedule=office)
    results["ec2-office"] = r
    out(row("aws · front door + EC2 stop + officeHours mon-fri 08-19", r, gpus, usd))
    served, best = skypilot_autostop(reqs, t, window)
    results["skypilot-served"], results["skypilot-best"] = served, best
    out(row(f"SkyPilot autostop {window:g} min · vLLM as the job", served, gpus, usd))
    out(row(f"SkyPilot autostop {window:g} min · if requests were jobs", best, gpus, usd))
    results["dstack"] = dstack_idle(reqs, t)
    out(row("dstack 0..1 replicas + idle_duration 5m", results["dstack"], gpus, usd))
    door = monthly_cost(DEFAULT_FRONT_DOOR_TYPE)
    week_usd = door.total * 7 * 24 / HOURS_PER_MONTH
    out(f"\nthe aws front door ({DEFAULT_FRONT_DOOR_TYPE}) adds ${week_usd:.2f} to its row's week: {door.line()}")
    busy = _busy(reqs)
    ec2 = mechanisms(t)[2][1]
    model = awake_hours(
        busy, stop_after_minutes=window, period_s=ec2.period_s, lag_s=ec2.lag_s, wake_s=ec2.wake_s, rest_s=ec2.rest_s
    )
    out(
        f"plan model (coderig.runtime.idle_sim.awake_hours) for the front-door aws row: {model * gpus:,.0f} GPU-hours; "
        f"simulated {results['ec2'].on_s / 3600 * gpus:,.0f}"
    )
    return results


def _busy(reqs: list[Request]) -> list[tuple[float, float]]:
    return [(r.at, r.at + r.duration) for r in reqs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--developers", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--window", type=float, default=float(idle.DEFAULT_STOP_AFTER_MINUTES), help="idle minutes")
    p.add_argument("--save", action="store_true", help="also write the output to bench/results/")
    args = p.parse_args(argv)
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    began = time.monotonic()
    run(args.developers, args.seed, args.window, out)
    if args.save:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        now = datetime.now(UTC)
        head = [
            f"# bench/idle_week.py, {now:%Y-%m-%dT%H:%M:%SZ}, commit {commit}, wall {time.monotonic() - began:.1f} s",
            f"# command: uv run python bench/idle_week.py {' '.join(argv if argv is not None else sys.argv[1:])}",
            f"# machine: {platform.machine()}, python {platform.python_version()}",
        ]
        path = Path(__file__).parent / "results" / f"idle-week-{now:%Y-%m-%d}.md"
        path.write_text("\n".join(head + lines) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


__all__ = ["main", "mechanisms", "replace", "run", "timings", "workload"]

if __name__ == "__main__":
    sys.exit(main())
