"""Wake on request on the kubernetes target, against the real API server: the front-door pod's relay
(`--wake scale`, the command and environment rendered for its keepalive container) runs here as a local
process with a bound token of the rendered `coderig-wake` ServiceAccount, and scales the rendered model
Deployment back from zero; kwok takes the model pod to Running/Ready.

No container runs under kwok, so the "pod" behind the model Service is the stand-in model server on
loopback, listening exactly while the Deployment has a Ready replica (as a ClusterIP Service routes only
to Ready pods and refuses connections while it has no endpoints)."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from frontdoor_fixtures import free_port, require_tool
from kube_cluster import KubeCluster
from kube_helpers import settings_of
from standin import StandIn, start_standin

from coderig import frontdoor
from coderig.core import planner
from coderig.frontdoor.assemble import USAGE_DIR
from coderig.runtime import kube_reaper, usage_record
from coderig.runtime.idle import ReaperError
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as km
from coderig.targets.kubernetes import render as kube_render
from coderig.targets.kubernetes import wake as kube_wake

pytestmark = pytest.mark.integration

NS = "coderig-wake-t"
STACK = "wake"
CLASS = "coderig-test-wake"
MODEL = "wake-coder"
DEV_KEY = "crk-" + "a" * 40


def settings() -> Any:
    return settings_of(
        {
            "target": {
                "kind": "kubernetes",
                "gpu": {"model": "H200", "count": 8},
                "replicas": 1,
                "namespace": NS,
                "storageClass": CLASS,
                "serviceType": "ClusterIP",
            },
            "model": {"preset": "glm-4.7", "servedName": MODEL},
            "developers": ["alice"],
            "idle": {"stopAfterMinutes": 10},
        }
    )


def replicas(kube: KubeCluster) -> tuple[int, int, int]:
    """(spec.replicas, ready replicas, generation) of the model Deployment."""
    dep = kube.get("deployment", km.MODEL, "-n", NS)
    return dep["spec"]["replicas"], dep.get("status", {}).get("readyReplicas") or 0, dep["metadata"]["generation"]


@dataclass
class ModelService:
    """The stand-in on a fixed loopback port, up exactly while the model Deployment has a Ready replica."""

    kube: KubeCluster
    port: int = field(default_factory=free_port)
    follow: bool = True  # False: the Service keeps no endpoint (the pod never answers)
    server: StandIn | None = None
    up_at: float | None = None  # monotonic time the stand-in began to listen
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready = self.follow and replicas(self.kube)[1] > 0
            if ready and self.server is None:
                self.server = start_standin(port=self.port, model=MODEL, delay=0.02)
                self.up_at = time.monotonic()
            elif not ready and self.server is not None:
                self.server.stop()
                self.server, self.up_at = None, None
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.stop()


@dataclass
class Rig:
    kube: KubeCluster
    sa_dir: Path
    service: ModelService
    relay_port: int = 0
    control: int = 0


@pytest.fixture(scope="module")
def rig(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The stack's namespace, claim, model Deployment and the relay's account as rendered, and the relay's
    token directory (a bound token of `coderig-wake`, the cluster CA) as the projected volume holds it."""
    s = settings()
    names = {km.MODEL, kube_wake.WAKE}
    kinds = {"Namespace", "PersistentVolumeClaim"}
    objs = [
        o
        for o in kube_render.objects(s, STACK, planner.plan_stack(s))
        if o["kind"] in kinds or o["metadata"]["name"] in names and o["kind"] not in ("Service", "NetworkPolicy")
    ]
    assert {o["kind"] for o in objs} == {*kinds, "Deployment", "ServiceAccount", "Role", "RoleBinding"}
    kube.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": CLASS},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "Immediate",
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": CLASS},
                "spec": {
                    "capacity": {"storage": "1Ti"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": CLASS,
                    "nfs": {"server": "127.0.0.1", "path": "/weights"},
                },
            },
            *objs,
        ]
    )
    kube.wait_for("the model Deployment Ready", lambda: replicas(kube)[1] == 1, timeout=90)
    sa_dir = tmp_path_factory.mktemp("wake-sa")
    (sa_dir / "token").write_text(kube.service_account_token(NS, kube_wake.WAKE))
    (sa_dir / "token").chmod(0o600)
    shutil.copy(kube.dir / "pki" / "ca.crt", sa_dir / "ca.crt")
    service = ModelService(kube)
    service.start()
    try:
        yield Rig(kube, sa_dir, service)
    finally:
        service.stop()
        kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        kube.kubectl("delete", "pv", CLASS, "--wait=false", check=False)


def to_zero(rig: Rig) -> int:
    """Scale the model to zero (what the idle reaper does) and wait until its "pod" is gone; the generation."""
    rig.kube.kubectl("-n", NS, "scale", f"deployment/{km.MODEL}", "--replicas=0")
    rig.kube.wait_for("no model pod", lambda: replicas(rig.kube)[1] == 0 and rig.service.server is None, timeout=60)
    return replicas(rig.kube)[2]


@contextlib.contextmanager
def relay(rig: Rig, tmp_path: Path, *, budget: float | None = None, sa_dir: Path | None = None) -> Iterator[Rig]:
    """The keepalive container's rendered command and environment, run here: its listener and the model
    Service's address moved to loopback ports, the API server's address as the kubelet would set it."""
    container = kube_fd.keepalive_container(settings())
    assert container is not None
    cmd = [sys.executable if arg == "python3" else arg for arg in container["command"]]
    assert cmd[:4] == [sys.executable, "-m", "coderig.runtime.usage_slot", "--"], cmd  # takes a record slot
    record = cmd.index("--usage-file") + 1
    assert cmd[record] == f"{USAGE_DIR}/usage.json"  # on the usage volume (the coderig-usage claim)
    cmd[record] = str(tmp_path / "usage" / "usage.json")
    cmd[cmd.index("--metrics") + 1] = f"127.0.0.1:{free_port()}"
    rig.relay_port, rig.control = free_port(), free_port()
    route = cmd.index("--route") + 1
    assert cmd[route].endswith(f"={km.MODEL}.{NS}.svc.cluster.local:8000"), cmd[route]
    cmd[route] = f"127.0.0.1:{rig.relay_port}=127.0.0.1:{rig.service.port}"
    cmd[cmd.index("--control") + 1] = f"127.0.0.1:{rig.control}"
    cmd[cmd.index("--interval") + 1] = "0.3"
    if budget is not None:
        cmd[cmd.index("--start-budget") + 1] = str(budget)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CODERIG_NAMESPACE"] == NS and env["CODERIG_DEPLOYMENT"] == km.MODEL
    host, port = rig.kube.server.removeprefix("https://").rsplit(":", 1)
    env |= {"PYTHONPATH": str(ROOT), "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    env |= {"CODERIG_SA_DIR": str(sa_dir or rig.sa_dir), "PATH": os.environ["PATH"]}
    log = (tmp_path / "relay.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        rig.kube.wait_for("the relay's control port", lambda: maybe_state(rig) is not None, timeout=20, every=0.1)
        yield rig
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def state(rig: Rig) -> dict[str, Any]:
    """The relay's GET /state of its one route."""
    found = maybe_state(rig)
    assert found is not None, "the relay's control port does not answer"
    return found


def maybe_state(rig: Rig) -> dict[str, Any] | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", rig.control, timeout=5)
        conn.request("GET", "/state")
        return json.loads(conn.getresponse().read())["routes"][0]
    except OSError:
        return None


def post(rig: Rig, path: str, body: dict[str, Any]) -> tuple[int, list[tuple[float, str]]]:
    """(status, [(seconds since sent, line)]) as nginx would relay it (HTTP/1.1, Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", rig.relay_port, timeout=90)
    sent = time.monotonic()
    try:
        # the developer header is the gateway's (from the key), as nginx sends it to the relay
        headers = {"content-type": "application/json", "x-coderig-developer": "alice"}
        conn.request("POST", path, json.dumps(body).encode(), headers)
        resp = conn.getresponse()
        lines = []
        while line := resp.readline():
            lines.append((time.monotonic(), line.decode().rstrip("\r\n")))
        return resp.status, [(t - sent, text) for t, text in lines]
    finally:
        conn.close()


MESSAGES = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
KINDS = [
    ("/v1/messages", {**MESSAGES, "stream": True}),
    ("/v1/chat/completions", {**MESSAGES, "stream": True}),
    ("/v1/messages", MESSAGES),
    ("/v1/chat/completions", MESSAGES),
]


def concurrently(
    rig: Rig, n: int, meanwhile: Callable[[], None] = lambda: None
) -> list[tuple[str, bool, int, list[tuple[float, str]]]]:
    """n requests at once (the kinds above in turn): (path, streams, status, lines) each; `meanwhile`
    runs while they are in flight."""
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        path, body = KINDS[i % len(KINDS)]
        results[i] = (path, bool(body.get("stream")), *post(rig, path, body))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    meanwhile()
    for t in threads:
        t.join(120)
    return results


def test_requests_at_zero_are_held_one_scale_up_serves_them_all(rig: Rig, tmp_path: Path) -> None:
    generation = to_zero(rig)
    allowed: list[float] = []

    def all_held_then_serve() -> None:
        """Every request waits in the relay while the pod is scaled back and Ready in the API; only then
        does the "pod" answer (kwok makes a pod Ready in well under a second: too quick to watch)."""
        rig.kube.wait_for("8 requests held", lambda: state(rig)["inflight"] == 8, timeout=30, every=0.05)
        rig.kube.wait_for("the model pod Ready in the API", lambda: replicas(rig.kube)[1] == 1, timeout=60)
        assert state(rig)["state"] == "waking"
        time.sleep(1.0)  # keepalives every 0.3 s meanwhile
        allowed.append(time.monotonic())
        rig.service.follow = True

    rig.service.follow = False
    with relay(rig, tmp_path):
        assert state(rig)["state"] == "stopped"  # learned from the API server at start, not assumed
        started = time.monotonic()
        try:
            results = concurrently(rig, 8, all_held_then_serve)
        finally:
            rig.service.follow = True
        assert [r[2] for r in results] == [200] * 8, [r[3][-3:] for r in results]
        spec, ready, after = replicas(rig.kube)
        assert (spec, ready, after) == (1, 1, generation + 1)  # one scale-up for the eight requests
        final = state(rig)
        assert final["state"] == "awake" and final["wakes_total"] == 1 and final["inflight"] == 0, final
        up = rig.service.up_at
        assert up is not None and allowed and up >= allowed[0]
        for path, streams, _, lines in results:
            text = [line for _, line in lines]
            if not streams:
                assert json.loads(text[-1])["model"] == MODEL
                continue
            # a held stream hears keepalives from the start, its first event only once a model pod is Ready
            keepalives = [t for t, line in lines if line == ": keepalive"]
            first = next(t for t, line in lines if line.startswith("data:"))
            assert keepalives and keepalives[0] < first, text[:5]
            assert started + first >= up - 0.05, (first, up - started)
            assert ("event: message_stop" in text) if path == "/v1/messages" else ("data: [DONE]" in text), text[-4:]
        # the model is awake: the next request goes straight through, no second scale
        assert post(rig, *KINDS[3])[0] == 200 and replicas(rig.kube)[2] == generation + 1
    # every request was counted for its developer, tokens as the model server reported them; the record is
    # on the usage volume, written when the relay stops (a pod's termination)
    reported = rig.service.server.reported if rig.service.server else []
    assert len(reported) == 9 and {r["developer"] for r in reported} == {"alice"}
    ledger = usage_record.load(tmp_path / "usage" / "usage-0.json")
    assert sum(n for (dev, _, code), n in ledger.requests.items() if dev == "alice" and code == "200") == 9
    assert ledger.tokens[("alice", "input")] == sum(r["input"] for r in reported)
    assert ledger.tokens[("alice", "output")] == sum(r["output"] for r in reported)
    # a new relay (the pod restarted) takes the freed slot and carries on from the record
    with relay(rig, tmp_path):
        assert post(rig, *KINDS[3])[0] == 200
    again = usage_record.load(tmp_path / "usage" / "usage-0.json")
    assert sum(n for (dev, _, _), n in again.requests.items() if dev == "alice") == 10
    assert not (tmp_path / "usage" / "usage-1.json").exists()


@contextlib.contextmanager
def gateway(rig: Rig, tmp_path: Path) -> Iterator[int]:
    """The front-door pod's rendered nginx config (the idle stack's: no 503 gate) in real nginx, plain HTTP
    on loopback, before the running relay; yields its port. Keys: alice's developer key."""
    nginx = require_tool("nginx")
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="coderig-kube-wake-"))  # nginx's workers reach it (as the pod's /tmp)
    temp_dir.chmod(0o711)
    (tmp_path / "keys.conf").write_text(frontdoor.render_gateway_keys({"alice": DEV_KEY}, "sk-" + "m" * 40, "mk" * 16))
    spec = dataclasses.replace(
        kube_fd.front_door(settings())[1],
        listen=f"127.0.0.1:{port}",
        litellm=f"127.0.0.1:{free_port()}",  # nothing: every request here is for the served model
        model_health_url=f"http://127.0.0.1:{rig.relay_port}/health",
        direct_chat_backends=(f"127.0.0.1:{rig.service.port}",),
        native_relays=(f"127.0.0.1:{rig.relay_port}",),
        keys_include=str(tmp_path / "keys.conf"),
        tls_cert=None,
        tls_key=None,
        pid_path=str(tmp_path / "nginx.pid"),
        error_log=str(tmp_path / "error.log"),
        access_log=str(tmp_path / "access.log"),
        temp_dir=str(temp_dir),
    )
    assert spec.model_gate_retry_after_s is None
    (tmp_path / "nginx.conf").write_text(frontdoor.render_gateway_conf(spec))
    proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    try:
        rig.kube.wait_for("nginx", lambda: _listens(port), timeout=20, every=0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _listens(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def test_through_the_rendered_gateway_a_request_at_zero_is_held_and_answered(rig: Rig, tmp_path: Path) -> None:
    """nginx -> relay -> the model Service: no 503 + Retry-After any more; the stream's keepalives pass
    nginx unbuffered while the pod comes back; the developer is the one the gateway read from the key."""
    generation = to_zero(rig)
    rig.service.follow = False
    got: list[Any] = []

    def send(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
        body = json.dumps({**MESSAGES, "stream": True}).encode()
        headers = {"x-api-key": DEV_KEY, "content-type": "application/json", "anthropic-version": "2023-06-01"}
        conn.request("POST", "/v1/messages", body, headers)
        resp = conn.getresponse()
        got.append((resp.status, resp.getheader("Retry-After")))
        got.append([line.decode().rstrip("\r\n") for line in iter(resp.readline, b"")])
        conn.close()

    try:
        with relay(rig, tmp_path), gateway(rig, tmp_path) as port:
            sender = threading.Thread(target=send, args=(port,))
            sender.start()
            rig.kube.wait_for("the request held", lambda: state(rig)["inflight"] == 1, timeout=30, every=0.05)
            rig.kube.wait_for("the model pod Ready in the API", lambda: replicas(rig.kube)[1] == 1, timeout=60)
            time.sleep(1.0)
            rig.service.follow = True
            sender.join(90)
    finally:
        rig.service.follow = True
    (status, retry_after), lines = got
    assert status == 200 and retry_after is None
    assert ": keepalive" in lines and "event: message_stop" in lines, lines[:6]
    assert lines.index(": keepalive") < lines.index("event: message_start")
    assert replicas(rig.kube) == (1, 1, generation + 1)
    reported = rig.service.server.reported if rig.service.server else []
    assert [r["developer"] for r in reported] == ["alice"]


def overloaded(path: str) -> int:
    """The status of a failed wake in the client's shape: Anthropic's 529 overloaded_error, OpenAI's 503."""
    return 529 if path.startswith("/v1/messages") else 503


def test_a_wake_past_the_start_budget_ends_every_held_request_in_its_shape(rig: Rig, tmp_path: Path) -> None:
    """The Deployment scales back and its pod is Ready in the API, but the model never answers (no
    endpoint): after the budget each held request ends with an error in its own API's shape."""
    to_zero(rig)
    rig.service.follow = False
    try:
        with relay(rig, tmp_path, budget=3):
            results = concurrently(rig, 4)
            assert replicas(rig.kube)[0] == 1  # the wake itself happened
            assert state(rig)["wakes_total"] == 1 and "start budget" in state(rig)["last_error"]
    finally:
        rig.service.follow = True
    for path, streams, status, lines in results:
        text = [line for _, line in lines]
        if streams:  # the stream's head was sent at once: the error is its last event
            assert status == 200 and ": keepalive" in text, text
            data = json.loads(next(line for line in reversed(text) if line.startswith("data:"))[5:])
        else:
            assert status == overloaded(path), text
            data = json.loads(text[-1])
        message = data["error"]["message"]
        assert "could not wake the model" in message and "3 s start budget" in message, message
        if path == "/v1/messages":
            assert data["type"] == "error" and data["error"]["type"] == "overloaded_error"
        else:
            assert data["error"]["type"] == "server_error"


def test_a_wake_the_api_refuses_fails_every_held_request_in_its_shape(rig: Rig, tmp_path: Path) -> None:
    """A token that may read the Deployment but not scale it: the wake fails at once, with why."""
    reader = "coderig-test-reader"
    rig.kube.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": reader, "namespace": NS}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": reader, "namespace": NS},
                "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": reader, "namespace": NS},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": reader},
                "subjects": [{"kind": "ServiceAccount", "name": reader, "namespace": NS}],
            },
        ]
    )
    sa_dir = tmp_path / "reader"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(rig.kube.service_account_token(NS, reader))
    shutil.copy(rig.sa_dir / "ca.crt", sa_dir / "ca.crt")
    generation = to_zero(rig)
    with relay(rig, tmp_path, sa_dir=sa_dir):
        assert state(rig)["state"] == "stopped"
        results = concurrently(rig, 4)
    assert replicas(rig.kube)[::2] == (0, generation)  # nothing scaled
    for path, streams, status, lines in results:
        text = [line for _, line in lines]
        last = next(line for line in reversed(text) if line.startswith(("data:", "{")))
        data = json.loads(last.removeprefix("data:"))
        assert status == (200 if streams else overloaded(path)), text
        message = data["error"]["message"]
        assert f"cannot scale {NS}/{km.MODEL} back up" in message and "HTTP 403" in message, message
        assert (data.get("type") == "error") == (path == "/v1/messages")


def test_the_wake_account_may_scale_the_model_and_nothing_else(rig: Rig) -> None:
    api = kube_reaper.KubeApi(rig.kube.server, rig.sa_dir / "token", rig.sa_dir / "ca.crt")
    rig.kube.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "coderig-wake-other"}}])
    other = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "other", "namespace": NS},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "other"}},
            "template": {
                "metadata": {"labels": {"app": "other"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "c",
                            "image": "example.invalid/c:1",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "runAsUser": 1000,
                            },
                        }
                    ],
                },
            },
        },
    }
    rig.kube.apply([other])
    scale = f"/apis/apps/v1/namespaces/{NS}/deployments"
    for call in (
        lambda: api.scale(NS, "other", 1),  # another Deployment of its namespace
        lambda: api.scale("coderig-wake-other", km.MODEL, 1),  # another namespace
        lambda: api.call("GET", scale),  # listing
        lambda: api.call(  # the Deployment itself, not its scale subresource
            "PATCH", f"{scale}/{km.MODEL}", {"spec": {"paused": True}}, "application/merge-patch+json"
        ),
        lambda: api.call("DELETE", f"{scale}/{km.MODEL}"),
        lambda: api.call("GET", f"/api/v1/namespaces/{NS}/secrets"),
        lambda: api.read_state(NS, km.IDLE_STATE),
    ):
        with pytest.raises(ReaperError, match="HTTP 403"):
            call()
    assert replicas(rig.kube)[0] in (0, 1)
    api.scale(NS, km.MODEL, 1)  # what its Role allows works with the same token
    assert api.deployment(NS, km.MODEL)["spec"]["replicas"] == 1
