"""sshd test hosts: OpenSSH's sshd in a network namespace of its own (veth pair, addresses that exist
only inside the test), a host key generated per host, a stand-in `docker` first on its PATH.

Used by the node tests (`ssh_host` in conftest.py: the kit's command strings through the `ssh`
client) and by the real-engine test (`ssh_hosts`: two hosts that `pulumi up` deploys to). Without
network namespaces a host falls back to sshd on 127.0.0.1 with a high port. `private_dirs` gives
a host its own copy of a directory (bind-mounted in sshd's own mount namespace), so two hosts on
this one machine do not share `/opt/coderig`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from coderig.core import hostkeys

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
  *" ps -a -q "*) if [ -f "$state" ]; then echo 4567ef; fi ;;
  *" ps -a --format "*)
    if [ -f "$state" ]; then
      for s in model link litellm gateway; do echo "$s|running|healthy|0"; done
      echo 'weights|exited||0'
    fi ;;
  *" exec -T gateway wget "*/healthz) if [ -f "$state" ]; then echo '"I'"'"'m alive!"'; else exit 1; fi ;;
  *" exec -T gateway wget "*/health) if [ -f "$state" ]; then echo '{}'; else exit 1; fi ;;  # a replica's link
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
    workdir: Path  # docker.calls (every stand-in docker call), docker.state (compose is up)
    netns: str | None
    small_disk: Path  # a 64 MiB tmpfs, mounted before sshd starts so the host sees it too
    roomy_disk: Path  # a 16 GiB tmpfs (a limit: nothing is reserved)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True)


def keygen(path: Path) -> str:
    """A new ed25519 key pair at `path`; returns the public key as "ssh-ed25519 AAAA…"."""
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
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


def _make_netns(tag: int) -> tuple[str, str, str]:
    """A namespace with one veth end; returns (netns, host-side link, address inside the ns)."""
    ns, host_if, ns_if = f"coderig-t{tag}", f"crh{tag}", f"crn{tag}"
    subnet = 250 - (tag % 200)
    host_ip, ns_ip = f"10.250.{subnet}.1", f"10.250.{subnet}.2"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", ns)
        run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except Exception:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        raise
    return ns, host_if, ns_ip


@contextlib.contextmanager
def network_namespace(tag: int) -> Iterator[tuple[str, str]]:
    """A network namespace of its own, linked to this host by a veth pair: yields (netns, the address
    inside it); this host's end is the same /30's `.1`, so what it sends there is not from loopback."""
    ns, host_if, ns_ip = _make_netns(tag)
    try:
        yield ns, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def ssh_host(work: Path, tag: int, *, private_dirs: Mapping[str, Path] | None = None) -> Iterator[SshHost]:
    """One sshd test host with its files in `work`; `tag` (< 100000) names its namespace and subnet."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        pytest.fail("openssh-server/openssh-client missing (.ci/node-deps.sh installs them)")
    host_key = keygen(work / "ssh_host_ed25519_key")
    client_pub = keygen(work / "client_key")
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
            run("mount", "-t", "tmpfs", "-o", f"size={size}", "coderig-test", str(disks[name]))
            cleanup.callback(subprocess.run, ["umount", "-l", str(disks[name])], capture_output=True)

        netns: str | None = None
        try:
            netns, host_if, address = _make_netns(tag)
            cleanup.callback(subprocess.run, ["ip", "netns", "del", netns], capture_output=True)
            cleanup.callback(subprocess.run, ["ip", "link", "del", host_if], capture_output=True)
            port = 22
        except (subprocess.CalledProcessError, FileNotFoundError):
            address, port = "127.0.0.1", 20000 + tag % 20000
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
                    # The host's `docker` is a stand-in: FAKE_DOCKER.
                    f"SetEnv PATH={work / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "",
                ]
            )
        )
        cmd = [SSHD, "-D", "-e", "-f", str(work / "sshd_config")]
        if private_dirs:
            binds = []
            for target, source in private_dirs.items():
                source.mkdir(parents=True, exist_ok=True)
                binds.append(f"mkdir -p '{target}' && mount --bind '{source}' '{target}' && ")
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "".join(binds) + 'exec "$@"',
                   "sh", *cmd]  # fmt: skip
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cleanup.callback(_stop, proc)
        _wait_port(address, port, proc)
        yield SshHost(address, port, host_key, work / "client_key", work, netns, disks["small"], disks["roomy"])


def ssh_run(
    host: SshHost, command: str, *, pinned_key: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `command` on the host the way the kit does: strict host key checking against the pin."""
    known_hosts = host.workdir / f"known_hosts.{os.urandom(4).hex()}"
    known_hosts.write_text(hostkeys.known_hosts_line(host.address, host.port, pinned_key or host.host_key))
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-o", "ConnectTimeout=10", "-i", str(host.client_key), "-p", str(host.port), f"root@{host.address}", command],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
