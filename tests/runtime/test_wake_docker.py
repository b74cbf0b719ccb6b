"""The `stop` idle action with the real Docker engine: the reaper stops the model container (through the
relay's hold), and a request through the real gateway starts it again via the reaper's loopback control
port (the one holder of the docker socket); the held stream hears keepalives while the model loads."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT
from frontdoor_fixtures import free_port
from wake_rig import MODEL, MODEL_KEY, wait_port, wake_rig

from coderig.runtime import node_reaper

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the Docker engine needs root"),
]
IMAGE = "coderig/py:bookworm"  # tests/images/build.sh: Debian's python3


def docker_ready() -> None:
    message = ""
    if shutil.which("docker") is None:
        message = "docker is not installed (.ci/docker-deps.sh installs it)"
    elif subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        message = "the Docker engine is not running (.ci/docker-deps.sh starts it)"
    if message:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def model_container(port: int) -> Iterator[str]:
    """The stand-in in a container on the host network, loading for 2 s before it listens (like vLLM)."""
    name = f"coderig-idle-test-{os.getpid()}"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    run = subprocess.run(
        ["docker", "run", "-d", "--init", "--name", name, "--network", "host", "-v", f"{ROOT / 'tests'}:/t:ro", IMAGE,
         "python3", "/t/standin.py", "--port", str(port), "--model", MODEL, "--api-key", MODEL_KEY,
         "--load-delay", "2", "--delay", "0.01"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_stop_then_a_request_starts_the_container_again(tmp_path: Path) -> None:
    docker_ready()
    build = subprocess.run(["bash", "tests/images/build.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout + build.stderr
    port, control = free_port(), free_port()
    with model_container(port) as name:
        wait_port(port, 60)
        waker = node_reaper.ContainerWaker(node_reaper.Docker(), name)
        server = node_reaper.control_server(("127.0.0.1", control), waker)
        try:
            with wake_rig(tmp_path, port, reaper=f"http://127.0.0.1:{control}") as rig:
                hi = [{"role": "user", "content": "hi"}]
                assert rig.post("/v1/chat/completions", {"model": MODEL, "messages": hi})[0] == 200
                cfg = rig.reaper_config(action="stop", container=name)
                assert node_reaper.put_down(cfg, 0, waker, node_reaper.http_post, print)
                assert waker.state() == "stopped" and rig.relay_state()["state"] == "stopped"
                status, lines = rig.stream_raw(
                    "/v1/messages",
                    {"model": MODEL, "max_tokens": 8, "stream": True, "messages": hi},
                )
                assert status == 200
                assert any(line == ": keepalive" for _, line in lines)  # the container was loading meanwhile
                events = [line.removeprefix("event: ") for _, line in lines if line.startswith("event:")]
                assert events[0] == "message_start" and events[-1] == "message_stop", lines[-10:]
                assert waker.state() == "awake"
                state = rig.relay_state()
                assert state["state"] == "awake" and state["wakes_total"] == 1
                # the container killed while it starts: the held request gets why, the next one starts it again
                assert node_reaper.put_down(cfg, 0, waker, node_reaper.http_post, print)
                out: dict[str, tuple[int, bytes]] = {}
                held = threading.Thread(
                    target=lambda: out.update(r=rig.post("/v1/chat/completions", {"model": MODEL, "messages": hi}))
                )
                held.start()
                deadline = time.monotonic() + 20
                while waker.state() != "awake" and time.monotonic() < deadline:
                    time.sleep(0.1)  # until the relay had the reaper start it (it loads for 2 s)
                subprocess.run(["docker", "kill", name], check=True, capture_output=True)
                held.join(30)
                status, body = out["r"]
                assert status == 503 and "stopped while waking" in json.loads(body)["error"]["message"]
                assert rig.post("/v1/chat/completions", {"model": MODEL, "messages": hi})[0] == 200
                assert rig.relay_state()["wakes_total"] == 3
        finally:
            server.shutdown()
