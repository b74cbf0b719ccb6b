"""The idle replay (coderig.runtime.idle_sim) and the office-week bench (bench/idle_week.py) at a
small N: the invariants every run must keep, and the plan model agreeing with the replay."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from coderig.runtime.idle_sim import Mechanism, Request, awake_hours, p50, p99, simulate

T0 = datetime(2026, 11, 30, tzinfo=UTC)
H = 3600.0


def _bench() -> ModuleType:
    path = Path(__file__).parents[2] / "bench" / "idle_week.py"
    spec = importlib.util.spec_from_file_location("idle_week", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["idle_week"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _bench()


@pytest.fixture(scope="module")
def week(bench: ModuleType) -> dict:
    return bench.run(3, 2, 45.0, out=lambda _line: None)


def test_a_quiet_machine_stops_one_window_after_its_last_request() -> None:
    mech = Mechanism("m", wake_s=100, rest_s=30)
    r = simulate([Request(0, 10)], mech, t0=T0, horizon_s=4 * H)
    assert r.stops == 1 and r.lost == 0 and not r.waits
    # the last request ends at 10 s; the reaper (60 s period) stops at the first tick past 45 min
    # of idle periods, then the machine takes 30 s to come to rest
    assert 45 * 60 <= r.on_s - 30 <= 45 * 60 + 2 * 60 + 10
    assert 0 <= r.worst_overshoot_s <= 2 * 60


def test_a_request_after_a_stop_waits_for_the_wake_and_its_followers_do_not() -> None:
    mech = Mechanism("m", wake_s=100, rest_s=30)
    reqs = [Request(0, 10, 0), Request(2 * H, 5, 0), Request(2 * H + 1, 5, 0, gap=2.0)]
    r = simulate(reqs, mech, t0=T0, horizon_s=4 * H)
    assert r.waits == [100.0]  # only the first one waited; the next is sent 2 s after its answer
    assert r.stops == 2 and r.lost == 0 and r.served == 3


def test_a_request_while_stopping_waits_for_the_stop_then_the_start() -> None:
    mech = Mechanism("m", wake_s=100, rest_s=60)
    first = simulate([Request(0, 10)], mech, t0=T0, horizon_s=2 * H)
    stop_at = first.on_s - 60  # when the reaper stopped it
    r = simulate([Request(0, 10), Request(stop_at + 20, 5)], mech, t0=T0, horizon_s=2 * H)
    assert r.waits == [pytest.approx(40 + 100)]


def test_without_a_gateway_that_holds_the_request_is_refused_then_retried() -> None:
    mech = Mechanism("m", wake_s=100, rest_s=30, holds=False, manual_start_s=300)
    r = simulate([Request(0, 10), Request(3 * H, 5)], mech, t0=T0, horizon_s=5 * H)
    assert r.lost == 1 and r.waits == [pytest.approx(400)] and r.served == 2


def test_a_stale_reaper_that_does_not_recheck_can_stop_a_request_in_flight() -> None:
    """The column can fail: metrics 2 minutes old and no recheck stop a request that arrived inside
    the lag; a reaper that rechecks keeps the machine up for it."""
    period = 300
    quiet = Mechanism("m", 100, 30, period_s=period, lag_s=120, recheck=False)
    stop_at = simulate([Request(0, 1)], quiet, t0=T0, horizon_s=3 * H).on_s - 30
    late = [Request(0, 1), Request(stop_at - 60, 600)]
    blind = simulate(late, quiet, t0=T0, horizon_s=3 * H)
    assert blind.stops_in_flight == 1 and blind.lost == 1
    careful = simulate(late, Mechanism("m", 100, 30, period_s=period, lag_s=120), t0=T0, horizon_s=3 * H)
    assert careful.stops_in_flight == 0 and careful.lost == 0


def test_the_workload_gaps_follow_the_published_trace_figures(bench: ModuleType) -> None:
    import random

    rng = random.Random(5)
    gaps = [bench.lognormal(rng, 2.0, 684.0, 1e9) for _ in range(200_000)]
    assert statistics.median(gaps) == pytest.approx(2.0, rel=0.05)
    assert p99(gaps) == pytest.approx(684.0, rel=0.1)


def test_the_week_has_office_days_a_late_evening_and_one_weekend_request(bench: ModuleType) -> None:
    reqs = bench.workload(3, 2)
    day = 86400
    weekend = [r for r in reqs if r.at >= 5 * day]
    assert len(weekend) == 1 and 15 * 3600 < weekend[0].at - 5 * day < 16 * 3600
    late = [r for r in reqs if r.who == 0 and 2 * day + 20 * 3600 <= r.at < 2 * day + 23 * 3600]
    assert late and not [r for r in reqs if r.who != 0 and (r.at % day) > 20 * 3600]
    assert bench.workload(3, 2) == reqs and bench.workload(3, 3) != reqs  # seeded


def test_every_held_mechanism_loses_nothing_and_never_stops_a_request_in_flight(week: dict) -> None:
    for name in ("sleep", "stop", "ec2", "dstack"):
        r = week[name]
        assert r.lost == 0 and r.stops_in_flight == 0, name
        assert r.stops > 0 and r.waits, name
        assert r.on_s < week["always-on"].on_s / 2, name
    assert week["ec2-single"].lost > 0  # the single-machine layout refuses while the GPU is stopped
    # office hours start the machine before people arrive: fewer waits, more hours on
    office = week["ec2-office"]
    assert office.lost == 0 and len(office.waits) < len(week["ec2"].waits) and office.on_s > week["ec2"].on_s
    assert week["skypilot-served"].on_s == 7 * 86400  # a served model is a job that never ends


def test_waits_match_each_mechanism_timing(bench: ModuleType, week: dict) -> None:
    t = bench.timings()
    assert max(week["sleep"].waits) <= 2 * t.sleep_wake_s + 1  # a wake, plus a sleep still finishing
    assert p50(week["ec2"].waits) <= t.ec2_wake_s + t.ec2_stop_s
    assert max(week["stop"].waits) <= t.container_start_s + 10
    for name in ("sleep", "stop", "ec2"):  # a reaper next to the gateway, every minute: within two periods
        assert week[name].worst_overshoot_s <= 2 * 60, name
    # the Lambda (single aws machine): 5-minute period, CloudWatch 2 minutes behind
    assert 2 * 60 < week["ec2-single"].worst_overshoot_s <= 2 * 300 + 120


def test_the_plan_model_agrees_with_the_replay(bench: ModuleType, week: dict) -> None:
    t = bench.timings()
    reqs = bench.workload(3, 2)
    ec2 = bench.mechanisms(t)[2][1]
    model = awake_hours(
        [(r.at, r.at + r.duration) for r in reqs],
        stop_after_minutes=45,
        period_s=ec2.period_s,
        lag_s=ec2.lag_s,
        wake_s=ec2.wake_s,
        rest_s=ec2.rest_s,
    )

    assert model == pytest.approx(week["ec2"].on_s / H, rel=0.05)


def test_the_bench_prints_a_row_per_target_and_saves_nothing_without_save(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--developers", "2", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    for label in ("vLLM sleep", "container stop", "front door + EC2", "single machine", "SkyPilot", "dstack"):
        assert sum(label in line for line in out.splitlines() if line.startswith("| ")) >= 1, label


def test_the_readme_table_is_the_newest_saved_run() -> None:
    """Figures in the README come from the bench as rerun: every table row of the newest saved
    output is in the README's section, as is."""
    root = Path(__file__).parents[2]
    newest = sorted((root / "bench" / "results").glob("idle-week-*.md"))[-1]
    rows = [line for line in newest.read_text().splitlines() if line.startswith("| ")]
    readme = (root / "README.md").read_text()
    assert len(rows) >= 9 and f"`bench/results/{newest.name}`" in readme
    assert [r for r in rows if r not in readme] == []
