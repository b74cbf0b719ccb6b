"""The idle reaper's own code (coderig.runtime.kube_reaper) against the real API server, as the CronJob
runs it: a bound token of the rendered `coderig-idle` service account, the rendered Role, HTTPS with the
cluster CA. The model metrics come from the vLLM-shaped stand-in (conftest's `standin`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import KubeCluster, pod_ready
from kube_helpers import MODEL, settings_of, stream_chat  # noqa: F401 - MODEL is read by conftest's standin

from coderig.core import planner
from coderig.runtime import kube_reaper
from coderig.runtime.idle import ReaperError
from coderig.runtime.kube_wake import ScaleWaker, WakeError
from coderig.targets.kubernetes import manifests as km
from coderig.targets.kubernetes import render as kube_render

pytestmark = pytest.mark.integration

NS = "coderig-reap"
STACK = "reap"
STANDIN_DELAY = 0.05


def settings() -> Any:
    return settings_of(
        {
            "target": {
                "kind": "kubernetes",
                "gpu": {"model": "H200", "count": 8},
                "replicas": 1,
                "namespace": NS,
                "storageClass": "coderig-test-reap",
                "serviceType": "ClusterIP",
            },
            "model": {"preset": "glm-4.7", "servedName": MODEL},
            "developers": ["alice"],
            "idle": {"stopAfterMinutes": 10},
        }
    )


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def reaper(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeCluster, Any]]:
    """The stack's namespace, claim, model Deployment and the reaper's RBAC and state, as rendered; the
    reaper's API client with its service account's token."""
    s = settings()
    keep = {"Namespace", "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding"}
    objs = [
        o
        for o in kube_render.objects(s, STACK, planner.plan_stack(s))
        if o["kind"] in keep
        or o["metadata"]["name"] in (km.MODEL, km.IDLE_STATE)
        and o["kind"] in ("Deployment", "ConfigMap")
    ]
    kube.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "coderig-test-reap"},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "Immediate",
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "coderig-test-reap"},
                "spec": {
                    "capacity": {"storage": "1Ti"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "coderig-test-reap",
                    "nfs": {"server": "127.0.0.1", "path": "/weights"},
                },
            },
            *objs,
        ]
    )
    kube.wait_for(
        "the model pod Running/Ready",
        lambda: any(
            pod_ready(p) for p in kube.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=model")["items"]
        ),
        timeout=90,
    )
    kube.wait_for(
        "the Deployment to report it",
        lambda: kube.get("deployment", km.MODEL, "-n", NS)["status"].get("readyReplicas") == 1,
    )
    d = tmp_path_factory.mktemp("reaper")
    token = d / "token"
    token.write_text(kube.service_account_token(NS, km.IDLE))
    token.chmod(0o600)
    api = kube_reaper.KubeApi(kube.server, token_file=token, ca_file=Path(kube.dir / "pki" / "ca.crt"))
    yield kube, api
    kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    kube.kubectl("delete", "pv", "coderig-test-reap", "--wait=false", check=False)


def cfg(port: int) -> kube_reaper.ReaperConfig:
    return kube_reaper.ReaperConfig(
        namespace=NS,
        deployment=km.MODEL,
        metrics_host="coderig-model-pods",
        metrics_port=port,
        state_configmap=km.IDLE_STATE,
        stop_after_minutes=10,
        period_seconds=60,
        model_name=MODEL,
    )


def test_anything_outside_its_namespace_or_role_is_refused(reaper: tuple[KubeCluster, Any]) -> None:
    kube, api = reaper
    kube.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "coderig-other"}}])
    for call in (
        lambda: api.deployment("coderig-other", km.MODEL),
        lambda: api.scale("coderig-other", km.MODEL, 0),
        lambda: api.read_state("default", km.IDLE_STATE),
        lambda: api.deployment(NS, km.FRONTDOOR),  # its own namespace, not its Deployment
        lambda: api.call("GET", f"/api/v1/namespaces/{NS}/secrets"),
    ):
        with pytest.raises(ReaperError, match="HTTP 403"):
            call()
    # what its Role allows works with the same token
    assert api.deployment(NS, km.MODEL)["spec"]["replicas"] == 1


def test_a_busy_model_is_kept_and_an_idle_one_scales_to_zero(reaper: tuple[KubeCluster, Any], standin: Any) -> None:
    kube, api = reaper
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    addrs = lambda h, p: ["127.0.0.1"]  # noqa: E731 - the stand-in plays the one replica's pod address
    # an idle history covering the window, and a request streaming right now
    old = [{"at": iso(t0 - timedelta(minutes=m)), "running": 0, "completed": 0} for m in range(30, 0, -1)]
    api.write_state(
        NS, km.IDLE_STATE, {"samples": old, "counters": {"127.0.0.1": 0}, "up_since": iso(t0 - timedelta(hours=2))}
    )
    worker = threading.Thread(target=stream_chat, args=(standin, 60))
    worker.start()
    kube.wait_for("the stand-in to be streaming", lambda: standin.running, timeout=10, every=0.02)
    r = kube_reaper.reap(cfg(standin.port), api, now=t0, addrs=addrs)
    worker.join()
    assert r.action == "keep" and "requests running" in r.reason, r
    assert kube.get("deployment", km.MODEL, "-n", NS)["spec"]["replicas"] == 1
    # then idle: the window passes after the last completion, and the real API scales it to zero
    actions = []
    for i in range(1, 20):
        r = kube_reaper.reap(cfg(standin.port), api, now=t0 + timedelta(minutes=i), addrs=addrs)
        actions.append(r.action)
        if r.action == "stop":
            break
    assert actions[-1] == "stop" and len(actions) >= 10 and r.applied, actions
    assert kube.get("deployment", km.MODEL, "-n", NS)["spec"]["replicas"] == 0
    kube.wait_for(
        "the model pod to go",
        lambda: not kube.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=model")["items"],
        timeout=60,
    )
    state = json.loads(kube.get("configmap", km.IDLE_STATE, "-n", NS)["data"]["state.json"])
    assert state["replicas_before"] == 1 and state["last"]["action"] == "stop"
    # at zero, nothing more happens
    r = kube_reaper.reap(cfg(standin.port), api, now=t0 + timedelta(minutes=40), addrs=addrs)
    assert r.action == "keep" and kube.get("deployment", km.MODEL, "-n", NS)["spec"]["replicas"] == 0


def test_the_scale_waker_brings_it_back_with_the_same_token(reaper: tuple[KubeCluster, Any]) -> None:
    """After the idle test the model is at zero: the "scale" Waker reads that, scales it back to what the
    reaper stopped, and the pod comes back Running/Ready; a second wake() changes nothing."""
    kube, api = reaper
    waker = ScaleWaker(api, NS, km.MODEL, km.IDLE_STATE)
    if kube.get("deployment", km.MODEL, "-n", NS)["spec"]["replicas"] != 0:
        kube.kubectl("-n", NS, "scale", f"deployment/{km.MODEL}", "--replicas=0")
    kube.wait_for("zero replicas", lambda: waker.state() == "stopped")
    waker.wake()
    assert waker.state() in ("waking", "awake")
    generation = kube.get("deployment", km.MODEL, "-n", NS)["metadata"]["generation"]
    kube.wait_for("the model awake", lambda: waker.state() == "awake", timeout=60)
    waker.wake()  # idempotent
    dep = kube.get("deployment", km.MODEL, "-n", NS)
    assert dep["spec"]["replicas"] == 1 and dep["metadata"]["generation"] == generation
    # a waker for a Deployment its token may not scale fails in one line
    with pytest.raises(WakeError, match="cannot scale coderig-other/coderig-model back up: .*HTTP 403"):
        ScaleWaker(api, "coderig-other", km.MODEL).wake()
    assert ScaleWaker(api, "coderig-other", km.MODEL).state() == "unknown"
