"""The gateway's hardening, on real nginx and LiteLLM (`coderig frontdoor run`) in front of the
stand-in: the README's command as written, nothing left after kill -9, the route allow-list, body
buffering and the size cap, short timeouts for unauthenticated clients, a cached /healthz and TLS
ciphers (issue 12, items 2-8 and 10)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from frontdoor_fixtures import (
    REPO,
    FrontDoor,
    free_port,
    require_tool,
    running_frontdoor,
    standin_server,
)
from standin import StandIn

from coderig.frontdoor import KEEPALIVE_TIMEOUT_S
from coderig.frontdoor.run import READY_LINE

pytestmark = pytest.mark.integration

MODEL = "umans-coder-v0"
KEYS = {"alice": "alice-0123456789abcdefABCDEF", "bob": "bob.0123456789+abcdefABCDEF"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


# ---------------------------------------------------------------- helpers


HEALTH_PROBE = b"GET /health "  # what coderig.runtime.usage_server's prober sends, on its own connection


class CountingProxy:
    """A TCP relay in front of the stand-in that counts connections and the bytes that reach it
    (the stand-in only records requests it read whole: a body cut mid-way leaves no trace there)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.bytes_in = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        with self.lock:
            self.connections = self.bytes_in = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        first = True
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if count and first and data.startswith(HEALTH_PROBE):
                    count = False  # the relay's accounting probes /health every 30 s: not a request
                    with self.lock:
                        self.connections -= 1
                if count:
                    with self.lock:
                        self.bytes_in += len(data)
                first = False
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FrontDoor, CountingProxy, StandIn]]:
    """A plain-HTTP front door whose direct chat path goes through a CountingProxy."""
    with standin_server(model=MODEL) as model:
        proxy = CountingProxy(model.port)
        try:
            with running_frontdoor(proxy.url, MODEL, tmp_path_factory.mktemp("counted"), KEYS, tls=False) as fd:
                yield fd, proxy, model
        finally:
            proxy.close()


def raw_request(sock: socket.socket, head: str) -> tuple[int, bytes]:
    """Send a request head (and nothing else) and read one response with a Content-Length."""
    sock.sendall(head.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", header).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return int(header.split()[1]), body


def access_log(door: FrontDoor, session: str, count: int) -> list[dict[str, str]]:
    """The access-log entries of the requests sent with X-Claude-Code-Session-Id: `session`."""
    deadline = time.monotonic() + 10
    while True:
        lines = (door.state_dir / "gateway-access.log").read_text().splitlines()
        mine = [e for e in map(json.loads, lines) if e["session"] == session]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.1)


# ---------------------------------------------------------------- item 2: the README's command


def readme_frontdoor_commands() -> list[str]:
    """The shell lines of README's `coderig frontdoor run` example block (continuations joined)."""
    text = (REPO / "README.md").read_text()
    section = text.split("### `coderig frontdoor run`", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_frontdoor_run_works_as_written_from_a_fresh_directory(tmp_path: Path) -> None:
    """Only the backend address and the port change (the stand-in's, a free one); the default
    relative --state-dir is resolved in the working directory, not in nginx's prefix."""
    require_tool("nginx")
    setup, command = readme_frontdoor_commands()
    assert command.startswith("uv run coderig frontdoor run ") and "--state-dir" not in command
    model_name = shlex.split(command)[shlex.split(command).index("--model") + 1]
    port = free_port()
    with standin_server(model=model_name) as model:
        command = command.replace("http://10.0.0.9:8000/v1", model.url).replace(":8443", f":{port}")
        env = {**os.environ, "VIRTUAL_ENV": sys.prefix}  # the project's environment, as after `uv sync`
        subprocess.run(["bash", "-c", setup], cwd=tmp_path, check=True, env=env)
        key = json.loads((tmp_path / "keys.json").read_text())["alice"]
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        output: list[str] = []
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 180
            for line in proc.stdout:
                output.append(line)
                if line.startswith(READY_LINE) or time.monotonic() > deadline:
                    break
            assert any(line.startswith(READY_LINE) for line in output), "".join(output)
            ca = tmp_path / ".coderig" / "frontdoor" / "tls" / "ca.pem"
            assert ca.exists() and (tmp_path / ".coderig" / "frontdoor" / "gateway-error.log").exists()
            if "--bundles-dir bundles/" in command:  # what the README says comes out of it
                assert (tmp_path / "bundles" / "alice.json").stat().st_mode & 0o777 == 0o600
            import http.client

            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60,
                                               context=ssl.create_default_context(cafile=str(ca)))  # fmt: skip
            body = {"model": model_name, "messages": [{"role": "user", "content": "hi"}]}
            conn.request("POST", "/v1/chat/completions", json.dumps(body),
                         {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            assert json.loads(resp.read())["choices"][0]["message"]["content"].startswith("tok0")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---------------------------------------------------------------- item 3: kill -9 leaves nothing


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _prefix_of(nginx_master: int) -> Path:
    """The temporary prefix `frontdoor run` gave nginx (`nginx -p PREFIX ...`)."""
    # nginx rewrites its title: "nginx: master process /usr/sbin/nginx -p PREFIX -c ..."
    argv = Path(f"/proc/{nginx_master}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()
    return Path(argv[argv.index("-p") + 1])


def test_kill_9_of_the_runner_leaves_no_server_and_no_key_on_disk(tmp_path: Path) -> None:
    litellm_port = free_port()
    keys = {name: f"{name}-{secrets.token_urlsafe(24)}" for name in ("alice", "bob")}  # this run's own
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(model.url, MODEL, tmp_path / "state", keys, "--litellm-port", str(litellm_port)) as fd,
    ):
        children = _children(fd.proc.pid)
        assert len(children) == 3, children  # the keepalive relay, LiteLLM and nginx's master
        (prefix,) = [_prefix_of(pid) for pid in children if b"nginx" in Path(f"/proc/{pid}/comm").read_bytes()]
        assert prefix.name.startswith("coderig-frontdoor-") and prefix.is_dir()
        master = next(
            v.split(b"=", 1)[1].decode()
            for pid in children
            for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if v.startswith(b"LITELLM_MASTER_KEY=")
        )
        held = [*keys.values(), master]
        assert fd.request("GET", "/v1/models", key=keys["alice"]).status == 200
        assert _listening(fd.port) and _listening(litellm_port)
        try:
            fd.proc.kill()  # SIGKILL: no handler, no finally
            fd.proc.wait(10)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and (any(map(_running, children)) or _listening(fd.port)):
                time.sleep(0.1)
            assert not _listening(fd.port), "the gateway still serves after its runner was killed"
            assert not _listening(litellm_port), "LiteLLM still serves after its runner was killed"
            assert not any(map(_running, children))
            # this run's files: its prefix (if still there) and its state dir, but for the keys file it was given
            roots = (fd.state_dir, prefix)
            scanned = [p for root in roots for p in root.rglob("*") if p.is_file() and p != fd.keys_file]
            holding = [str(p) for p in scanned if any(s.encode() in p.read_bytes() for s in held)]
            assert holding == [], f"files still holding a key: {holding}"
        finally:
            for pid in children:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


# ---------------------------------------------------------------- item 5: the route allow-list

OUTSIDE_THE_LIST = [
    # (method, path, status, shape)
    ("GET", "/v1/chat/completions", 405, "openai"),
    ("PUT", "/v1/chat/completions", 405, "openai"),
    ("DELETE", "/v1/chat/completions", 405, "openai"),
    ("PATCH", "/v1/chat/completions", 405, "openai"),
    ("GET", "/v1/responses", 405, "openai"),
    ("GET", "/v1/responses/resp_abc123", 404, "openai"),
    ("DELETE", "/v1/responses/resp_abc123", 404, "openai"),
    ("POST", "/v1/responses/resp_abc123/cancel", 404, "openai"),
    ("GET", "/v1/responses/resp_abc123/input_items", 404, "openai"),
    ("POST", "/v1/responses/compact", 404, "openai"),
    ("GET", "/v1/models/umans-coder-v0", 404, "openai"),
    ("POST", "/v1/models", 405, "openai"),
    ("POST", "/v1/completions", 404, "openai"),
    ("POST", "/v1/embeddings", 404, "openai"),
    ("GET", "/v1/messages", 405, "anthropic"),
    ("POST", "/v1/messages/batches", 404, "anthropic"),
    ("GET", "/v1/messages/count_tokens", 405, "anthropic"),
    ("POST", "/v1/x/../responses/resp_abc123", 404, "openai"),
    ("POST", "/healthz", 405, "openai"),
    ("PUT", "/api/event_logging/batch", 405, "anthropic"),
]


def test_only_allow_listed_paths_and_methods_reach_an_upstream(door: FrontDoor, standin: StandIn) -> None:
    standin.clear()
    for i, (method, path, status, shape) in enumerate(OUTSIDE_THE_LIST):
        body = None if method in ("GET", "DELETE") else {"model": MODEL, "input": "hi"}
        resp = door.request(method, path, body, KEYS["alice"], extra_headers={"x-claude-code-session-id": f"al-{i}"})
        assert resp.status == status, (method, path, resp.status, resp.body)
        error = resp.json()
        if shape == "anthropic":
            assert error["type"] == "error" and error["error"]["type"] in ("not_found_error", "invalid_request_error")
        else:
            assert error["error"]["code"] in ("not_found", "method_not_allowed"), error
        if status == 405:
            assert method not in resp.headers["allow"] and resp.headers["allow"]
    assert standin.seen("/") == []
    for i, case in enumerate(OUTSIDE_THE_LIST):  # nginx contacted no upstream (LiteLLM included) for any
        if case[1].startswith("/v1/"):  # (the probes' locations do not log)
            (entry,) = access_log(door, f"al-{i}", 1)
            assert entry["upstream_s"] == "" and entry["status"] == str(case[2]), (case, entry)
    # and the listed ones still work (count_tokens with its query string)
    assert door.request("GET", "/v1/models", key=KEYS["alice"]).status == 200
    count = door.post("/v1/messages/count_tokens?beta=true",
                      {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, KEYS["alice"])  # fmt: skip
    assert count.status == 200, count.body


# ---------------------------------------------------------------- item 6: nothing over the cap upstream


def test_chunked_body_over_the_cap_gets_413_and_nothing_reaches_the_model(
    counted: tuple[FrontDoor, CountingProxy, StandIn],
) -> None:
    fd, proxy, model = counted
    assert fd.post("/v1/chat/completions", CHAT, KEYS["alice"]).status == 200  # the path works
    proxy.reset()
    model.clear()
    sock = socket.create_connection((fd.host, fd.port), timeout=30)
    status = None
    try:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = b"y" * (1024 * 1024)
        with contextlib.suppress(OSError):  # nginx may stop reading once over the cap
            for _ in range(33):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        with contextlib.suppress(OSError):
            head = sock.recv(65536)
            status = int(head.split()[1])
    finally:
        sock.close()
    time.sleep(0.5)
    assert status == 413
    assert proxy.bytes_in == 0, f"{proxy.bytes_in} bytes of an oversize body reached the model server"
    assert model.seen("/") == []


# ---------------------------------------------------------------- item 7: short timeouts unless authenticated


def test_an_idle_connection_after_a_401_is_closed_within_the_short_keepalive(
    counted: tuple[FrontDoor, CountingProxy, StandIn],
) -> None:
    fd = counted[0]
    sock = socket.create_connection((fd.host, fd.port), timeout=KEEPALIVE_TIMEOUT_S + 15)
    try:
        status, _ = raw_request(sock, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 401
        started = time.monotonic()
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        idle = time.monotonic() - started
    finally:
        sock.close()
    assert closed and idle < KEEPALIVE_TIMEOUT_S + 5, f"still open after {idle:.0f}s"


def test_a_trickled_body_opens_no_upstream_connection_until_it_is_whole(
    counted: tuple[FrontDoor, CountingProxy, StandIn],
) -> None:
    fd, proxy, model = counted
    body = json.dumps(CHAT).encode()
    proxy.reset()
    sock = socket.create_connection((fd.host, fd.port), timeout=30)
    try:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for i in range(0, len(body) - 1, len(body) // 8 + 1):
            sock.sendall(body[i : min(i + len(body) // 8 + 1, len(body) - 1)])
            time.sleep(0.4)
        time.sleep(0.5)
        assert (proxy.connections, proxy.bytes_in) == (0, 0), "a partial body already holds the model server"
        sock.sendall(body[-1:])
        sock.settimeout(30)
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
    finally:
        sock.close()
    assert proxy.bytes_in > len(body)


# ---------------------------------------------------------------- item 8: /healthz from a cache


def test_healthz_is_served_from_a_status_refreshed_at_most_once_a_second(door: FrontDoor, standin: StandIn) -> None:
    time.sleep(1.2)  # let any cached status expire
    standin.clear()
    started = time.monotonic()
    statuses = [door.request("GET", "/healthz").status for _ in range(50)]
    elapsed = time.monotonic() - started
    # what /healthz asks the backend: --health-path, /v1/models by default (/health for vLLM)
    probes = len([r for r in standin.seen("/") if r.method == "GET" and r.path in ("/health", "/v1/models")])
    assert probes >= 1
    assert statuses[0] == 200 and set(statuses) <= {200, 429}, statuses
    assert probes <= 2 + int(elapsed), f"{probes} model health requests for 50 /healthz in {elapsed:.1f}s"
    assert door.request("HEAD", "/healthz").status in (200, 429)
    assert door.request("DELETE", "/healthz").status == 405


# ---------------------------------------------------------------- item 10: TLS ciphers


def _tls12_handshake(door: FrontDoor, cipher: str) -> bool:
    openssl = require_tool("openssl")
    proc = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{door.port}", "-tls1_2", "-cipher", f"{cipher}:@SECLEVEL=0",
         "-CAfile", str(door.ca), "-servername", "localhost"],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return proc.returncode == 0 and f"Cipher is {cipher}" in proc.stdout


@pytest.mark.parametrize(
    "cipher",
    ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-CCM8",
     "ECDHE-ECDSA-ARIA128-GCM-SHA256", "ECDHE-ECDSA-CAMELLIA128-SHA256"],
)  # fmt: skip
def test_tls12_refuses_weak_and_exotic_ciphers(door: FrontDoor, cipher: str) -> None:
    assert not _tls12_handshake(door, cipher)


def test_tls_accepts_the_intermediate_suites(door: FrontDoor) -> None:
    assert _tls12_handshake(door, "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _tls12_handshake(door, "ECDHE-ECDSA-CHACHA20-POLY1305")
    ctx = ssl.create_default_context(cafile=str(door.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", door.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.3"
