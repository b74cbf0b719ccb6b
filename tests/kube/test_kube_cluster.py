"""The control plane the kubernetes tests run against is real and shaped like the README's node pools."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import GPU_TAINT, KUBE_VERSION, NODES, kube_cluster

pytestmark = pytest.mark.integration


def test_versions_and_nodes(kube: Any) -> None:
    server = kube.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{KUBE_VERSION}"' in server.split('"serverVersion"')[1]
    nodes = {n["metadata"]["name"]: n for n in kube.get("nodes")["items"]}
    assert sorted(nodes) == sorted(s.name for s in NODES)
    for shape in NODES:
        node = nodes[shape.name]
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", shape.name
        assert node["status"]["allocatable"].get("nvidia.com/gpu") == (str(shape.gpus) if shape.gpus else None)
        taints = node["spec"].get("taints") or []
        assert (GPU_TAINT in taints) == bool(shape.gpus), (shape.name, taints)
    # the controllers run: every namespace gets its default service account and the root CA
    assert kube.kubectl("-n", "kube-system", "get", "serviceaccount", "default").returncode == 0
    kube.wait_for(
        "kube-root-ca.crt",
        lambda: kube.kubectl("-n", "default", "get", "configmap", "kube-root-ca.crt", check=False).returncode == 0,
    )


def test_everything_listens_on_loopback(kube: Any) -> None:
    """No control-plane process listens on anything but 127.0.0.1."""
    pids = {str(p.pid) for p in kube.procs.values()}
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    mine = [line for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)]
    assert mine, out
    for line in mine:
        local = line.split()[3]
        assert local.startswith("127.0.0.1:"), line


def test_stops_every_process(tmp_path: Path) -> None:
    """A second cluster in its own directory comes up and, on exit (here: an exception), leaves no
    process behind."""
    procs: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="boom"), kube_cluster(tmp_path) as cluster:
        procs.update(cluster.procs)
        assert set(procs) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        raise RuntimeError("boom")
    for name, proc in procs.items():
        assert proc.poll() is not None, name
        try:
            os.killpg(proc.pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, f"{name}'s process group is still alive"
