"""The kit's preflight, run for real over SSH against a test host.

The test host is OpenSSH's sshd in a network namespace of its own (veth pair, addresses that exist
only inside this test), with a host key generated per session; if namespaces are not available it
falls back to sshd on 127.0.0.1 with a high port. The command string is the one the Pulumi program
gives pulumi-command (`coderig.node.preflight_command`); here the `ssh` client runs it with
StrictHostKeyChecking=yes and a known_hosts file built from the pinned `hostKey`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coderig.core import hostkeys
from coderig.core.settings import StackSettings, parse_settings
from coderig.targets.compose import commands
from coderig.targets.compose import spec as node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sshd test host needs root (namespaces, mounts)"),
]

SSHD = "/usr/sbin/sshd"

# A stand-in for the Docker CLI on the test host: records every call, and after `compose up` reports
# the stack's containers as the real CLI would (weights exited 0, the rest running and healthy).
FAKE_DOCKER = r"""#!/usr/bin/env bash
echo "$*" >> WORK/docker.calls
state=WORK/docker.state
case "$*" in
  --version) echo "Docker version 28.0.0, build fake" ;;
  "compose version"*) echo "2.40.0" ;;
  "info "*) echo '{"io.containerd.runc.v2":{}}' ;;
  "ps -q "*) if [ -f "$state" ]; then echo 0123abcd; fi ;;
  *" ps -a -q gateway") if [ -f "$state" ]; then echo 4567ef; fi ;;
  *" ps -a --format "*)
    if [ -f "$state" ]; then
      printf 'weights|exited||0\nmodel|running|healthy|0\nlitellm|running|healthy|0\ngateway|running|healthy|0\n'
    fi ;;
  *" exec -T gateway wget "*/healthz) if [ -f "$state" ]; then echo '"I'"'"'m alive!"'; else exit 1; fi ;;
  *" up -d"*) touch "$state"; echo " Container coderig-model-1  Started" ;;
  *" down "*|*" down") rm -f "$state"; echo " Container coderig-model-1  Removed" ;;
  *" logs "*) echo "weights: 100.0% 1.3/1.3 GB 0 MB/s" ;;
  *) echo "fake docker: unexpected: $*" >&2; exit 3 ;;
esac
"""


@dataclass
class SshHost:
    address: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA…", what a stack pins as hostKey
    client_key: Path
    workdir: Path
    netns: str | None
    small_disk: Path  # a 64 MiB tmpfs, mounted before sshd starts so the host sees it too
    roomy_disk: Path  # a 16 GiB tmpfs (a limit: nothing is reserved)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True)


def _keygen(path: Path) -> str:
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _wait_port(address: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"sshd exited: {err}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on {address}:{port}")


def _make_netns(tag: str) -> tuple[str, str, str]:
    """A namespace with one veth end; returns (netns, host-side link, address inside the ns)."""
    ns, host_if, ns_if = f"coderig-t{tag}", f"crh{tag}", f"crn{tag}"
    subnet = 250 - (int(tag) % 200)
    host_ip, ns_ip = f"10.250.{subnet}.1", f"10.250.{subnet}.2"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except Exception:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        raise
    return ns, host_if, ns_ip


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        pytest.fail("openssh-server/openssh-client missing (.ci/node-deps.sh installs them)")
    work = tmp_path_factory.mktemp("sshhost")
    host_key = _keygen(work / "ssh_host_ed25519_key")
    client_pub = _keygen(work / "client_key")
    (work / "authorized_keys").write_text(client_pub + "\n")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    (work / "bin").mkdir()
    (work / "bin" / "docker").write_text(FAKE_DOCKER.replace("WORK", str(work)))
    (work / "bin" / "docker").chmod(0o755)

    with contextlib.ExitStack() as cleanup:  # undone in reverse order, whatever fails
        # Disks first: `ip netns exec` gives sshd its own copy of the mount table, so mounts made
        # after it starts would not be seen on the test host.
        disks = {"small": work / "small", "roomy": work / "roomy"}
        for name, size in (("small", "64m"), ("roomy", "16g")):
            disks[name].mkdir()
            _run("mount", "-t", "tmpfs", "-o", f"size={size}", "coderig-test", str(disks[name]))
            cleanup.callback(subprocess.run, ["umount", "-l", str(disks[name])], capture_output=True)

        netns: str | None = None
        try:
            netns, host_if, address = _make_netns(str(os.getpid() % 100000))
            cleanup.callback(subprocess.run, ["ip", "netns", "del", netns], capture_output=True)
            cleanup.callback(subprocess.run, ["ip", "link", "del", host_if], capture_output=True)
            port = 22
        except (subprocess.CalledProcessError, FileNotFoundError):
            address, port = "127.0.0.1", 20000 + os.getpid() % 20000
        (work / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {address}",
                    f"HostKey {work / 'ssh_host_ed25519_key'}",
                    f"PidFile {work / 'sshd.pid'}",
                    f"AuthorizedKeysFile {work / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "LogLevel VERBOSE",
                    # The host's `docker` is a stand-in (no Docker engine can run here): FAKE_DOCKER.
                    f"SetEnv PATH={work / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "",
                ]
            )
        )
        cmd = [SSHD, "-D", "-e", "-f", str(work / "sshd_config")]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cleanup.callback(_stop, proc)
        _wait_port(address, port, proc)
        yield SshHost(address, port, host_key, work / "client_key", work, netns, disks["small"], disks["roomy"])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ssh_run(host: SshHost, command: str, *, pinned_key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `command` on the host the way the kit does: strict host key checking against the pin."""
    known_hosts = host.workdir / f"known_hosts.{os.urandom(4).hex()}"
    known_hosts.write_text(hostkeys.known_hosts_line(host.address, host.port, pinned_key or host.host_key))
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            str(host.client_key),
            "-p",
            str(host.port),
            f"root@{host.address}",
            command,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )


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
    assert t.kind == "ssh"
    spec = node.node_specs(settings)[0]
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
    impostor = _keygen(tmp_path / "other_host_key")
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
    spec = node.node_specs(settings)[0]
    secrets = node.NodeSecrets(
        model_api_key="m" * 24, litellm_master_key="sk-" + "x" * 24, developer_keys={"alice": "crk-" + "a" * 24},
        tls_cert="CERT", tls_key="KEY",
    )  # fmt: skip
    files = commands.with_hash_file(node.node_files(settings, spec) | node.node_secret_files(spec, secrets))
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
    from components.node import node_plan

    roomy_disk = ssh_host.roomy_disk
    settings = ssh_settings(ssh_host, roomy_disk / "cache", cpu=True)
    t = settings.target
    assert t.kind == "ssh"
    spec = node.node_specs(settings)[0]
    bundle_dir = str(tmp_path / "opt-coderig")
    plan = node_plan(settings, spec, bundle_dir=bundle_dir, host=t.hosts[0], user="root", install=True)
    secrets = node.NodeSecrets(
        model_api_key="m" * 24, litellm_master_key="sk-" + "x" * 24, developer_keys={"alice": "crk-" + "a" * 24},
        tls_cert="CERT", tls_key="KEY",
    )  # fmt: skip
    files = node.node_files(settings, spec) | node.node_secret_files(spec, secrets)
    calls = ssh_host.workdir / "docker.calls"
    calls.write_text("")
    (ssh_host.workdir / "docker.state").unlink(missing_ok=True)

    def step(cmd: str, stdin: str | None = None) -> str:
        known_hosts = ssh_host.workdir / "known_hosts.chain"
        known_hosts.write_text(hostkeys.known_hosts_line(ssh_host.address, ssh_host.port, ssh_host.host_key))
        r = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
             "-o", "BatchMode=yes", "-i", str(ssh_host.client_key), "-p", str(ssh_host.port),
             f"root@{ssh_host.address}", cmd],
            input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, f"{cmd[:80]}: {r.stdout}{r.stderr}"
        return r.stdout

    out = step(plan.preflight)
    assert "preflight: ok docker: compose 2.40.0" in out and out.rstrip().endswith("all checks passed")
    assert plan.install is not None
    assert "docker present" in step(plan.install)
    assert "cache is the directory" in step(plan.volume)
    assert (roomy_disk / "cache").is_dir()
    assert "bundle unpacked" in step(plan.copy, stdin=node.bundle_archive(commands.with_hash_file(files)))
    assert "started docker compose up in the background" in step(plan.up)
    for _ in range(100):
        if "compose-up-exit=0" in Path(bundle_dir, "up.log").read_text():
            break
        time.sleep(0.05)
    assert "compose-up-exit=0" in Path(bundle_dir, "up.log").read_text()
    assert plan.frontdoor_reload is not None
    step(plan.frontdoor_reload)
    out = step(plan.wait)
    assert "wait-ready: ready after" in out
    log = calls.read_text()
    # "ready" ends with one request through the gateway (its /healthz needs LiteLLM and the model)
    port = settings.gateway.port
    assert f"exec -T gateway wget -q -O - --no-check-certificate https://127.0.0.1:{port}/healthz" in log
    assert "through the gateway" in out
    assert f"compose --project-directory {bundle_dir} -p coderig up -d --remove-orphans" in log
    assert "up -d --no-deps --force-recreate litellm gateway" in log

    # delete: compose down, secrets gone, weights (cache) and the bundle's public files stay
    (roomy_disk / "cache" / "hf").mkdir()
    (roomy_disk / "cache" / "hf" / "weights.bin").write_text("kept")
    step(plan.down)
    assert f"compose --project-directory {bundle_dir} -p coderig down --remove-orphans" in calls.read_text()
    assert "removed secrets" in step(commands.remove_secrets_command(node.bundle_hash(files), bundle_dir, "root"))
    assert not Path(bundle_dir, "secrets").exists() and Path(bundle_dir, "compose.yaml").exists()
    assert (roomy_disk / "cache" / "hf" / "weights.bin").read_text() == "kept"
