"""`./up.sh` on a `kubernetes` stack with the real engine and the real pulumi-kubernetes provider (built by
.ci/kube-deps.sh) against the real control plane: everything is created and awaited, the model pods run
one per GPU node, a second `up` changes nothing, adding a developer rolls only the front door, a cluster
that cannot run the stack is refused before anything is created, and `pulumi destroy` removes everything
but the Namespace and the weights claim."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine import Project, project_copy
from kube_cluster import KubeCluster, pod_ready

from coderig.targets.kubernetes import manifests as km
from coderig.targets.kubernetes import usage as kube_usage

pytestmark = pytest.mark.integration

NS = "coderig-up"
CLASS = "coderig-test-up"


def provider() -> str:
    found = shutil.which("pulumi-resource-kubernetes")
    if not found:
        message = "pulumi-resource-kubernetes not built: `source .ci/kube-deps.sh` first (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def stack_file(
    project: Project, kube: KubeCluster, developers: tuple[str, ...] = ("alice", "bob"), **target: Any
) -> Path:
    config = {
        "target": {
            "kind": "kubernetes",
            "kubeconfig": str(kube.kubeconfig),
            "namespace": NS,
            "storageClass": CLASS,
            "gpu": {"model": "H200", "count": 8},
            "replicas": 2,
            "frontDoorReplicas": 2,
            "serviceType": "ClusterIP",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
            **target,
        },
        "model": {"preset": "glm-4.7"},
        "developers": list(developers),
        "idle": {"stopAfterMinutes": 45},
    }
    path = project.dir / "Pulumi.k8s.yaml"
    path.write_text(yaml.safe_dump({"config": {f"coderig:{k}": v for k, v in config.items()}}))
    return path


def generations(kube: KubeCluster) -> dict[str, int]:
    return {d: kube.get("deployment", d, "-n", NS)["metadata"]["generation"] for d in (km.MODEL, km.FRONTDOOR)}


def test_up_no_changes_add_a_developer_refusal_destroy(kube: KubeCluster, tmp_path: Path) -> None:
    provider()
    project = project_copy(tmp_path)
    project.env["PATH"] = f"{kube.bin}{os.pathsep}{project.env['PATH']}"  # kubectl for the preflight, the provider
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
                    "capacity": {"storage": "2Ti"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": CLASS,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "nfs": {"server": "127.0.0.1", "path": "/weights"},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{CLASS}-usage"},
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
    )
    try:
        # a StorageClass the cluster lacks: refused by the preflight, before any resource exists
        stack_file(project, kube, storageClass="standard")
        bad = project.run("./up.sh", "k8s", check=False, label="up (refused)", timeout=600)
        assert bad.returncode != 0
        out = bad.stdout + bad.stderr
        assert "coderig:target.storageClass: StorageClass 'standard' does not exist in the cluster" in out, out[-3000:]
        assert kube.kubectl("get", "namespace", NS, check=False).returncode != 0

        stack_file(project, kube)
        up = project.run("./up.sh", "k8s", label="up (create)", timeout=900)
        assert "model pod requests 8 nvidia.com/gpu, 64 CPUs, 288 GiB memory" in up.stdout
        model = [
            p for p in kube.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=model")["items"] if pod_ready(p)
        ]
        assert sorted(p["spec"]["nodeName"] for p in model) == ["gpu-0", "gpu-1"]
        fd = kube.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=frontdoor")["items"]
        assert {p["spec"]["nodeName"] for p in fd} == {"general-0"}
        assert kube.get("job", km.WEIGHTS, "-n", NS)["status"].get("succeeded") == 1

        again = project.run("./up.sh", "k8s", "--expect-no-changes", label="up (no changes)", timeout=600)
        assert "unchanged" in again.stdout

        before = generations(kube)
        stack_file(project, kube, developers=("alice", "bob", "carol"))
        project.run("./up.sh", "k8s", label="up (add a developer)", timeout=600)
        after = generations(kube)
        assert after[km.MODEL] == before[km.MODEL]
        assert after[km.FRONTDOOR] == before[km.FRONTDOOR] + 1

        project.pulumi("destroy", "--yes", "--stack", "k8s", label="destroy", timeout=600)
        left = kube.get(
            "all,configmaps,secrets,pvc,serviceaccounts,roles,rolebindings,networkpolicies,poddisruptionbudgets",
            "-n",
            NS,
        )["items"]
        ours = sorted(
            f"{o['kind']}/{o['metadata']['name']}"
            for o in left
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "coderig"
        )
        # the weights and the usage record stay
        assert ours == [f"PersistentVolumeClaim/{kube_usage.USAGE_CLAIM}", f"PersistentVolumeClaim/{km.WEIGHTS}"], ours
        assert kube.get("namespace", NS)["status"]["phase"] == "Active"
        assert project.plugins_downloaded() == []
        print("engine timings (s):", project.timings)
    finally:
        kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        kube.kubectl("delete", "pv", CLASS, f"{CLASS}-usage", "--wait=false", check=False)
