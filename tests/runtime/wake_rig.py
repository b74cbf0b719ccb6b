"""A real gateway (nginx, rendered by coderig.frontdoor.assemble as a node renders it) and the real
keepalive relay with `--wake`, in front of the stand-in model server with vLLM's sleep routes: the
parts of wake-on-request, on loopback, for the wake tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import ROOT
from frontdoor_fixtures import free_port, require_tool, standin_server
from standin import StandIn

from coderig import frontdoor
from coderig.frontdoor.assemble import FrontDoorInputs, GatewayPaths, assemble, relay_command
from coderig.runtime import node_reaper
from coderig.runtime.wake import SleepWaker

MODEL = "wake-model"
DEV_KEY = "alice-wake-0123456789abcdef"
MODEL_KEY = "model-key-0123456789abcdef"


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Rig:
    gateway: int
    model_port: int
    relay_port: int
    control: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    relay_cmd: list[str] = field(default_factory=list)
    relay_env: dict[str, str] | None = None

    def restart_relay(self) -> None:
        """A new relay process (a container restart): it learns the model's state from the model itself."""
        self.procs[0].terminate()
        self.procs[0].wait(10)
        self.procs[0] = subprocess.Popen(
            self.relay_cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=self.relay_env
        )
        wait_port(self.relay_port)
        wait_port(self.control)

    @property
    def model_base(self) -> str:
        return f"http://127.0.0.1:{self.model_port}"

    def reaper_config(self, **kw: Any) -> node_reaper.Config:
        base = {"relay": f"http://127.0.0.1:{self.control}", "models": (self.model_base,), "action": "sleep",
                "stop_after_minutes": 5, "model_name": MODEL}  # fmt: skip
        return node_reaper.Config(**(base | kw))

    def put_to_sleep(self) -> bool:
        """What the reaper does on "stop" with idle.action sleep."""
        return node_reaper.put_down(self.reaper_config(), 0, SleepWaker(self.model_base), node_reaper.http_post, print)

    def relay_state(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.control, timeout=10)
        conn.request("GET", "/state")
        return json.loads(conn.getresponse().read())["routes"][0]

    def post(self, path: str, body: Any, timeout: float = 60) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway, timeout=timeout)
        try:
            conn.request("POST", path, json.dumps(body).encode(), headers=headers())
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stream_raw(self, path: str, body: Any, timeout: float = 60) -> tuple[int, list[tuple[float, str]]]:
        """(status, [(seconds since sent, line)]) of every line of the response, comments included."""
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway, timeout=timeout)
        started = time.monotonic()
        try:
            conn.request("POST", path, json.dumps(body).encode(), headers=headers())
            resp = conn.getresponse()
            lines = []
            while line := resp.readline():
                lines.append((time.monotonic() - started, line.decode().rstrip("\r\n")))
            return resp.status, lines
        finally:
            conn.close()


def headers() -> dict[str, str]:
    return {"authorization": f"Bearer {DEV_KEY}", "content-type": "application/json", "anthropic-version": "2023-06-01"}


def start_model_process(port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "standin.py"), "--port", str(port), "--model", MODEL,
         "--api-key", MODEL_KEY, "--dev-mode", "--delay", "0.01", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    return proc


@contextlib.contextmanager
def wake_rig(
    tmp_path: Path,
    model_port: int,
    *,
    budget_s: float = 30,
    interval_s: float = 0.5,
    reaper: str | None = None,
    wake: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Rig]:
    """nginx + relay before whatever listens on `model_port` (the caller starts it): `--wake sleep`, or
    `--wake stop` through the reaper's control URL `reaper`, or the relay flags `wake` (`--wake ec2 …`)
    with the relay's environment `env`."""
    nginx = require_tool("nginx")
    rig = Rig(free_port(), model_port, free_port(), free_port())
    inputs = FrontDoorInputs(
        served_name=MODEL, backends=(f"http://127.0.0.1:{model_port}/v1",), max_tokens=256,
        listen=f"127.0.0.1:{rig.gateway}", litellm=f"127.0.0.1:{free_port()}",
        health_url=f"http://127.0.0.1:{model_port}/health", rate_per_second=1000,
        direct_chat=(f"127.0.0.1:{model_port}",), keyed_direct_chat=True,
        native_routes=("messages", "count_tokens", "responses"), relay_port=rig.relay_port,
    )  # fmt: skip
    keys = tmp_path / "keys.conf"
    keys.write_text(frontdoor.render_gateway_keys({"alice": DEV_KEY}, "sk-" + "m" * 40, MODEL_KEY))
    paths = GatewayPaths(keys_include=str(keys), pid_path=str(tmp_path / "nginx.pid"),
                         error_log=str(tmp_path / "error.log"), access_log=str(tmp_path / "access.log"),
                         temp_dir=str(tmp_path / "tmp"))  # fmt: skip
    _, spec = assemble(inputs, paths, worker_processes="1")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "nginx.conf").write_text(frontdoor.render_gateway_conf(spec))
    relay = [*relay_command(spec, sys.executable)]
    relay[relay.index("--interval") + 1] = str(interval_s)
    relay += [*(wake or ("--wake", "stop" if reaper else "sleep")), "--control", f"127.0.0.1:{rig.control}",
              "--served-name", MODEL, "--start-budget", str(budget_s)]  # fmt: skip
    relay += ["--reaper", reaper] if reaper else []
    log = (tmp_path / "relay.log").open("wb")
    try:
        rig.relay_cmd, rig.relay_env = relay, env
        rig.procs.append(subprocess.Popen(relay, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env))
        rig.procs.append(subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]))
        wait_port(rig.gateway)
        wait_port(rig.relay_port)
        wait_port(rig.control)
        yield rig
    finally:
        for p in rig.procs:
            p.terminate()
        for p in rig.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        log.close()


@contextlib.contextmanager
def standin_rig(tmp_path: Path, *, interval_s: float = 0.5, **standin: Any) -> Iterator[tuple[StandIn, Rig]]:
    """The stand-in (vLLM dev mode: the sleep routes) on a thread, and the gateway + relay before it."""
    with (
        standin_server(model=MODEL, api_key=MODEL_KEY, dev_mode=True, **standin) as model,
        wake_rig(tmp_path, model.port, interval_s=interval_s) as rig,
    ):
        yield model, rig
