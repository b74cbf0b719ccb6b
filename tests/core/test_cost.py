"""coderig/core/cost.py: $/hour, $/month always on and under the idle policy, on every target."""

from __future__ import annotations

from typing import Any

import pytest
from programs import aws_config, dev_config, external_config, kube_config, ssh_two_hosts

from coderig.core import cost, planner, report
from coderig.core.errors import UserError
from coderig.runtime import idle
from coderig.targets import kind_of, parse_settings

MON_FRI = ("mon", "tue", "wed", "thu", "fri")
CONFIGS = {
    "local": dev_config,
    "ssh": ssh_two_hosts,
    "aws": lambda: aws_config(count=2),
    "kubernetes": kube_config,
    "external": external_config,
}


def awake(**kw: Any) -> cost.Awake:
    return cost.awake_hours(**{"mechanism": "stop-instances", "policy_enabled": True, "window": None,
                               "stop_after_minutes": 45, **kw})  # fmt: skip


def test_awake_hours_are_the_office_hours_plus_the_idle_window_after_each_day() -> None:
    a = awake(window=cost.Window(MON_FRI, "08:00", "19:00", "Europe/Paris"))
    assert a.hours_per_week == pytest.approx(5 * (11 + 0.75))
    assert "mon–fri 08:00–19:00 Europe/Paris + 45 min" in a.why and "assumed" not in a.why
    night = awake(window=cost.Window(("mon", "wed", "fri"), "22:00", "06:00"), stop_after_minutes=30)
    assert night.hours_per_week == pytest.approx(3 * 8.5)  # spans midnight
    assert "mon,wed,fri 22:00–06:00" in night.why
    every_hour = awake(window=cost.Window(cost.DAY_NAMES, "00:00", "23:59"), stop_after_minutes=600)
    assert every_hour.hours_per_week == 168


def test_without_office_hours_the_hours_of_use_are_assumed_and_said() -> None:
    a = awake(window=None)
    assert a.hours_per_week == pytest.approx(58.75) and "assumed" in a.why and "officeHours" in a.why


def test_always_on_without_a_policy_or_a_mechanism() -> None:
    assert awake(policy_enabled=False).hours_per_week == 168
    no_mechanism = awake(mechanism=None)
    assert no_mechanism.hours_per_week == 168 and "does not stop" in no_mechanism.why


def test_monthly_figures_use_730_hours_and_the_stopped_rate() -> None:
    a = awake(window=cost.Window(MON_FRI, "08:00", "19:00"))
    e = cost.estimate(cost.CostSettings(usdPerHour=10, stoppedUsdPerHour=2), hosts=2, list_price_per_host=63.3,
                      list_basis="list", awake=a)  # fmt: skip
    assert e.usd_per_hour == 20 and e.basis == "coderig:cost.usdPerHour"  # the stack's own rate wins
    assert e.usd_per_month_always_on == pytest.approx(20 * 730)
    awake_month = 58.75 * 730 / 168
    assert e.usd_per_month_with_idle == pytest.approx(2 * (10 * awake_month + 2 * (730 - awake_month)))
    listed = cost.estimate(None, hosts=1, list_price_per_host=63.3, list_basis="AWS", awake=a)
    assert listed.usd_per_month_always_on == pytest.approx(46_209)
    assert listed.lines()[1].startswith("  cost per month     $46,209 always on; $16,159 under the idle policy")


def test_own_hardware_without_a_rate_says_which_key_to_set() -> None:
    e = cost.estimate(None, hosts=2, list_price_per_host=None, list_basis="", awake=awake())
    assert e.usd_per_hour is None and e.usd_per_month_with_idle is None
    assert e.lines() == [f"  cost               {e.basis}"] and "coderig:cost.usdPerHour" in e.basis


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_every_target_prints_its_cost(kind: str) -> None:
    config = CONFIGS[kind]()
    config["cost"] = {"usdPerHour": 12.5}
    s = parse_settings(config)
    p = planner.plan_stack(s)
    text = report.text(s, p, "prod", kind_of(s).idle_mechanism)
    hosts = max(1, s.target.replica_count)
    assert f"  cost               ${12.5 * hosts:,.2f}/h for {hosts} host" in text
    assert f"${12.5 * hosts * 730:,.0f} always on" in text
    assert report.summary(s, p, "prod", kind_of(s).idle_mechanism)["cost"]["usd_per_hour"] == 12.5 * hosts  # type: ignore[index]


def test_aws_list_price_and_office_hours_from_the_stack() -> None:
    config = CONFIGS["aws"]()
    config["idle"] = {"stopAfterMinutes": 45, "officeHours": {"timezone": "Europe/Paris", "start": "08:00",
                                                              "end": "19:00"}}  # fmt: skip
    s = parse_settings(config)
    e = report.cost_estimate(s, kind_of(s).idle_mechanism)
    assert e.usd_per_host_hour == pytest.approx(63.3) and "p5en.48xlarge" in e.basis
    assert e.awake.hours_per_week == pytest.approx(58.75)
    office_only = parse_settings({**config, "idle": {"officeHours": {"timezone": "UTC"}}})
    tail = idle.DEFAULT_STOP_AFTER_MINUTES / 60
    assert report.cost_estimate(office_only, kind_of(office_only).idle_mechanism).awake.hours_per_week == pytest.approx(
        5 * (11 + tail)
    )


def test_bad_cost_settings_name_the_key() -> None:
    config = CONFIGS["ssh"]()
    config["cost"] = {"usdPerHour": -1, "usdPerHours": 3}
    with pytest.raises(UserError) as err:
        parse_settings(config)
    text = "\n".join(err.value.problems)
    assert "coderig:cost.usdPerHour" in text and "coderig:cost.usdPerHours" in text


def test_readme_cost_example_is_what_the_aws_stack_plans() -> None:
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    block = text.split("### Cost\n", 1)[1].split("```\n", 2)[1]
    golden = (ROOT / "tests" / "golden" / "rendered" / "aws" / "plan.txt").read_text()
    assert block.strip("\n").splitlines() == [line for line in golden.splitlines() if line.startswith("  cost")]
    s = parse_settings(aws_config(count=1) | {"idle": {"stopAfterMinutes": 45, "officeHours": {"timezone": "UTC"}}})
    e = report.cost_estimate(s, kind_of(s).idle_mechanism)
    assert f"${e.usd_per_month_always_on:,.0f} a month if never stopped" in text
    assert f"it is ${e.usd_per_month_with_idle:,.0f}" in text
