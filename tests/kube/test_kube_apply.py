"""`coderig render`'s kubernetes objects meet a real API server, scheduler and controllers (kwok plays the
kubelets): `kubectl apply --server-side` creates everything, the model pods land one per GPU node and
become Running/Ready, the front door avoids GPU nodes, a second apply changes nothing and adding a
developer rolls only the front door."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kube_cluster import GPU_TAINT, KubeCluster, pod_ready
from kube_helpers import settings_of

from coderig.core import planner
from coderig.core.secrets import placeholder_secrets
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as km
from coderig.targets.kubernetes import render as kube_render
from coderig.targets.kubernetes import usage as kube_usage
from coderig.targets.kubernetes import wake as kube_wake
from coderig.targets.kubernetes.manifests import empty_dir

pytestmark = pytest.mark.integration

NS = "coderig-apply"
CLASS = "coderig-test-rwx"
STACK = "gpu"


def config(developers: list[str]) -> dict[str, Any]:
    return {
        "target": {
            "kind": "kubernetes",
            "gpu": {"model": "H200", "count": 8},
            "replicas": 2,
            "frontDoorReplicas": 2,
            "namespace": NS,
            "storageClass": CLASS,
            "serviceType": "ClusterIP",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
        },
        "model": {"preset": "glm-4.7"},
        "developers": developers,
        "idle": {"stopAfterMinutes": 45},
    }


def stack_objects(developers: list[str]) -> list[dict[str, Any]]:
    """Every object `pulumi up` creates, Secrets included (placeholder values, as render checksums them)."""
    s = settings_of(config(developers))
    secrets = kube_fd.secret_objects(s, STACK, placeholder_secrets(s.developers))
    objs = kube_fd.with_secret_checksums(
        kube_render.objects(s, STACK, planner.plan_stack(s)), kube_fd.secret_checksums(secrets)
    )
    return [objs[0], *secrets, *objs[1:]]


def storage(size: str = "2Ti") -> list[dict[str, Any]]:
    """A ReadWriteMany class with one pre-made volume (no provisioner runs here), as an NFS/EFS admin makes."""
    return [
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
            "metadata": {"name": "coderig-test-weights"},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": CLASS,
                "persistentVolumeReclaimPolicy": "Retain",
                "nfs": {"server": "127.0.0.1", "path": "/weights"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "coderig-test-usage"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": CLASS,
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": NS, "name": kube_usage.USAGE_CLAIM},  # the usage record's claim
                "nfs": {"server": "127.0.0.1", "path": "/usage"},
            },
        },
    ]


def pods(kube: KubeCluster, component: str) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/component={component}"
    return kube.get("pods", "-n", NS, "-l", sel)["items"]


def versions(kube: KubeCluster) -> dict[str, str]:
    """resourceVersion of every object of the stack (a no-op apply leaves each one alone)."""
    out = {}
    for obj in stack_objects(["alice", "bob"]):
        kind, name = obj["kind"].lower(), obj["metadata"]["name"]
        args = [kind, name] if kind == "namespace" else [kind, name, "-n", NS]
        out[f"{kind}/{name}"] = kube.get(*args)["metadata"]["resourceVersion"]
    return out


def wait_ready(kube: KubeCluster, component: str, n: int, timeout: float = 90) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        found = [p for p in pods(kube, component) if pod_ready(p)]
        return found if len(found) == n and len(pods(kube, component)) == n else None

    return kube.wait_for(f"{n} {component} pods Running/Ready", check, timeout=timeout)


def generation(kube: KubeCluster, name: str) -> int:
    return kube.get("deployment", name, "-n", NS)["metadata"]["generation"]


@pytest.fixture(scope="module")
def applied(kube: KubeCluster) -> Iterator[KubeCluster]:
    kube.apply(storage())
    objs = stack_objects(["alice", "bob"])
    out = kube.apply(objs)
    assert out.count("serverside-applied") == len(objs), out
    yield kube
    kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    kube.kubectl("delete", "pv", "coderig-test-weights", "coderig-test-usage", "--wait=false", check=False)


def test_first_apply_brings_everything_up(applied: KubeCluster) -> None:
    kube = applied
    claim = km.weights_claim(settings_of(config(["alice"])))
    kube.wait_for(
        "the weights claim to bind",
        lambda: kube.get("pvc", claim, "-n", NS)["status"].get("phase") == "Bound",
        timeout=60,
    )
    kube.wait_for(
        "the weights Job to complete",
        lambda: kube.get("job", km.WEIGHTS, "-n", NS).get("status", {}).get("succeeded") == 1,
        timeout=90,
    )
    model = wait_ready(kube, "model", 2)
    # 8 GPUs each: exactly one model pod per GPU node
    assert sorted(p["spec"]["nodeName"] for p in model) == ["gpu-0", "gpu-1"]
    frontdoor = wait_ready(kube, "frontdoor", 2)
    assert {p["spec"]["nodeName"] for p in frontdoor} == {"general-0"}
    assert kube.get("deployment", km.MODEL, "-n", NS)["status"].get("readyReplicas") == 2
    assert kube.get("cronjob", km.IDLE, "-n", NS)["spec"]["schedule"]


def test_second_apply_changes_nothing(applied: KubeCluster) -> None:
    kube = applied
    wait_ready(kube, "model", 2)
    before = versions(kube)
    kube.apply(stack_objects(["alice", "bob"]))
    assert versions(kube) == before


def test_adding_a_developer_rolls_only_the_front_door(applied: KubeCluster) -> None:
    kube = applied
    model_before = {p["metadata"]["uid"] for p in wait_ready(kube, "model", 2)}
    fd_before = {p["metadata"]["uid"] for p in wait_ready(kube, "frontdoor", 2)}
    gen_model, gen_fd = generation(kube, km.MODEL), generation(kube, km.FRONTDOOR)
    kube.apply(stack_objects(["alice", "bob", "carol"]))
    assert generation(kube, km.FRONTDOOR) == gen_fd + 1
    assert generation(kube, km.MODEL) == gen_model
    fd_after = {p["metadata"]["uid"] for p in wait_ready(kube, "frontdoor", 2)}
    assert not fd_after & fd_before  # every front-door pod was replaced ...
    assert {p["metadata"]["uid"] for p in wait_ready(kube, "model", 2)} == model_before  # ... no model pod
    kube.apply(stack_objects(["alice", "bob"]))


def test_front_door_prefers_nodes_without_gpus(kube: KubeCluster) -> None:
    """With untainted GPU nodes the scheduler would put the front door on the big, empty GPU nodes; the
    preferred node affinity keeps it on the general node. The same Deployment without it lands on a GPU
    node (so this test can fail)."""
    ns = "coderig-affinity"
    s = settings_of(config(["alice"]) | {"target": {**config(["alice"])["target"], "namespace": ns}})
    dep = kube_fd.frontdoor_deployment(s, "affinity", planner.plan_stack(s))
    dep["spec"]["replicas"] = 2
    # placement only: the usage record in the pod (its claim would need a volume of its own here)
    pod = dep["spec"]["template"]["spec"]
    usage = kube_usage.USAGE_VOLUME
    pod["volumes"] = [v if v["name"] != usage else empty_dir(usage, "64Mi") for v in pod["volumes"]]
    plain = copy.deepcopy(dep)
    plain["metadata"]["name"] = "no-node-affinity"
    del plain["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    plain["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "plain"
    plain["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "plain"
    taint = f"{GPU_TAINT['key']}={GPU_TAINT['value']}:{GPU_TAINT['effect']}"
    kube.kubectl("create", "namespace", ns)
    try:
        for node in ("gpu-0", "gpu-1"):
            kube.kubectl("taint", "nodes", node, f"{taint}-")
        kube.apply([*kube_wake.wake_rbac(s, "affinity"), dep, plain])  # its pods run as the wake account

        def placed(component: str) -> list[str] | None:
            found = kube.get("pods", "-n", ns, "-l", f"app.kubernetes.io/component={component}")["items"]
            nodes = [p["spec"].get("nodeName") for p in found]
            return nodes if len(nodes) == 2 and all(nodes) else None

        assert set(kube.wait_for("front-door pods scheduled", lambda: placed("frontdoor"))) == {"general-0"}
        assert set(kube.wait_for("plain pods scheduled", lambda: placed("plain"))) & {"gpu-0", "gpu-1"}
    finally:
        for node in ("gpu-0", "gpu-1"):
            kube.kubectl("taint", "nodes", node, taint, "--overwrite")
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
