"""The `coderig:target` settings of kind `kubernetes`: manifests on an existing cluster."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from coderig.core import restart
from coderig.core.settings_base import Loc, Model
from coderig.core.target_base import WEIGHTS_READ_HELP, WEIGHTS_READ_KEY, GpuSpec, TargetSettings


def _kubernetes_combinations(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """Keys that do not go together, reported with every other problem."""
    replicas = given.get("replicas")
    out: list[tuple[Loc, str, Any]] = []
    if isinstance(replicas, int) and replicas > 1 and not given.get("storageClass"):
        shared = (
            f"replicas is {replicas}: the replicas share one weights volume, name a ReadWriteMany "
            "storage class (EFS, CephFS, Filestore, NFS); the default class is usually ReadWriteOnce"
        )
        out.append((("storageClass",), shared, None))
    if given.get("ingressClass") and not given.get("ingressHost"):
        out.append((("ingressClass",), "is set without ingressHost: set the host the Ingress serves", None))
    return out


def _dns_label(v: str, what: str) -> str:
    """A Kubernetes name that must be an RFC 1123 label (namespaces, PVCs)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", v):
        raise ValueError(f"got {v!r}; {what} is lowercase letters, digits and '-' (max 63)")
    return v


class Toleration(Model):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesTarget(TargetSettings):
    kind: Literal["kubernetes"]
    engines: ClassVar[tuple[str, ...]] = ("vllm",)
    # the gateway runs as non-root in its pod (the Service still exposes 443)
    min_gateway_port: ClassVar[int] = 1024
    counts_usage: ClassVar[bool] = False  # the front-door pod's relay keeps no usage record yet
    gpu: GpuSpec
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "coderig"
    storageClass: str | None = None
    weightsReadMBps: int | None = Field(default=None, ge=10, le=1_000_000, description=WEIGHTS_READ_HELP)
    replicas: int = Field(default=1, ge=0, le=64)
    frontDoorReplicas: int = Field(default=2, ge=1, le=16)
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    )
    serviceType: Literal["LoadBalancer", "ClusterIP", "NodePort"] = "LoadBalancer"
    ingressHost: str | None = None
    ingressClass: str | None = None
    weightsVolumeName: str = Field(
        default="coderig-weights",
        description="the weights PVC's name; a new name makes a new PVC (the old one is kept, never deleted)",
    )
    usageStorageClass: str | None = Field(
        default=None,
        description="a ReadWriteMany class for the front door's usage record (default: storageClass when "
        "replicas > 1, whose weights claim is ReadWriteMany already; else the record lives in the pod)",
    )

    @property
    def replica_count(self) -> int:
        return self.replicas

    @property
    def weights_read(self) -> restart.ReadRate:
        return restart.pvc(self.weightsReadMBps, WEIGHTS_READ_KEY, self.storageClass)

    _namespace = field_validator("namespace")(lambda v: _dns_label(v, "a namespace"))
    _pvc_name = field_validator("weightsVolumeName")(lambda v: _dns_label(v, "a PVC name"))

    given_checks = (_kubernetes_combinations,)
