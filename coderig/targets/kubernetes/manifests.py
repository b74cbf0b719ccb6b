"""The `kubernetes` target as plain manifests (dicts). Pure: no Pulumi, no I/O, no cluster.

The same request path as a node, on a cluster's GPU nodes:

  Service coderig-gateway (LoadBalancer / ClusterIP / NodePort, optional Ingress)
    └─ Deployment coderig-frontdoor: one pod = nginx gateway + LiteLLM sharing localhost
         └─ Service coderig-model (ClusterIP) ─ Deployment coderig-model: vLLM, `replicas` pods
              └─ PVC coderig-weights (HF cache), filled once by Job coderig-weights

Balancing across model replicas: LiteLLM gets ONE backend, the model's ClusterIP Service. kube-proxy
only routes to Ready pods, so rolling updates, a replica that fails readiness, `replicas` changes and
scale-to-zero need no LiteLLM config change (and no front-door restart); every concurrent stream holds
its own HTTP/1.1 connection, so long streams spread across replicas. A headless Service
(coderig-model-pods) exists only so the idle reaper can scrape every replica's /metrics by DNS.

Idle: CronJob coderig-idle runs `python -m coderig.runtime.kube_reaper reap` (stdlib +
coderig.runtime.idle, shipped as a ConfigMap) and scales the model Deployment to zero through
`deployments/scale` when coderig.runtime.idle.decide says so; it keeps its counters in ConfigMap coderig-idle-state.

Secrets (developer keys, LiteLLM master key, model API key, TLS key, HF token) are Kubernetes
Secrets created by Pulumi from secret Outputs (`secret_objects`). `coderig render` never writes them.
Pods carry a checksum of the ConfigMaps/Secrets they use, so a content change rolls them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from coderig import frontdoor
from coderig.core import budgets, engine, kv_tier, planner
from coderig.core.compile_caches import compile_cache_env
from coderig.core.settings import StackSettings
from coderig.runtime.scripts import script_text
from coderig.targets.kubernetes.settings import KubernetesTarget

Obj = dict[str, Any]

# --- names ----------------------------------------------------------------------------------------

MODEL = "coderig-model"
MODEL_PODS = "coderig-model-pods"  # headless: per-replica /metrics for the idle reaper
FRONTDOOR = "coderig-frontdoor"
GATEWAY = "coderig-gateway"  # the Service (and Ingress) developers reach
WEIGHTS = "coderig-weights"  # download Job (and the PVC's default name: coderig:target.weightsVolumeName)
WEIGHTS_SCRIPT = "coderig-weights-script"
IDLE = "coderig-idle"  # CronJob, ServiceAccount, Role, RoleBinding
IDLE_CODE = "coderig-idle-code"
IDLE_STATE = "coderig-idle-state"
LITELLM_CONFIG = "coderig-litellm-config"
GATEWAY_CONFIG = "coderig-gateway-config"
# Secrets (created by Pulumi only)
SECRET_MODEL = "coderig-model-key"  # noqa: S105 - a name; VLLM_API_KEY
SECRET_FRONTDOOR = "coderig-frontdoor"  # noqa: S105 - a name; gateway-keys.conf, LITELLM_MASTER_KEY, CODERIG_MODEL_API_KEY
SECRET_TLS = "coderig-gateway-tls"  # noqa: S105 - a name; kubernetes.io/tls: tls.crt, tls.key (also the Ingress certificate)
SECRET_HF = "coderig-hf-token"  # noqa: S105 - a name; HF_TOKEN, only for the download Job

CONFIG_CHECKSUM = "coderig.dev/config-checksum"
SECRET_CHECKSUM = "coderig.dev/secret-checksum"  # noqa: S105 - an annotation name
# pulumi-kubernetes annotations: how long `pulumi up` waits for a resource to become ready, and force
# server-side-apply ownership of spec.replicas back from the idle reaper's scale updates.
PULUMI_TIMEOUT = "pulumi.com/timeoutSeconds"
PULUMI_PATCH_FORCE = "pulumi.com/patchForce"

GATEWAY_SERVICE_PORT = 443
MODEL_UID = 1000  # the vLLM image has no USER; any UID works once HOME and caches are writable
NGINX_UID = 101  # the `nginx` user of the official image
LITELLM_UID = 1000
PYTHON_UID = 1000
CACHE_MOUNT = engine.CACHE_MOUNT
HF_HOME = engine.HF_HOME
MARKER_DIR = "coderig-markers"  # fetch_weights.py's completion markers, below HF_HOME
IDLE_PERIOD_S = 300  # the reaper's period; 60 s when the policy window is under 15 minutes
RETRY_AFTER_S = 120  # Retry-After the gateway sends while the model is at zero or loading

GATEWAY_CONF_DIR = "/etc/coderig/gateway"
GATEWAY_SECRETS_DIR = "/etc/coderig/secrets"
GATEWAY_TLS_DIR = "/etc/coderig/tls"
LITELLM_CONF_DIR = "/etc/litellm"

STREAMING_INGRESS_ANNOTATIONS = {
    # ingress-nginx: stream SSE unbuffered, allow Claude Code's 32 MB bodies and 30-minute turns
    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-body-size": f"{frontdoor.DEFAULT_MAX_BODY_MB}m",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": str(frontdoor.DEFAULT_TIMEOUT_S),
    "nginx.ingress.kubernetes.io/proxy-send-timeout": str(frontdoor.DEFAULT_TIMEOUT_S),
    "nginx.ingress.kubernetes.io/proxy-http-version": "1.1",
    "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",  # the gateway terminates TLS itself
}


def target(settings: StackSettings) -> KubernetesTarget:
    """The kubernetes target of validated settings (what it cannot run is refused by the settings)."""
    t = settings.target
    if not isinstance(t, KubernetesTarget):
        raise ValueError(f"coderig:target.kind: {t.kind} is not kubernetes")
    return t


def _label_value(text: str) -> str:
    v = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
    return v or "stack"


def labels(stack: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "coderig",
        "app.kubernetes.io/instance": _label_value(stack),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(stack: str, component: str) -> dict[str, str]:
    full = labels(stack, component)
    return {k: full[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")}


def meta(name: str, ns: str, stack: str, component: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": ns, "labels": labels(stack, component), **extra}


def checksum(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# The weights PVC's spec is immutable (only a storage increase is allowed, and only with an expandable
# class): pulumi-kubernetes replaces the PVC when any of these fields changes, and a replacement deletes
# the old claim and, with the usual Delete reclaim policy, ~700 GB of downloaded weights. Pulumi ignores
# changes to them once the PVC exists (and never deletes the PVC or the Namespace holding it); a real move
# is a new PVC: a new coderig:target.weightsVolumeName (docs/kubernetes.md, "Weights volume").
WEIGHTS_PVC_FIXED_FIELDS = ("spec.accessModes", "spec.storageClassName", "spec.resources.requests.storage")


def weights_claim(settings: StackSettings) -> str:
    """The weights PVC's name: coderig:target.weightsVolumeName (default coderig-weights)."""
    return target(settings).weightsVolumeName


# --- sizing from the plan -------------------------------------------------------------------------


def shm_size_gi(gpu_count: int, tier_gi: int = 0) -> int:
    """/dev/shm for NCCL and the multiprocessing executor: 1 GiB alone, 4 GiB per GPU with tensor
    parallelism (NCCL's shared-memory transport and CUDA-graph capture all-reduce buffers), + the host
    KV tier, which vLLM maps from files in /dev/shm (coderig.core.kv_tier)."""
    return (1 if gpu_count <= 1 else 4 * gpu_count) + tier_gi


def tier_gi(plan: planner.Plan) -> int:
    """The plan's host KV tier in whole GiB (0: none): the pod's /dev/shm and memory request grow by it."""
    t = plan.kv_tier
    return math.ceil(t.size_bytes / 2**30) if t is not None and t.on else 0


def startup_probe(budget_s: int, period_s: int = 10) -> Obj:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": math.ceil(budget_s / period_s),
    }


def startup_budget_seconds(settings: StackSettings) -> int:
    """The model server's startup probe budget: the planner's load budget for these weights."""
    return budgets.load_budget_seconds(settings.model.spec, settings.target.weights_read.bytes_per_s)


def weights_volume_size(settings: StackSettings) -> str:
    return f"{budgets.weights_volume_gb(settings.model.spec, settings.target.gpus[1])}Gi"


def model_resources(gpu_count: int, tier: int = 0) -> Obj:
    """Requests sized per GPU (TP workers, tokenizer, detokenizer); the GPU is also a limit (required
    for extended resources). No memory limit: loading maps weights through the page cache."""
    return {
        "requests": {
            "cpu": str(min(8 * gpu_count, 96)),
            "memory": f"{32 * gpu_count + shm_size_gi(gpu_count, tier)}Gi",
            "nvidia.com/gpu": str(gpu_count),
        },
        "limits": {"nvidia.com/gpu": str(gpu_count)},
    }


def idle_period_seconds(settings: StackSettings) -> int:
    return 60 if settings.idle.stop_after_minutes < 15 else IDLE_PERIOD_S


def idle_enabled(settings: StackSettings) -> bool:
    return settings.idle.enabled


# --- security -------------------------------------------------------------------------------------


def pod_security(uid: int, *, fs_group: int | None = None) -> Obj:
    sc: Obj = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if fs_group is not None:
        sc["fsGroup"] = fs_group
        # never chown a 700 GB volume on every mount: only when its root has the wrong group
        sc["fsGroupChangePolicy"] = "OnRootMismatch"
    return sc


def container_security(*, read_only_root: bool, uid: int | None = None) -> Obj:
    sc: Obj = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
    }
    if uid is not None:
        sc["runAsUser"] = uid
        sc["runAsGroup"] = uid
    return sc


def _tolerations(t: KubernetesTarget) -> list[Obj]:
    return [{k: v for k, v in tol.model_dump().items() if v is not None} for tol in t.tolerations]


def _placement(t: KubernetesTarget) -> Obj:
    out: Obj = {}
    if t.nodeSelector:
        out["nodeSelector"] = dict(t.nodeSelector)
    if t.tolerations:
        out["tolerations"] = _tolerations(t)
    return out


# --- objects --------------------------------------------------------------------------------------


def namespace(settings: StackSettings, stack: str) -> Obj:
    t = target(settings)
    lab = labels(stack, "namespace")
    # Every pod here meets the "restricted" Pod Security Standard.
    lab |= {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": t.namespace, "labels": lab}}


def weights_pvc(settings: StackSettings, stack: str) -> Obj:
    t = target(settings)
    spec: Obj = {
        # replicas share one copy of the weights: that needs ReadWriteMany
        "accessModes": ["ReadWriteMany" if t.replicas > 1 else "ReadWriteOnce"],
        "resources": {"requests": {"storage": weights_volume_size(settings)}},
        "volumeMode": "Filesystem",
    }
    if t.storageClass:
        spec["storageClassName"] = t.storageClass
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(t.weightsVolumeName, t.namespace, stack, "weights"),
        "spec": spec,
    }


def weights_script_configmap(settings: StackSettings, stack: str) -> Obj:
    t = target(settings)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(WEIGHTS_SCRIPT, t.namespace, stack, "weights"),
        "data": {"fetch_weights.py": script_text("fetch_weights.py")},
    }


def marker_path(settings: StackSettings) -> str:
    """fetch_weights.py's completion marker for the preset, inside the pods."""
    return f"{HF_HOME}/{MARKER_DIR}/{settings.model.spec.hf_repo.replace('/', '--')}.json"


def _weights_env(settings: StackSettings) -> dict[str, str]:
    # the node runtime's weights step, same variables: one downloader for every target
    return engine.weights_env(settings.model, CACHE_MOUNT)


def env_list(values: Mapping[str, str]) -> list[Obj]:
    return [{"name": k, "value": v} for k, v in values.items()]


def secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> Obj:
    ref: Obj = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def empty_dir(name: str, size: str, *, memory: bool = False) -> Obj:
    d: Obj = {"sizeLimit": size}
    if memory:
        d["medium"] = "Memory"
    return {"name": name, "emptyDir": d}


def weights_job(settings: StackSettings, stack: str) -> Obj:
    """Fills the PVC before the model server starts: resumable (huggingface_hub keeps partial blobs and
    the pod restarts in place), progress lines in its log, a completion marker that makes any re-run
    a no-op. Scheduled like the model server so a ReadWriteOnce volume is created in the GPU nodes'
    zone."""
    t = target(settings)
    preset = settings.model.spec
    # the pinned vLLM image's own huggingface_hub: nothing is installed (non-root, read-only image)
    env = env_list(_weights_env(settings) | {"HOME": "/tmp"})
    env += [secret_env("HF_TOKEN", SECRET_HF, "HF_TOKEN", optional=True)]
    pod: Obj = {
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(PYTHON_UID, fs_group=PYTHON_UID),
        **_placement(t),
        "containers": [
            {
                "name": "weights",
                "image": engine.weights_image(settings.model),
                "command": engine.weights_entrypoint(),
                "env": env,
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
                "securityContext": container_security(read_only_root=True),
                "volumeMounts": [
                    {"name": "cache", "mountPath": CACHE_MOUNT},
                    {"name": "script", "mountPath": engine.WEIGHTS_SCRIPT_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": t.weightsVolumeName}},
            {"name": "script", "configMap": {"name": WEIGHTS_SCRIPT}},
            empty_dir("tmp", "2Gi"),
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(
            WEIGHTS,
            t.namespace,
            stack,
            "weights",
            annotations={
                PULUMI_TIMEOUT: str(budgets.download_budget_seconds(preset)),
                "coderig.dev/repo": preset.hf_repo,
            },
        ),
        "spec": {
            "backoffLimit": 20,  # each retry resumes the partial download
            "completions": 1,
            "parallelism": 1,
            "template": {"metadata": {"labels": labels(stack, "weights")}, "spec": pod},
        },
    }


def model_deployment(settings: StackSettings, stack: str, plan: planner.Plan) -> Obj:
    t = target(settings)
    p = plan
    gpus = p.gpu_count
    tier = kv_tier.flags(p.kv_tier)
    args = engine.vllm_args(settings.model, p.layout, host="0.0.0.0", tier=tier)  # noqa: S104 - pod IP; NetworkPolicy + API key
    env = {
        "HF_HOME": HF_HOME,
        "HF_HUB_OFFLINE": "1",  # the Job already downloaded everything
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # non-root: the image has no USER; torch calls getpass.getuser(), which reads $USER first,
        # and any cache not named below resolves below $HOME
        "HOME": "/tmp/home",
        "USER": "vllm",
        **compile_cache_env(CACHE_MOUNT),  # compile/autotune/JIT caches on the weights volume
    }
    budget = startup_budget_seconds(settings)
    probe_http = {"httpGet": {"path": "/health", "port": "http"}}
    container: Obj = {
        "name": "vllm",
        "image": engine.model_image(settings.model),
        "command": ["vllm", "serve"],
        "args": args,
        "ports": [{"name": "http", "containerPort": engine.MODEL_PORT, "protocol": "TCP"}],
        "env": [*env_list(env), secret_env("VLLM_API_KEY", SECRET_MODEL, "VLLM_API_KEY")],
        "resources": model_resources(gpus, tier_gi(p)),
        "startupProbe": startup_probe(budget),
        "readinessProbe": probe_http | {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": probe_http | {"periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5},
        # vLLM and its JIT compilers write caches in places we cannot all enumerate: writable root
        "securityContext": container_security(read_only_root=False),
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_MOUNT},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    wait = {
        "name": "wait-for-weights",
        "image": engine.model_image(settings.model),
        "command": [
            "sh",
            "-c",
            f'until [ -f "{marker_path(settings)}" ]; do '
            f'echo "waiting for the weights download (Job {WEIGHTS}) to finish"; sleep 15; done',
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": container_security(read_only_root=True),
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT, "readOnly": True}],
    }
    pod: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # VLLM_* service env vars would be read as vLLM settings
        "terminationGracePeriodSeconds": 120,
        "securityContext": pod_security(MODEL_UID, fs_group=MODEL_UID),
        **_placement(t),
        "initContainers": [wait],
        "containers": [container],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": t.weightsVolumeName}},
            empty_dir("dshm", f"{shm_size_gi(gpus, tier_gi(p))}Gi", memory=True),
            empty_dir("tmp", "50Gi"),
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(
            MODEL,
            t.namespace,
            stack,
            "model",
            annotations={
                PULUMI_TIMEOUT: str(budget + budgets.IMAGE_PULL_S),
                PULUMI_PATCH_FORCE: "true",
            },
        ),
        "spec": {
            "replicas": t.replicas,
            "selector": {"matchLabels": selector(stack, "model")},
            # replace one pod at a time without needing a spare GPU node
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": labels(stack, "model"),
                    "annotations": {SECRET_CHECKSUM: ""},
                },
                "spec": pod,
            },
        },
    }


def model_services(settings: StackSettings, stack: str) -> list[Obj]:
    t = target(settings)
    port = {"name": "http", "port": engine.MODEL_PORT, "targetPort": "http", "protocol": "TCP"}
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(MODEL, t.namespace, stack, "model"),
        "spec": {"type": "ClusterIP", "selector": selector(stack, "model"), "ports": [port]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(MODEL_PODS, t.namespace, stack, "model"),
        "spec": {"clusterIP": "None", "selector": selector(stack, "model"), "ports": [port]},
    }
    return [svc, headless]


def model_network_policy(settings: StackSettings, stack: str) -> Obj:
    """Only the front door (requests) and the idle reaper (/metrics) reach the model server."""
    t = target(settings)
    port = [{"protocol": "TCP", "port": engine.MODEL_PORT}]
    sources = [{"podSelector": {"matchLabels": selector(stack, "frontdoor")}}]
    if idle_enabled(settings):
        sources.append({"podSelector": {"matchLabels": selector(stack, "idle")}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(MODEL, t.namespace, stack, "model"),
        "spec": {
            "podSelector": {"matchLabels": selector(stack, "model")},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": sources, "ports": port}],
        },
    }
