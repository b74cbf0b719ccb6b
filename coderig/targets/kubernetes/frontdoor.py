"""The kubernetes target's front door: one pod of nginx gateway + LiteLLM sharing localhost, its
ConfigMaps, Service, optional Ingress and PodDisruptionBudget, and the Secrets Pulumi creates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from coderig import frontdoor
from coderig.core import engine, planner, versions
from coderig.core.secrets import NodeSecrets
from coderig.core.settings import StackSettings
from coderig.frontdoor.assemble import (
    MODEL_API_KEY_ENV,
    RELAY_FILES,
    GatewayPaths,
    assemble,
    from_settings,
)
from coderig.runtime.scripts import script_text
from coderig.targets.kubernetes.manifests import (
    CONFIG_CHECKSUM,
    FRONTDOOR,
    GATEWAY,
    GATEWAY_CONF_DIR,
    GATEWAY_CONFIG,
    GATEWAY_SECRETS_DIR,
    GATEWAY_SERVICE_PORT,
    GATEWAY_TLS_DIR,
    LITELLM_CONF_DIR,
    LITELLM_CONFIG,
    LITELLM_UID,
    MODEL,
    NGINX_UID,
    RETRY_AFTER_S,
    SECRET_CHECKSUM,
    SECRET_FRONTDOOR,
    SECRET_HF,
    SECRET_MODEL,
    SECRET_TLS,
    STREAMING_INGRESS_ANNOTATIONS,
    Obj,
    checksum,
    container_security,
    empty_dir,
    env_list,
    labels,
    meta,
    pod_security,
    secret_env,
    selector,
    target,
)
from coderig.targets.kubernetes.settings import KubernetesTarget
from coderig.targets.kubernetes.usage import SHIPPED as USAGE_SHIPPED
from coderig.targets.kubernetes.usage import counted_relay_command, usage_mount, usage_volume
from coderig.targets.kubernetes.wake import WAKE, WAKE_MODULES, relay_args, relay_env, token_mount, token_volume, wakes

# Labels only GPU nodes carry: the NVIDIA GPU Operator's (node feature discovery) presence label; the
# model's own coderig:target.nodeSelector keys are added.
GPU_NODE_LABELS = ("nvidia.com/gpu.present",)


def avoid_gpu_nodes(t: KubernetesTarget) -> Obj:
    """Prefer nodes without GPU labels for the front door (no GPU of its own): on a cluster whose GPU
    nodes are not tainted the scheduler otherwise spreads it onto them (met on a real scheduler: the
    empty 8-GPU nodes score highest), and a cluster autoscaler could not remove a GPU node the model
    no longer uses. Preferred, so a GPU-only cluster still runs it."""
    keys = dict.fromkeys([*GPU_NODE_LABELS, *t.nodeSelector])
    expressions = [{"key": k, "operator": "DoesNotExist"} for k in keys]
    return {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": expressions}}
        ]
    }


def gateway_dns_names(ns: str) -> list[str]:
    """In-cluster names of the gateway Service (for its certificate), shortest first."""
    return [GATEWAY, f"{GATEWAY}.{ns}", f"{GATEWAY}.{ns}.svc", f"{GATEWAY}.{ns}.svc.cluster.local"]


def certificate_names(settings: StackSettings) -> list[str]:
    """Names the gateway certificate covers: the Ingress host, `coderig:gateway.hostnames` (point
    your DNS name for the load balancer here) and the in-cluster Service names."""
    t = target(settings)
    names = [*([t.ingressHost] if t.ingressHost else []), *settings.gateway.hostnames, *gateway_dns_names(t.namespace)]
    return list(dict.fromkeys(names))


def model_url(settings: StackSettings) -> str:
    return f"http://{MODEL}.{target(settings).namespace}.svc.cluster.local:{engine.MODEL_PORT}"


GATEWAY_PATHS = GatewayPaths(
    keys_include=f"{GATEWAY_SECRETS_DIR}/gateway-keys.conf",
    tls_cert=f"{GATEWAY_TLS_DIR}/tls.crt",
    tls_key=f"{GATEWAY_TLS_DIR}/tls.key",
    pid_path="/tmp/nginx.pid",
    error_log="/dev/stderr",
    access_log="/dev/stdout",
    temp_dir="/tmp",
)


def front_door(settings: StackSettings) -> tuple[frontdoor.ModelRoute, frontdoor.GatewaySpec]:
    """The front-door pod: LiteLLM's one backend is the model Service (kube-proxy balances over ready
    pods); OpenAI-native chat goes from nginx straight to it with the model's API key; while the model
    is at zero (or loading) every API call gets 503 + Retry-After, never LiteLLM's 500/502, unless the
    relay wakes it (coderig.targets.kubernetes.wake): then the relay holds the request instead."""
    url = model_url(settings)
    inputs = from_settings(
        settings,
        (f"{url}/v1",),
        listen=f"0.0.0.0:{settings.gateway.port}",
        litellm=f"{engine.MODEL_HOST}:{engine.LITELLM_PORT}",
        health_url=f"{url}/health",
        direct_chat=(frontdoor.upstream_hostport(url),),
        gate_retry_after_s=None if wakes(settings) else RETRY_AFTER_S,
    )
    return assemble(inputs, GATEWAY_PATHS)


def frontdoor_configmaps(settings: StackSettings, stack: str) -> list[Obj]:
    t = target(settings)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(LITELLM_CONFIG, t.namespace, stack, "frontdoor"),
            "data": {"config.yaml": frontdoor.render_litellm_config(front_door(settings)[0])},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(GATEWAY_CONFIG, t.namespace, stack, "frontdoor"),
            "data": {"nginx.conf": frontdoor.render_gateway_conf(front_door(settings)[1]), **_keepalive_data(settings)},
        },
    ]


KEEPALIVE_DIR = "/opt/coderig-keepalive"  # on PYTHONPATH; the module sits at coderig/runtime/ below it


def _keepalive_files(settings: StackSettings) -> dict[str, str]:
    """ConfigMap key -> path below KEEPALIVE_DIR, for each file the relay runs from (with its wake path)."""
    wake = [f"coderig/runtime/{m}" for m in WAKE_MODULES] if wakes(settings) else []
    return {path.rsplit("/", 1)[1]: path for path in (*RELAY_FILES, *USAGE_SHIPPED, *wake)}


def _keepalive_data(settings: StackSettings) -> dict[str, str]:
    if not front_door(settings)[1].native_relays:
        return {}
    return {key: script_text(key) for key in _keepalive_files(settings)}


def keepalive_container(settings: StackSettings) -> Obj | None:
    """The SSE keepalive relay between nginx and the model Service for the native routes (the pinned
    LiteLLM image has python3; the stdlib module comes from the gateway ConfigMap)."""
    command = counted_relay_command(front_door(settings)[1])  # with per-developer accounting
    if not command:
        return None
    return {
        "name": "keepalive",
        "image": versions.LITELLM_IMAGE,
        "command": command + relay_args(settings),
        "env": env_list({"PYTHONPATH": KEEPALIVE_DIR, "PYTHONDONTWRITEBYTECODE": "1", **relay_env(settings)}),
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "livenessProbe": {"tcpSocket": {"port": engine.KEEPALIVE_PORT}, "periodSeconds": 20, "failureThreshold": 3},
        "securityContext": container_security(read_only_root=True, uid=LITELLM_UID),
        "volumeMounts": [
            {"name": "keepalive-code", "mountPath": KEEPALIVE_DIR, "readOnly": True},
            usage_mount(),
            *([token_mount()] if wakes(settings) else []),
        ],
    }


def frontdoor_streams_per_pod(settings: StackSettings, plan: planner.Plan) -> int:
    """Concurrent streams each front-door pod carries: every model replica's capacity, spread over the
    front-door pods (kube-proxy balances connections across them). At replicas 0, what `coderig start`
    brings back (at least one replica)."""
    t = target(settings)
    total = plan.max_concurrent_requests_per_replica * max(1, t.replicas)
    return math.ceil(total / t.frontDoorReplicas)


def frontdoor_litellm_workers(settings: StackSettings, plan: planner.Plan) -> int:
    return frontdoor.litellm_workers(frontdoor_streams_per_pod(settings, plan))


def _py_exec_probe(url: str) -> list[str]:
    return ["python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"]


def frontdoor_deployment(settings: StackSettings, stack: str, plan: planner.Plan) -> Obj:
    t = target(settings)
    port = settings.gateway.port
    config_sum = checksum({o["metadata"]["name"]: o["data"] for o in frontdoor_configmaps(settings, stack)})
    # Readiness must not depend on the model: at zero replicas the gateway stays Ready and answers 503.
    hello = {"httpGet": {"path": "/api/hello", "port": "https", "scheme": "HTTPS"}}
    gateway: Obj = {
        "name": "gateway",
        "image": versions.NGINX_IMAGE,
        "command": ["nginx", "-c", f"{GATEWAY_CONF_DIR}/nginx.conf"],  # skips the image's entrypoint scripts
        "ports": [{"name": "https", "containerPort": port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "readinessProbe": hello | {"periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": hello | {"periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
        "securityContext": container_security(read_only_root=True, uid=NGINX_UID),
        "volumeMounts": [
            {"name": "gateway-config", "mountPath": GATEWAY_CONF_DIR, "readOnly": True},
            {"name": "gateway-keys", "mountPath": GATEWAY_SECRETS_DIR, "readOnly": True},
            {"name": "tls", "mountPath": GATEWAY_TLS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    liveliness = f"http://{engine.MODEL_HOST}:{engine.LITELLM_PORT}/health/liveliness"
    litellm: Obj = {
        "name": "litellm",
        "image": versions.LITELLM_IMAGE,
        "args": frontdoor.litellm_args(
            f"{LITELLM_CONF_DIR}/config.yaml",
            engine.MODEL_HOST,
            engine.LITELLM_PORT,
            frontdoor_litellm_workers(settings, plan),
        ),
        "env": [
            *env_list({**frontdoor.LITELLM_ENV, "HOME": "/tmp"}),
            secret_env(frontdoor.MASTER_KEY_ENV, SECRET_FRONTDOOR, frontdoor.MASTER_KEY_ENV),
            secret_env(MODEL_API_KEY_ENV, SECRET_FRONTDOOR, MODEL_API_KEY_ENV),
        ],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "startupProbe": {
            "exec": {"command": _py_exec_probe(liveliness)},
            "periodSeconds": 5,
            "timeoutSeconds": 10,
            "failureThreshold": 60,
        },
        "livenessProbe": {
            "exec": {"command": _py_exec_probe(liveliness)},
            "periodSeconds": 30,
            "timeoutSeconds": 10,
            "failureThreshold": 3,
        },
        # LiteLLM rewrites its bundled UI files at start (it logs and continues when it cannot)
        "securityContext": container_security(read_only_root=False, uid=LITELLM_UID),
        "volumeMounts": [
            {"name": "litellm-config", "mountPath": LITELLM_CONF_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    keepalive = keepalive_container(settings)
    waking = keepalive is not None and wakes(settings)
    pod: Obj = {
        **({"serviceAccountName": WAKE} if waking else {}),  # its token: the relay container's volume only
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security(NGINX_UID, fs_group=NGINX_UID),
        # no pod anti-affinity: it outweighs the node preference on a cluster with one general node (met on
        # the real scheduler); the scheduler's default topology spread still spreads over general nodes
        "affinity": {"nodeAffinity": avoid_gpu_nodes(target(settings))},
        "containers": [gateway, litellm, *([keepalive] if keepalive else [])],
        "volumes": [
            {
                "name": "gateway-config",
                "configMap": {"name": GATEWAY_CONFIG, "items": [{"key": "nginx.conf", "path": "nginx.conf"}]},
            },
            *(
                [
                    {
                        "name": "keepalive-code",
                        "configMap": {
                            "name": GATEWAY_CONFIG,
                            "items": [{"key": k, "path": p} for k, p in _keepalive_files(settings).items()],
                        },
                    }
                ]
                if keepalive
                else []
            ),
            {"name": "litellm-config", "configMap": {"name": LITELLM_CONFIG}},
            {
                "name": "gateway-keys",
                "secret": {
                    "secretName": SECRET_FRONTDOOR,
                    "items": [{"key": "gateway-keys.conf", "path": "gateway-keys.conf"}],
                    "defaultMode": 0o440,
                },
            },
            {"name": "tls", "secret": {"secretName": SECRET_TLS, "defaultMode": 0o440}},
            empty_dir("tmp", "1Gi"),
            *([usage_volume(settings)] if keepalive else []),
            *([token_volume()] if waking else []),
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(FRONTDOOR, t.namespace, stack, "frontdoor"),
        "spec": {
            "replicas": t.frontDoorReplicas,
            "selector": {"matchLabels": selector(stack, "frontdoor")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(stack, "frontdoor"),
                    "annotations": {CONFIG_CHECKSUM: config_sum, SECRET_CHECKSUM: ""},
                },
                "spec": pod,
            },
        },
    }


def gateway_service(settings: StackSettings, stack: str) -> Obj:
    t = target(settings)
    spec: Obj = {
        "type": t.serviceType,
        "selector": selector(stack, "frontdoor"),
        "ports": [{"name": "https", "port": GATEWAY_SERVICE_PORT, "targetPort": "https", "protocol": "TCP"}],
    }
    if t.serviceType == "LoadBalancer":
        spec["externalTrafficPolicy"] = "Local"  # keep the client address for the access log
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(GATEWAY, t.namespace, stack, "frontdoor"),
        "spec": spec,
    }


def gateway_ingress(settings: StackSettings, stack: str) -> Obj | None:
    t = target(settings)
    if not t.ingressHost:
        return None
    spec: Obj = {
        "tls": [{"hosts": [t.ingressHost], "secretName": SECRET_TLS}],
        "rules": [
            {
                "host": t.ingressHost,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": GATEWAY, "port": {"name": "https"}}},
                        }
                    ]
                },
            }
        ],
    }
    if t.ingressClass:
        spec["ingressClassName"] = t.ingressClass
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta(GATEWAY, t.namespace, stack, "frontdoor", annotations=dict(STREAMING_INGRESS_ANNOTATIONS)),
        "spec": spec,
    }


def frontdoor_pdb(settings: StackSettings, stack: str) -> Obj:
    t = target(settings)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(FRONTDOOR, t.namespace, stack, "frontdoor"),
        # one at a time: never blocks a node drain, even with a single front-door replica
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(stack, "frontdoor")}},
    }


# --- secrets (Pulumi only) ------------------------------------------------------------------------


def secret_objects(settings: StackSettings, stack: str, secrets: NodeSecrets) -> list[Obj]:
    """The Secrets, from plain values. Pulumi calls this inside an `apply` on secret Outputs and
    registers the result as secret; nothing else (render, logs, outputs) ever sees these values."""
    t = target(settings)
    ns = t.namespace
    out: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": meta(SECRET_MODEL, ns, stack, "model"),
            "stringData": {"VLLM_API_KEY": secrets.model_api_key},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": meta(SECRET_FRONTDOOR, ns, stack, "frontdoor"),
            "stringData": {
                "gateway-keys.conf": frontdoor.render_gateway_keys(
                    dict(secrets.developer_keys), secrets.litellm_master_key, secrets.model_api_key
                ),
                frontdoor.MASTER_KEY_ENV: secrets.litellm_master_key,
                MODEL_API_KEY_ENV: secrets.model_api_key,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": meta(SECRET_TLS, ns, stack, "frontdoor"),
            "stringData": {"tls.crt": secrets.tls_cert, "tls.key": secrets.tls_key},
        },
    ]
    if settings.hfToken is not None:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": meta(SECRET_HF, ns, stack, "weights"),
                "stringData": {"HF_TOKEN": secrets.hf_token},
            }
        )
    return out


def secret_checksums(objs: Iterable[Obj]) -> dict[str, str]:
    return {o["metadata"]["name"]: checksum(o["stringData"]) for o in objs}


def pod_secret_names(obj: Obj) -> list[str]:
    """Secrets a workload's pods read (volumes and env), for its checksum annotation."""
    pod = pod_spec(obj)
    if pod is None:
        return []
    names: set[str] = set()
    for vol in pod.get("volumes", []):
        if "secret" in vol:
            names.add(vol["secret"]["secretName"])
    for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    return sorted(names)


def pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in ("Deployment", "Job"):  # a manifest's kind, not a target kind
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def combined_checksum(names: Sequence[str], sums: Mapping[str, str]) -> str:
    return checksum({n: sums.get(n, "") for n in names})


def with_secret_checksums(objs: list[Obj], sums: Mapping[str, str]) -> list[Obj]:
    """Fill each Deployment's secret-checksum annotation from the Secrets its pods read."""
    for obj in objs:
        ann = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations")
        if ann is not None and SECRET_CHECKSUM in ann:
            ann[SECRET_CHECKSUM] = combined_checksum(pod_secret_names(obj), sums)
    return objs
