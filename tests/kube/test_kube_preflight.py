"""The kubernetes preflight: what one model pod requests (in the plan), and every reason a cluster cannot
run the stack as one line naming the key, decided on plain facts and then read from the real API server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import NODES, KubeCluster
from kube_helpers import settings_of

from coderig.core import planner
from coderig.targets.kubernetes import preflight

STACK = "pre"


def config(**target: Any) -> dict[str, Any]:
    return {
        "target": {
            "kind": "kubernetes",
            "gpu": {"model": "H200", "count": 8},
            "replicas": 2,
            "namespace": "coderig-pre",
            "storageClass": "fast-rwx",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
            **target,
        },
        "model": {"preset": "glm-4.7"},
        "developers": ["alice"],
    }


def facts(**kw: Any) -> preflight.ClusterFacts:
    base: dict[str, Any] = {
        "nodes": [n.manifest() for n in NODES],
        "storage_classes": [{"metadata": {"name": "fast-rwx"}}],
        "namespace": None,
        "can_create_namespace": True,
    }
    return preflight.ClusterFacts(**(base | kw))


def problems(cfg: dict[str, Any], f: preflight.ClusterFacts) -> list[str]:
    return preflight.problems(settings_of(cfg), STACK, f)


def test_quantities() -> None:
    assert preflight.quantity("500m") == 0.5
    assert preflight.quantity("288Gi") == 288 * 2**30
    assert preflight.quantity("2Ti") == 2 * 2**40
    assert preflight.quantity("8") == 8
    assert preflight.quantity("1k") == 1000


def test_the_plan_prints_what_one_model_pod_requests_and_why() -> None:
    s = settings_of(config())
    lines = preflight.plan_lines(s, planner.plan_stack(s))
    assert lines[0].split()[:12] == [
        "model",
        "pod",
        "requests",
        "8",
        "nvidia.com/gpu,",
        "64",
        "CPUs,",
        "288",
        "GiB",
        "memory",
        "per",
        "pod,",
    ]
    assert "× 2 replicas (nvidia.com/gpu.product=NVIDIA-H200)" in lines[0]
    assert "coderig:target.gpu.count" in lines[1] and "/dev/shm" in lines[1]


def test_a_cluster_that_fits_has_no_problem() -> None:
    assert problems(config(), facts()) == []


def test_a_missing_storage_class_names_the_key_and_what_exists() -> None:
    (line,) = problems(config(storageClass="standard"), facts())
    assert line.startswith("coderig:target.storageClass: StorageClass 'standard' does not exist")
    assert "it has: fast-rwx" in line
    (line,) = problems(config(replicas=1, storageClass=None), facts())
    assert line.startswith("coderig:target.storageClass is unset and the cluster has no default StorageClass")
    default = {"metadata": {"name": "gp3", "annotations": {preflight.DEFAULT_CLASS: "true"}}}
    assert problems(config(replicas=1, storageClass=None), facts(storage_classes=[default])) == []
    (line,) = problems(config(usageStorageClass="nfs"), facts())  # the usage record's class, too
    assert line.startswith("coderig:target.usageStorageClass: StorageClass 'nfs' does not exist")
    assert problems(config(usageStorageClass="fast-rwx"), facts()) == []


def test_nodes_that_cannot_hold_a_pod_are_refused_naming_the_key() -> None:
    small = [
        {**n.manifest(), "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"}}}
        for n in NODES[:2]
    ]
    (line,) = problems(config(), facts(nodes=small))
    assert line.startswith("coderig:target.gpu.count: one model pod requests 8 nvidia.com/gpu, 64 CPUs, 288 GiB")
    assert "gpu-0: allocatable only 32 CPUs, 256 GiB" in line
    (line,) = problems(config(nodeSelector={"nvidia.com/gpu.product": "NVIDIA-B200"}), facts())
    assert line.startswith("coderig:target.nodeSelector:") and "nvidia.com/gpu.product=NVIDIA-H200" in line
    (line,) = problems(config(tolerations=[]), facts())
    assert line.startswith("coderig:target.tolerations:") and "taint nvidia.com/gpu=present:NoSchedule" in line
    (line,) = problems(config(replicas=3), facts())
    assert line.startswith("coderig:target.replicas: 3 model pods") and "the cluster has 2 (gpu-0, gpu-1)" in line


def test_every_problem_at_once() -> None:
    small = [
        {**n.manifest(), "status": {"allocatable": {"cpu": "192", "memory": "2048Gi", "nvidia.com/gpu": "4"}}}
        for n in NODES
    ]
    found = problems(config(storageClass="standard"), facts(can_create_namespace=False, nodes=small))
    keys = [line.split(":")[1].split()[0] for line in found]
    assert keys == ["target.storageClass", "target.namespace", "target.gpu.count"], found


def test_a_quota_too_small_is_refused_and_the_stacks_own_pods_are_not_counted_twice() -> None:
    quota = {
        "metadata": {"name": "gpus"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "8"}},
        "status": {"used": {"requests.nvidia.com/gpu": "0"}},
    }
    (line,) = problems(config(), facts(namespace={"metadata": {"name": "coderig-pre"}}, quotas=[quota]))
    assert "ResourceQuota gpus leaves 8 of requests.nvidia.com/gpu, the stack needs 16" in line
    assert line.startswith("coderig:target.replicas")
    # a second `up`: the quota's usage is the stack's own running model pod
    mine = {
        "status": {"phase": "Running"},
        "spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": "8"}}}]},
    }
    q = {
        **quota,
        "spec": {"hard": {"requests.nvidia.com/gpu": "16"}},
        "status": {"used": {"requests.nvidia.com/gpu": "8"}},
    }
    assert problems(config(), facts(namespace={"metadata": {}}, quotas=[q], own_pods=[mine])) == []


# --- against the real API server --------------------------------------------------------------------


@pytest.fixture
def on_path(kube: KubeCluster, monkeypatch: pytest.MonkeyPatch) -> KubeCluster:
    monkeypatch.setenv("PATH", f"{kube.bin}{os.pathsep}{os.environ['PATH']}")
    return kube


@pytest.mark.integration
def test_real_cluster_storage_class_nodes_and_quota(on_path: KubeCluster, tmp_path: Path) -> None:
    kube = on_path
    kube.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "fast-rwx"},
                "provisioner": "kubernetes.io/no-provisioner",
            }
        ]
    )
    s = settings_of(config(kubeconfig=str(kube.kubeconfig)))
    assert preflight.problems(s, STACK, preflight.gather(s, STACK)) == []
    bad = settings_of(config(kubeconfig=str(kube.kubeconfig), storageClass="standard", replicas=3))
    found = preflight.problems(bad, STACK, preflight.gather(bad, STACK))
    assert [line.split(":")[1].split()[0] for line in found] == ["target.storageClass", "target.replicas"]
    # a namespace with a GPU quota for one replica
    ns = "coderig-quota"
    kube.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "gpus", "namespace": ns},
                "spec": {"hard": {"requests.nvidia.com/gpu": "8"}},
            },
        ]
    )
    q = settings_of(config(kubeconfig=str(kube.kubeconfig), namespace=ns))
    kube.wait_for(
        "the quota's status", lambda: kube.get("resourcequota", "gpus", "-n", ns).get("status", {}).get("used")
    )
    (line,) = preflight.problems(q, STACK, preflight.gather(q, STACK))
    assert "ResourceQuota gpus leaves 8 of requests.nvidia.com/gpu, the stack needs 16" in line


@pytest.mark.integration
def test_real_cluster_a_user_who_may_not_create_the_namespace(on_path: KubeCluster, tmp_path: Path) -> None:
    kube = on_path
    kube.kubectl("-n", "default", "create", "serviceaccount", "pre-viewer")
    kube.kubectl(
        "create", "clusterrolebinding", "pre-viewer", "--clusterrole=view", "--serviceaccount=default:pre-viewer"
    )
    kube.kubectl("create", "clusterrole", "pre-nodes", "--verb=get,list", "--resource=nodes,storageclasses")
    kube.kubectl(
        "create", "clusterrolebinding", "pre-nodes", "--clusterrole=pre-nodes", "--serviceaccount=default:pre-viewer"
    )
    from kube_cluster import kubeconfig

    cfg = tmp_path / "viewer.kubeconfig"
    cfg.write_text(
        kubeconfig(kube.server, kube.dir / "pki" / "ca.crt", token=kube.service_account_token("default", "pre-viewer"))
    )
    s = settings_of(config(kubeconfig=str(cfg), storageClass=None, replicas=1, namespace="coderig-not-there"))
    found = preflight.problems(s, STACK, preflight.gather(s, STACK))
    assert any(
        line.startswith(
            "coderig:target.namespace: namespace 'coderig-not-there' does not exist and this "
            "kubeconfig may not create namespaces"
        )
        for line in found
    ), found


def test_an_unreachable_cluster_is_reported_not_raised(tmp_path: Path) -> None:
    s = settings_of(config(kubeconfig=str(tmp_path / "missing.kubeconfig")))
    with pytest.raises(preflight.Unreachable):
        preflight.gather(
            s,
            STACK,
            run=lambda cmd: __import__("subprocess").CompletedProcess(
                cmd, 1, "", "error: stat missing.kubeconfig: no such file"
            ),
        )


@pytest.mark.integration
def test_the_program_refuses_before_registering_anything(on_path: KubeCluster) -> None:
    """stacks.kubernetes runs the preflight first: a cluster that cannot run the stack raises the
    program's ConfigError (pulumi prints it without a traceback) listing every problem."""
    from stacks import ConfigError
    from stacks.kubernetes import check_cluster

    s = settings_of(config(kubeconfig=str(on_path.kubeconfig), storageClass="standard", replicas=3))
    with pytest.raises(ConfigError) as err:
        check_cluster(s, STACK, planner.plan_stack(s))
    lines = str(err.value).splitlines()
    assert lines[0] == "the cluster cannot run this stack:"
    assert [line.split(":")[1].split()[0] for line in lines[1:]] == ["target.storageClass", "target.replicas"]
    on_path.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "fast-rwx"},
                "provisioner": "kubernetes.io/no-provisioner",
            }
        ]
    )
    ok = settings_of(config(kubeconfig=str(on_path.kubeconfig)))
    check_cluster(ok, STACK, planner.plan_stack(ok))
