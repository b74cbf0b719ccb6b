"""A real Kubernetes control plane on loopback for the kubernetes tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, built from Go modules by .ci/kube-deps.sh.

kwok (https://kwok.sigs.k8s.io) plays the kubelets: it keeps the fake nodes Ready (leases) and takes
every pod scheduled onto them to Running/Ready (Job pods to Succeeded), so manifests meet the real API
server, admission (Pod Security, quotas, defaults), scheduler and controllers; no container runs.

Nodes (`NODES`) are shaped like the README's node pools: two AWS p5en.48xlarge-like GPU nodes (8 × H200,
192 vCPUs, 2048 GiB; https://aws.amazon.com/ec2/instance-types/p5/) labelled the way the NVIDIA GPU
Operator labels them and tainted `nvidia.com/gpu=present:NoSchedule` as EKS GPU node groups usually are,
and one general-purpose node (m7i.4xlarge-like: 16 vCPUs, 64 GiB) for everything else.

Everything listens on 127.0.0.1 on free ports, lives in the test's directory, and is stopped (process
group killed) when the context manager exits, whatever happened.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from coderig.frontdoor import local_tls

KUBE_VERSION = "v1.34.4"  # .ci/kube-deps.sh kube_version
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
FAKE_NODE = {"kwok.x-k8s.io/node": "fake"}  # kwok manages nodes with this annotation
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeShape:
    name: str
    cpu: str
    memory: str
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "1000Gi"}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            **self.labels,
        }
        spec: dict[str, Any] = {}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
            spec["taints"] = [GPU_TAINT]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "annotations": dict(FAKE_NODE), "labels": labels},
            "spec": spec,
            "status": {"capacity": capacity, "allocatable": capacity},
        }


H200_LABELS = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.product": "NVIDIA-H200",
    "nvidia.com/gpu.count": "8",
    "node.kubernetes.io/instance-type": "p5en.48xlarge",
}
NODES = (
    NodeShape("gpu-0", "192", "2048Gi", 8, H200_LABELS),
    NodeShape("gpu-1", "192", "2048Gi", 8, H200_LABELS),
    NodeShape("general-0", "16", "64Gi", 0, {"node.kubernetes.io/instance-type": "m7i.4xlarge"}),
)


def kube_bin() -> Path:
    """The directory .ci/kube-deps.sh built the binaries into (skips locally, fails in CI, when absent)."""
    found = os.environ.get("CODERIG_KUBE_BIN") or (
        str(Path(shutil.which("kube-apiserver") or "").parent) if shutil.which("kube-apiserver") else ""
    )
    missing = [b for b in BINARIES if not (found and (Path(found) / b).exists())]
    if missing:
        message = f"{', '.join(missing)} not built: `source .ci/kube-deps.sh` first (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """A CA, the API server's serving certificate (127.0.0.1), an admin client certificate
    (system:masters) and the service-account signing key pair; the CA and certificates are made by
    the front door's own openssl steps (coderig.frontdoor.local_tls)."""
    d.mkdir(parents=True, exist_ok=True)
    ca = (d / "ca.crt", d / "ca.key")
    local_tls.new_ca(*ca, "/CN=coderig-test-ca", 2)
    for name, subj, ext in (
        (
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc",
        ),
        ("admin", "/O=system:masters/CN=coderig-admin", "extendedKeyUsage=clientAuth"),
    ):
        local_tls.new_signed(d / f"{name}.crt", d / f"{name}.key", subj, ext + "\n", ca, 2)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    for key in d.glob("*.key"):
        key.chmod(0o600)


def kubeconfig(
    server: str,
    ca: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
    name: str = "coderig-test",
) -> str:
    user: dict[str, Any] = {}
    if cert and key:
        user = {
            "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        }
    if token:
        user = {"token": token}
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": name,
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": context}],
        }
    )


@dataclass
class KubeCluster:
    dir: Path
    bin: Path
    server: str
    kubeconfig: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """An environment in which `kubectl` is the built one and talks to this cluster only."""
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        stdin: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, objs: Sequence[dict[str, Any]], *extra: str) -> str:
        text = "\n---\n".join(yaml.safe_dump(o) for o in objs)
        return self.kubectl(
            "apply", "--server-side", "--field-manager=coderig-test", *extra, "-f", "-", stdin=text
        ).stdout

    def wait_for(self, what: str, predicate: Any, timeout: float = 60, every: float = 0.2) -> Any:
        """Poll `predicate()` until it returns something truthy; fail naming `what` on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(every)
        self.check_alive()
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            logs = {n: (self.dir / "log" / f"{n}.log").read_text()[-2000:] for n in dead}
            raise AssertionError(f"control-plane processes exited: {dead}\n{logs}")

    def service_account_token(self, namespace: str, account: str, seconds: int = 3600) -> str:
        """A bound token of a service account (what a pod of it would mount), from the TokenRequest API."""
        return self.kubectl("-n", namespace, "create", "token", account, f"--duration={seconds}s").stdout.strip()


def _start(cluster: KubeCluster, name: str, args: list[str]) -> None:
    log = (cluster.dir / "log" / f"{name}.log").open("wb")
    cluster.procs[name] = subprocess.Popen(
        [str(cluster.bin / name), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=cluster.dir,
    )


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in reversed(list(procs.values())):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in reversed(list(procs.values())):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def pod_ready(pod: dict[str, Any]) -> bool:
    """Running, Ready and not being deleted."""
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    phase = pod.get("status", {}).get("phase")
    return phase == "Running" and conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp")


def _ready(cluster: KubeCluster) -> bool:
    proc = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


def _nodes_ready(cluster: KubeCluster) -> bool:
    nodes = cluster.get("nodes")["items"]
    ready = [
        n
        for n in nodes
        for c in n.get("status", {}).get("conditions", [])
        if c["type"] == "Ready" and c["status"] == "True"
    ]
    return len(ready) == len(NODES)


@contextlib.contextmanager
def kube_cluster(d: Path, nodes: Sequence[NodeShape] = NODES) -> Iterator[KubeCluster]:
    """Start the control plane and kwok in `d`, create `nodes`, wait until everything is ready."""
    bin_dir = kube_bin()
    t0 = time.monotonic()
    (d / "log").mkdir(parents=True, exist_ok=True)
    pki = d / "pki"
    make_pki(pki)
    etcd_port, etcd_peer, api_port, cm_port, sched_port, kwok_port = (free_port() for _ in range(6))
    server = f"https://127.0.0.1:{api_port}"
    admin = d / "admin.kubeconfig"
    admin.write_text(kubeconfig(server, pki / "ca.crt", cert=pki / "admin.crt", key=pki / "admin.key"))
    admin.chmod(0o600)
    cluster = KubeCluster(d, bin_dir, server, admin)
    try:
        _start(
            cluster,
            "etcd",
            [
                "--name=coderig-test",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=coderig-test=http://127.0.0.1:{etcd_peer}",
                "--log-level=warn",
                "--unsafe-no-fsync",
            ],
        )
        _start(
            cluster,
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                # no kube-proxy, no pod network: the `kubernetes` Service's endpoints are not reconciled to loopback
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--profiling=false",
                "--v=1",
            ],
        )
        cluster.wait_for("kube-apiserver /readyz", lambda: _ready(cluster), timeout=90)
        cluster.timings["apiserver_ready_s"] = round(time.monotonic() - t0, 1)
        _start(
            cluster,
            "kube-controller-manager",
            [
                f"--kubeconfig={admin}",
                f"--authentication-kubeconfig={admin}",
                f"--authorization-kubeconfig={admin}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        _start(
            cluster,
            "kube-scheduler",
            [
                f"--kubeconfig={admin}",
                f"--authentication-kubeconfig={admin}",
                f"--authorization-kubeconfig={admin}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        _start(
            cluster,
            "kwok",
            [
                f"--kubeconfig={admin}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.1/16",
                "--node-ip=127.0.0.1",
                # the default lease duration lets nodes flap NotReady every ~45 s and evicts pods
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{kwok_port}",
            ],
        )
        cluster.apply([n.manifest() for n in nodes])
        # kwok sets node status; the controllers create the default service account in each namespace
        cluster.wait_for("the fake nodes to be Ready", lambda: _nodes_ready(cluster), timeout=60)
        cluster.wait_for(
            "the default service account",
            lambda: cluster.kubectl("-n", "default", "get", "serviceaccount", "default", check=False).returncode == 0,
            timeout=60,
        )
        cluster.timings["ready_s"] = round(time.monotonic() - t0, 1)
        yield cluster
    finally:
        _stop(cluster.procs)
