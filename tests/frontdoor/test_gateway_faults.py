"""The gateway (real nginx, the config coderig renders) against peers that misbehave: nginx's own
protocol errors in the client's JSON shape, an access log that stays UTF-8 JSON whatever bytes a
client sends, LiteLLM's headers stripped, and a flood of half-open TLS handshakes from one address
that leaves a well-behaved client served. LiteLLM's place is taken by a small server that sets the
headers the pinned LiteLLM sets (the point here is what nginx lets through)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from frontdoor_fixtures import free_port, require_tool

from coderig.frontdoor import GatewaySpec, render_gateway_conf, render_gateway_keys
from coderig.frontdoor.nginx_hardening import (
    HANDSHAKE_HEADER_TIMEOUT_S,
    LITELLM_RESPONSE_HEADERS,
    LOG_NOT_ASCII,
    worker_connections,
)
from coderig.frontdoor.run import ensure_tls, read_keys

pytestmark = pytest.mark.integration

KEY = "alice-0123456789abcdefABCDEF"
KEYS = {"alice": KEY}


class _FakeLiteLLM(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
        self.send_response(200)
        for name in LITELLM_RESPONSE_HEADERS:
            self.send_header(name, "leak")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"Internal Server Error"  # what LiteLLM's web server answers for an unhandled exception
        self.send_response(500)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


@dataclass
class Gateway:
    port: int
    access_log: Path
    ca: Path | None

    def connection(self, host: str = "127.0.0.1") -> http.client.HTTPConnection:
        if self.ca:
            ctx = ssl.create_default_context(cafile=str(self.ca))
            ctx.check_hostname = False
            return http.client.HTTPSConnection(host, self.port, timeout=10, context=ctx)
        return http.client.HTTPConnection(host, self.port, timeout=10)


@contextlib.contextmanager
def gateway(tmp_path: Path, tls: bool = False) -> Iterator[Gateway]:
    nginx = require_tool("nginx")
    fake = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLiteLLM)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    os.chmod(tmp_path, 0o711)
    os.chmod(prefix, 0o711)
    keys = prefix / "keys.conf"
    keys.write_text(render_gateway_keys(KEYS, "sk-master-0123456789abcdef"))
    cert = key = ca = None
    if tls:
        ca, cert, key = ensure_tls(tmp_path / "tls", "127.0.0.1", [])
    port = free_port()
    spec = GatewaySpec(
        listen=f"0.0.0.0:{port}",
        litellm=f"127.0.0.1:{fake.server_address[1]}",
        model_health_url=f"http://127.0.0.1:{fake.server_address[1]}/health",
        keys_include=str(keys),
        tls_cert=str(cert) if cert else None,
        tls_key=str(key) if key else None,
        pid_path=str(prefix / "nginx.pid"),
        error_log=str(prefix / "error.log"),
        access_log=str(prefix / "access.log"),
        temp_dir=str(prefix / "tmp"),
        worker_processes="2",
        worker_connections=worker_connections(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),  # as frontdoor run
    )
    conf = prefix / "nginx.conf"
    conf.write_text(render_gateway_conf(spec))
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-e", spec.error_log], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, (prefix / "error.log").read_text()
            time.sleep(0.1)
        yield Gateway(port, prefix / "access.log", ca)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
        fake.shutdown()


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_nginx_own_errors_answer_in_the_clients_json_shape(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        cases = [
            (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "openai"),
            (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n", 400, "anthropic"),
            (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "openai"),
            (b"GET /v1/models HTTP/3.0\r\nHost: x\r\n\r\n", 505, "openai"),
            (b"NONSENSE\r\n\r\n", 400, "openai"),  # no URI at all
        ]
        for request, status, shape in cases:
            got, headers, body = raw(gw.port, request)
            assert got == status, (request[:60], got, body[:200])
            assert headers.get("content-type") == "application/json", headers
            error = json.loads(body)
            if shape == "anthropic":
                assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
            else:
                assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"]


CLOSE = b"Connection: close\r\n\r\n"


def test_access_log_stays_utf8_json_whatever_bytes_a_client_sends(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        raw(
            gw.port,
            b"GET /v1/models\xff HTTP/1.1\r\nHost: x\r\nx-claude-code-session-id: \xfe\xff\x80\r\n" + CLOSE,
        )
        raw(
            gw.port,
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-claude-code-session-id: plain-1\r\n" + CLOSE,
        )
        time.sleep(0.3)
        entries = [json.loads(line) for line in gw.access_log.read_bytes().decode("utf-8").splitlines()]
        assert {e["session"] for e in entries} == {LOG_NOT_ASCII, "plain-1"}
        assert LOG_NOT_ASCII in {e["path"] for e in entries}


def test_access_log_session_comes_from_each_clients_header_in_affinity_order(tmp_path: Path) -> None:
    """Codex's `session-id` and opencode's `x-session-id` fill the log's session as Claude Code's
    header does; with several, the one the affinity key reads (coderig.frontdoor.native) wins."""
    sent = {
        "claude": b"x-claude-code-session-id: cc-1\r\n",
        "codex": b"session-id: cx-1\r\n",
        "opencode": b"x-session-id: oc-1\r\n",
        "all three": b"x-session-id: oc-2\r\nsession-id: cx-2\r\nx-claude-code-session-id: cc-2\r\n",
        "codex and opencode": b"x-session-id: oc-3\r\nsession-id: cx-3\r\n",
        "codex, not ASCII": b"session-id: \xfe\xff\r\n",
        "none": b"",
    }
    with gateway(tmp_path) as gw:
        for i, headers in enumerate(sent.values()):
            raw(gw.port, f"GET /v1/models?case={i} HTTP/1.1\r\nHost: x\r\n".encode() + headers + CLOSE)
        time.sleep(0.3)
        entries = [json.loads(line) for line in gw.access_log.read_bytes().decode("utf-8").splitlines()]
    assert [e["session"] for e in entries] == ["cc-1", "cx-1", "oc-1", "cc-2", "cx-3", LOG_NOT_ASCII, ""]


def test_litellm_headers_never_reach_the_client(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        status, headers, _body = raw(
            gw.port,
            f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode() + CLOSE,
        )
        assert status == 200
        leaked = sorted(h for h in headers if h.startswith(("x-litellm", "llm_provider")))
        assert not leaked, leaked


def test_litellm_failures_reach_the_client_in_its_json_shape(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        for path, anthropic in (("/v1/messages", True), ("/v1/responses", False), ("/v1/chat/completions", False)):
            request = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 2\r\n"
            status, headers, body = raw(gw.port, request.encode() + CLOSE + b"{}")
            assert status == 500 and headers["content-type"] == "application/json", (path, body)
            error = json.loads(body)
            if anthropic:
                assert error["type"] == "error" and error["error"]["type"] == "api_error"
            else:
                assert error["error"]["type"] == "server_error" and "LiteLLM" in error["error"]["message"]


def test_a_world_readable_keys_file_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    os.chmod(keys, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_keys(keys)
    os.chmod(keys, 0o600)
    assert read_keys(keys) == KEYS


FLOOD = 9000  # > 2 workers x 4,096 slots (what the gateway had): bounded by the 20,000-file limit here


def test_a_flood_of_half_open_handshakes_from_one_address_leaves_a_client_served(tmp_path: Path) -> None:
    with gateway(tmp_path, tls=True) as gw:
        flood: list[socket.socket] = []
        try:
            for _ in range(FLOOD):  # 11 bytes of a ClientHello each, from 127.0.0.2
                sock = socket.socket()
                sock.bind(("127.0.0.2", 0))
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", gw.port))
                flood.append(sock)
            time.sleep(0.5)
            for sock in flood:
                with contextlib.suppress(OSError):
                    sock.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            time.sleep(1)
            served = 0
            for _ in range(3):  # a well-behaved client, three times
                conn = gw.connection()
                try:
                    conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
                    served += conn.getresponse().status == 200
                except OSError:
                    pass
                finally:
                    conn.close()
            assert served == 3
            # the half-open ones are dropped after the handshake timeout
            time.sleep(HANDSHAKE_HEADER_TIMEOUT_S + 2)
            closed = 0
            for sock in flood[:200]:
                sock.setblocking(True)
                sock.settimeout(0.05)
                try:
                    closed += sock.recv(1) == b""
                except ConnectionResetError:
                    closed += 1
                except OSError:
                    pass
            assert closed == 200, closed
        finally:
            for sock in flood:
                sock.close()
