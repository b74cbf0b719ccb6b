"""The front-door machine layout under Pulumi mocks: a small host runs LiteLLM and the gateway, every
GPU host is a replica behind its mutual-TLS link, and a stack without `frontDoor` is unchanged."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from typing import Any

import pytest
import yaml
from conftest import HOST_KEY, ProgramRun, run_program, ssh_config
from moto_aws import launch, mocked_aws
from programs import aws_config, run_stack, unsecret

from coderig.core.settings import UserError
from coderig.frontdoor import links
from coderig.runtime import aws_reaper
from coderig.targets import parse_settings
from coderig.targets.aws import frontdoor

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBX4Cb1bVdp0Zq1kG0Bmb3x4d0Vv3fW2bQ2Yc7cQvN1a"
DOOR = {"address": "10.0.0.4", "user": "ops", "hostKey": OTHER_KEY}


def config(door: bool = True) -> dict[str, Any]:
    c = ssh_config()
    c["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----"
    c["target"]["hosts"].append({"address": "10.0.0.6", "user": "root", "hostKey": HOST_KEY})
    if door:
        c["target"]["frontDoor"] = DOOR
    return c


def ok(run: ProgramRun) -> ProgramRun:
    assert run.error is None, repr(run.error)
    return run


def bundle(run: ProgramRun, node: int) -> tarfile.TarFile:
    stdin: Any = run.named(f"node-{node}-bundle").inputs["stdin"]
    raw = base64.b64decode(str(stdin["value"] if isinstance(stdin, dict) else stdin))
    return tarfile.open(fileobj=io.BytesIO(raw))


def test_the_front_door_host_runs_the_gateway_and_every_gpu_host_is_a_replica() -> None:
    run = ok(run_program(config()))
    hosts = {}
    for r in run.of_type("command:remote:Command"):
        conn = r.inputs["connection"]
        conn = conn["value"] if isinstance(conn, dict) and "value" in conn else conn
        hosts.setdefault(r.name.split("-")[1], set()).add((conn["host"], conn["user"]))
    assert hosts == {"0": {("10.0.0.4", "ops")}, "1": {("gpu1.internal", "ubuntu")}, "2": {("10.0.0.6", "root")}}
    with bundle(run, 0) as tar:
        compose = yaml.safe_load(tar.extractfile("compose.yaml").read())  # type: ignore[union-attr]
        litellm = yaml.safe_load(tar.extractfile("litellm/config.yaml").read())  # type: ignore[union-attr]
        litellm_env = tar.extractfile("secrets/litellm.env").read().decode()  # type: ignore[union-attr]
        gateway_conf = tar.extractfile("gateway/nginx.conf").read().decode()  # type: ignore[union-attr]
    # LiteLLM calls the replicas with our model key (not an external endpoint's, which is unset)
    assert "CODERIG_MODEL_API_KEY=" in litellm_env and "CODERIG_MODEL_API_KEY=none" not in litellm_env
    # the gateway's /healthz asks the model through the relay, and the relay's route is the first
    # replica's link (no model server of its own on the front door)
    assert "127.0.0.1:8000" not in gateway_conf
    relay = compose["services"]["keepalive"]["command"]
    assert any(arg.endswith(f"={links.link_listen(1)}") for arg in relay), relay
    assert "model" not in compose["services"] and {"gateway", "litellm", "link"} <= set(compose["services"])
    bases = {m["litellm_params"]["api_base"] for m in litellm["model_list"]}
    # both GPU hosts, each through its relay (the one hop on every path), whose route is its link
    assert bases == {"http://127.0.0.1:4100/v1", "http://127.0.0.1:4101/v1"}
    assert [a for a in relay if "=" in a] == [f"127.0.0.1:{4100 + i}={links.link_listen(i + 1)}" for i in (0, 1)]
    for i, address in ((1, "gpu1.internal"), (2, "10.0.0.6")):
        with bundle(run, i) as tar:
            compose = yaml.safe_load(tar.extractfile("compose.yaml").read())  # type: ignore[union-attr]
            link_conf = tar.extractfile("link/nginx.conf").read().decode()  # type: ignore[union-attr]
        assert set(compose["services"]) == {"weights", "model", "link"}
        assert f"listen {address}:8000 ssl;" in link_conf and "ssl_verify_client on;" in link_conf
    assert run.outputs["nodes"] == ["10.0.0.4", "gpu1.internal", "10.0.0.6"]
    assert {"node-1-ready", "node-2-ready"} <= run.deps("node-0-ready")
    # the gateway certificate names the front door, the address developers reach
    assert "10.0.0.4" in str(run.named("gateway-tls-csr").inputs)


def test_without_a_front_door_the_first_gpu_host_keeps_the_gateway() -> None:
    run = ok(run_program(config(door=False)))
    assert run.outputs["nodes"] == ["gpu1.internal", "10.0.0.6"]
    with bundle(run, 0) as tar:
        compose = yaml.safe_load(tar.extractfile("compose.yaml").read())  # type: ignore[union-attr]
    assert {"model", "gateway", "litellm"} <= set(compose["services"])


# --- aws ---------------------------------------------------------------------------------------------------


def test_aws_front_door_is_a_small_instance_that_may_only_start_the_stacks_gpu_nodes() -> None:
    run = ok(run_stack(aws_config(frontDoor={"instanceType": "t3.small"}, count=2)))
    door = run.named("front-door-instance")
    assert door.typ == "aws:ec2/instance:Instance"
    assert door.inputs["instanceType"] == "t3.small" and door.inputs["privateIp"] == frontdoor.PRIVATE_IP
    assert door.parent.endswith("coderig:aws:FrontDoorNode::front-door")
    assert door.inputs["tags"][aws_reaper.TAG_ROLE] == "front-door"
    assert door.inputs["tags"][aws_reaper.TAG_STACK] == "prod"
    # GPU nodes keep their addresses; all three machines share the stack's security group
    gpus = [r for r in run.of_prefix("aws:ec2/instance:") if r.name != "front-door-instance"]
    assert sorted(r.inputs["privateIp"] for r in gpus) == ["10.77.0.10", "10.77.0.11"]
    (sg,) = run.of_prefix("aws:ec2/securityGroup:")
    assert any(rule.get("self") and rule["fromPort"] == 8000 for rule in sg.inputs["ingress"])
    # its role: the waker policy, scoped by the stack tag; nothing that stops or terminates
    policy = json.loads(unsecret(run.named("front-door-wake").inputs["policy"]))
    assert policy == frontdoor.waker_policy("prod")
    # the Ubuntu AMI lookup for it, the DLAMI for the GPU nodes
    owners = sorted(a["owners"][0] for t, a in run.calls if t == "aws:ec2/getAmi:getAmi")
    assert owners == [frontdoor.UBUNTU_OWNER, "amazon"]
    # the SSH steps of machine 0 reach the front door's Elastic IP; the GPU nodes are replicas 1, 2
    assert {"node-0-ready", "node-1-ready", "node-2-ready"} <= {r.name for r in run.resources}
    assert {"node-1-ready", "node-2-ready"} <= run.deps("node-0-ready")
    assert "frontDoor" in run.outputs


def test_aws_without_a_front_door_registers_no_front_door_resources() -> None:
    run = ok(run_stack(aws_config()))
    assert not [r for r in run.resources if r.name.startswith("front-door")]
    assert "frontDoor" not in run.outputs


def test_aws_front_door_needs_the_subnet_coderig_creates() -> None:
    c = aws_config(frontDoor={}, vpcId="vpc-0123456789abcdef0", subnetId="subnet-0123456789abcdef0")
    with pytest.raises(UserError) as err:
        parse_settings(c)
    assert any(line.startswith("coderig:target.frontDoor:") for line in err.value.problems), err.value.problems


def test_the_reaper_never_lists_the_front_door(monkeypatch: pytest.MonkeyPatch) -> None:
    with mocked_aws(monkeypatch) as a:
        gpu = launch(a, {aws_reaper.TAG_STACK: "prod", aws_reaper.TAG_ROLE: "gpu-node"})
        launch(a, {aws_reaper.TAG_STACK: "prod", aws_reaper.TAG_ROLE: "front-door"}, "t3.medium")
        found = aws_reaper.list_stack_instances(a.ec2, aws_reaper.ReaperConfig(stack="prod"))
    assert [i["InstanceId"] for i in found] == [gpu]
