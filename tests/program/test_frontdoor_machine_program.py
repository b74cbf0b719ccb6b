"""The front-door machine layout under Pulumi mocks: a small host runs LiteLLM and the gateway, every
GPU host is a replica behind its mutual-TLS link, and a stack without `frontDoor` is unchanged."""

from __future__ import annotations

import base64
import io
import tarfile
from typing import Any

import yaml
from conftest import HOST_KEY, ProgramRun, run_program, ssh_config

from coderig.frontdoor import links

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
    assert "model" not in compose["services"] and {"gateway", "litellm", "link"} <= set(compose["services"])
    bases = {m["litellm_params"]["api_base"] for m in litellm["model_list"]}
    assert bases == {f"http://{links.link_listen(i)}/v1" for i in (1, 2)}  # both GPU hosts, through links
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
