"""Kubernetes stack configs and manifest helpers shared by the kubernetes test files."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from coderig.core import planner
from coderig.core.secrets import placeholder_secrets
from coderig.core.settings import StackSettings
from coderig.targets import parse_settings
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import render as kube_render

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # pulumi's marker of a secret value in mock inputs


def objects_of(s: StackSettings, stack: str) -> list[dict[str, Any]]:
    """Every non-secret object of a kubernetes stack, from its plan (what the program builds)."""
    return kube_render.objects(s, stack, planner.plan_stack(s))


def k8s_config(**target: Any) -> dict[str, Any]:
    """deepseek-v3.2 on 8×H200, two replicas sharing the weights, an Ingress, scale-to-zero."""
    return {
        "target": {
            "kind": "kubernetes",
            "gpu": {"model": "H200", "count": 8},
            "replicas": 2,
            "kubeconfig": "~/.kube/gpu-cluster",
            "context": "prod-gpu",
            "namespace": "coderig-prod",
            "storageClass": "efs-rwx",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
            "ingressHost": "llm.example.com",
            "ingressClass": "nginx",
            **target,
        },
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072},
        "developers": ["alice", "bob"],
        "idle": {"stopAfterMinutes": 45},
        "hfToken": {"secure": "v1:opaque"},
    }


def glm_config() -> dict[str, Any]:
    """glm-4.7 on 4×H200, one replica, ClusterIP, no Ingress, no scale-to-zero."""
    return {
        "target": {"kind": "kubernetes", "gpu": {"model": "H200", "count": 4}, "serviceType": "ClusterIP"},
        "model": {"preset": "glm-4.7"},
        "developers": ["carol"],
    }


PRESETS = {"deepseek-v3.2": k8s_config(), "glm-4.7": glm_config()}


def settings_of(config: dict[str, Any]):
    raw = dict(config)
    if isinstance(raw.get("hfToken"), dict):
        raw["hfToken"] = "opaque"
    return parse_settings(raw)


def by_key(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {kube_render.object_key(o): o for o in objs}


def all_objects(config: dict[str, Any]) -> list[dict[str, Any]]:
    s = settings_of(config)
    secrets = kube_fd.secret_objects(s, "prod", placeholder_secrets(s.developers))
    return kube_fd.with_secret_checksums(objects_of(s, "prod"), kube_fd.secret_checksums(secrets)) + secrets


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


# the served name of the stand-in the kubernetes suites run against (conftest's `standin` fixture)
MODEL = "umans-coder-v0"
STANDIN_DELAY = 0.05


def stream_chat(standin: Any, tokens: int) -> None:
    """One streamed chat request of `tokens` tokens, 50 ms apart (a request in flight for the reapers)."""
    body = json.dumps({
        "model": "umans-coder-v0", "stream": True,
        "messages": [{"role": "user", "content": f"hi [standin tokens={tokens} delay=0.05]"}],
    }).encode()  # fmt: skip
    req = urllib.request.Request(f"{standin.url}/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
