"""`coderig smoke` without a server: what it says when nothing answers, and that it never prints a
token, even one an upstream echoes back."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from client_bundles import assert_no_token, outputs

from coderig.cli import main
from coderig.client import bundle as clients


def test_smoke_connection_refused_says_how_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    path = tmp_path / "b.json"
    path.write_text(json.dumps(clients.developer_bundle(outputs(host="127.0.0.1", port=port), "alice")))
    rc = main(["smoke", str(path), "--timeout", "5"])
    captured = capsys.readouterr()
    assert rc == 1
    lines = captured.out.splitlines()
    fail = next(i for i, line in enumerate(lines) if "FAIL" in line)
    assert "dns/tcp" in lines[fail] and "connection refused" in lines[fail]
    assert "fix:" in lines[fail + 1] and "pulumi up" in lines[fail + 1]
    assert all("SKIP" in line for line in lines[fail + 2 : fail + 8])
    assert_no_token(captured.out, captured.err)


def test_smoke_never_prints_a_token_an_upstream_echoes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import http.server
    import threading

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = json.dumps({"error": {"message": f"bad key {self.headers.get('Authorization')}"}}).encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data = clients.developer_bundle(
            outputs(host="127.0.0.1", port=server.server_address[1], scheme="http", ca_cert_pem=None), "alice"
        )
        path = tmp_path / "b.json"
        path.write_text(json.dumps(data))
        rc = main(["smoke", str(path), "--timeout", "5"])
    finally:
        server.shutdown()
    captured = capsys.readouterr()
    assert rc == 1
    assert "FAIL auth" in captured.out and "bad key Bearer <token>" in captured.out
    assert "tls           skipped: plain http" in captured.out
    assert_no_token(captured.out, captured.err)
