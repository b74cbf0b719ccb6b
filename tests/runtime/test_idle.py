"""coderig.runtime.idle: metrics parsing and the idle decision (pure, no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from coderig.runtime import idle
from coderig.runtime.idle import Decision, OfficeHours, Sample, decide

FIXTURES = Path(__file__).parents[1] / "fixtures"
BUSY = (FIXTURES / "vllm_metrics_busy.txt").read_text()
IDLE = (FIXTURES / "vllm_metrics_idle.txt").read_text()
NOW = datetime(2026, 11, 18, 14, 0, tzinfo=UTC)  # a Wednesday


# --- parsing -------------------------------------------------------------------------------------------


def test_parse_vllm_metrics_reads_labels_and_values() -> None:
    samples = idle.parse_prometheus(BUSY)
    running = [s for s in samples if s.name == idle.VLLM_RUNNING]
    assert len(running) == 1
    assert running[0].labels == {"engine": "0", "model_name": "umans-coder-v0"}
    assert running[0].value == 3.0
    # histogram with +Inf bucket and an info metric with many labels parse too
    inf = [s for s in samples if s.labels.get("le") == "+Inf"]
    assert inf and inf[0].value == 1287.0
    info = next(s for s in samples if s.name == "vllm:cache_config_info")
    assert info.labels["gpu_memory_utilization"] == "0.92"


def test_success_counter_sums_finished_reasons_but_not_created_timestamps() -> None:
    samples = idle.parse_prometheus(BUSY)
    assert idle.metric_sum(samples, idle.VLLM_SUCCESS_TOTAL) == 1270 + 12 + 5
    assert idle.metric_sum(samples, idle.VLLM_SUCCESS_TOTAL, {"finished_reason": "stop"}) == 1270
    assert idle.metric_sum(samples, "vllm:does_not_exist") is None


def test_read_node_counters_busy_and_idle() -> None:
    busy = idle.read_node_counters(BUSY, None)
    assert busy.running == 4.0  # 3 running + 1 waiting
    assert busy.completed_total == 1287.0
    assert busy.gateway_requests_total is None
    quiet = idle.read_node_counters(IDLE, None)
    assert quiet.running == 0.0
    # filtering on another model's name finds nothing: the signal is missing, not zero
    other = idle.read_node_counters(BUSY, None, model_name="someone-else")
    assert other.running is None and other.completed_total is None


def test_label_values_with_escapes_and_commas() -> None:
    text = (
        "# TYPE coderig_gateway_requests_total counter\n"
        'coderig_gateway_requests_total{developer="a\\"b, c",path="/v1/messages"} 7\n'
        'coderig_gateway_requests_total{developer="d\\\\e",path="/v1/responses"} 2 1763703312806\n'
    )
    samples = idle.parse_prometheus(text)
    assert [s.labels["developer"] for s in samples] == ['a"b, c', "d\\e"]
    assert idle.read_node_counters(None, text).gateway_requests_total == 9.0


def test_gateway_stub_status() -> None:
    text = (
        "Active connections: 3 \nserver accepts handled requests\n 112 112 4031 \nReading: 0 Writing: 2 Waiting: 1 \n"
    )
    assert idle.parse_stub_status(text)["requests"] == 4031
    assert idle.read_node_counters(None, text).gateway_requests_total == 4031.0


def test_nan_gauge_is_missing_and_garbage_is_an_error() -> None:
    samples = idle.parse_prometheus('vllm:num_requests_running{model_name="m"} NaN\n')
    assert idle.metric_sum(samples, idle.VLLM_RUNNING) is None
    with pytest.raises(idle.MetricsParseError, match="line 2"):
        idle.parse_prometheus("# HELP x y\n<html>oops</html>\n")


def test_counter_delta_handles_first_scrape_and_restart() -> None:
    assert idle.counter_delta(None, 12.0) == 12.0
    assert idle.counter_delta(10.0, 12.0) == 2.0
    assert idle.counter_delta(10.0, 10.0) == 0.0
    assert idle.counter_delta(500.0, 3.0) == 3.0  # process restarted
    assert idle.counter_delta(5.0, None) is None


# --- the decision --------------------------------------------------------------------------------------


def series(minutes: int, *, end_ago: int = 1, **values: float) -> list[Sample]:
    """One sample per minute for `minutes` minutes, the newest `end_ago` minutes before NOW."""
    base = {"gateway_requests": 0.0, "completed": 0.0, "running": 0.0}
    base.update(values)
    return [Sample(at=NOW - timedelta(minutes=end_ago + i), **base) for i in range(minutes)]


def test_idle_for_the_window_stops() -> None:
    d = decide(series(50), NOW, 45)
    assert d.action == "stop"
    assert "idle for 45 min" in d.reason


def test_a_request_in_the_window_keeps() -> None:
    samples = series(50)
    samples[10] = Sample(at=samples[10].at, gateway_requests=2.0, completed=2.0, running=0.0)
    d = decide(samples, NOW, 45)
    assert d == Decision("keep", d.reason)
    assert "2 gateway requests" in d.reason and "last activity 11 min ago" in d.reason


def test_activity_before_the_window_does_not_keep() -> None:
    samples = series(60)
    samples[55] = Sample(at=samples[55].at, gateway_requests=3.0, completed=3.0, running=0.0)  # 56 min ago
    assert decide(samples, NOW, 45).action == "stop"


def test_gateway_requests_alone_keep() -> None:
    # e.g. requests rejected or still queued in LiteLLM: the gateway saw traffic, vLLM did not
    samples = series(50)
    samples[0] = Sample(at=samples[0].at, gateway_requests=1.0, completed=0.0, running=0.0)
    assert decide(samples, NOW, 45).action == "keep"


def test_never_stop_with_requests_running_even_outside_office_hours() -> None:
    samples = series(50)
    samples[0] = Sample(at=samples[0].at, gateway_requests=0.0, completed=0.0, running=2.0)
    d = decide(samples, NOW, 45)
    assert d.action == "keep" and "2 requests running" in d.reason
    morning = OfficeHours("UTC", time(8), time(12))  # NOW (14:00) is outside
    d = decide(samples, NOW, 45, morning)
    assert d.action == "keep" and "2 requests running" in d.reason
    # the same series without the running request would be stopped
    assert decide(series(50), NOW, 45, morning).action == "stop"


def test_no_data_keeps_with_reason() -> None:
    d = decide([], NOW, 45)
    assert d.action == "keep" and "no metrics" in d.reason


def test_stale_data_keeps_with_reason() -> None:
    d = decide(series(50, end_ago=20), NOW, 45)
    assert d.action == "keep"
    assert "stale" in d.reason and "20 min old" in d.reason


def test_missing_signal_keeps_with_reason() -> None:
    samples = [Sample(at=s.at, completed=0.0, running=0.0) for s in series(50)]  # no gateway datapoints
    d = decide(samples, NOW, 45)
    assert d.action == "keep" and "no gateway requests metric" in d.reason
    # a deployment without a gateway counter can say so explicitly
    assert decide(samples, NOW, 45, required=("running", "completed")).action == "stop"


def test_one_signal_stale_keeps() -> None:
    samples = series(50)
    # the running gauge stopped arriving 15 minutes ago (vLLM down), counters still arrive
    samples = [
        Sample(
            at=s.at,
            gateway_requests=0.0,
            completed=0.0,
            running=(0.0 if s.at < NOW - timedelta(minutes=15) else None),
        )
        for s in samples
    ]
    d = decide(samples, NOW, 45)
    assert d.action == "keep" and "running requests metric is stale" in d.reason


def test_window_not_yet_covered_keeps() -> None:
    d = decide(series(20), NOW, 45)
    assert d.action == "keep" and "cover only 21 min" in d.reason


def test_recently_started_keeps() -> None:
    d = decide(series(50), NOW, 45, up_since=NOW - timedelta(minutes=10))
    assert d.action == "keep" and "up for 10 min" in d.reason


def test_transitional_and_stopped_states() -> None:
    assert decide([], NOW, 45, state="pending").action == "keep"
    assert decide([], NOW, 45, state="stopping").action == "keep"
    assert decide([], NOW, 45, state="stopped") == Decision("keep", "stopped")


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide([], datetime(2026, 1, 1), 45)  # noqa: DTZ001
    with pytest.raises(ValueError, match="positive"):
        decide([], NOW, 0)
    with pytest.raises(ValueError, match="unknown signals"):
        decide([], NOW, 45, required=("gpu_util",))


# --- office hours --------------------------------------------------------------------------------------

PARIS = OfficeHours.from_dict({"timezone": "Europe/Paris", "days": "mon-fri", "start": "08:00", "end": "19:00"})


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        (datetime(2026, 11, 18, 7, 0, tzinfo=UTC), True),  # Wed 08:00 Paris (UTC+1 in November)
        (datetime(2026, 11, 18, 6, 59, tzinfo=UTC), False),  # Wed 07:59 Paris
        (datetime(2026, 11, 18, 17, 59, tzinfo=UTC), True),  # Wed 18:59 Paris
        (datetime(2026, 11, 18, 18, 0, tzinfo=UTC), False),  # Wed 19:00 Paris: end is exclusive
        (datetime(2026, 11, 21, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 7, 15, 6, 30, tzinfo=UTC), True),  # Wed 08:30 Paris in summer time (UTC+2)
        (datetime(2026, 7, 15, 17, 30, tzinfo=UTC), False),  # Wed 19:30 Paris in summer time
    ],
)
def test_office_hours_are_timezone_aware(when: datetime, inside: bool) -> None:
    assert PARIS.contains(when) is inside


def test_overnight_window_belongs_to_the_day_it_starts() -> None:
    night = OfficeHours.from_dict({"timezone": "UTC", "days": ["fri"], "start": "22:00", "end": "06:00"})
    assert night.contains(datetime(2026, 11, 20, 23, 0, tzinfo=UTC))  # Fri 23:00
    assert night.contains(datetime(2026, 11, 21, 5, 0, tzinfo=UTC))  # Sat 05:00, Friday's night
    assert not night.contains(datetime(2026, 11, 21, 23, 0, tzinfo=UTC))  # Sat 23:00
    assert not night.contains(datetime(2026, 11, 20, 5, 0, tzinfo=UTC))  # Fri 05:00 is Thursday's night


def test_day_ranges_wrap_and_round_trip() -> None:
    sched = OfficeHours.from_dict({"timezone": "UTC", "days": "fri-mon", "start": "09:00", "end": "17:00"})
    assert sched.days == frozenset({4, 5, 6, 0})
    assert OfficeHours.from_dict(sched.to_dict()) == sched


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"timezone": "Mars/Olympus", "start": "08:00", "end": "18:00"}, "timezone"),
        ({"timezone": "UTC", "start": "8am", "end": "18:00"}, "start"),
        ({"timezone": "UTC", "start": "08:00", "end": "08:00"}, "empty"),
        ({"timezone": "UTC", "start": "08:00", "end": "18:00", "days": "mon-fry"}, "days"),
        ({"timezone": "UTC", "start": "08:00", "end": "18:00", "tz": "x"}, "unknown keys"),
        ({"start": "08:00", "end": "18:00"}, "timezone: required"),
    ],
)
def test_bad_schedules_name_the_key(spec: dict[str, object], message: str) -> None:
    with pytest.raises(idle.ScheduleError, match=message):
        OfficeHours.from_dict(spec)


def test_schedule_starts_inside_and_keeps_a_running_idle_node() -> None:
    inside = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)  # Wed 10:00 Paris
    d = decide([], inside, 45, PARIS, state="stopped")
    assert d.action == "start" and "inside office hours" in d.reason
    idle_samples = [
        Sample(at=inside - timedelta(minutes=i + 1), gateway_requests=0, completed=0, running=0) for i in range(60)
    ]
    assert decide(idle_samples, inside, 45, PARIS).action == "keep"


def test_schedule_outside_applies_idle_rule_and_never_starts() -> None:
    outside = datetime(2026, 11, 18, 21, 0, tzinfo=UTC)  # Wed 22:00 Paris
    assert decide([], outside, 45, PARIS, state="stopped").action == "keep"
    idle_samples = [
        Sample(at=outside - timedelta(minutes=i + 1), gateway_requests=0, completed=0, running=0) for i in range(60)
    ]
    d = decide(idle_samples, outside, 45, PARIS)
    assert d.action == "stop" and "outside office hours" in d.reason
    busy = list(idle_samples)
    busy[3] = Sample(at=busy[3].at, gateway_requests=1, completed=1, running=0)
    assert decide(busy, outside, 45, PARIS).action == "keep"
