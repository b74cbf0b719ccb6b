"""coderig:gateway.allowedCidrs through real nginx: a refused address gets 403 in its client's shape
before the key check (a valid key does not help), an allowed one reaches the key check, loopback and
/healthz always pass. nginx runs in a network namespace of its own, so the test's requests come from a
non-loopback address (the veth's host end)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from frontdoor_fixtures import require_tool
from sshhost import network_namespace

from coderig import frontdoor
from coderig.core import planner
from coderig.frontdoor import cidrs
from coderig.targets import parse_settings

KEY = "alice-key-0123456789abcdef"
PORT = 8443


def gateway_conf(work: Path, allowed: tuple[str, ...]) -> Path:
    keys = work / "keys.conf"
    keys.write_text(frontdoor.render_gateway_keys({"alice": KEY}, "sk-master-0123456789abcdef"))
    (work / "tmp").mkdir()
    spec = frontdoor.GatewaySpec(
        listen=f"0.0.0.0:{PORT}", litellm="127.0.0.1:9", model_health_url="http://127.0.0.1:9/health",
        keys_include=str(keys), pid_path=str(work / "nginx.pid"), error_log=str(work / "error.log"),
        access_log=str(work / "access.log"), temp_dir=str(work / "tmp"), worker_processes="1", allowed_cidrs=allowed,
    )  # fmt: skip
    conf = work / "nginx.conf"
    conf.write_text(frontdoor.render_gateway_conf(spec))
    return conf


def ask(address: str, method: str, path: str, key: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(address, PORT, timeout=10)
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    body = json.dumps({"model": "m", "max_tokens": 8, "messages": []}) if method == "POST" else None
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    return resp.status, (json.loads(text) if text.startswith(b"{") else {})


def in_namespace(ns: str, path: str) -> int:
    """Status of a request from inside the namespace, over its loopback (always allowed)."""
    script = (
        f"import http.client as h; c = h.HTTPConnection('127.0.0.1', {PORT}, timeout=10); "
        f"c.request('POST', {path!r}, body='{{}}', headers={{'content-type': 'application/json'}}); "
        "print(c.getresponse().status)"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "python3", "-c", script], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.integration
def test_allowed_cidrs_refuse_before_the_key_check(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with network_namespace(os.getpid() % 100000 + 11) as (ns, address):
        me = address.rsplit(".", 1)[0] + ".1"  # what nginx sees as $remote_addr
        for allowed, refused in ((("192.0.2.0/24",), True), ((f"{me}/32",), False)):
            work = tmp_path / ("refused" if refused else "allowed")
            work.mkdir()
            conf = gateway_conf(work, allowed)
            proc = subprocess.Popen(["ip", "netns", "exec", ns, nginx, "-p", str(work), "-c", str(conf)],
                                    stderr=subprocess.PIPE)  # fmt: skip
            try:
                deadline = time.monotonic() + 15
                while True:
                    try:
                        status, _ = ask(address, "GET", "/healthz")
                        break
                    except OSError:
                        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                        time.sleep(0.1)
                assert status == 503  # /healthz is never refused (the model behind it is absent here)
                messages = ask(address, "POST", "/v1/messages", KEY)
                chat = ask(address, "POST", "/v1/chat/completions", "wrong-key-0123456789abcdef")
                if refused:
                    assert messages[0] == 403 and messages[1]["error"]["type"] == "permission_error"
                    assert chat[0] == 403 and chat[1]["error"]["code"] == "forbidden"
                    assert "allowedCidrs" in chat[1]["error"]["message"]
                    assert in_namespace(ns, "/v1/messages") == 401  # loopback: on to the key check
                else:
                    assert messages[0] not in (401, 403)  # past the key check, to the (absent) upstream
                    assert chat[0] == 401
            finally:
                proc.terminate()
                proc.wait(10)


def test_allowed_cidrs_come_from_the_stack_file_and_are_checked() -> None:
    from conftest import ssh_config

    s = parse_settings(ssh_config() | {"gateway": {"allowedCidrs": ["10.1.2.3/16", "2001:db8::/32"]}})
    assert s.gateway.allowedCidrs == ["10.1.2.3/16", "2001:db8::/32"]
    lines = cidrs.http_lines(tuple(s.gateway.allowedCidrs))
    assert "    10.1.0.0/16 1;" in lines and "    127.0.0.0/8 1;" in lines and "    ::1/128 1;" in lines
    assert cidrs.http_lines(()) == [] and cidrs.server_lines(()) == []
    from coderig.core.errors import UserError

    with pytest.raises(UserError) as err:
        parse_settings(ssh_config() | {"gateway": {"allowedCidrs": ["10.0.0.0/8", "office"]}})
    assert any("coderig:gateway.allowedCidrs" in p and "'office'" in p for p in err.value.problems)


@pytest.mark.parametrize("kind", ["local", "ssh", "aws", "kubernetes", "external"])
def test_every_target_renders_the_check(kind: str) -> None:
    from programs import aws_config, dev_config, external_config, kube_config, ssh_two_hosts

    from coderig.targets import render_stack

    config = {"local": dev_config, "ssh": ssh_two_hosts, "aws": aws_config, "kubernetes": kube_config,
              "external": external_config}[kind]()  # fmt: skip
    config["gateway"] = {**config.get("gateway", {}), "allowedCidrs": ["198.51.100.0/24"]}
    settings = parse_settings(config)
    rendered = render_stack(settings, "prod", planner.plan_stack(settings))
    texts = [f.content for name, f in rendered.items() if not name.startswith("kubernetes/")]
    for name, f in rendered.items():  # a Kubernetes ConfigMap holds nginx.conf as a YAML string
        if name.startswith("kubernetes/"):
            texts += [v for doc in yaml.safe_load_all(f.content) if doc for v in (doc.get("data") or {}).values()]
    gateways = [t for t in texts if isinstance(t, str) and "geo $coderig_cidr_allowed" in t]
    assert gateways, sorted(rendered)
    for text in gateways:
        assert "198.51.100.0/24 1;" in text and "if ($coderig_cidr_refused)" in text
