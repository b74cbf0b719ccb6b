"""What `coderig:idle` adds to an ssh/local node: the reaper service, the relay's hold/wake flags, vLLM's
sleep mode only with `sleep`, the docker socket only in the reaper with `stop`, and the plan's line."""

from __future__ import annotations

from typing import Any

from conftest import HOST_KEY, ssh_config

from coderig.core import planner
from coderig.core.settings import StackSettings
from coderig.targets import parse_settings
from coderig.targets.compose import commands, spec
from coderig.targets.compose import idle as node_idle
from coderig.targets.compose.machines import NodeSpec, node_specs
from coderig.targets.compose.rendered import RenderedNode, render_node


def settings(idle: dict[str, Any] | None, hosts: int = 1, **model: Any) -> StackSettings:
    c = ssh_config(**model)
    for i in range(1, hosts):
        c["target"]["hosts"].append({"address": f"10.0.0.{10 + i}", "user": "ubuntu", "hostKey": HOST_KEY})
    if idle is not None:
        c["idle"] = idle
    return parse_settings(c)


def specs(s: StackSettings) -> list[NodeSpec]:
    return node_specs(s, planner.plan_stack(s))


def node(s: StackSettings, machine: int = 0) -> RenderedNode:
    return render_node(s, specs(s)[machine])


def services(s: StackSettings, machine: int = 0) -> dict[str, Any]:
    return node(s, machine).compose["services"]


def test_no_idle_policy_adds_nothing() -> None:
    svc = services(settings(None))
    assert node_idle.REAPER_SERVICE not in svc
    assert "--enable-sleep-mode" not in svc["model"]["command"]
    assert "VLLM_SERVER_DEV_MODE" not in svc["model"]["environment"]
    assert "--wake" not in svc["keepalive"]["command"]


def test_sleep_gives_vllm_sleep_mode_and_the_relay_and_reaper_their_flags() -> None:
    s = settings({"stopAfterMinutes": 30, "periodSeconds": 120}, hosts=2)
    assert node_idle.action(s) == "sleep"  # vLLM, no action given
    svc = services(s)
    model = svc["model"]
    assert "--enable-sleep-mode" in model["command"] and model["environment"]["VLLM_SERVER_DEV_MODE"] == "1"
    relay = svc["keepalive"]["command"]
    assert relay[relay.index("--wake") + 1] == "sleep" and "--reaper" not in relay
    assert relay[relay.index("--control") + 1] == node_idle.RELAY_CONTROL
    assert relay[relay.index("--served-name") + 1] == s.model.served_name
    reaper = svc[node_idle.REAPER_SERVICE]
    cmd = reaper["entrypoint"] + reaper["command"]
    models = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--model"]
    assert models == ["http://127.0.0.1:8000", "http://127.0.0.1:4201"]  # the replica through its link
    assert cmd[cmd.index("--period") + 1] == "120" and cmd[cmd.index("--stop-after-minutes") + 1] == "30"
    assert not any("docker.sock" in v for service in svc.values() for v in service.get("volumes", []))
    # the replica's model sleeps too (the reaper reaches it through the link); it runs no reaper
    replica = services(s, 1)
    assert "--enable-sleep-mode" in replica["model"]["command"] and node_idle.REAPER_SERVICE not in replica
    # the stdlib modules the relay and reaper import ship in the bundle
    files = node(s).files
    for name in node_idle.RUNTIME_MODULES:
        assert f"{spec.KEEPALIVE_DIR}/coderig/runtime/{name}" in files
    assert commands.preflight_env(s, specs(s)[1])["CODERIG_SLEEP_RAM_BYTES"] == str(s.model.spec.weight_bytes)


def test_stop_mounts_the_docker_socket_into_the_reaper_alone() -> None:
    s = settings({"stopAfterMinutes": 30, "action": "stop", "dryRun": True})
    svc = services(s)
    assert "--enable-sleep-mode" not in svc["model"]["command"]
    assert "VLLM_SERVER_DEV_MODE" not in svc["model"]["environment"]
    holders = [name for name, service in svc.items() if any("docker.sock" in v for v in service.get("volumes", []))]
    assert holders == [node_idle.REAPER_SERVICE]
    reaper = svc[node_idle.REAPER_SERVICE]
    cmd = reaper["command"]
    assert cmd[cmd.index("--container") + 1] == node_idle.MODEL_CONTAINER
    assert cmd[cmd.index("--control") + 1] == node_idle.REAPER_CONTROL
    assert reaper["environment"]["CODERIG_DRY_RUN"] == "true"
    relay = svc["keepalive"]["command"]
    assert relay[relay.index("--wake") + 1] == "stop"
    assert relay[relay.index("--reaper") + 1] == f"http://{node_idle.REAPER_CONTROL}"
    assert "CODERIG_SLEEP_RAM_BYTES" not in commands.preflight_env(s, specs(s)[0])
    assert node(s).front_services == ["litellm", "keepalive", "reaper", "gateway"]


def test_the_plan_says_what_idling_does() -> None:
    note = node_idle.plan_note(settings({"stopAfterMinutes": 30}))
    assert note is not None and "sleeps (vLLM sleep level 1)" in note and "host RAM" in note
    note = node_idle.plan_note(settings({"stopAfterMinutes": 30, "action": "stop"}))
    assert note is not None and "container stops" in note
    cpu = parse_settings(
        {"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu"}, "idle": {"stopAfterMinutes": 20}}
    )
    note = node_idle.plan_note(cpu)
    assert note is not None and "llama.cpp has no sleep mode" in note and node_idle.action(cpu) == "stop"
