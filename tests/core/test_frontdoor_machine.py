"""The front-door machine settings (`coderig:target.frontDoor`) and what the plan says it costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HOST_KEY, ssh_config

from coderig.cli import main
from coderig.core import planner
from coderig.core.frontdoor_machine import FRONT_DOOR_TYPES, HOURS_PER_MONTH, monthly_cost
from coderig.core.settings import SECRET, UserError
from coderig.targets import parse_settings, render_stack


def aws(**target: Any) -> dict[str, Any]:
    return {"target": {"kind": "aws", "instanceType": "p5en.48xlarge", **target}, "model": {"preset": "deepseek-v3.2"}}


def ssh(**target: Any) -> dict[str, Any]:
    c = ssh_config()
    c["sshPrivateKey"] = SECRET
    c["target"].update(target)
    return c


def problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(UserError) as exc:
        parse_settings(config)
    return exc.value.problems


def test_unset_front_door_keeps_the_single_machine_layout() -> None:
    for config in (aws(), ssh()):
        assert parse_settings(config).target.front_door_machine is None


def test_aws_front_door_defaults_to_t3_medium_and_states_its_monthly_cost() -> None:
    door = parse_settings(aws(frontDoor={})).target.front_door_machine
    assert door is not None and door.machine == "t3.medium"
    # $0.0416/h × 730 h + 30 GB gp3 at $0.08 + one public IPv4 at $0.005/h
    assert door.cost is not None
    assert door.cost.total == pytest.approx(0.0416 * 730 + 30 * 0.08 + 0.005 * 730)
    assert door.summary() == {"machine": "t3.medium", "usd_per_month": 36.42}
    assert "$36.42/month always on (t3.medium $30.37" in door.plan_line()


def test_every_front_door_type_costs_less_a_day_than_the_cheapest_gpu_instance() -> None:
    """The point of the layout: the always-on part is small next to the GPUs it lets stop."""
    from coderig.core.catalog import AWS_INSTANCES

    cheapest_gpu_day = min(i.usd_per_hour for i in AWS_INSTANCES.values()) * 24
    for name in FRONT_DOOR_TYPES:
        assert monthly_cost(name).instance / (HOURS_PER_MONTH / 24) < cheapest_gpu_day


def test_unknown_front_door_type_names_the_key_and_the_allowed_ones() -> None:
    lines = problems(aws(frontDoor={"instanceType": "p5.48xlarge"}))
    assert any(line.startswith("coderig:target.frontDoor.instanceType:") and "t3.medium" in line for line in lines), (
        lines
    )
    lines = problems(aws(frontDoor={"size": "small"}))
    assert any(line.startswith("coderig:target.frontDoor.size:") for line in lines), lines


def test_ssh_front_door_is_pinned_and_separate_from_the_gpu_hosts_all_at_once() -> None:
    lines = problems(ssh(frontDoor={"address": "gpu1.internal"}))
    assert any(line.startswith("coderig:target.frontDoor.hostKey:") and "ssh-keyscan" in line for line in lines), lines
    assert any(line.startswith("coderig:target.frontDoor.address:") and "hosts[0].address" in line for line in lines), (
        lines
    )


def test_ssh_front_door_is_a_host_with_no_cloud_cost() -> None:
    s = parse_settings(ssh(frontDoor={"address": "door.internal", "hostKey": HOST_KEY}))
    door = s.target.front_door_machine
    assert door is not None and door.cost is None
    assert door.plan_line().startswith("  front door         door.internal (your host, always on)")


def test_plan_prints_and_renders_the_front_door_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {**aws(frontDoor={"instanceType": "t3.small"}), "developers": ["alice"]}
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump({"config": {f"coderig:{k}": v for k, v in config.items()}}))
    assert main(["plan", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "front door         t3.small $21.23/month always on" in out
    assert main(["plan", "--json", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["front_door"] == {"machine": "t3.small", "usd_per_month": 21.23}
    settings = parse_settings(config)
    files = render_stack(settings, "prod", planner.plan_stack(settings))
    assert "front door         t3.small" in files["plan.txt"].content
    assert json.loads(files["plan.json"].content)["front_door"]["usd_per_month"] == 21.23
