"""Wake on request on the kubernetes target: what `coderig:idle` adds to the front-door pod.

The idle reaper (coderig.targets.kubernetes.idle) scales the model Deployment to zero; the front-door
pod's keepalive relay (the one hop to the model Service on every path) then holds each request,
scales the Deployment back (`--wake scale`, coderig.runtime.kube_wake.ScaleWaker), keeps streams
alive meanwhile, and forwards once a model pod is Ready (the Service answers /health again). A wake
that fails, or passes the start budget, ends every held request with an error in the client's shape.

Its API access is its own ServiceAccount `coderig-wake`, whose Role allows exactly get/patch of
`deployments/scale` and get of the Deployment, for the model Deployment by name. The token reaches
the relay container only (a projected volume mounted at the standard service-account path); the pod
does not automount it, so nginx and LiteLLM never see it.
"""

from __future__ import annotations

from coderig.core import budgets, engine
from coderig.core.settings import StackSettings
from coderig.runtime.kube_reaper import SA_DIR
from coderig.targets.kubernetes.manifests import (
    MODEL,
    Obj,
    idle_enabled,
    meta,
    startup_budget_seconds,
    target,
)

WAKE = "coderig-wake"  # ServiceAccount, Role, RoleBinding of the front-door pod's relay
TOKEN_VOLUME = "wake-token"  # noqa: S105 - a volume name
TOKEN_SECONDS = 3600  # the kubelet refreshes a projected token at 80 % of its life
RELAY_CONTROL = f"{engine.MODEL_HOST}:4190"  # the relay's control API (GET /state), in the pod only
# the stdlib modules `--wake scale` imports besides the relay's own (coderig.runtime.*)
WAKE_MODULES = ("relay_wake.py", "wake.py", "kube_wake.py", "kube_reaper.py", "idle.py", "http.py")


def wakes(settings: StackSettings) -> bool:
    """The front door wakes the model: only where something scales it to zero (the idle reaper); a model
    an operator stopped (`coderig stop`) stays stopped and the gateway answers 503 + Retry-After."""
    return idle_enabled(settings)


def start_budget_seconds(settings: StackSettings) -> int:
    """How long a wake may take: the model pod's startup budget plus its image pull (what `pulumi up`
    waits for the Deployment, coderig.targets.kubernetes.manifests.model_deployment)."""
    return startup_budget_seconds(settings) + budgets.IMAGE_PULL_S


def relay_args(settings: StackSettings) -> list[str]:
    """What the relay's command gains: hold and wake by scaling the model Deployment."""
    if not wakes(settings):
        return []
    return [
        "--wake",
        "scale",
        "--control",
        RELAY_CONTROL,
        "--start-budget",
        str(start_budget_seconds(settings)),
        "--served-name",
        settings.model.served_name,
    ]


def relay_env(settings: StackSettings) -> dict[str, str]:
    """The Deployment ScaleWaker.from_env scales (KUBERNETES_SERVICE_HOST/PORT come from the kubelet)."""
    if not wakes(settings):
        return {}
    t = target(settings)
    return {"CODERIG_NAMESPACE": t.namespace, "CODERIG_DEPLOYMENT": MODEL, "CODERIG_REPLICAS": str(max(1, t.replicas))}


def token_volume() -> Obj:
    """The wake account's bound token, the cluster CA and the namespace, as a pod would automount them."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


def token_mount() -> Obj:
    return {"name": TOKEN_VOLUME, "mountPath": str(SA_DIR), "readOnly": True}


def wake_rbac(settings: StackSettings, stack: str) -> list[Obj]:
    """The relay's account: scale the model Deployment back, read whether it is ready; nothing else."""
    if not wakes(settings):
        return []
    ns = target(settings).namespace
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(WAKE, ns, stack, "frontdoor"),
            "automountServiceAccountToken": False,  # projected into the relay container only
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(WAKE, ns, stack, "frontdoor"),
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments/scale"],
                    "resourceNames": [MODEL],
                    "verbs": ["get", "patch"],
                },
                {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [MODEL], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(WAKE, ns, stack, "frontdoor"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WAKE},
            "subjects": [{"kind": "ServiceAccount", "name": WAKE, "namespace": ns}],
        },
    ]
