"""The replica link on a real network: two network namespaces joined by a veth pair play the first
machine (A: gateway, keepalive relay, link client, its own model server) and a replica (B: link
server, model server), each running the configs coderig renders for them with the rendered ports.
Requests with a marker prompt go through the gateway; tcpdump on the veth captures every byte that
crosses between the hosts. Neither the prompt nor the model API key may be in that capture, while
the same capture on B's loopback (behind the link) shows both: the search would have found them.
Both ends authenticate: no client certificate, plain HTTP, or a replica with another CA's
certificate carries nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import ROOT, ssh_config
from frontdoor_fixtures import nginx_stream_module, require_tool
from link_tls import issue, make_ca, run

from coderig import frontdoor
from coderig.core import planner
from coderig.core.secrets import LinkTls, NodeSecrets
from coderig.core.settings import StackSettings
from coderig.frontdoor import links
from coderig.frontdoor.assemble import relay_command
from coderig.targets import parse_settings
from coderig.targets.compose import machines
from coderig.targets.compose import spec as node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

MARKER = "MARKER-def-secret-sauce-7f3a91"  # the "source code" in the prompt
MODEL_KEY = "model-key-" + "k" * 30
DEV_KEY = "crk-" + "d" * 44
SERVED = "umans-coder-v0"


# ---------------------------------------------------------------- two hosts


@dataclass
class Host:
    netns: str
    interface: str
    address: str
    dir: Path
    procs: list[subprocess.Popen[bytes]]

    def popen(self, *cmd: str, **kw: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True, timeout=30)

    def wait_port(self, port: int, address: str = "127.0.0.1") -> None:
        probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=1).close()"
        for _ in range(150):
            if self.run(sys.executable, "-c", probe).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.netns}: nothing listens on {address}:{port}")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    tag = os.getpid() % 10000
    subnet = 10 + tag % 200
    made: list[Host] = []
    try:
        for side, n in (("a", 1), ("b", 2)):
            ns = f"coderig-link{side}{tag}"
            run("ip", "netns", "add", ns)
            made.append(Host(ns, f"crl{side}{tag}", f"10.253.{subnet}.{n}", tmp_path / side, []))
            made[-1].dir.mkdir()
        a, b = made
        run("ip", "link", "add", a.interface, "type", "veth", "peer", "name", b.interface)
        for h in made:
            run("ip", "link", "set", h.interface, "netns", h.netns)
            run("ip", "netns", "exec", h.netns, "ip", "addr", "add", f"{h.address}/30", "dev", h.interface)
            run("ip", "netns", "exec", h.netns, "ip", "link", "set", h.interface, "up")
            run("ip", "netns", "exec", h.netns, "ip", "link", "set", "lo", "up")
        yield a, b
    finally:
        for h in made:
            for p in h.procs:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
            for p in h.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10)
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True)


def start_link(host: Host, nginx: str, spec: machines.NodeSpec, tls: LinkTls, tag: str) -> subprocess.Popen[bytes]:
    d = host.dir / tag
    d.mkdir(exist_ok=True)
    (d / "link.crt").write_text(tls.cert)
    (d / "ca.crt").write_text(tls.ca_cert)
    (d / "link.key").write_text(tls.key)
    (d / "link.key").chmod(0o600)
    paths = links.LinkPaths(cert=str(d / "link.crt"), key=str(d / "link.key"), ca=str(d / "ca.crt"),
                            pid_path=str(d / "nginx.pid"), error_log=str(d / "error.log"),
                            load_stream_module=nginx_stream_module(nginx))  # fmt: skip
    (d / "link.conf").write_text(node.link_conf(spec, paths))
    return host.popen(nginx, "-c", str(d / "link.conf"), "-p", str(d))


def start_model(host: Host) -> Path:
    record = host.dir / "model-requests.jsonl"
    host.popen(sys.executable, str(ROOT / "tests" / "standin.py"), "--port", "8000", "--model", SERVED,
               "--api-key", MODEL_KEY, "--record", str(record))  # fmt: skip
    host.wait_port(8000)
    return record


def start_gateway(host: Host, nginx: str, settings: StackSettings, spec: machines.NodeSpec) -> None:
    """The first machine's gateway and keepalive relay, with the rendered upstreams and ports (plain
    HTTP inside namespace A: the gateway's own TLS is not what this test is about)."""
    secrets = NodeSecrets(model_api_key=MODEL_KEY, litellm_master_key="sk-" + "m" * 40,
                          developer_keys={"alice": DEV_KEY})  # fmt: skip
    keys = host.dir / "gateway-keys.conf"
    keys.write_text(frontdoor.render_gateway_keys(dict(secrets.developer_keys), secrets.litellm_master_key, MODEL_KEY))
    gw = node.front_door(settings, spec)[1]
    relay = relay_command(gw, sys.executable)
    host.popen(*relay, cwd=str(ROOT))
    gw = replace(gw, keys_include=str(keys), tls_cert=None, tls_key=None, pid_path=str(host.dir / "nginx.pid"),
                 temp_dir=str(host.dir), error_log=str(host.dir / "error.log"),
                 access_log=str(host.dir / "access.log"))  # fmt: skip
    (host.dir / "nginx.conf").write_text(frontdoor.render_gateway_conf(gw))
    host.popen(nginx, "-c", str(host.dir / "nginx.conf"), "-p", str(host.dir))
    host.wait_port(int(gw.listen.rpartition(":")[2]))
    for relay_listen in gw.native_relays:
        host.wait_port(int(relay_listen.rpartition(":")[2]))


def capture(host: Host, interface: str, out: Path) -> subprocess.Popen[bytes]:
    # --immediate-mode: every packet is handed over at once (else a capture buffer may never be flushed)
    tcpdump = [require_tool("tcpdump"), "--immediate-mode", "-i", interface, "-s", "0", "-U", "-n", "-w", str(out)]
    proc = host.popen(*tcpdump, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()  # "listening on …" once packets are being captured
    assert "listening on" in line, line
    return proc


def stop_capture(proc: subprocess.Popen[bytes], out: Path) -> bytes:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    return out.read_bytes()


def ask(host: Host, path: str, session: str) -> int:
    body = (
        {"model": SERVED, "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": f"fix {MARKER}"}]}
        if path == "/v1/messages"
        else {"model": SERVED, "messages": [{"role": "user", "content": f"review {MARKER}"}]}
    )
    result = host.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                      "-H", f"Authorization: Bearer {DEV_KEY}", "-H", "Content-Type: application/json",
                      "-H", f"X-Claude-Code-Session-Id: {session}", "--data", json.dumps(body),
                      f"http://127.0.0.1:8443{path}")  # fmt: skip
    return int(result.stdout or 0)


def seen_with_marker(record: Path, path: str) -> int:
    if not record.exists():
        return 0
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    return sum(1 for r in rows if r["path"] == path and MARKER in json.dumps(r["body"]))


def test_nothing_crosses_between_hosts_in_clear(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    a, b = hosts
    nginx = require_tool("nginx")
    require_tool("curl")
    require_tool("openssl")
    config = ssh_config()
    config["target"]["hosts"] = [
        {"address": a.address, "user": "root", "hostKey": config["target"]["hosts"][0]["hostKey"]},
        {"address": b.address, "user": "root", "hostKey": config["target"]["hosts"][0]["hostKey"]},
    ]
    settings = parse_settings({**config, "sshPrivateKey": "k"})
    first, replica = machines.node_specs(settings, planner.plan_stack(settings))
    ca = make_ca(tmp_path / "ca", "coderig test internal CA")
    client_tls = issue(tmp_path / "ca", ca, links.link_certificate(0))
    replica_tls = issue(tmp_path / "ca", ca, links.link_certificate(1, b.address))

    record_b = start_model(b)
    record_a = start_model(a)
    start_link(b, nginx, replica, replica_tls, "link")
    b.wait_port(8000, b.address)
    start_link(a, nginx, first, client_tls, "link")
    a.wait_port(links.link_port(1))
    start_gateway(a, nginx, settings, first)

    wire = capture(b, b.interface, tmp_path / "wire.pcap")
    behind = capture(b, "lo", tmp_path / "behind-link.pcap")
    sessions = [f"session-{i}" for i in range(12)]
    for path in ("/v1/chat/completions", "/v1/messages"):  # direct chat, and the native route via the relay
        assert [ask(a, path, s) for s in sessions] == [200] * len(sessions)
    time.sleep(0.5)
    wire_bytes, behind_bytes = (
        stop_capture(wire, tmp_path / "wire.pcap"),
        stop_capture(behind, tmp_path / "behind-link.pcap"),
    )

    # the replica answered some sessions of both routes, the first machine the others
    for path in ("/v1/chat/completions", "/v1/messages"):
        assert seen_with_marker(record_b, path) >= 1, path
        assert seen_with_marker(record_b, path) + seen_with_marker(record_a, path) == len(sessions)
    # behind the link, on B's loopback, the prompt and the key are there in clear: the search works
    assert MARKER.encode() in behind_bytes and MODEL_KEY.encode() in behind_bytes
    # between the hosts: TLS records only (the SNI names the replica), no prompt, no key
    for secret in (MARKER, MODEL_KEY, DEV_KEY, "Bearer", "/v1/"):
        assert secret.encode() not in wire_bytes, secret
    assert len(wire_bytes) > 10_000
    assert links.replica_name(1).encode() in wire_bytes and b"\x17\x03\x03" in wire_bytes


def test_both_ends_of_the_link_authenticate(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    """The replica serves only a client with the internal CA's certificate; the first machine talks
    only to a replica that shows that CA's certificate for its name."""
    a, b = hosts
    nginx = require_tool("nginx")
    require_tool("curl")
    require_tool("openssl")
    ca = make_ca(tmp_path / "ca", "coderig test internal CA")
    client_tls = issue(tmp_path / "ca", ca, links.link_certificate(0))
    replica = machines.NodeSpec(role="replica", cache_path="/c", link_address=b.address)
    first = machines.NodeSpec(role="full", cache_path="/c", replica_links=((1, b.address),))
    record_b = start_model(b)
    start_link(a, nginx, first, client_tls, "link")
    a.wait_port(links.link_port(1))

    def health_through_link() -> str:
        return a.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                     f"http://{links.link_listen(1)}/health").stdout  # fmt: skip

    # an impostor on the replica's address: the right name from another CA, and it would accept our
    # client certificate (it trusts the internal CA), so only the first machine's check can refuse it
    rogue = make_ca(tmp_path / "rogue", "someone else's CA")
    forged = issue(tmp_path / "rogue", rogue, links.link_certificate(1, b.address))
    impostor = start_link(b, nginx, replica, replace(forged, ca_cert=client_tls.ca_cert), "rogue")
    b.wait_port(8000, b.address)
    assert health_through_link() == "000"  # closed without a byte: nginx moves on to another replica
    impostor.terminate()
    impostor.wait(timeout=10)
    assert not record_b.exists() or "/health" not in record_b.read_text()

    start_link(b, nginx, replica, issue(tmp_path / "ca", ca, links.link_certificate(1, b.address)), "link")
    b.wait_port(8000, b.address)
    assert health_through_link() == "200"  # the positive control
    url = f"https://{links.replica_name(1)}:8000/health"
    resolve = f"{links.replica_name(1)}:8000:{b.address}"
    no_cert = a.run(
        "curl", "-s", "--max-time", "10", "--cacert", str(tmp_path / "ca" / "ca.crt"), "--resolve", resolve, url
    )
    assert no_cert.returncode != 0 and "ok" not in no_cert.stdout.lower()
    plain = a.run(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", f"http://{b.address}:8000/health"
    )
    assert plain.stdout != "200"


def ask_body(host: Host, path: str) -> tuple[int, str]:
    body = {"model": SERVED, "max_tokens": 16, "messages": [{"role": "user", "content": f"fix {MARKER}"}]}
    result = host.run(
        "curl",
        "-s",
        "-w",
        "\n%{http_code}",
        "--max-time",
        "20",
        "-H",
        f"Authorization: Bearer {DEV_KEY}",
        "-H",
        "Content-Type: application/json",
        "--data",
        json.dumps(body),
        f"http://127.0.0.1:8443{path}",
    )
    text, _, code = result.stdout.rpartition("\n")
    return int(code or 0), text


def test_a_front_door_machine_reaches_its_gpu_host_only_through_the_link(
    hosts: tuple[Host, Host], tmp_path: Path
) -> None:
    """`frontDoor` layout: A runs only the gateway, relay and link client (no model), B the model
    behind its link. Every request lands on B, in TLS between the hosts; with B's model stopped the
    developer gets the gateway's error in the client's shape (the gateway stays up), not connection
    refused; once the model is back, requests succeed again."""
    a, b = hosts
    nginx = require_tool("nginx")
    require_tool("curl")
    require_tool("openssl")
    key = ssh_config()["target"]["hosts"][0]["hostKey"]
    config = ssh_config()
    config["target"]["hosts"] = [{"address": b.address, "user": "root", "hostKey": key}]
    config["target"]["frontDoor"] = {"address": a.address, "user": "root", "hostKey": key}
    settings = parse_settings({**config, "sshPrivateKey": "k"})
    door, gpu = machines.node_specs(settings, planner.plan_stack(settings))
    assert (door.role, door.runs_model, gpu.role) == ("frontdoor", False, "replica")
    ca = make_ca(tmp_path / "ca", "coderig test internal CA")
    start_link(b, nginx, gpu, issue(tmp_path / "ca", ca, links.link_certificate(1, b.address)), "link")
    record = start_model(b)
    b.wait_port(8000, b.address)
    start_link(a, nginx, door, issue(tmp_path / "ca", ca, links.link_certificate(0)), "link")
    a.wait_port(links.link_port(1))
    start_gateway(a, nginx, settings, door)
    assert a.run(sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 8000), 1)").returncode

    wire = capture(b, b.interface, tmp_path / "wire.pcap")
    for path in ("/v1/chat/completions", "/v1/messages"):
        assert [ask(a, path, f"s{i}") for i in range(3)] == [200] * 3, path
        assert seen_with_marker(record, path) == 3, path
    wire_bytes = stop_capture(wire, tmp_path / "wire.pcap")
    for secret in (MARKER, MODEL_KEY, DEV_KEY):
        assert secret.encode() not in wire_bytes, secret

    model = next(p for p in b.procs if "standin.py" in str(p.args))
    model.terminate()
    model.wait(timeout=10)
    code, text = ask_body(a, "/v1/messages")
    assert code == 503, (code, text)
    assert json.loads(text)["type"] == "error"  # Anthropic's shape, from the front door that stays up
    code, text = ask_body(a, "/v1/chat/completions")
    assert code == 503 and "error" in json.loads(text), (code, text)

    start_model(b)
    assert ask(a, "/v1/messages", "after") == 200
