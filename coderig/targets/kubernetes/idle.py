"""The kubernetes target's scale-to-zero objects: the reaper CronJob, its code, state and RBAC."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping

from coderig.core import engine, versions
from coderig.core.settings import StackSettings
from coderig.runtime import idle
from coderig.targets.kubernetes.manifests import (
    IDLE,
    IDLE_CODE,
    IDLE_STATE,
    MODEL,
    MODEL_PODS,
    PYTHON_UID,
    Obj,
    container_security,
    env_list,
    idle_period_seconds,
    labels,
    meta,
    pod_security,
    target,
)

# --- idle: scale to zero --------------------------------------------------------------------------


def idle_env(settings: StackSettings, stack: str) -> dict[str, str]:
    t = target(settings)
    return {
        "CODERIG_STACK": stack,
        "CODERIG_NAMESPACE": t.namespace,
        "CODERIG_DEPLOYMENT": MODEL,
        "CODERIG_METRICS_HOST": f"{MODEL_PODS}.{t.namespace}.svc.cluster.local",
        "CODERIG_METRICS_PORT": str(engine.MODEL_PORT),
        "CODERIG_MODEL_NAME": settings.model.served_name,
        "CODERIG_STATE_CONFIGMAP": IDLE_STATE,
        "CODERIG_STOP_AFTER_MINUTES": str(settings.idle.stop_after_minutes),
        "CODERIG_PERIOD_SECONDS": str(idle_period_seconds(settings)),
        **idle.policy_env(settings.idle.schedule(), settings.idle.dryRun),
        "CODERIG_REPLICAS": str(t.replicas),
    }


def idle_code_configmap(settings: StackSettings, stack: str, sources: Mapping[str, str]) -> Obj:
    """The reaper's code (stdlib only), mounted as the `coderig.runtime` package."""
    t = target(settings)
    data = dict(sorted(sources.items()))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(IDLE_CODE, t.namespace, stack, "idle"),
        "data": data,
    }


def idle_state_configmap(settings: StackSettings, stack: str) -> Obj:
    t = target(settings)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(IDLE_STATE, t.namespace, stack, "idle"),
        "data": {"state.json": "{}"},  # written by the reaper; Pulumi creates it and then ignores data
    }


def idle_rbac(settings: StackSettings, stack: str) -> list[Obj]:
    t = target(settings)
    ns = t.namespace
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(IDLE, ns, stack, "idle"),
            "automountServiceAccountToken": False,  # mounted only into the reaper's pod
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(IDLE, ns, stack, "idle"),
            "rules": [
                # scale the model server, nothing else
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments/scale"],
                    "resourceNames": [MODEL],
                    "verbs": ["get", "patch", "update"],
                },
                # read its ready replicas (a rollout in progress is never "idle")
                {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [MODEL], "verbs": ["get"]},
                # its own counters between runs
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [IDLE_STATE],
                    "verbs": ["get", "patch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(IDLE, ns, stack, "idle"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": IDLE},
            "subjects": [{"kind": "ServiceAccount", "name": IDLE, "namespace": ns}],
        },
    ]


def idle_cronjob(settings: StackSettings, stack: str) -> Obj:
    t = target(settings)
    period = idle_period_seconds(settings)
    schedule = "* * * * *" if period == 60 else f"*/{period // 60} * * * *"
    pod: Obj = {
        "serviceAccountName": IDLE,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": pod_security(PYTHON_UID),
        "containers": [
            {
                "name": "reaper",
                "image": versions.PYTHON_IMAGE,
                "command": ["python", "-m", "coderig.runtime.kube_reaper", "reap"],
                "env": env_list(
                    idle_env(settings, stack) | {"PYTHONPATH": "/opt/coderig", "PYTHONDONTWRITEBYTECODE": "1"}
                ),
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "securityContext": container_security(read_only_root=True),
                "volumeMounts": [{"name": "code", "mountPath": RUNTIME_MOUNT, "readOnly": True}],
            }
        ],
        "volumes": [{"name": "code", "configMap": {"name": IDLE_CODE}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta(IDLE, t.namespace, stack, "idle"),
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 120,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 120,
                    "template": {"metadata": {"labels": labels(stack, "idle")}, "spec": pod},
                }
            },
        },
    }


RUNTIME_MOUNT = "/opt/coderig/coderig/runtime"  # `coderig` is a namespace package there
SHIPPED = ("__init__.py", "http.py", "idle.py", "kube_reaper.py")


def idle_sources() -> dict[str, str]:
    """The reaper's code: the stdlib-only modules of `coderig/runtime/` it imports."""
    pkg = importlib.resources.files("coderig.runtime")
    return {name: (pkg / name).read_text() for name in SHIPPED}
