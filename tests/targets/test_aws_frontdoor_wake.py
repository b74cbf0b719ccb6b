"""The `aws` front-door machine's relay holds requests and starts stopped GPU instances: `--wake ec2`
is rendered into its keepalive service (and only there), with the modules it imports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import HOST_KEY, ssh_config
from programs import aws_config, run_stack

from coderig.core import budgets, planner
from coderig.core.errors import UserError
from coderig.core.settings import StackSettings
from coderig.runtime import aws_wake, idle
from coderig.targets import parse_settings
from coderig.targets.compose import idle as node_idle
from coderig.targets.compose import spec
from coderig.targets.compose.machines import node_specs
from coderig.targets.compose.rendered import RenderedNode, render_node


def nodes(config: dict[str, Any]) -> list[RenderedNode]:
    s = parse_settings(config)
    return [render_node(s, n) for n in node_specs(s, planner.plan_stack(s))]


def relay(node: RenderedNode) -> list[str]:
    svc = node.compose["services"].get("keepalive")
    return svc["command"] if svc else []


def test_the_front_door_relay_wakes_the_gpu_instances_by_ec2() -> None:
    config = aws_config(frontDoor={"instanceType": "t3.medium"}, count=2, region="eu-west-1")
    config["target"]["availabilityZone"] = "eu-west-1a"
    door, *replicas = nodes(config)
    assert door.spec.runs_front_door and not door.spec.runs_model
    cmd = relay(door)
    assert cmd[cmd.index("--wake") + 1] == "ec2"
    assert cmd[cmd.index("--aws-region") + 1] == "eu-west-1"  # the stack's region, not a metadata lookup
    assert "--aws-stack" not in cmd  # the front door's own coderig:stack tag names the instances to start
    assert cmd[cmd.index("--control") + 1] == node_idle.RELAY_CONTROL
    s: StackSettings = parse_settings(config)
    assert cmd[cmd.index("--served-name") + 1] == s.model.served_name
    # the start budget: a stopping instance waited for, the boot, then the model's load from the volume
    load = budgets.load_budget_seconds(s.model.spec)
    assert int(cmd[cmd.index("--start-budget") + 1]) == load + budgets.EC2_BOOT_S + int(aws_wake.STOP_WAIT_S)
    # the waker and what it imports ship beside the relay, in the keepalive directory
    for name in (*node_idle.RUNTIME_MODULES, *node_idle.EC2_MODULES):
        assert f"{spec.KEEPALIVE_DIR}/coderig/runtime/{name}" in door.files, name
    # the reaper runs here too: it stops the instances through the relay's hold (no docker socket)
    reaper = door.compose["services"][node_idle.REAPER_SERVICE]
    rcmd = reaper["entrypoint"] + reaper["command"]
    assert rcmd[rcmd.index("--action") + 1] == "ec2" and rcmd[rcmd.index("--aws-region") + 1] == "eu-west-1"
    assert [rcmd[i + 1] for i, a in enumerate(rcmd) if a == "--model"] == [
        "http://127.0.0.1:4201",
        "http://127.0.0.1:4202",
    ]
    assert rcmd[rcmd.index("--relay") + 1] == f"http://{node_idle.RELAY_CONTROL}"
    assert not any("docker.sock" in v for v in reaper["volumes"])
    assert json.loads(reaper["environment"][idle.ENV_SCHEDULE])["timezone"] == "Europe/Paris"  # office hours
    # the GPU machines are replicas: no relay, no reaper, no sleep mode (their instance stops instead)
    for r in replicas:
        assert r.spec.is_replica and "keepalive" not in r.compose["services"]
        assert node_idle.REAPER_SERVICE not in r.compose["services"]
        assert "--enable-sleep-mode" not in r.compose["services"]["model"]["command"]


def test_no_ec2_wake_without_an_idle_policy_or_without_a_front_door() -> None:
    no_idle = aws_config(frontDoor={"instanceType": "t3.medium"})
    del no_idle["idle"]
    door = nodes(no_idle)[0]
    assert "--wake" not in relay(door)
    assert not any(p.endswith("aws_wake.py") for p in door.files)
    # single machine: the gateway stops with the GPU instance, so nothing could hold a request
    first = nodes(aws_config())[0]
    assert first.spec.runs_model and "--wake" not in relay(first)


def test_an_ssh_front_door_holds_and_sleeps_its_replicas_through_the_links() -> None:
    """ssh hosts do not stop: the front door's relay wakes a sleeping replica (POST /wake_up through
    its link) and its reaper sleeps it, as the first machine does for its replicas."""
    c = ssh_config()
    c["target"]["frontDoor"] = {"address": "10.0.0.4", "user": "ops", "hostKey": HOST_KEY}
    c["idle"] = {"stopAfterMinutes": 30}
    door, replica = nodes(c)
    cmd = relay(door)
    assert cmd[cmd.index("--wake") + 1] == "sleep" and "--aws-region" not in cmd
    assert not any(p.endswith("aws_wake.py") for p in door.files)
    reaper = door.compose["services"][node_idle.REAPER_SERVICE]
    rcmd = reaper["entrypoint"] + reaper["command"]
    assert rcmd[rcmd.index("--action") + 1] == "sleep"
    assert [rcmd[i + 1] for i, a in enumerate(rcmd) if a == "--model"] == ["http://127.0.0.1:4201"]
    assert "--enable-sleep-mode" in replica.compose["services"]["model"]["command"]


def test_stop_with_an_ssh_front_door_is_refused_naming_the_key() -> None:
    """`stop` needs the model host's docker socket, which a front door does not hold."""
    c = ssh_config()
    c["target"]["frontDoor"] = {"address": "10.0.0.4", "user": "ops", "hostKey": HOST_KEY}
    c["idle"] = {"stopAfterMinutes": 30, "action": "stop"}
    with pytest.raises(UserError) as err:
        parse_settings(c)
    assert any(p.startswith("coderig:idle.action: got 'stop' with a frontDoor") for p in err.value.problems), err.value


def test_with_a_front_door_the_reaper_lambda_is_not_deployed() -> None:
    """Two reapers would race; the one on the front door holds requests before it stops anything."""
    run = run_stack(aws_config(frontDoor={"instanceType": "t3.medium"}))
    assert run.error is None, repr(run.error)
    assert not run.of_prefix("aws:lambda/") and "idleReaper" not in run.outputs
    single = run_stack(aws_config())
    assert single.of_prefix("aws:lambda/") and "idleReaper" in single.outputs
