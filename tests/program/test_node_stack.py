"""The node resource graph under Pulumi mocks, per target: step order, triggers, delete-before-replace
where a delete is destructive, secrets kept secret, logging off where secrets flow."""

from __future__ import annotations

import base64
import copy
import io
import tarfile
from typing import Any

import pytest
from conftest import HOST_KEY, ProgramRun, run_program, ssh_config

from coderig.targets.compose import commands

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBX4Cb1bVdp0Zq1kG0Bmb3x4d0Vv3fW2bQ2Yc7cQvN1a"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def unwrap(value: Any) -> Any:
    return value["value"] if is_secret(value) else value


def two_host_config() -> dict[str, Any]:
    c = ssh_config()
    c["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----"
    c["target"]["hosts"][0]["cacheDevice"] = "/dev/nvme1n1"
    c["target"]["hosts"].append({"address": "10.0.0.6", "user": "root", "hostKey": OTHER_KEY})
    return c


def ok(run: ProgramRun) -> ProgramRun:
    assert run.error is None, repr(run.error)
    return run


STEPS = ["preflight", "install", "volume", "bundle", "up", "frontdoor", "ready"]


def test_ssh_steps_run_in_order_on_every_host() -> None:
    run = ok(run_program(two_host_config()))
    names = {r.name for r in run.resources}
    assert {f"node-{i}-{s}" for i in (0, 1) for s in STEPS} <= names
    # a replica runs no LiteLLM/gateway: its front step recreates only its link
    replica_front = unwrap(run.named("node-1-frontdoor").inputs["create"])
    assert replica_front.endswith("up -d --no-deps --force-recreate link; else echo link not created yet; fi")
    assert "--force-recreate litellm keepalive link gateway;" in unwrap(run.named("node-0-frontdoor").inputs["create"])
    for i in (0, 1):
        n = f"node-{i}"
        assert run.deps(f"{n}-install") == {f"{n}-preflight"}
        assert run.deps(f"{n}-volume") == {f"{n}-install"}
        assert f"{n}-volume" in run.deps(f"{n}-bundle")
        assert f"{n}-bundle" in run.deps(f"{n}-up")
        assert f"{n}-up" in run.deps(f"{n}-ready")
        for step in STEPS:
            if f"{n}-{step}" in names:
                assert run.named(f"{n}-{step}").parent.endswith(f"coderig:node:NodeStack::{n}")
    assert "node-0-up" in run.deps("node-0-frontdoor")
    assert {"node-0-up", "node-0-frontdoor"} <= run.deps("node-0-ready")
    # all command resources ssh to the right host with the pinned key
    for r in run.of_type("command:remote:Command"):
        conn = unwrap(r.inputs["connection"])
        assert is_secret(r.inputs["connection"])
        expected = ("gpu1.internal", HOST_KEY) if r.name.startswith("node-0") else ("10.0.0.6", OTHER_KEY)
        assert (conn["host"], conn["hostKey"]) == expected


def test_destructive_deletes_are_delete_before_replace_and_weights_are_kept() -> None:
    run = ok(run_program(two_host_config()))
    up = run.named("node-0-up")
    assert "docker compose" in up.inputs["delete"] and " down " in up.inputs["delete"]
    assert up.delete_before_replace is True
    # the bundle's delete is guarded by its hash: a replacement (create first) keeps the new secrets
    bundle = run.named("node-0-bundle")
    delete = unwrap(bundle.inputs["delete"])
    assert ".bundle-hash" in delete and "rm -rf /opt/coderig/secrets" in delete
    assert bundle.delete_before_replace is False
    # nothing ever deletes the weights: no step's delete touches the cache or formats anything
    for r in run.of_type("command:remote:Command"):
        d = str(unwrap(r.inputs.get("delete", "")))
        assert "/var/lib/coderig" not in d and "mkfs" not in d and "volumes" not in d and "-v" not in d.split()
    assert "delete" not in run.named("node-0-volume").inputs
    assert "mkfs" in run.named("node-0-volume").inputs["create"]  # the script, guarded by blkid
    assert "CODERIG_CACHE_DEVICE=/dev/nvme1n1" in run.named("node-0-volume").inputs["create"]


def test_secrets_flow_only_through_the_bundle_step_with_logging_off() -> None:
    run = ok(run_program(two_host_config()))
    bundle = run.named("node-0-bundle")
    assert bundle.inputs["logging"] == "none"
    assert is_secret(bundle.inputs["stdin"]) and is_secret(bundle.inputs["triggers"])
    assert set(bundle.additional_secret_outputs) >= {"stdout", "stderr", "stdin"}
    # the archive: modes kept, secrets 0600, real key material inside
    raw = base64.b64decode(unwrap(bundle.inputs["stdin"]))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        keys = tar.extractfile("secrets/gateway-keys.conf").read().decode()  # type: ignore[union-attr]
        compose = tar.extractfile("compose.yaml").read().decode()  # type: ignore[union-attr]
    for name in (
        "secrets/gateway-keys.conf",
        "secrets/litellm.env",
        "secrets/model.env",
        "secrets/server.key",
        "secrets/weights.env",
    ):
        assert members[name].mode == 0o600, name
    assert members["secrets"].mode == 0o700
    assert members["compose.yaml"].mode == 0o644 and ".bundle-hash" in members
    assert '"alice";' in keys and '"bob";' in keys
    assert "crk-" in keys and "crk-" not in compose and "sk-" not in compose
    # every other step carries no secret and logs normally
    secret_values = {unwrap(bundle.inputs["stdin"])}
    for r in run.of_type("command:remote:Command"):
        if r.name.endswith("-bundle"):
            continue
        assert r.inputs["logging"] == "stdoutAndStderr", r.name
        for key in ("create", "delete"):
            value = r.inputs.get(key, "")
            assert not is_secret(value), (r.name, key)
            assert "crk-" not in str(value) and "sk-pw" not in str(value)
        assert not (secret_values & {str(v) for v in r.inputs.values()})
    assert "developerTokens" in run.secret_outputs and "developerKeys" not in run.outputs


def _trigger(run: ProgramRun, name: str) -> list[Any]:
    return [unwrap(t) for t in unwrap(run.named(name).inputs["triggers"])]


def test_triggers_new_developer_reloads_front_door_only() -> None:
    base = ok(run_program(two_host_config()))
    again = ok(run_program(two_host_config()))
    more = two_host_config()
    more["developers"] = ["alice", "bob", "carol"]
    changed = ok(run_program(more))
    # identical config -> identical triggers (nothing re-runs on a plain `pulumi up`)
    for step in ("bundle", "up", "frontdoor", "ready"):
        assert _trigger(base, f"node-0-{step}") == _trigger(again, f"node-0-{step}")
    # a new developer: bundle re-copied, gateway recreated, model server untouched
    assert _trigger(base, "node-0-bundle") != _trigger(changed, "node-0-bundle")
    assert _trigger(base, "node-0-frontdoor") != _trigger(changed, "node-0-frontdoor")
    assert _trigger(base, "node-0-up") == _trigger(changed, "node-0-up")
    assert _trigger(base, "node-1-up") == _trigger(changed, "node-1-up")


def test_a_daily_budget_reloads_the_front_door_and_keeps_every_key() -> None:
    """coderig:developers entries with dailyTokens: the same keys (names), a new gateway config."""
    base = ok(run_program(two_host_config()))
    budgeted = two_host_config()
    budgeted["developers"] = ["alice", {"name": "bob", "dailyTokens": 2_000_000}]
    changed = ok(run_program(budgeted))
    names = sorted(r.name for r in base.resources)
    assert names == sorted(r.name for r in changed.resources)  # nothing added or replaced by name
    assert _trigger(base, "node-0-frontdoor") != _trigger(changed, "node-0-frontdoor")
    assert _trigger(base, "node-0-up") == _trigger(changed, "node-0-up")
    assert changed.outputs["clientBundle"]["developers"] == ["alice", "bob"]  # names only, as before


def test_triggers_model_change_restarts_the_stack() -> None:
    base = ok(run_program(two_host_config()))
    c = two_host_config()
    c["model"]["maxModelLen"] = 65536
    changed = ok(run_program(c))
    assert _trigger(base, "node-0-up") != _trigger(changed, "node-0-up")
    assert _trigger(base, "node-1-up") != _trigger(changed, "node-1-up")
    assert "--max-model-len 65536" not in str(changed.named("node-0-up").inputs["create"])  # in the bundle


def test_readiness_budget_is_sized_from_the_weights() -> None:
    run = ok(run_program(two_host_config()))
    wait = run.named("node-0-ready").inputs["create"]
    budget = int(wait.split("CODERIG_BUDGET_SECONDS=")[1].split()[0])
    assert budget > 2 * 3600  # 689 GB: download + load take hours at 100 MB/s
    timeouts = run.named("node-0-ready").custom_timeouts
    assert timeouts.create == f"{budget + 600}s"


def test_missing_host_key_is_refused_naming_the_key() -> None:
    from coderig.core.settings import SshHost
    from components.node import ssh_connection

    with pytest.raises(ValueError, match=r"coderig:target\.hosts\[1\]\.hostKey is missing for 10\.0\.0\.7"):
        ssh_connection(SshHost(address="10.0.0.7"), "k", insecure_skip=False, where="coderig:target.hosts[1]")


def test_insecure_skip_connects_without_a_pin() -> None:
    c = two_host_config()
    c["target"]["insecureSkipHostKeyCheck"] = True
    del c["target"]["hosts"][1]["hostKey"]
    run = ok(run_program(c))
    conn = unwrap(run.named("node-1-preflight").inputs["connection"])
    assert "hostKey" not in conn or not conn["hostKey"]
    assert unwrap(run.named("node-0-preflight").inputs["connection"])["hostKey"] == HOST_KEY


def tar_text(raw: bytes, name: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.extractfile(name).read().decode()  # type: ignore[union-attr]


def test_multi_host_litellm_balances_across_replicas() -> None:
    import yaml

    run = ok(run_program(two_host_config()))
    raw = base64.b64decode(unwrap(run.named("node-0-bundle").inputs["stdin"]))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        litellm = yaml.safe_load(tar.extractfile("litellm/config.yaml").read())  # type: ignore[union-attr]
    bases = {m["litellm_params"]["api_base"] for m in litellm["model_list"]}
    assert bases == {"http://127.0.0.1:4100/v1", "http://127.0.0.1:4101/v1"}  # one relay per replica
    compose0 = yaml.safe_load(tar_text(raw, "compose.yaml"))
    relay = compose0["services"]["keepalive"]["command"]
    # the relay of the second replica reaches it through its link listener
    assert relay[: relay.index("--interval")] == [
        "--route",
        "127.0.0.1:4100=127.0.0.1:8000",
        "--route",
        "127.0.0.1:4101=127.0.0.1:4201",
    ]
    raw1 = base64.b64decode(unwrap(run.named("node-1-bundle").inputs["stdin"]))
    with tarfile.open(fileobj=io.BytesIO(raw1)) as tar:
        names = set(tar.getnames())
        compose1 = yaml.safe_load(tar.extractfile("compose.yaml").read())  # type: ignore[union-attr]
        link_conf = tar.extractfile("link/nginx.conf").read().decode()  # type: ignore[union-attr]
    assert set(compose1["services"]) == {"weights", "model", "link"}
    cmd = compose1["services"]["model"]["command"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"  # only its link listens on 10.0.0.6, in TLS
    assert "listen 10.0.0.6:8000 ssl;" in link_conf and "ssl_verify_client on;" in link_conf
    assert "secrets/model.env" in names and "secrets/gateway-keys.conf" not in names
    assert {"secrets/link.key", "tls/link.crt", "tls/link-ca.crt"} <= names


def test_replica_links_get_their_own_ca_and_one_certificate_per_machine() -> None:
    """The internal CA is the stack's own (not the gateway's, which developers trust); machine 0 gets
    a client certificate, each replica a server certificate for its link name and address."""
    run = ok(run_program(two_host_config()))
    assert run.named("replica-links-ca").inputs["isCaCertificate"] is True
    assert run.named("replica-links-ca").inputs["privateKeyPem"] != run.named("gateway-tls-ca").inputs["privateKeyPem"]
    client, server = run.named("replica-links-0-csr").inputs, run.named("replica-links-1-csr").inputs
    assert not client.get("dnsNames") and not client.get("ipAddresses")
    assert server["dnsNames"] == ["replica-1.coderig.internal"] and server["ipAddresses"] == ["10.0.0.6"]
    assert run.named("replica-links-0-cert").inputs["allowedUses"] == ["digital_signature", "client_auth"]
    assert run.named("replica-links-1-cert").inputs["allowedUses"] == ["digital_signature", "server_auth"]
    ca_key = run.named("replica-links-ca").inputs["privateKeyPem"]
    assert all(run.named(f"replica-links-{i}-cert").inputs["caPrivateKeyPem"] == ca_key for i in (0, 1))
    one = ok(run_program(ssh_config()))  # one machine: no link, no internal CA
    assert not [r for r in one.resources if r.name.startswith("replica-links")]


def test_local_target_uses_local_commands_without_install() -> None:
    from programs import dev_config  # the real Pulumi.dev.yaml

    run = ok(run_program(dev_config(), stack="dev"))
    local = run.of_type("command:local:Command")
    assert not run.of_type("command:remote:Command")
    assert {r.name for r in local} == {f"node-local-{s}" for s in STEPS if s != "install"}
    for r in local:
        assert r.inputs["interpreter"] == ["/bin/bash", "-c"]
        assert "sudo" not in str(unwrap(r.inputs["create"]))
    pre = run.named("node-local-preflight").inputs["create"]
    assert "CODERIG_MODE=cpu" in pre and "CODERIG_TARGET=local" in pre
    assert run.named("node-local-bundle").inputs["logging"] == "none"
    assert run.named("node-local-up").delete_before_replace is True
    assert ".coderig/dev/node" in run.named("node-local-up").inputs["create"]
    assert run.outputs["endpoint"] == "https://localhost:8443"


def test_external_target_gets_only_the_front_door() -> None:
    c = copy.deepcopy(two_host_config())
    c["target"] = {
        "kind": "external",
        "endpoint": "https://llm.internal/v1",
        "frontDoor": "ssh",
        "host": {"address": "gw.internal", "user": "ubuntu", "hostKey": HOST_KEY},
    }
    c["externalApiKey"] = "upstream-secret-key-123456"
    run = ok(run_program(c))
    names = {r.name for r in run.of_type("command:remote:Command")}
    assert names == {f"frontdoor-{s}" for s in STEPS}
    raw = base64.b64decode(unwrap(run.named("frontdoor-bundle").inputs["stdin"]))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        compose = tar.extractfile("compose.yaml").read().decode()  # type: ignore[union-attr]
        env = tar.extractfile("secrets/litellm.env").read().decode()  # type: ignore[union-attr]
        litellm = tar.extractfile("litellm/config.yaml").read().decode()  # type: ignore[union-attr]
    assert "weights:" not in compose and "vllm" not in compose
    assert "CODERIG_MODEL_API_KEY=upstream-secret-key-123456" in env
    assert "https://llm.internal/v1" in litellm
    pre = run.named("frontdoor-preflight").inputs["create"]
    assert "CODERIG_MODE=cpu" in pre and "CODERIG_TARGET=node" in pre and "CODERIG_WEIGHTS_BYTES=0" in pre
    assert run.outputs["upstream"] == "https://llm.internal/v1"


def test_ssh_steps_have_no_machine_triggers() -> None:
    """ssh hosts are not replaced under the kit: read-only and install steps keep no triggers, and
    `.bundle-hash` on disk is the plain content hash (what the delete guard compares)."""

    run = ok(run_program(two_host_config()))
    for step in ("preflight", "install", "volume"):
        assert "triggers" not in run.named(f"node-0-{step}").inputs, step
    assert len(_trigger(run, "node-0-bundle")) == 1 and len(_trigger(run, "node-0-up")) == 1
    raw = base64.b64decode(unwrap(run.named("node-0-bundle").inputs["stdin"]))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        on_disk = tar.extractfile(commands.BUNDLE_HASH_FILE).read().decode().strip()  # type: ignore[union-attr]
    assert on_disk == _trigger(run, "node-0-bundle")[0]
    assert on_disk in unwrap(run.named("node-0-bundle").inputs["delete"])


def test_first_host_is_ready_only_after_every_replica() -> None:
    """LiteLLM on host 0 balances across every replica: its ready step (the stack's `ready`) waits for
    each replica's ready step, and every host's readiness is exported."""
    c = two_host_config()
    c["target"]["hosts"].append({"address": "10.0.0.7", "user": "root", "hostKey": OTHER_KEY})
    run = ok(run_program(c))
    assert {"node-1-ready", "node-2-ready", "node-0-up", "node-0-frontdoor"} <= run.deps("node-0-ready")
    assert "node-0-ready" not in run.deps("node-1-ready") | run.deps("node-2-ready")
    assert len(run.outputs["nodesReady"]) == 3
    assert run.outputs["ready"] == run.outputs["nodesReady"][0]
