"""The `coderig:target` settings: one pydantic model per target kind, and what differs between the
kinds, declared once on each model (class attributes and properties; the rest of coderig asks these
instead of comparing `kind`)."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, field_validator

from coderig.core.aws_settings import AwsTarget
from coderig.core.frontdoor_machine import FrontDoorMachine, ssh_front_door_checks
from coderig.core.settings_base import Loc, Model
from coderig.core.target_base import HOST_KEY_HELP, NODE_CACHE_PATH, GpuSpec, SshHost, TargetSettings, check_cache_path


def _ssh_hosts_pinned_and_distinct(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """Every host without a pinned key, and every address listed twice, whatever else is wrong."""
    hosts = given.get("hosts")
    if not isinstance(hosts, list):
        return []
    out: list[tuple[Loc, str, Any]] = []
    seen: dict[str, int] = {}
    for i, h in enumerate(hosts):
        if not isinstance(h, dict):
            continue
        address = h.get("address")
        if not h.get("hostKey") and given.get("insecureSkipHostKeyCheck") is not True:
            out.append(
                (
                    ("hosts", i, "hostKey"),
                    f"missing for {address}: refusing to connect to an unpinned host; {HOST_KEY_HELP} "
                    "(or, knowingly, set insecureSkipHostKeyCheck: true)",
                    None,
                )
            )
        if isinstance(address, str) and address in seen:
            out.append(
                (
                    ("hosts", i, "address"),
                    f"got {address!r}, already hosts[{seen[address]}].address; list each machine once",
                    address,
                )
            )
        elif isinstance(address, str):
            seen[address] = i
    return out


def _external_host_pinned(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    host = given.get("host")
    if isinstance(host, dict) and not host.get("hostKey") and given.get("insecureSkipHostKeyCheck") is not True:
        return [(("host", "hostKey"), f"missing for {host.get('address')}: {HOST_KEY_HELP}", None)]
    return []


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


def _external_host_for_ssh(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    if given.get("frontDoor") == "ssh" and given.get("host") is None:
        return [(("host",), "frontDoor is ssh but host is not set: add host: {address, user, hostKey}", None)]
    return []


class LocalTarget(TargetSettings):
    kind: Literal["local"]
    idle_actions: ClassVar[tuple[str, ...]] = ("sleep", "stop")
    gpu: GpuSpec | None = Field(default=None, description="GPUs on this machine; omit for CPU (llama.cpp)")
    cachePath: str = "~/.cache/coderig"

    @property
    def runs_locally(self) -> bool:
        return True

    @property
    def node_cache_path(self) -> str:
        return os.path.expanduser(self.cachePath)


class SshTarget(TargetSettings):
    kind: Literal["ssh"]
    idle_actions: ClassVar[tuple[str, ...]] = ("sleep", "stop")
    hosts: list[SshHost] = Field(min_length=1)
    gpu: GpuSpec | None = None
    cachePath: str = NODE_CACHE_PATH
    insecureSkipHostKeyCheck: bool = False
    frontDoor: SshHost | None = Field(default=None, description="a small always-on host for the gateway")

    _cache = field_validator("cachePath")(check_cache_path)

    @property
    def replica_count(self) -> int:
        return len(self.hosts)

    @property
    def over_ssh(self) -> bool:
        return True

    @property
    def node_cache_path(self) -> str:
        return self.cachePath

    @property
    def replica_addresses(self) -> list[str]:
        return [h.address for h in (self.hosts if self.frontDoor else self.hosts[1:])]

    @property
    def front_door_machine(self) -> FrontDoorMachine | None:
        return FrontDoorMachine(self.frontDoor.address, None) if self.frontDoor else None

    given_checks = (_ssh_hosts_pinned_and_distinct, ssh_front_door_checks)


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
    gpu: GpuSpec
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "coderig"
    storageClass: str | None = None
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

    @field_validator("namespace")
    @classmethod
    def _k8s_namespace(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError(f"got {v!r}; a namespace is lowercase letters, digits and '-' (max 63)")
        return v

    @field_validator("weightsVolumeName")
    @classmethod
    def _k8s_pvc_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError(f"got {v!r}; a PVC name is lowercase letters, digits and '-' (max 63)")
        return v

    given_checks = (_kubernetes_combinations,)


# Every OpenAI-compatible server answers GET /v1/models once its model is loaded; /health is vLLM's
# own (KServe and others have none), so it is not the default for an endpoint we do not run.
EXTERNAL_HEALTH_PATH = "/v1/models"


class ExternalTarget(TargetSettings):
    kind: Literal["external"]
    serves_model: ClassVar[bool] = False
    endpoint: str = Field(description="OpenAI-compatible base URL ending in /v1")
    frontDoor: Literal["local", "ssh"] = "local"
    host: SshHost | None = Field(default=None, description="where the front door runs when frontDoor is ssh")
    insecureSkipHostKeyCheck: bool = False
    healthPath: str = Field(
        default=EXTERNAL_HEALTH_PATH,
        description="what the gateway's /healthz asks the endpoint: a path on its URL without the trailing /v1",
    )

    @field_validator("healthPath")
    @classmethod
    def _path(cls, v: str) -> str:
        if not re.match(r"^/[^\s?#]*$", v):
            raise ValueError(f"got {v!r}; expected a path starting with / such as /v1/models or /health")
        return v

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/.*)?$", v):
            raise ValueError(f"got {v!r}; expected an http(s) URL like https://llm.internal/v1")
        return v.rstrip("/")

    @property
    def gpus(self) -> tuple[str | None, int]:
        return None, 0

    @property
    def over_ssh(self) -> bool:
        return self.frontDoor == "ssh"

    @property
    def runs_locally(self) -> bool:
        return self.frontDoor == "local"

    given_checks = (_external_host_pinned, _external_host_for_ssh)


Target = Annotated[
    LocalTarget | SshTarget | AwsTarget | KubernetesTarget | ExternalTarget,
    Field(discriminator="kind"),
]
# kind -> its settings model, read off the union above (the one list of kinds validation knows);
# the registry (coderig.targets.REGISTRY) has one entry per kind and holds the same model class
TARGET_MODELS: dict[str, type[TargetSettings]] = {
    get_args(cls.model_fields["kind"].annotation)[0]: cls for cls in get_args(get_args(Target)[0])
}
TARGET_KINDS = tuple(TARGET_MODELS)
