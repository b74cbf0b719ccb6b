"""What one model pod asks of a node, and a preflight against the cluster before `pulumi up` creates or
waits on anything (a kubernetes stack's program runs it; `kubectl` reads the cluster).

Met on a real API server (issue #24): a StorageClass the stack names but the cluster lacks leaves the
weights claim Pending and the Job and model pods waiting on "unbound immediate PersistentVolumeClaims"
with only an event to say why; model pods larger than every GPU node stay Pending with "Insufficient
cpu"; a ResourceQuota too small for them makes the ReplicaSet fail to create pods, again only in events.
Each becomes one line here naming the `coderig:` key to change, all of them at once.

Pure decisions (`problems`) over facts read once (`ClusterFacts`, `gather`), so they are tested on
plain dicts and against the real control plane (tests/kube/).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coderig.core import planner
from coderig.core.settings import StackSettings
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import usage as kube_usage
from coderig.targets.kubernetes.settings import KubernetesTarget

Obj = dict[str, Any]
GPU = "nvidia.com/gpu"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
KEY = "coderig:target"


# --- quantities -----------------------------------------------------------------------------------

_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "m": 1e-3,
}


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("500m", "288Gi", "2") as a number (CPUs, bytes, counts)."""
    s = str(text).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * _SUFFIX[suffix]
    return float(s)


def _gib(n: float) -> str:
    return f"{n / 2**30:g} GiB"


# --- what one model pod requests --------------------------------------------------------------------


@dataclass(frozen=True)
class PodRequest:
    gpus: int
    cpu: float
    memory: float  # bytes

    @classmethod
    def of(cls, resources: Mapping[str, Any]) -> PodRequest:
        req = resources.get("requests") or {}
        return cls(int(quantity(req.get(GPU, 0))), quantity(req.get("cpu", 0)), quantity(req.get("memory", 0)))

    def text(self) -> str:
        return f"{self.gpus} {GPU}, {self.cpu:g} CPUs, {_gib(self.memory)} memory"


def model_pod_request(settings: StackSettings, plan: planner.Plan | None = None) -> PodRequest:
    p = plan or planner.plan_stack(settings)
    return PodRequest.of(kube.model_resources(p.gpu_count, kube.tier_gi(p)))


def plan_lines(settings: StackSettings, plan: planner.Plan) -> list[str]:
    """`coderig plan`'s lines for a kubernetes stack: what one model pod requests and why."""
    t = kube.target(settings)
    r = model_pod_request(settings, plan)
    shm = kube.shm_size_gi(plan.gpu_count, kube.tier_gi(plan))
    where = ", ".join(f"{k}={v}" for k, v in t.nodeSelector.items()) or "any node"
    return [
        f"  model pod requests {r.text()} per pod, × {t.replicas} replicas ({where})",
        f"    why              {GPU}: {KEY}.gpu.count; CPUs: 8 per GPU (tensor-parallel workers, tokenizer, "
        f"detokenizer), at most 96; memory: 32 GiB per GPU + {shm} GiB /dev/shm (NCCL"
        + (f" + the {kube.tier_gi(plan)} GiB host KV tier)" if kube.tier_gi(plan) else ")"),
        "    nodes            each replica needs one node with that much allocatable; `pulumi up` checks the "
        "cluster first and names the key to change",
        f"  usage record       {kube_usage.plan_note(settings)}",
    ]


# --- the cluster, read once ---------------------------------------------------------------------------


@dataclass
class ClusterFacts:
    nodes: list[Obj] = field(default_factory=list)
    storage_classes: list[Obj] = field(default_factory=list)
    namespace: Obj | None = None  # None: it does not exist yet
    can_create_namespace: bool = True
    quotas: list[Obj] = field(default_factory=list)
    own_pods: list[Obj] = field(default_factory=list)  # this stack's pods already in the namespace


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


class Unreachable(RuntimeError):
    """The cluster could not be read (no kubectl, no kubeconfig, no connection)."""


def kubectl_base(t: KubernetesTarget) -> list[str]:
    cmd = ["kubectl"]
    if t.kubeconfig:
        cmd += ["--kubeconfig", os.path.expanduser(t.kubeconfig)]
    if t.context:
        cmd += ["--context", t.context]
    return cmd


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unreachable(f"{cmd[0]}: {exc}") from exc


def gather(settings: StackSettings, stack: str, run: Runner = _run) -> ClusterFacts:
    t = kube.target(settings)
    base = kubectl_base(t)

    def get(*args: str, missing_ok: bool = False) -> Obj | None:
        res = run([*base, "get", *args, "-o", "json", "--request-timeout=20s"])
        if res.returncode != 0:
            if missing_ok and "(NotFound)" in res.stderr:
                return None
            raise Unreachable(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}")
        return json.loads(res.stdout)

    ns = get("namespace", t.namespace, missing_ok=True)
    can = run([*base, "auth", "can-i", "create", "namespaces"]).stdout.strip() == "yes" if ns is None else True
    instance = kube.selector(stack, "model")["app.kubernetes.io/instance"]
    return ClusterFacts(
        nodes=(get("nodes") or {}).get("items", []),
        storage_classes=(get("storageclasses") or {}).get("items", []),
        namespace=ns,
        can_create_namespace=can,
        quotas=[] if ns is None else (get("resourcequotas", "-n", t.namespace) or {}).get("items", []),
        own_pods=[]
        if ns is None
        else (get("pods", "-n", t.namespace, "-l", f"app.kubernetes.io/instance={instance}") or {}).get("items", []),
    )


# --- decisions ------------------------------------------------------------------------------------------


def _tolerated(taint: Obj, tolerations: Sequence[Obj]) -> bool:
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


_MISFIT_ORDER = ("nodeSelector", "tolerations", "gpu.count")


def node_misfit(node: Obj, want: PodRequest, t: KubernetesTarget) -> tuple[str, str] | None:
    """Why one model pod cannot run on `node`, as (the key to change, the reason); None when it fits."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    labels = meta.get("labels") or {}
    wrong = {k: v for k, v in t.nodeSelector.items() if labels.get(k) != v}
    if wrong:
        return "nodeSelector", "labels " + ", ".join(f"{k}={labels.get(k, '(none)')}" for k in wrong)
    if spec.get("unschedulable"):
        return "nodeSelector", "cordoned (unschedulable)"
    tolerations = [tol.model_dump(exclude_none=True) for tol in t.tolerations]
    blocked = [x for x in spec.get("taints") or [] if not _tolerated(x, tolerations)]
    if blocked:
        x = blocked[0]
        return "tolerations", f"taint {x.get('key')}={x.get('value', '')}:{x.get('effect')} not tolerated"
    alloc = PodRequest.of({"requests": (node.get("status") or {}).get("allocatable") or {}})
    short = [
        what
        for what, ok in (
            (f"{alloc.gpus} GPUs", alloc.gpus >= want.gpus),
            (f"{alloc.cpu:g} CPUs", alloc.cpu >= want.cpu),
            (_gib(alloc.memory), alloc.memory >= want.memory),
        )
        if not ok
    ]
    if short:
        return "gpu.count", "allocatable only " + ", ".join(short)
    return None


def _quota_problems(q: Obj, need: Mapping[str, float], own: Mapping[str, float]) -> list[str]:
    name = (q.get("metadata") or {}).get("name", "?")
    hard = (q.get("spec") or {}).get("hard") or {}
    used = (q.get("status") or {}).get("used") or {}
    out = []
    for res, amount in need.items():
        if res not in hard:
            continue
        room = quantity(hard[res]) - quantity(used.get(res, 0)) + own.get(res, 0.0)
        if amount > room:
            fmt = _gib if "memory" in res or "storage" in res else (lambda n: f"{n:g}")
            out.append(f"ResourceQuota {name} leaves {fmt(max(room, 0))} of {res}, the stack needs {fmt(amount)}")
    for res in ("limits.cpu", "cpu") if "limits.cpu" in hard else ():
        out.append(
            f"ResourceQuota {name} sets {res}: every pod must then declare a CPU limit, and the model pod "
            "has none (a CPU limit throttles vLLM's workers)"
        )
        break
    return out


def stack_requests(settings: StackSettings, stack: str, plan: planner.Plan, want: PodRequest) -> dict[str, float]:
    """What the stack's pods and claim count against a quota: the model pods and the front-door pods."""
    t = kube.target(settings)
    fd = [
        PodRequest.of(c.get("resources") or {})
        for c in kube_fd.frontdoor_deployment(settings, stack, plan)["spec"]["template"]["spec"]["containers"]
    ]
    cpu = want.cpu * t.replicas + sum(r.cpu for r in fd) * t.frontDoorReplicas
    mem = want.memory * t.replicas + sum(r.memory for r in fd) * t.frontDoorReplicas
    storage = quantity(kube.weights_volume_size(settings))
    return {
        f"requests.{GPU}": float(want.gpus * t.replicas),
        "requests.cpu": cpu,
        "cpu": cpu,
        "requests.memory": mem,
        "memory": mem,
        "pods": float(t.replicas + t.frontDoorReplicas + 1),
        "requests.storage": storage,
        "persistentvolumeclaims": 1.0,
    }


def _own_usage(pods: Sequence[Obj]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for c in (pod.get("spec") or {}).get("containers") or []:
            r = PodRequest.of(c.get("resources") or {})
            for keys, v in (
                ((f"requests.{GPU}",), r.gpus),
                (("requests.cpu", "cpu"), r.cpu),
                (("requests.memory", "memory"), r.memory),
            ):
                for k in keys:
                    out[k] = out.get(k, 0.0) + v
        out["pods"] = out.get("pods", 0.0) + 1
    return out


def problems(settings: StackSettings, stack: str, facts: ClusterFacts, plan: planner.Plan | None = None) -> list[str]:
    """Every reason the stack cannot come up on this cluster, one line each, naming the key."""
    t = kube.target(settings)
    plan = plan or planner.plan_stack(settings)
    out: list[str] = []
    classes = [(c.get("metadata") or {}).get("name", "") for c in facts.storage_classes]
    defaults = [
        (c.get("metadata") or {}).get("name", "")
        for c in facts.storage_classes
        if ((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS) == "true"
    ]
    have = ", ".join(classes) or "none"
    if t.storageClass and t.storageClass not in classes:
        out.append(
            f"{KEY}.storageClass: StorageClass {t.storageClass!r} does not exist in the cluster (it has: "
            f"{have}); the weights claim would stay Pending: name one of those, or create it"
        )
    elif not t.storageClass and not defaults:
        out.append(
            f"{KEY}.storageClass is unset and the cluster has no default StorageClass (it has: {have}); "
            "the weights claim would stay Pending: name one"
        )
    if t.usageStorageClass and t.usageStorageClass not in classes:
        out.append(
            f"{KEY}.usageStorageClass: StorageClass {t.usageStorageClass!r} does not exist in the cluster (it "
            f"has: {have}); the usage record's claim, and with it the front door, would stay Pending"
        )
    if facts.namespace is None and not facts.can_create_namespace:
        out.append(
            f"{KEY}.namespace: namespace {t.namespace!r} does not exist and this kubeconfig may not create "
            "namespaces: ask an admin to create it, or name one you may use"
        )
    elif facts.namespace is not None and (facts.namespace.get("status") or {}).get("phase") == "Terminating":
        out.append(f"{KEY}.namespace: namespace {t.namespace!r} is being deleted: wait, or name another")
    want = model_pod_request(settings, plan)
    if facts.quotas:
        need = stack_requests(settings, stack, plan, want)
        own = _own_usage(facts.own_pods)
        for q in facts.quotas:
            out += [f"{KEY}.replicas / {KEY}.namespace: {line}" for line in _quota_problems(q, need, own)]
    if t.replicas > 0:
        misfits = {(n.get("metadata") or {}).get("name", "?"): node_misfit(n, want, t) for n in facts.nodes}
        fit = [n for n, why in misfits.items() if why is None]
        if not fit:
            # lead with the key of the nodes that got furthest (selected, tolerated, then too small)
            reasons = [why for why in misfits.values() if why]
            key = max((why[0] for why in reasons), key=_MISFIT_ORDER.index, default="nodeSelector")
            detail = "; ".join(f"{n}: {why[1]}" for n, why in misfits.items() if why and why[0] == key)
            out.append(
                f"{KEY}.{key}: one model pod requests {want.text()} on one node, and no node can hold it "
                f"({detail or 'the cluster has no nodes'}); change {KEY}.{key}"
            )
        elif len(fit) < t.replicas:
            out.append(
                f"{KEY}.replicas: {t.replicas} model pods of {want.text()} each need {t.replicas} nodes that "
                f"can hold one, the cluster has {len(fit)} ({', '.join(fit)}): lower it, or add GPU nodes"
            )
    return out
