"""Helpers to run `coderig frontdoor run` in tests and talk to it (reusable by other suites).

with standin_server() as model, running_frontdoor(model.url, model.model, tmp, KEYS) as fd:
    status, body = fd.post("/v1/messages", {...}, key=KEYS["alice"])
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from standin import StandIn, start_standin  # noqa: E402

from coderig.frontdoor.run import READY_LINE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NPM_PREFIX = Path(os.environ.get("CODERIG_NPM_PREFIX", REPO / ".coderig" / "npm"))


def require_tool(name: str) -> str:
    """Path of a tool the integration tests need: skipped locally when missing, fails in CI."""
    found = (
        shutil.which(name)
        or shutil.which(name, path=str(NPM_PREFIX / "bin"))
        or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    )
    if found:
        return found
    message = f"{name} is not installed (.ci/frontdoor-deps.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def nginx_stream_module(nginx: str) -> str | None:
    """The ngx_stream_module.so a config must load for this nginx, or None when it is built in (the
    pinned image, nginx.org's packages); Debian builds it as a module (libnginx-mod-stream)."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    if "--with-stream=dynamic" not in built:
        return None
    path = "/usr/lib/nginx/modules/ngx_stream_module.so"
    assert Path(path).exists(), "Debian's nginx needs libnginx-mod-stream (.ci/frontdoor-deps.sh installs it)"
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def standin_server(**options: Any) -> Iterator[StandIn]:
    server = start_standin(**options)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FrontDoor:
    url: str
    host: str
    port: int
    ca: Path | None
    state_dir: Path
    keys_file: Path
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def connection(self, timeout: float = 120) -> http.client.HTTPConnection:
        if self.ca:
            ctx = ssl.create_default_context(cafile=str(self.ca))
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = None,
        header: str = "authorization",
        extra_headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Response:
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=_encode(body), headers=_headers(key, header, extra_headers))
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any, key: str | None = None, **kw: Any) -> Response:
        return self.request("POST", path, body, key, **kw)

    def stream(self, path: str, body: Any, key: str, timeout: float = 120) -> Iterator[tuple[float, str, Any]]:
        """(seconds since the request, event name, data) for each SSE event, as it arrives."""
        conn = self.connection(timeout)
        started = time.monotonic()
        try:
            conn.request("POST", path, body=_encode(body), headers=_headers(key, "authorization", None))
            resp = conn.getresponse()
            if resp.status != 200:
                raise AssertionError(f"{path}: HTTP {resp.status}: {resp.read()[:500]!r}")
            event = ""
            while True:
                line = resp.readline()
                if not line:
                    break
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:"):
                    event = text[6:].strip()
                elif text.startswith("data:"):
                    data = text[5:].strip()
                    parsed: Any = data if data == "[DONE]" else json.loads(data)
                    yield time.monotonic() - started, event, parsed
                    event = ""
        finally:
            conn.close()

    def write_keys(self, keys: dict[str, str]) -> None:
        self.keys_file.write_text(json.dumps(keys))
        self.proc.send_signal(signal.SIGHUP)

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.state_dir.glob("*.log")) if p.is_file()
        ) + "".join(self.output)


def _encode(body: Any) -> bytes | None:
    if body is None:
        return None
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _headers(key: str | None, header: str, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "authorization" else key
    headers.update(extra or {})
    return headers


@contextlib.contextmanager
def running_frontdoor(
    backend: str,
    model: str,
    state_dir: Path,
    keys: dict[str, str],
    *extra_args: str,
    tls: bool = True,
    startup_s: float = 120,
) -> Iterator[FrontDoor]:
    """Start `coderig frontdoor run` as a child process; yields once it printed its ready line."""
    require_tool("nginx")
    state_dir.mkdir(parents=True, exist_ok=True)
    keys_file = state_dir / "keys.json"
    keys_file.write_text(json.dumps(keys))
    os.chmod(keys_file, 0o600)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "coderig.cli",
        "frontdoor",
        "run",
        "--backend",
        backend,
        "--model",
        model,
        "--listen",
        f"127.0.0.1:{port}",
        "--keys-file",
        str(keys_file),
        "--state-dir",
        str(state_dir),
        *(() if tls else ("--plain-http",)),
        *extra_args,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith(READY_LINE):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + startup_s
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("frontdoor did not start:\n" + "".join(output))
    ca = state_dir / "tls" / "ca.pem" if tls else None
    scheme = "https" if tls else "http"
    door = FrontDoor(f"{scheme}://127.0.0.1:{port}", "127.0.0.1", port, ca, state_dir, keys_file, proc, output)
    try:
        yield door
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
