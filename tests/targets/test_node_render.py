"""The node bundle renderer: compose files valid against the Compose Specification's JSON schema,
host networking with only the gateway public, pinned images, secrets only in 0600 env files, and the
deploy command strings run for real against a stand-in `docker`.

The schema is the compose-spec JSON schema (github.com/compose-spec/compose-spec, schema/compose-spec.json)
as vendored by the check-jsonschema package (a dev dependency), so no copy is kept here.
"""

from __future__ import annotations

import base64
import importlib.resources
import io
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import HOST_KEY, ssh_config

from coderig import frontdoor, targets
from coderig.core import budgets, engine, hostkeys, planner, versions
from coderig.core.files import RenderedFile
from coderig.core.secrets import LinkTls
from coderig.core.settings import NODE_CACHE_PATH, StackSettings
from coderig.runtime.scripts import SCRIPT_NAMES
from coderig.targets import parse_settings
from coderig.targets.compose import commands, machines
from coderig.targets.compose import spec as node
from coderig.targets.compose.rendered import render_node, render_node_files


def compose_schema() -> dict[str, Any]:
    ref = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(ref.read_text())


def settings_ssh(hosts: int = 1) -> StackSettings:
    c = ssh_config()
    c["sshPrivateKey"] = "present"
    for i in range(1, hosts):
        c["target"]["hosts"].append({"address": f"10.0.0.{10 + i}", "user": "ubuntu", "hostKey": HOST_KEY})
    return parse_settings(c)


def settings_local() -> StackSettings:
    return parse_settings({"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu"}, "developers": ["dev"]})


def settings_external() -> StackSettings:
    return parse_settings(
        {
            "target": {"kind": "external", "endpoint": "https://kserve.internal/v1"},
            "model": {"preset": "glm-4.7"},
            "developers": ["dev"],
        }
    )


def settings_aws() -> StackSettings:
    return parse_settings(
        {
            "target": {"kind": "aws", "instanceType": "p5en.48xlarge", "count": 2},
            "model": {"preset": "deepseek-v3.2"},
            "developers": ["dev"],
        }
    )


def fake_secrets(**overrides: Any) -> node.NodeSecrets:
    values: dict[str, Any] = {
        "model_api_key": "m" * 20, "litellm_master_key": "sk-" + "x" * 20,
        "developer_keys": {"a": "crk-" + "a" * 20}, "tls_cert": "C", "tls_key": "K",
    }  # fmt: skip
    return node.NodeSecrets(**{**values, **overrides})


ALL = {
    "aws-2": settings_aws,
    "ssh-1": lambda: settings_ssh(1),
    "ssh-3": lambda: settings_ssh(3),
    "local": settings_local,
    "external": settings_external,
}


@pytest.mark.parametrize("kind", list(ALL))
def test_compose_is_valid_against_the_compose_spec_schema(kind: str) -> None:
    settings = ALL[kind]()
    schema = compose_schema()
    for spec in machines.node_specs(settings, planner.plan_stack(settings)):
        doc = yaml.safe_load(render_node(settings, spec).files["compose.yaml"].content)
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
        assert doc == render_node(settings, spec).compose


def test_schema_catches_a_broken_compose_file() -> None:
    """Guard: the schema really checks what we rely on."""
    doc = render_node(
        settings_ssh(), machines.node_specs(settings_ssh(), planner.plan_stack(settings_ssh()))[0]
    ).compose
    doc["services"]["model"]["healthcheck"]["retires"] = 5  # misspelt key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, compose_schema(), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("kind", list(ALL))
def test_only_the_gateway_is_public(kind: str) -> None:
    settings = ALL[kind]()
    for spec in machines.node_specs(settings, planner.plan_stack(settings)):
        services = render_node(settings, spec).compose["services"]
        for name, svc in services.items():
            assert svc["network_mode"] == "host", name
            assert "ports" not in svc, name
        if "litellm" in services:
            cmd = services["litellm"]["command"]
            assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
            conf = render_node(settings, spec).files[node.GATEWAY_CONF].content
            assert f"listen 0.0.0.0:{settings.gateway.port} ssl" in conf or f"0.0.0.0:{settings.gateway.port}" in conf
        if "model" in services:  # every model server on loopback, replicas' too (their link is TLS)
            cmd = services["model"]["command"]
            assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
        if "link" in services:
            conf = render_node(settings, spec).files[node.LINK_CONF].content
            listens = re.findall(r"listen (\S+?)( ssl)?;", conf)
            if spec.role == "replica":  # its private address, TLS only
                assert listens == [(f"{spec.link_address}:8000", " ssl")], conf
            else:  # loopback, one per replica
                assert listens and all(addr.startswith("127.0.0.1:") and not ssl for addr, ssl in listens), conf


def test_images_are_pinned_from_versions() -> None:
    pinned = {
        versions.VLLM_IMAGE,
        versions.LLAMACPP_IMAGE,
        versions.LITELLM_IMAGE,
        versions.NGINX_IMAGE,
        versions.WEIGHTS_IMAGE_CPU,
    }
    for kind in ALL:
        settings = ALL[kind]()
        for spec in machines.node_specs(settings, planner.plan_stack(settings)):
            for svc in render_node(settings, spec).compose["services"].values():
                assert svc["image"] in pinned
                tag = svc["image"].rsplit(":", 1)[1]
                assert tag not in ("latest", "stable", "main", "server") and any(ch.isdigit() for ch in tag)
    assert versions.LITELLM_VERSION not in versions.FORBIDDEN_LITELLM_VERSIONS


def test_vllm_service_gpus_ipc_cache_health() -> None:
    settings = settings_ssh()
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    svc = render_node(settings, spec).compose["services"]
    model = svc["model"]
    assert model["image"] == versions.VLLM_IMAGE and model["ipc"] == "host"
    assert model["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 8, "capabilities": ["gpu"]}
    ]
    assert model["environment"]["HF_HOME"] == engine.HF_HOME and model["environment"]["HF_HUB_OFFLINE"] == "1"
    assert model["environment"]["VLLM_CACHE_ROOT"].startswith("/cache/")  # compile cache on the volume
    assert f"{settings.target.cachePath}:/cache" in model["volumes"]  # type: ignore[union-attr]
    assert model["command"] == engine.vllm_args(settings.model, planner.plan_stack(settings).layout)
    # deepseek-v3.2's 689 GB on 8× H200 with the default workload: TP8 (tests/core/test_planner.py)
    assert model["command"][model["command"].index("--tensor-parallel-size") + 1] == "8"
    assert "--tool-call-parser" in model["command"]
    assert model["depends_on"] == {"weights": {"condition": "service_completed_successfully"}}
    # worked: 600 s warm-up + 689 GB read at 500 MB/s (1378 s) = 1978 s
    assert model["healthcheck"]["start_period"] == "1978s"
    assert "/health" in " ".join(model["healthcheck"]["test"])
    assert model["restart"] == "unless-stopped"
    w = svc["weights"]
    assert w["restart"] == "no" and w["environment"]["CODERIG_REPO"] == settings.model.spec.hf_repo
    assert "./scripts/fetch_weights.py:/coderig/fetch_weights.py:ro" in w["volumes"]
    assert {s["restart"] for n, s in svc.items() if n != "weights"} == {"unless-stopped"}


def test_llamacpp_dev_preset() -> None:
    settings = settings_local()
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    svc = render_node(settings, spec).compose["services"]
    model = svc["model"]
    assert model["image"] == versions.LLAMACPP_IMAGE and "deploy" not in model and "ipc" not in model
    gguf = engine.gguf_path(settings.model.spec, node.CACHE_MOUNT)
    assert model["command"][model["command"].index("--model") + 1] == gguf
    assert svc["weights"]["environment"]["CODERIG_LINK_TO"] == gguf
    assert svc["weights"]["environment"]["CODERIG_ALLOW_PATTERNS"] == settings.model.spec.gguf_file
    assert spec.cache_path == os.path.expanduser("~/.cache/coderig")


def test_secrets_only_in_0600_env_files() -> None:
    settings = settings_ssh(2)
    secrets = node.NodeSecrets(
        model_api_key="model-key-0123456789abcdef",
        litellm_master_key="sk-master-0123456789abcdef",
        developer_keys={"alice": "crk-alice-0123456789abcdef"},
        hf_token="hf_secret_token",
        tls_cert="CERT",
        tls_key="KEY",
        link=LinkTls(ca_cert="LINK-CA", cert="LINK-CERT", key="link-key-0123456789"),
    )
    for spec in machines.node_specs(settings, planner.plan_stack(settings)):
        public = render_node(settings, spec).files
        private = node.node_secret_files(spec, secrets)
        text = "".join(f.content for f in public.values())
        for value in ("model-key-0123", "sk-master-0123", "crk-alice", "hf_secret_token", "link-key-0123"):
            assert value not in text
        for path, f in private.items():
            assert f.mode == (0o644 if path.endswith(".crt") else 0o600), path
        assert private[node.LINK_KEY].content == "link-key-0123456789"  # both ends of the link
        compose = render_node(settings, spec).compose
        referenced = {e for s in compose["services"].values() for e in s.get("env_file", [])}
        referenced |= {v.split(":")[0].removeprefix("./") for s in compose["services"].values() for v in s["volumes"]}
        assert {p for p in referenced if p.startswith(("secrets/", "tls/"))} <= set(private)
    with pytest.raises(ValueError, match="no link certificate"):  # never a link without its certificate
        node.node_secret_files(
            machines.node_specs(settings, planner.plan_stack(settings))[1], replace(secrets, link=None)
        )
    gateway = render_node(settings, machines.node_specs(settings, planner.plan_stack(settings))[0]).compose["services"][
        "gateway"
    ]
    assert not any(v.startswith("./secrets:") or ".env" in v for v in gateway["volumes"])  # least privilege
    env = node.node_secret_files(machines.node_specs(settings, planner.plan_stack(settings))[0], secrets)[
        "secrets/weights.env"
    ].content
    assert env == "HF_TOKEN=hf_secret_token\n"
    with pytest.raises(ValueError, match="newline"):
        node.node_secret_files(
            machines.node_specs(settings, planner.plan_stack(settings))[0],
            node.NodeSecrets(model_api_key="a\nb", litellm_master_key="x" * 20),
        )


def test_render_contributor_writes_every_node() -> None:
    files = render_node_files(settings_ssh(2), "prod", planner.plan_stack(settings_ssh(2)))
    assert "node/0-full/compose.yaml" in files and "node/1-replica/compose.yaml" in files
    assert "node/0-full/litellm/config.yaml" in files and "node/0-full/gateway/nginx.conf" in files
    for script in SCRIPT_NAMES:
        # the hash-pinned requirements ship only where the weights image lacks huggingface_hub (llama.cpp)
        assert (f"node/0-full/scripts/{script}" in files) == (script != versions.WEIGHTS_REQUIREMENTS)
    local = render_node_files(settings_local(), "dev", planner.plan_stack(settings_local()))
    assert "node/scripts/weights-requirements.txt" in local
    assert not any("/secrets/" in p for p in files)
    assert set(local) >= {"node/compose.yaml", "node/scripts/volume.sh"}


def test_coderig_render_writes_the_node_bundle(tmp_path: Path) -> None:
    assert {k for k, t in targets.REGISTRY.items() if t.render is render_node_files} == {
        "local",
        "ssh",
        "aws",
        "external",
    }
    bundle = targets.render_stack(settings_ssh(2), "prod", planner.plan_stack(settings_ssh(2)))
    assert "node/0-full/compose.yaml" in bundle


def test_archive_is_deterministic_and_keeps_modes() -> None:
    settings = settings_ssh()
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    secrets = fake_secrets()
    files = commands.with_hash_file(render_node(settings, spec).files | node.node_secret_files(spec, secrets))
    a, b = node.bundle_archive(files), node.bundle_archive(dict(reversed(list(files.items()))))
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(a))) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["secrets/litellm.env"] == 0o600 and modes["scripts/preflight.sh"] == 0o755


def test_hashes_split_model_and_front_door() -> None:
    settings = settings_ssh()
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    s1 = fake_secrets()
    s2 = fake_secrets(developer_keys={"a": "crk-" + "a" * 20, "b": "crk-" + "b" * 20})
    h1 = render_node(settings, spec).hashes(node.node_secret_files(spec, s1))
    h2 = render_node(settings, spec).hashes(node.node_secret_files(spec, s2))
    assert h1["model"] == h2["model"] and h1["frontdoor"] != h2["frontdoor"]


# ---------------------------------------------------------------- the command strings, run for real


def fake_docker(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "docker"
    exe.write_text(f'#!/usr/bin/env bash\necho "docker $*" >> {tmp_path}/docker.calls\nexit "${{FAKE_RC:-0}}"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def sh(cmd: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", cmd], env={**os.environ, **(env or {})}, input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the command strings are built for root here (no sudo)")
def test_copy_then_up_then_guarded_delete(tmp_path: Path) -> None:
    settings = settings_ssh()
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    d = tmp_path / "bundle"
    secrets = fake_secrets()
    files = render_node(settings, spec).files | node.node_secret_files(spec, secrets)
    old_hash = node.bundle_hash(files)
    d.mkdir()
    (d / "scripts").mkdir()
    (d / "scripts" / "stale.sh").write_text("old")
    result = sh(commands.copy_command(str(d), "root"), stdin=node.bundle_archive(commands.with_hash_file(files)))
    assert result.returncode == 0, result.stderr
    assert not (d / "scripts" / "stale.sh").exists()
    assert stat.S_IMODE((d / "secrets" / "litellm.env").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "secrets").stat().st_mode) == 0o700
    assert (d / "compose.yaml").read_text() == files["compose.yaml"].content
    assert not list(d.glob(".incoming*"))

    env = fake_docker(tmp_path)
    up = sh(commands.up_command(str(d), "root"), env)
    assert up.returncode == 0, up.stderr
    for _ in range(100):
        if "compose-up-exit=" in (d / "up.log").read_text():
            break
        import time

        time.sleep(0.05)
    assert "compose-up-exit=0" in (d / "up.log").read_text()
    calls = (tmp_path / "docker.calls").read_text()
    assert f"docker compose --project-directory {d} -p coderig up -d --remove-orphans" in calls

    # a newer bundle replaced this one: the old resource's delete must leave its secrets alone
    newer = files | {"compose.yaml": RenderedFile("# newer\n")}
    archive = node.bundle_archive(commands.with_hash_file(newer))
    assert sh(commands.copy_command(str(d), "root"), stdin=archive).returncode == 0
    out = sh(commands.remove_secrets_command(old_hash, str(d), "root"))
    assert "newer bundle" in out.stdout and (d / "secrets" / "litellm.env").exists()
    out = sh(commands.remove_secrets_command(node.bundle_hash(newer), str(d), "root"))
    assert "removed secrets" in out.stdout and not (d / "secrets").exists()

    down = sh(commands.down_command(str(d), "root"), env)
    assert down.returncode == 0
    assert (
        f"docker compose --project-directory {d} -p coderig down --remove-orphans"
        in (tmp_path / "docker.calls").read_text()
    )


def test_non_root_user_commands_use_sudo() -> None:
    settings = settings_ssh()
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    host = settings.target.hosts[0]  # type: ignore[union-attr]
    assert commands.preflight_command(settings, spec, host).startswith("sudo -n env ")
    assert commands.volume_command(spec, "/dev/sdb", "ubuntu").startswith("sudo -n env ")
    assert commands.up_command("/opt/coderig", "ubuntu").startswith("sudo -n bash -c ")
    assert commands.copy_command("/opt/coderig", "root").startswith("bash -c ")


def test_known_hosts_line() -> None:
    assert hostkeys.known_hosts_line("h", 22, HOST_KEY + " comment") == f"h {HOST_KEY}\n"
    assert hostkeys.known_hosts_line("10.1.2.3", 2222, HOST_KEY).startswith("[10.1.2.3]:2222 ssh-ed25519 ")
    with pytest.raises(ValueError):
        hostkeys.parse_host_key("not-a-key")


def test_aws_replicas_use_the_fixed_private_addresses_of_the_stack_subnet():
    first, replica = machines.node_specs(settings_aws(), planner.plan_stack(settings_aws()))
    # the replica through its link: a loopback listener on the first machine, TLS to 10.77.0.11:8000
    assert first.backends == ("http://127.0.0.1:8000/v1", "http://127.0.0.1:4201/v1")
    assert first.replica_links == ((1, "10.77.0.11"),)
    assert replica.role == "replica" and replica.link_address == "10.77.0.11"
    assert "proxy_pass 10.77.0.11:8000;" in node.link_conf(first)
    assert "listen 10.77.0.11:8000 ssl;" in node.link_conf(replica)
    assert first.cache_path == replica.cache_path == NODE_CACHE_PATH


@pytest.mark.parametrize("kind", ["ssh-1", "local", "external"])
def test_gateway_has_a_health_check_and_wait_ready_checks_through_it(kind: str) -> None:
    """wait-ready counts a service without a health check ready as soon as it is "running": the
    gateway gets one (busybox wget in nginx:*-alpine, /healthz/front: nginx and LiteLLM answer, whatever
    the model does), the relay one (its listeners accept), and the wait ends with one GET of /healthz
    through the gateway, which needs LiteLLM, the relay and the model server."""
    settings = ALL[kind]()
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    gateway = render_node(settings, spec).compose["services"]["gateway"]
    assert versions.NGINX_IMAGE.startswith("nginx:") and versions.NGINX_IMAGE.endswith("-alpine")
    test = gateway["healthcheck"]["test"]
    port = settings.gateway.port
    assert test == ["CMD", "wget", "-q", "-O", "-", "--no-check-certificate", f"https://127.0.0.1:{port}/healthz/front"]
    assert gateway["healthcheck"]["start_period"] == f"{node.GATEWAY_HEALTH_START_S}s"
    wait = commands.wait_command(render_node(settings, spec))
    assert f"CODERIG_GATEWAY_URL=https://127.0.0.1:{port}/healthz" in wait
    assert "CODERIG_GATEWAY_SERVICE=gateway" in wait
    # what /healthz checks: the model server (the upstream for a front door) behind LiteLLM
    conf = render_node(settings, spec).files[node.GATEWAY_CONF].content
    assert "location = /healthz" in conf and "auth_request /_coderig_model_health;" in conf
    relay = f"127.0.0.1:{engine.KEEPALIVE_PORT}"  # the model server's health, asked through its relay
    upstream = "https://kserve.internal/v1/models" if kind == "external" else f"http://{relay}/health"
    assert f"proxy_pass {upstream};" in conf
    keepalive = render_node(settings, spec).compose["services"].get("keepalive")
    assert (keepalive is None) == (kind == "external")
    if keepalive:
        assert repr(("127.0.0.1", engine.KEEPALIVE_PORT)) in keepalive["healthcheck"]["test"][-1]


def test_replicas_wait_without_a_gateway_check() -> None:
    settings = settings_ssh(2)
    first, replica = machines.node_specs(settings, planner.plan_stack(settings))
    assert "gateway" not in render_node(settings, replica).compose["services"]
    assert "CODERIG_GATEWAY_URL=" not in commands.wait_command(render_node(settings, replica))
    # the first machine's wait ends with /healthz and the replica's /health through its link
    urls = "https://127.0.0.1:8443/healthz http://127.0.0.1:4201/health"
    assert f"CODERIG_GATEWAY_URL={shlex.quote(urls)} " in commands.wait_command(render_node(settings, first))
    assert "CODERIG_SERVICES='model link litellm gateway'" in commands.wait_command(render_node(settings, first))


def test_time_budgets_come_from_the_planner_only() -> None:
    """One set of throughput and pull assumptions (coderig.core.budgets), shared with the kube target."""
    for name in ("DOWNLOAD_BYTES_PER_S", "LOAD_BYTES_PER_S", "PULL_S", "WARMUP_S", "load_seconds"):
        assert not hasattr(node, name), name
    # worked by hand, (image pull 900 s + first download at 100 MB/s + load) × 1.5, rounded up:
    #   deepseek-v3.2 (vLLM, 689 GB): load 600 + 1378 = 1978 s; (900 + 6890 + 1978) × 1.5 = 14652 s
    #   qwen3-1.7b-cpu (llama.cpp, 1.28 GB): load 120 + 3 = 123 s; (900 + 13 + 123) × 1.5 = 1554 s
    #   a front door only: 900 × 1.5 = 1350 s
    for settings, start, budget in ((settings_ssh(), 1978, 14652), (settings_local(), 123, 1554)):
        spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
        model = render_node(settings, spec).compose["services"]["model"]
        assert model["healthcheck"]["start_period"] == f"{start}s"
        assert budgets.load_budget_seconds(settings.model.spec) == start
        assert budgets.ready_budget_seconds(settings.model.spec) == budget
        assert f"CODERIG_BUDGET_SECONDS={budget} " in commands.wait_command(render_node(settings, spec))
    external = settings_external()
    fd = machines.node_specs(external, planner.plan_stack(external))[0]
    assert "CODERIG_BUDGET_SECONDS=1350 " in commands.wait_command(render_node(external, fd))
    assert budgets.ready_budget_seconds(None) == 1350


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="bind-mounting over /etc/nginx in a private mount namespace needs root")
def test_nginx_accepts_the_gateway_config_coderig_render_writes(tmp_path: Path, stack_file) -> None:
    """`coderig render` on an ssh stack, then `nginx -t` on exactly the file the gateway container
    mounts, with the secret files the node step writes, at the container's own paths (/etc/nginx/…,
    bind-mounted in a private mount namespace so the machine's nginx is untouched)."""
    from frontdoor_fixtures import require_tool

    from coderig.cli import main

    nginx = require_tool("nginx")
    out = tmp_path / "rendered"
    assert main(["render", "--config", str(stack_file(ssh_config())), "--out", str(out)]) == 0
    etc = tmp_path / "etc-nginx"
    (etc / "coderig").mkdir(parents=True)
    (etc / "coderig" / "nginx.conf").write_text((out / "node" / "gateway" / "nginx.conf").read_text())
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"), "-days", "1", "-subj", "/CN=gw"],
        check=True, capture_output=True,
    )  # fmt: skip
    secrets = node.NodeSecrets(
        model_api_key="m" * 32, litellm_master_key="sk-" + "x" * 40,
        developer_keys={"alice": "crk-" + "a" * 40, "bob": "crk-" + "b" * 40},
        tls_cert=(tmp_path / "c.pem").read_text(), tls_key=(tmp_path / "k.pem").read_text(),
    )  # fmt: skip
    ssh = parse_settings({**ssh_config(), "sshPrivateKey": "k"})
    spec = machines.node_specs(ssh, planner.plan_stack(ssh))[0]
    files = node.node_secret_files(spec, secrets)
    mounts = {  # compose.yaml's gateway volumes: bundle path -> path under /etc/nginx
        node.GATEWAY_KEYS: "secrets/gateway-keys.conf",
        f"{node.SECRETS_DIR}/server.key": "secrets/server.key",
        f"{node.TLS_DIR}/server.crt": "tls/server.crt",
    }
    for src, dst in mounts.items():
        (etc / dst).parent.mkdir(parents=True, exist_ok=True)
        (etc / dst).write_text(files[src].content)
    compose = (out / "node" / "compose.yaml").read_text()
    for dst in ["coderig/nginx.conf", *mounts.values()]:
        assert f":/etc/nginx/{dst}:ro" in compose or f":/etc/nginx/{Path(dst).parent}:ro" in compose
    script = f"mount --bind {etc} /etc/nginx && mkdir -p /var/log/nginx && {nginx} -t -c /etc/nginx/coderig/nginx.conf"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


@pytest.mark.integration
def test_node_gateway_forwards_with_its_own_keys_never_the_developers(tmp_path: Path) -> None:
    """The full node's gateway (real nginx): /v1/chat/completions goes straight to a model server that,
    like `vllm --api-key`, requires the node's model key; /v1/messages goes to LiteLLM with the master
    key, the developer's name and the anthropic-* headers. The developer's key is checked at the
    gateway and never forwarded; a wrong one reaches nothing."""
    import dataclasses
    import socket
    import threading
    import urllib.error
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from frontdoor_fixtures import require_tool
    from standin import start_standin

    seen_by_litellm: list[dict[str, str]] = []

    class LiteLLM(BaseHTTPRequestHandler):  # records what the gateway forwards on /v1/messages
        def do_POST(self) -> None:  # noqa: N802
            seen_by_litellm.append({k.lower(): v for k, v in self.headers.items()})
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    nginx = require_tool("nginx")
    model_key, dev_key, master = "m" * 40, "crk-" + "a" * 40, "sk-" + "x" * 40
    standin = start_standin(model="umans-coder-v0", api_key=model_key)
    litellm = ThreadingHTTPServer(("127.0.0.1", 0), LiteLLM)
    threading.Thread(target=litellm.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        gw_port = sock.getsockname()[1]
    s = parse_settings({**ssh_config(), "sshPrivateKey": "k"})
    spec = machines.node_specs(s, planner.plan_stack(s))[0]
    secrets = node.NodeSecrets(model_api_key=model_key, litellm_master_key=master,
                               developer_keys={"alice": dev_key})  # fmt: skip
    (tmp_path / "keys.conf").write_text(node.node_secret_files(spec, secrets)[node.GATEWAY_KEYS].content)
    gw = node.front_door(s, spec)[1]
    assert gw.direct_chat_backends == ("127.0.0.1:8000",) and gw.direct_chat_authorization
    assert gw.native_routes == ("messages", "count_tokens", "responses") and gw.native_relays == ("127.0.0.1:4100",)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        relay_port = sock.getsockname()[1]
    relay = subprocess.Popen([sys.executable, "-m", "coderig.runtime.sse_keepalive",
                              "--route", f"127.0.0.1:{relay_port}=127.0.0.1:{standin.port}"])  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", relay_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    gw = dataclasses.replace(
        gw, listen=f"127.0.0.1:{gw_port}", direct_chat_backends=(f"127.0.0.1:{standin.port}",),
        native_relays=(f"127.0.0.1:{relay_port}",),
        litellm=f"127.0.0.1:{litellm.server_address[1]}",
        model_health_url=f"http://127.0.0.1:{standin.port}/health", keys_include=str(tmp_path / "keys.conf"),
        tls_cert=None, tls_key=None, pid_path=str(tmp_path / "nginx.pid"), temp_dir=str(tmp_path),
        error_log=str(tmp_path / "error.log"), access_log=str(tmp_path / "access.log"),
    )  # fmt: skip
    (tmp_path / "nginx.conf").write_text(frontdoor.render_gateway_conf(gw))
    proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])

    def chat(key: str) -> int:
        body = json.dumps({"model": "umans-coder-v0", "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{gw_port}/v1/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/api/hello", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        assert chat("crk-" + "z" * 40) == 401
        assert standin.seen("/v1/chat/completions") == []
        assert chat(dev_key) == 200
        (seen,) = standin.seen("/v1/chat/completions")
        assert seen.headers["authorization"] == f"Bearer {model_key}"
        assert dev_key not in json.dumps(seen.headers)
        # /v1/messages for the served name goes to the model server itself, with the model key
        native = {"model": "umans-coder-v0", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        req = urllib.request.Request(
            f"http://127.0.0.1:{gw_port}/v1/messages?beta=true", data=json.dumps(native).encode(),
            headers={"x-api-key": dev_key, "anthropic-version": "2023-06-01", "X-Claude-Code-Session-Id": "s1",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["type"] == "message"
        (direct,) = standin.seen("/v1/messages")
        assert direct.headers["authorization"] == f"Bearer {model_key}" and dev_key not in json.dumps(direct.headers)
        assert direct.headers["x-claude-code-session-id"] == "s1"
        # a claude-* name: the model server's 404 is replayed to LiteLLM: anthropic-* headers pass,
        # the developer key is replaced by the master key
        claude = {**native, "model": "claude-haiku-4-5"}
        req = urllib.request.Request(
            f"http://127.0.0.1:{gw_port}/v1/messages?beta=true", data=json.dumps(claude).encode(),
            headers={"x-api-key": dev_key, "anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024",
                     "X-Claude-Code-Session-Id": "s1", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        (fwd,) = seen_by_litellm
        assert fwd["anthropic-version"] == "2023-06-01" and fwd["anthropic-beta"] == "tools-2024"
        assert fwd["x-claude-code-session-id"] == "s1"
        assert fwd["authorization"] == f"Bearer {master}" and fwd.get("x-api-key", "") == ""
        assert fwd["x-coderig-developer"] == "alice" and dev_key not in json.dumps(fwd)
    finally:
        proc.terminate()
        proc.wait(10)
        relay.terminate()
        relay.wait(10)
        standin.stop()
        litellm.shutdown()
