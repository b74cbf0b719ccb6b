"""The in-cluster scale-to-zero reaper on real vLLM metrics text, a fake API server and a live stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from frontdoor_fixtures import free_port
from kube_helpers import (  # noqa: F401 - MODEL is read by conftest's standin fixture
    FIXTURES,
    MODEL,
    by_key,
    k8s_config,
    objects_of,
    settings_of,
    stream_chat,
)
from standin import StandIn

from coderig.runtime import idle, kube_reaper
from coderig.runtime.idle import ReaperError
from coderig.targets.kubernetes import manifests as kube

# --- scale to zero: the reaper on real metrics text -----------------------------------------------


class FakeApiServer:
    """A loopback stand-in for the API server: the model Deployment, its scale, the state ConfigMap."""

    def __init__(self, token: str, replicas: int = 2, namespace: str = "coderig-prod") -> None:
        self.token = token
        self.ns = namespace
        self.replicas = replicas
        self.ready = replicas
        self.state = "{}"
        self.scales: list[int] = []
        self.requests: list[tuple[str, str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _reply(self, code: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body: dict[str, Any] = json.loads(self.rfile.read(length)) if length else {}
                api.requests.append((self.command, self.path, self.headers.get("Content-Type", "")))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._reply(401, {"kind": "Status", "code": 401})
                dep = f"/apis/apps/v1/namespaces/{api.ns}/deployments/{kube.MODEL}"
                cm = f"/api/v1/namespaces/{api.ns}/configmaps/{kube.IDLE_STATE}"
                if self.command == "GET" and self.path == dep:
                    return self._reply(200, api.deployment())
                if self.command == "PATCH" and self.path == f"{dep}/scale":
                    api.replicas = body["spec"]["replicas"]
                    api.ready = api.replicas
                    api.scales.append(api.replicas)
                    return self._reply(200, {"spec": {"replicas": api.replicas}})
                if self.command == "GET" and self.path == cm:
                    return self._reply(200, {"data": {"state.json": api.state}})
                if self.command == "PATCH" and self.path == cm:
                    api.state = body["data"]["state.json"]
                    return self._reply(200, {})
                return self._reply(403, {"kind": "Status", "code": 403, "message": "forbidden"})

            do_GET = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def deployment(self) -> dict[str, Any]:
        return {
            "metadata": {"generation": 3},
            "spec": {"replicas": self.replicas},
            "status": {
                "observedGeneration": 3,
                "replicas": self.replicas,
                "updatedReplicas": self.replicas,
                "readyReplicas": self.ready,
            },  # fmt: skip
        }

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[FakeApiServer, kube_reaper.KubeApi]]:
    token_file = tmp_path / "token"
    token_file.write_text("sa-token-123\n")
    srv = FakeApiServer("sa-token-123")
    yield srv, kube_reaper.KubeApi(srv.url, token_file=token_file)
    srv.stop()


def reaper_cfg(port: int, **kw: Any) -> kube_reaper.ReaperConfig:
    return kube_reaper.ReaperConfig(**{
        "namespace": "coderig-prod", "deployment": kube.MODEL, "metrics_host": "model-pods", "metrics_port": port,
        "state_configmap": kube.IDLE_STATE, "stop_after_minutes": 10, "period_seconds": 60,
        "model_name": "umans-coder-v0", **kw,
    })  # fmt: skip


def test_reaper_config_round_trips_from_the_cronjobs_environment() -> None:
    s = settings_of({**k8s_config(), "idle": {"stopAfterMinutes": 45, "officeHours": {"timezone": "Europe/Paris"}}})
    cron = by_key(objects_of(s, "prod"))[f"cronjob-{kube.IDLE}"]
    env = {
        e["name"]: e["value"] for e in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    cfg = kube_reaper.ReaperConfig.from_env(env)
    assert cfg.stop_after_minutes == 45 and cfg.period_seconds == 300 and cfg.replicas == 2
    assert cfg.metrics_host == f"{kube.MODEL_PODS}.coderig-prod.svc.cluster.local"
    assert cfg.deployment == kube.MODEL and cfg.namespace == "coderig-prod" and cfg.model_name == "deepseek-v3.2"
    assert cfg.schedule is not None and cfg.schedule.timezone == "Europe/Paris"
    assert cron["spec"]["schedule"] == "*/5 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_reaper_keeps_a_model_with_requests_in_flight_on_real_vllm_metrics(api_server) -> None:
    srv, api = api_server
    busy = (FIXTURES / "vllm_metrics_busy.txt").read_text()
    now = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    reports = [
        kube_reaper.reap(reaper_cfg(8000), api, now=now + timedelta(minutes=i),
                      addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"], get=lambda url: busy)
        for i in range(30)  # half an hour of runs: a busy server is never stopped
    ]  # fmt: skip
    assert {r.action for r in reports} == {"keep"}
    assert "requests running or queued" in reports[-1].reason
    assert srv.scales == []


def test_reaper_scales_to_zero_after_the_window_on_real_idle_metrics(api_server) -> None:
    srv, api = api_server
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    actions = []
    for i in range(20):
        r = kube_reaper.reap(reaper_cfg(8000), api, now=t0 + timedelta(minutes=i),
                          addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"], get=lambda url: text)  # fmt: skip
        actions.append(r.action)
        if r.action == "stop":
            assert r.applied
            break
    # the first scrape counts the whole counter as activity: the window must pass after it
    assert actions[-1] == "stop" and len(actions) >= 11
    assert srv.scales == [0]
    state = json.loads(srv.state)
    assert state["replicas_before"] == 2 and state["last"]["action"] == "stop"
    assert ("PATCH", f"/apis/apps/v1/namespaces/coderig-prod/deployments/{kube.MODEL}/scale",
            "application/merge-patch+json") in srv.requests  # fmt: skip
    # at zero: nothing more to do, and never a stop again
    r = kube_reaper.reap(
        reaper_cfg(8000), api, now=t0 + timedelta(minutes=30), addrs=lambda h, p: [], get=lambda u: None
    )
    assert r.action == "keep" and srv.scales == [0]


def test_reaper_never_stops_without_data(api_server) -> None:
    srv, api = api_server
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    cases = [
        (lambda h, p: ["10.0.0.5"], lambda url: None),  # replica does not answer
        (lambda h, p: [], lambda url: text),  # DNS has no replica although 2 are ready
        (lambda h, p: ["10.0.0.5"], lambda url: "not prometheus {{{"),  # garbage
        (lambda h, p: ["10.0.0.5"], lambda url: text.replace("vllm:num_requests_running", "x")),  # signal missing
    ]
    srv.replicas = srv.ready = 1
    for addrs, get in cases:
        srv.state = "{}"
        reports = [
            kube_reaper.reap(reaper_cfg(8000), api, now=t0 + timedelta(minutes=i), addrs=addrs, get=get)
            for i in range(40)
        ]
        assert {r.action for r in reports} == {"keep"}
        assert "not stopping without data" in reports[-1].reason, reports[-1].reason
    assert srv.scales == []


def test_reaper_reports_an_unreachable_api_server_in_one_line() -> None:
    api = kube_reaper.KubeApi(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ReaperError, match="GET http://127.0.0.1"):
        kube_reaper.reap(reaper_cfg(8000), api)


def test_reaper_leaves_a_rollout_alone(api_server) -> None:
    srv, api = api_server
    srv.ready = 1  # one of two replicas still loading
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    r = kube_reaper.reap(reaper_cfg(8000), api, addrs=lambda h, p: ["10.0.0.5"], get=lambda u: text)
    assert r.action == "keep" and "rollout in progress: 1/2" in r.reason
    assert srv.scales == []


def test_reaper_against_a_live_model_server_never_stops_mid_request(api_server, standin: StandIn) -> None:
    """Real HTTP all the way: the API server stand-in, and a vLLM-shaped stand-in streaming a reply."""
    srv, api = api_server
    srv.replicas = srv.ready = 1
    cfg = reaper_cfg(standin.port)
    addrs = lambda h, p: ["127.0.0.1"]  # noqa: E731
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    worker = threading.Thread(target=stream_chat, args=(standin, 60))
    worker.start()
    for _ in range(100):
        if standin.running:
            break
        threading.Event().wait(0.02)
    # an old idle history (window covered, nothing happened) and a request running right now
    old = [{"at": (t0 - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"), "running": 0, "completed": 0}
           for m in range(30, 0, -1)]  # fmt: skip
    srv.state = json.dumps({"samples": old, "counters": {"127.0.0.1": 0}, "up_since": "2026-11-18T01:00:00Z"})
    r = kube_reaper.reap(cfg, api, now=t0, addrs=addrs)
    assert r.action == "keep" and "1 requests running" in r.reason
    worker.join()
    assert srv.scales == []
    # once it finished, its completion is activity; only a full idle window later does it stop
    stops = []
    for i in range(1, 15):
        r = kube_reaper.reap(cfg, api, now=t0 + timedelta(minutes=i), addrs=addrs)
        stops.append(r.action == "stop")
    assert stops.index(True) >= 9 and srv.scales == [0]


def test_reaper_final_check_catches_a_request_that_just_arrived(api_server) -> None:
    srv, api = api_server
    idle_text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    busy_text = (FIXTURES / "vllm_metrics_busy.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    old = [{"at": (t0 - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"), "running": 0, "completed": 0}
           for m in range(30, 0, -1)]  # fmt: skip
    done = idle.metric_sum(idle.parse_prometheus(idle_text), idle.VLLM_SUCCESS_TOTAL)
    counters = {"10.0.0.5": done, "10.0.0.6": done}
    srv.state = json.dumps({"samples": old, "counters": counters, "up_since": "2026-11-18T01:00:00Z"})
    calls = iter([idle_text, idle_text, idle_text, busy_text])
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: next(calls))  # fmt: skip
    assert r.action == "keep" and "started while deciding" in r.reason
    assert srv.scales == []
    # a short request that started and finished between the two looks also keeps the model
    quick = idle_text.replace('finished_reason="stop",model_name="umans-coder-v0"} 1270.0',
                              'finished_reason="stop",model_name="umans-coder-v0"} 1271.0')  # fmt: skip
    assert quick != idle_text
    srv.state = json.dumps({"samples": old, "counters": counters, "up_since": "2026-11-18T01:00:00Z"})
    calls = iter([idle_text, idle_text, idle_text, quick])
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: next(calls))  # fmt: skip
    assert r.action == "keep" and "completed while deciding" in r.reason, r.reason
    assert srv.scales == []
    # and with nothing new on the final look, it stops
    srv.state = json.dumps({"samples": old, "counters": counters, "up_since": "2026-11-18T01:00:00Z"})
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: idle_text)  # fmt: skip
    assert r.action == "stop" and srv.scales == [0]


def test_reaper_dry_run_and_office_hours_start(api_server) -> None:
    srv, api = api_server
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)  # a Wednesday, 04:00 in Paris
    reports = [
        kube_reaper.reap(reaper_cfg(8000, dry_run=True), api, now=t0 + timedelta(minutes=i),
                      addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"], get=lambda u: text)
        for i in range(25)
    ]  # fmt: skip
    assert reports[-1].action == "stop" and not reports[-1].applied and srv.scales == []
    # parked at zero with office hours: started when they begin, to the replicas it had
    srv.replicas = 0
    srv.state = json.dumps({"replicas_before": 3})
    hours = idle.OfficeHours.from_dict({"timezone": "Europe/Paris", "start": "08:00", "end": "19:00"})
    r = kube_reaper.reap(reaper_cfg(8000, schedule=hours), api, now=datetime(2026, 11, 18, 8, 30, tzinfo=UTC),
                      addrs=lambda h, p: [], get=lambda u: None)  # fmt: skip
    assert r.action == "start" and r.applied and srv.scales == [3]


def cron_mounts(s: Any) -> list[dict[str, Any]]:
    cron = by_key(objects_of(s, "prod"))[f"cronjob-{kube.IDLE}"]
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]


def test_reaper_code_runs_standalone_from_its_configmap(tmp_path: Path) -> None:
    """The CronJob mounts only this ConfigMap into a plain python image: no pydantic, no yaml."""
    s = settings_of(k8s_config())
    cm = by_key(objects_of(s, "prod"))[f"configmap-{kube.IDLE_CODE}"]
    mount = [m for m in cron_mounts(s) if m["name"] == "code"][0]["mountPath"]
    assert mount == "/opt/coderig/coderig/runtime"
    pkg = tmp_path / mount.lstrip("/")
    pkg.mkdir(parents=True)
    for name, text in cm["data"].items():
        (pkg / name).write_text(text)
    blocker = tmp_path / "block"
    blocker.mkdir()
    for mod in ("pydantic", "yaml", "pulumi", "boto3"):
        (blocker / f"{mod}.py").write_text(f"raise ImportError('{mod} is not in the reaper image')\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{blocker}:{tmp_path / 'opt'}"}
    res = subprocess.run([sys.executable, "-m", "coderig.runtime.kube_reaper", "reap"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout) == {"level": "error", "error": "CODERIG_STOP_AFTER_MINUTES is not set"}
    cron = by_key(objects_of(s, "prod"))[f"cronjob-{kube.IDLE}"]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "coderig.runtime.kube_reaper", "reap"]
    env2 = {e["name"]: e["value"] for e in container["env"]} | {"PATH": os.environ["PATH"]}
    env2["PYTHONPATH"] = f"{blocker}:{tmp_path / 'opt'}"
    res = subprocess.run([sys.executable, "-m", "coderig.runtime.kube_reaper", "reap"], env=env2, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1 and "not running in a pod" in res.stdout


def test_reaper_keeps_when_one_replica_is_silent_even_with_an_idle_history(api_server) -> None:
    srv, api = api_server
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    old = [{"at": (t0 - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"), "running": 0, "completed": 0}
           for m in range(30, 0, -1)]  # fmt: skip
    srv.state = json.dumps({"samples": old, "counters": {}, "up_since": "2026-11-18T01:00:00Z"})
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: text if "10.0.0.5" in u else None)  # fmt: skip
    assert r.action == "keep" and "metrics from 1/2 replicas" in r.reason
    assert srv.scales == []
