"""The rolling model restart and the `coderig:model.image` check as Pulumi resources (mocks): which step
waits for which, what each runs, and that a stack of one machine (or one on the pinned image) registers
exactly what it did before (coderig.targets.compose.rolling, coderig.targets.compose.image_check)."""

from __future__ import annotations

import shlex
from typing import Any

from conftest import ProgramRun, run_program, ssh_config
from programs import aws_config, run_stack

from coderig.core import planner
from coderig.targets import parse_settings
from coderig.targets.compose import commands, rolling
from coderig.targets.compose.rendered import render_nodes

SIG_KEY = "4dabf18193072939515e22adb298388d"
OTHER = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBX4Cb1bVdp0Zq1kG0Bmb3x4d0Vv3fW2bQ2Yc7cQvN1a",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAw6Zl1Wm1x1WZf3V8h2kG4yQ9uXo6t7cS5rB2nQ1pLd",
]
IMAGE = "registry.internal:5000/vllm/vllm-openai:v0.35.0"


def unwrap(value: Any) -> Any:
    return value["value"] if isinstance(value, dict) and SIG_KEY in value else value


def hosts_config(count: int, **model: Any) -> dict[str, Any]:
    c = ssh_config(**model)
    c["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----"
    for i in range(1, count):
        c["target"]["hosts"].append({"address": f"10.0.0.{5 + i}", "user": "root", "hostKey": OTHER[i - 1]})
    return c


def ok(run: ProgramRun) -> ProgramRun:
    assert run.error is None, repr(run.error)
    return run


def steps(names: set[str]) -> set[str]:
    """The node steps among a resource's dependencies (the rest: secrets its inputs come from)."""
    return {n for n in names if n.startswith("node-")}


def gates(run: ProgramRun) -> set[str]:
    return {r.name for r in run.resources if r.name.endswith("-restart-gate")}


def test_three_hosts_restart_replicas_first_then_the_first_host_each_after_the_one_before() -> None:
    run = ok(run_program(hosts_config(3)))
    # machine 1, then 2, then 0 (the gateway's); each gate sits on the machine it waits for
    assert gates(run) == {"node-1-restart-gate", "node-2-restart-gate"}
    assert "node-1-restart-gate" in run.deps("node-2-up")
    assert "node-2-restart-gate" in run.deps("node-0-up")
    assert not any(d.endswith("restart-gate") for d in run.deps("node-1-up"))  # the first to restart
    for i in (1, 2):
        gate = run.named(f"node-{i}-restart-gate")
        assert steps(run.deps(f"node-{i}-restart-gate")) == {f"node-{i}-up"}
        assert gate.delete_before_replace is True  # its delete (the wait) runs before the next `up`
        assert gate.parent.endswith(f"coderig:node:NodeStack::node-{i}")
        assert unwrap(gate.inputs["connection"])["host"] == f"10.0.0.{5 + i}"
        # replaced exactly when this machine's `up` is: the same triggers (the model half)
        assert gate.inputs["triggers"] == run.named(f"node-{i}-up").inputs["triggers"]
        assert gate.inputs["create"] == rolling.GATE_CREATE
    # the first create stays parallel: a gate's create is an echo, its delete waits; `ready` still
    # waits for every replica's ready step, not for a gate
    assert not any(d.endswith("restart-gate") for d in run.deps("node-0-ready"))


def test_the_gate_delete_is_the_machines_own_readiness_wait_guarded_by_its_files() -> None:
    config = hosts_config(2)
    run = ok(run_program(config))
    s = parse_settings(config)
    replica = render_nodes(s, planner.plan_stack(s))[1]
    delete = run.named("node-1-restart-gate").inputs["delete"]
    assert isinstance(delete, str)  # not a secret: no key in it, readable in a preview
    want = rolling.gate_delete_command(
        rolling.model_files_digest(replica.files), commands.wait_env(replica), "/opt/coderig", "root"
    )
    assert delete == want
    assert "bash /opt/coderig/scripts/wait-ready.sh" in delete and "CODERIG_SERVICES='model link'" in delete
    budget = run.named("node-1-ready").custom_timeouts.create
    assert budget and run.named("node-1-restart-gate").custom_timeouts.delete == budget


def test_a_model_change_replaces_the_gates_and_a_new_developer_does_not() -> None:
    base = ok(run_program(hosts_config(2)))
    model = ok(run_program(hosts_config(2, maxModelLen=65536)))
    more = hosts_config(2)
    more["developers"] = ["alice", "bob", "carol"]
    dev = ok(run_program(more))

    def trig(r: ProgramRun) -> Any:
        return unwrap(r.named("node-1-restart-gate").inputs["triggers"])

    assert trig(base) != trig(model)
    assert trig(base) == trig(dev)
    assert base.named("node-1-restart-gate").inputs["delete"] == dev.named("node-1-restart-gate").inputs["delete"]


def test_one_host_registers_no_gate_and_no_image_check() -> None:
    run = ok(run_program(hosts_config(1)))
    assert gates(run) == set()
    assert not [r for r in run.resources if r.name.endswith("-image-check")]
    assert steps(run.deps("node-0-up")) == {"node-0-bundle"}


def test_aws_front_door_machine_is_not_in_the_chain() -> None:
    run = ok(run_stack(aws_config(count=2, frontDoor={"instanceType": "t3.small"})))
    # machine 0 is the front door (no model server): only the GPU machines roll, 1 then 2
    assert gates(run) == {"node-1-restart-gate"}
    assert "node-1-restart-gate" in run.deps("node-2-up")
    assert not any(d.endswith("restart-gate") for d in run.deps("node-0-up"))


def test_an_overridden_image_is_checked_on_each_host_before_up() -> None:
    config = hosts_config(2, image=IMAGE, extraArgs=["--max-num-seqs", "64"])
    config["target"]["hosts"][0]["user"] = "ubuntu"
    run = ok(run_program(config))
    s = parse_settings(config)
    nodes = render_nodes(s, planner.plan_stack(s))
    for i in (0, 1):
        check = run.named(f"node-{i}-image-check")
        assert f"node-{i}-image-check" in run.deps(f"node-{i}-up")
        assert f"node-{i}-bundle" in run.deps(f"node-{i}-image-check")
        assert check.inputs["triggers"] == run.named(f"node-{i}-up").inputs["triggers"]
        create = check.inputs["create"]
        assert create.startswith("sudo -n docker run" if i == 0 else "docker run")
        argv = shlex.split(create.removeprefix("sudo -n "))
        assert argv[:9] == ["docker", "run", "--rm", "--network", "none", "-e", "VLLM_TARGET_DEVICE=cpu",
                            "--entrypoint", "python3"]  # fmt: skip
        assert argv[9] == IMAGE and argv[10] == "-c" and "ServeSubcommand" in argv[11]
        model = nodes[i].compose["services"]["model"]
        assert argv[12:] == [IMAGE, "serve", *model["command"]]  # exactly what the model service runs
        assert argv[-2:] == ["--max-num-seqs", "64"]


def test_pinned_image_and_llamacpp_get_no_image_check() -> None:
    run = ok(run_program(hosts_config(2)))
    assert not [r for r in run.resources if r.name.endswith("-image-check")]
    cpu = hosts_config(1)
    cpu["target"].pop("gpu")
    cpu["model"] = {"preset": "qwen3-1.7b-cpu", "image": "ghcr.io/ggml-org/llama.cpp:server-b9999"}
    run = ok(run_program(cpu))
    assert not [r for r in run.resources if r.name.endswith("-image-check")]


def test_with_another_image_a_flag_unknown_to_the_pinned_vllm_is_left_to_the_image() -> None:
    from coderig.core.errors import UserError

    new_flag = ["--enable-something-new-in-0-35"]
    try:
        parse_settings(ssh_config(extraArgs=new_flag))
    except UserError as e:
        assert any("coderig:model.extraArgs" in p for p in e.problems)
    else:
        raise AssertionError("the pinned vLLM's flag list accepted an unknown flag")
    assert parse_settings(ssh_config(extraArgs=new_flag, image=IMAGE)).model.extraArgs == new_flag
