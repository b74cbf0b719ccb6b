"""The rendered kubernetes gateway on real nginx: 503 + Retry-After while the model is at zero (no idle policy)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from frontdoor_fixtures import free_port, require_tool
from kube_helpers import (
    k8s_config,
    settings_of,
)

from coderig import frontdoor
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as kube

# --- the gateway while the model is at zero (real nginx) ------------------------------------------


class _Ok(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _ok(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _ok


class _KeyedModel(_Ok):
    """Like `vllm --api-key`: /v1/* needs the model key; /health does not."""

    key = "v" * 32
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._ok()


@pytest.mark.integration
def test_gateway_answers_503_with_retry_after_while_the_model_is_at_zero_without_idle_policy(tmp_path: Path) -> None:
    """The k8s gateway config (kube.gateway_spec) in real nginx, on loopback, plain HTTP: a model with
    no ready replica (connection refused, as a Service without endpoints) gives 503 + Retry-After in
    the client's error shape; a missing key is still a 401; with the model up, requests go through."""
    import dataclasses

    nginx = require_tool("nginx")  # skipped on a workstation without nginx, a failure in CI

    lite_port, model_port, gw_port = free_port(), free_port(), free_port()
    # nginx's workers (not root when nginx runs as root) write request bodies and the health cache here,
    # as in the pod's /tmp: a directory they can reach (pytest's tmp_path sits under a 0700 directory)
    temp_dir = Path(tempfile.mkdtemp(prefix="coderig-kube-gw-"))
    temp_dir.chmod(0o711)
    lite = ThreadingHTTPServer(("127.0.0.1", lite_port), _Ok)
    threading.Thread(target=lite.serve_forever, daemon=True).start()
    # without an idle policy nothing wakes a model at zero (an operator stopped it): the gate answers; with
    # one, the relay holds and wakes instead (tests/kube/test_kube_wake.py)
    s = settings_of({**k8s_config(), "idle": {}})
    assert kube_fd.front_door(s)[1].model_gate_retry_after_s == kube.RETRY_AFTER_S
    assert kube_fd.front_door(settings_of(k8s_config()))[1].model_gate_retry_after_s is None
    key = "crk-" + "k" * 40
    (tmp_path / "keys.conf").write_text(
        frontdoor.render_gateway_keys({"alice": key}, "sk-" + "m" * 40, model_key=_KeyedModel.key)
    )
    spec = dataclasses.replace(
        kube_fd.front_door(s)[1],
        listen=f"127.0.0.1:{gw_port}",
        litellm=f"127.0.0.1:{lite_port}",
        model_health_url=f"http://127.0.0.1:{model_port}/health",
        direct_chat_backends=(f"127.0.0.1:{model_port}",),
        # the keepalive relay is transparent to these plain answers: the native routes go to the model itself
        native_relays=(f"127.0.0.1:{model_port}",),
        keys_include=str(tmp_path / "keys.conf"),
        tls_cert=None,
        tls_key=None,
        pid_path=str(tmp_path / "nginx.pid"),
        temp_dir=str(temp_dir),
    )
    assert (spec.error_log, spec.access_log) == ("/dev/stderr", "/dev/stdout")  # as in the pod
    (tmp_path / "nginx.conf").write_text(frontdoor.render_gateway_conf(spec))
    proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    model: ThreadingHTTPServer | None = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/api/hello", timeout=1)
                break
            except OSError:
                threading.Event().wait(0.05)

        def call(path: str, headers: dict[str, str]) -> tuple[int, str | None, dict[str, Any]]:
            req = urllib.request.Request(f"http://127.0.0.1:{gw_port}{path}", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json", **headers})  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.headers.get("Retry-After"), json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers.get("Retry-After"), json.loads(exc.read() or b"{}")

        status, retry, body = call("/v1/messages", {"x-api-key": key})
        assert (status, retry) == (503, str(kube.RETRY_AFTER_S)), body
        assert body["type"] == "error"
        status, retry, body = call("/v1/chat/completions", {"Authorization": f"Bearer {key}"})
        assert (status, retry) == (503, str(kube.RETRY_AFTER_S)) and "error" in body
        assert call("/v1/messages", {})[0] == 401
        model = ThreadingHTTPServer(("127.0.0.1", model_port), _KeyedModel)
        threading.Thread(target=model.serve_forever, daemon=True).start()
        # the gate's health status is cached for a second (frontdoor.HEALTH_CACHE_S): up within two
        deadline = time.monotonic() + 2 * frontdoor.HEALTH_CACHE_S + 1
        while call("/v1/messages", {"x-api-key": key})[0] != 200:
            assert time.monotonic() < deadline, "the model is up but the gateway still answers 503"
            time.sleep(0.2)
        # the direct chat path: the gateway sends the model key from the keys Secret, never the developer's
        assert call("/v1/chat/completions", {"Authorization": f"Bearer {key}"})[0] == 200
        assert _KeyedModel.seen[-1]["authorization"] == f"Bearer {_KeyedModel.key}"
        assert key not in json.dumps(_KeyedModel.seen)
    finally:
        proc.terminate()
        proc.wait(10)
        lite.shutdown()
        if model is not None:
            model.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
