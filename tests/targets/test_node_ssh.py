"""The kit's preflight, run for real over SSH against a test host.

The test host is `ssh_host` (conftest.py, made by tests/sshhost.py): OpenSSH's sshd in a network
namespace of its own with a stand-in `docker`. The command string is the one the Pulumi program
gives pulumi-command (`coderig.targets.compose.commands.preflight_command`); here the `ssh` client runs it with
StrictHostKeyChecking=yes and a known_hosts file built from the pinned `hostKey`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sshhost import SshHost, keygen, ssh_run

from coderig.core import hostkeys, planner
from coderig.core.settings import StackSettings
from coderig.targets import parse_settings
from coderig.targets.compose import commands, machines
from coderig.targets.compose import spec as node
from coderig.targets.compose.rendered import render_node
from coderig.targets.ssh.settings import SshTarget

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sshd test host needs root (namespaces, mounts)"),
]


def ssh_settings(host: SshHost, cache_path: Path, *, cpu: bool = False, **model: Any) -> StackSettings:
    """One pinned host: DeepSeek V3.2 on 8×H200, or (`cpu`) the llama.cpp dev preset with no GPU."""
    gpu = {} if cpu else {"gpu": {"model": "H200", "count": 8}}
    preset = {"preset": "qwen3-1.7b-cpu"} if cpu else {"preset": "deepseek-v3.2", "maxModelLen": 131072}
    return parse_settings(
        {
            "target": {
                "kind": "ssh",
                **gpu,
                "cachePath": str(cache_path),
                "hosts": [{"address": host.address, "port": host.port, "user": "root", "hostKey": host.host_key}],
            },
            "sshPrivateKey": "present",
            "model": {**preset, **model},
            "developers": ["alice"],
        }
    )


def preflight_over_ssh(host: SshHost, settings: StackSettings) -> subprocess.CompletedProcess[str]:
    t = settings.target
    assert isinstance(t, SshTarget)
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    return ssh_run(host, commands.preflight_command(settings, spec, t.hosts[0]))


def test_preflight_over_ssh_reports_no_gpu_and_not_enough_disk(ssh_host: SshHost) -> None:
    assert shutil.which("nvidia-smi") is None, "this test needs a host without an NVIDIA GPU"
    small_disk = ssh_host.small_disk
    settings = ssh_settings(ssh_host, small_disk / "coderig")
    result = preflight_over_ssh(ssh_host, settings)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    fails = [ln for ln in out.splitlines() if ln.startswith("preflight: FAIL ")]
    assert fails[0].startswith("preflight: FAIL gpu: no NVIDIA GPU: nvidia-smi not found"), out
    disk = [ln for ln in fails if ln.startswith("preflight: FAIL disk: not enough disk:")]
    assert len(disk) == 1, out
    assert f"not enough disk: 0.1 GB free at {small_disk}, the weights need 757.9 GB more" in disk[0], disk[0]
    assert len(fails) == 2, out  # exactly one line per problem, nothing else failed
    assert out.rstrip().endswith("preflight: 2 problem(s) found; nothing was changed on this host")


def test_preflight_over_ssh_passes_for_cpu_preset_with_room(ssh_host: SshHost) -> None:
    roomy_disk = ssh_host.roomy_disk
    settings = ssh_settings(ssh_host, roomy_disk / "cache", cpu=True)
    result = preflight_over_ssh(ssh_host, settings)
    if ssh_host.netns is None:
        pytest.skip("on loopback the node's ports are this machine's ports")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nvidia" not in result.stdout.lower()
    assert "preflight: ok ports: 8000 free" in result.stdout
    assert result.stdout.rstrip().endswith("preflight: all checks passed")


def test_wrong_host_key_is_refused(ssh_host: SshHost, tmp_path: Path) -> None:
    impostor = keygen(tmp_path / "other_host_key")
    result = ssh_run(ssh_host, "echo SHOULD-NOT-RUN", pinned_key=impostor)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    assert "SHOULD-NOT-RUN" not in result.stdout
    # and the right pin connects
    ok = ssh_run(ssh_host, "echo connected")
    assert ok.returncode == 0 and ok.stdout.strip() == "connected", ok.stderr


def test_unpinned_host_is_refused_unless_insecure_is_set(ssh_host: SshHost) -> None:
    from coderig.core.settings import SshHost as HostSettings

    host = HostSettings(address=ssh_host.address, port=ssh_host.port, user="root")
    with pytest.raises(ValueError, match=r"coderig:target\.hosts\[0\]\.hostKey is missing"):
        hostkeys.pinned_host_key(host.hostKey, host.address, host.port, insecure_skip=False,
                                 where="coderig:target.hosts[0]")  # fmt: skip
    assert hostkeys.pinned_host_key(host.hostKey, host.address, host.port, insecure_skip=True, where="x") is None
    pinned = HostSettings(address=ssh_host.address, port=ssh_host.port, user="root", hostKey=ssh_host.host_key)
    key = hostkeys.pinned_host_key(pinned.hostKey, pinned.address, pinned.port, insecure_skip=False, where="x")
    assert key == ssh_host.host_key


def test_bundle_copy_over_ssh_via_stdin_keeps_secret_modes(ssh_host: SshHost, tmp_path: Path) -> None:
    """The bundle step: the archive travels on stdin (never on the command line), modes survive."""
    settings = ssh_settings(ssh_host, tmp_path / "cache")
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    secrets = node.NodeSecrets(
        model_api_key="m" * 24, litellm_master_key="sk-" + "x" * 24, developer_keys={"alice": "crk-" + "a" * 24},
        tls_cert="CERT", tls_key="KEY",
    )  # fmt: skip
    files = commands.with_hash_file(render_node(settings, spec).files | node.node_secret_files(spec, secrets))
    dest = tmp_path / "opt-coderig"
    known_hosts = ssh_host.workdir / "known_hosts.copy"
    known_hosts.write_text(hostkeys.known_hosts_line(ssh_host.address, ssh_host.port, ssh_host.host_key))
    cmd = commands.copy_command(str(dest), "root")
    assert "crk-" not in cmd and "sk-x" not in cmd
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "BatchMode=yes", "-i", str(ssh_host.client_key), "-p", str(ssh_host.port),
         f"root@{ssh_host.address}", cmd],
        input=node.bundle_archive(files), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert oct((dest / "secrets" / "gateway-keys.conf").stat().st_mode & 0o777) == "0o600"
    assert oct((dest / "secrets").stat().st_mode & 0o777) == "0o700"
    assert (dest / "compose.yaml").read_text() == files["compose.yaml"].content
    assert (dest / ".bundle-hash").read_text().strip() == node.bundle_hash(
        {k: v for k, v in files.items() if k != ".bundle-hash"}
    )


def test_every_node_step_over_ssh_in_order(ssh_host: SshHost, tmp_path: Path) -> None:
    """The whole create/delete chain the component runs, as the exact command strings, over SSH:
    preflight, install (nothing to do), volume (directory), bundle (stdin), up, front-door reload,
    readiness wait; then the deletes: compose down, secrets removed, weights kept."""
    from components.node import node_commands

    roomy_disk = ssh_host.roomy_disk
    settings = ssh_settings(ssh_host, roomy_disk / "cache", cpu=True)
    t = settings.target
    assert isinstance(t, SshTarget)
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    bundle_dir = str(tmp_path / "opt-coderig")
    cmds = node_commands(
        settings, render_node(settings, spec), bundle_dir=bundle_dir, host=t.hosts[0], user="root", install=True
    )
    secrets = node.NodeSecrets(
        model_api_key="m" * 24, litellm_master_key="sk-" + "x" * 24, developer_keys={"alice": "crk-" + "a" * 24},
        tls_cert="CERT", tls_key="KEY",
    )  # fmt: skip
    files = render_node(settings, spec).files | node.node_secret_files(spec, secrets)
    calls = ssh_host.workdir / "docker.calls"
    calls.write_text("")
    (ssh_host.workdir / "docker.state").unlink(missing_ok=True)

    def step(cmd: str, stdin: str | None = None) -> str:
        r = ssh_run(ssh_host, cmd, stdin=stdin)
        assert r.returncode == 0, f"{cmd[:80]}: {r.stdout}{r.stderr}"
        return r.stdout

    out = step(cmds.preflight)
    assert "preflight: ok docker: compose 2.40.0" in out and out.rstrip().endswith("all checks passed")
    assert cmds.install is not None
    assert "docker present" in step(cmds.install)
    assert "cache is the directory" in step(cmds.volume)
    assert (roomy_disk / "cache").is_dir()
    assert "bundle unpacked" in step(cmds.copy, stdin=node.bundle_archive(commands.with_hash_file(files)))
    assert "started docker compose up in the background" in step(cmds.up)
    for _ in range(100):
        if "compose-up-exit=0" in Path(bundle_dir, "up.log").read_text():
            break
        time.sleep(0.05)
    assert "compose-up-exit=0" in Path(bundle_dir, "up.log").read_text()
    assert cmds.frontdoor_reload is not None
    step(cmds.frontdoor_reload)
    out = step(cmds.wait)
    assert "wait-ready: ready after" in out
    log = calls.read_text()
    # "ready" ends with one request through the gateway (its /healthz needs LiteLLM and the model)
    port = settings.gateway.port
    assert f"exec -T gateway wget -q -O - --no-check-certificate https://127.0.0.1:{port}/healthz" in log
    assert "through the gateway" in out
    assert f"compose --project-directory {bundle_dir} -p coderig up -d --remove-orphans" in log
    assert "up -d --no-deps --force-recreate litellm keepalive gateway" in log

    # delete: compose down, secrets gone, weights (cache) and the bundle's public files stay
    (roomy_disk / "cache" / "hf").mkdir()
    (roomy_disk / "cache" / "hf" / "weights.bin").write_text("kept")
    step(cmds.down)
    assert f"compose --project-directory {bundle_dir} -p coderig down --remove-orphans" in calls.read_text()
    assert "removed secrets" in step(commands.remove_secrets_command(node.bundle_hash(files), bundle_dir, "root"))
    assert not Path(bundle_dir, "secrets").exists() and Path(bundle_dir, "compose.yaml").exists()
    assert (roomy_disk / "cache" / "hf" / "weights.bin").read_text() == "kept"
