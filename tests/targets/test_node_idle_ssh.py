"""The ssh target's idle path on an sshd test host in a network namespace: the stand-in model server (vLLM
dev mode), the relay with `--wake sleep` on the rendered control port and the reaper run on that host;
`coderig idle STACK` reads each model's state over `ssh` with the stack's pinned host key."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, write_stack
from sshhost import SshHost, ssh_host

from coderig.cli import main
from coderig.core import engine
from coderig.targets.compose import idle as node_idle

pytestmark = pytest.mark.integration
MODEL = "ssh-wake-model"


def in_ns(host: SshHost, *cmd: str) -> list[str]:
    assert host.netns, "needs a network namespace (the relay's control port is the rendered one)"
    return ["ip", "netns", "exec", host.netns, *cmd]


def wait_ok(host: SshHost, url: str, timeout: float = 20) -> None:
    probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(in_ns(host, sys.executable, "-c", probe), capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {host.netns}")


@contextlib.contextmanager
def node_parts(host: SshHost, tmp: Path) -> Iterator[None]:
    model = f"{engine.MODEL_HOST}:{engine.MODEL_PORT}"
    # the model first, then the relay: a relay asks the model's state once at start, and a model not yet
    # listening reads as stopped until the next request (what `coderig idle` would show meanwhile)
    procs = [
        subprocess.Popen(
            in_ns(host, sys.executable, str(ROOT / "tests" / "standin.py"), "--port", str(engine.MODEL_PORT),
                  "--model", MODEL, "--dev-mode", "--wake-delay", "1"),
            stdout=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    try:
        wait_ok(host, f"http://{model}/health")
        procs.append(
            subprocess.Popen(
                in_ns(host, sys.executable, "-m", "coderig.runtime.sse_keepalive", "--route",
                      f"127.0.0.1:{engine.KEEPALIVE_PORT}={model}", "--wake", "sleep", "--control",
                      node_idle.RELAY_CONTROL, "--served-name", MODEL, "--start-budget", "30"),
                cwd=ROOT, stdout=(tmp / "relay.log").open("wb"), stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        wait_ok(host, f"http://{node_idle.RELAY_CONTROL}/state")
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[SshHost, Path]]:
    """An sshd host whose /opt/coderig (where the reaper's state file lives) is its own directory."""
    opt, work = tmp_path / "opt", tmp_path / "sshd"
    work.mkdir()
    with ssh_host(work, os.getpid() % 100000 + 7, private_dirs={"/opt/coderig": opt}) as h:
        if not h.netns:
            pytest.skip("no network namespaces here")
        yield h, opt


def reaper(host: SshHost, opt: Path, *extra: str) -> str:
    """One period of the reaper on the host, as its compose service runs it."""
    cmd = [sys.executable, "-m", "coderig.runtime.node_reaper", "--relay", f"http://{node_idle.RELAY_CONTROL}",
           "--model", f"http://{engine.MODEL_HOST}:{engine.MODEL_PORT}", "--action", "sleep",
           "--stop-after-minutes", "5", "--model-name", MODEL,
           "--state-file", str(opt / node_idle.STATE_DIR / "reaper.json"), "--once",
           *extra]  # fmt: skip
    done = subprocess.run(in_ns(host, *cmd), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def stack(host: SshHost, tmp: Path) -> Path:
    config: dict[str, Any] = {
        "target": {"kind": "ssh", "gpu": {"model": "H200", "count": 8},
                   "hosts": [{"address": host.address, "port": host.port, "user": "root", "hostKey": host.host_key}]},
        "sshPrivateKey": {"secure": "v1:opaque"}, "model": {"preset": "deepseek-v3.2", "servedName": MODEL},
        "developers": ["alice"], "idle": {"stopAfterMinutes": 30},
    }  # fmt: skip
    return write_stack(tmp, config, "prod")


def idle_lines(path: Path, host: SshHost, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["idle", "prod", "--config", str(path), "--ssh-key", str(host.client_key)]) == 0
    return capsys.readouterr().out.splitlines()


def test_coderig_idle_over_ssh_shows_sleep_and_wake(
    host: tuple[SshHost, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ssh_host, opt = host
    (opt / node_idle.STATE_DIR).mkdir(parents=True)
    path = stack(ssh_host, tmp_path)
    with node_parts(ssh_host, tmp_path):
        out = reaper(ssh_host, opt)
        assert "keep" in out  # a fresh reaper has no history: it keeps the model awake and says why
        lines = idle_lines(path, ssh_host, capsys)
        assert lines[0] == "idle.action sleep, window 30 min"
        assert lines[1].startswith(f"model 0 ({engine.MODEL_HOST}:{engine.MODEL_PORT}): awake since ")
        # the reaper's put-down path on the host: hold at the relay, vLLM /sleep, settle
        put_down = (
            "from coderig.runtime import node_reaper as r; from coderig.runtime.wake import SleepWaker; "
            f"cfg = r.Config(relay='http://{node_idle.RELAY_CONTROL}', models=('http://127.0.0.1:8000',), "
            "action='sleep', stop_after_minutes=5); "
            "assert r.put_down(cfg, 0, SleepWaker('http://127.0.0.1:8000'), r.http_post, print)"
        )
        subprocess.run(in_ns(ssh_host, sys.executable, "-c", put_down), cwd=ROOT, check=True, capture_output=True)
        lines = idle_lines(path, ssh_host, capsys)
        assert " sleeping since " in lines[1] and "0 wakes" in lines[1]
        assert "reaper: keep (" in lines[1]  # its last decision, from its state file
        # a request through the relay wakes it
        ask = (
            "import json, urllib.request; req = urllib.request.Request("
            f"'http://127.0.0.1:{engine.KEEPALIVE_PORT}/v1/chat/completions', json.dumps({{'model': '{MODEL}', "
            "'messages': [{'role': 'user', 'content': 'hi'}]}).encode(), {'content-type': 'application/json'}); "
            "print(urllib.request.urlopen(req, timeout=30).status)"
        )
        done = subprocess.run(in_ns(ssh_host, sys.executable, "-c", ask), capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "200"
        lines = idle_lines(path, ssh_host, capsys)
        assert " awake since " in lines[1] and "1 wakes" in lines[1]
