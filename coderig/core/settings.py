"""Stack settings: the whole `coderig:` config namespace as pydantic models.

The Pulumi program reads these keys from Pulumi config; `coderig plan` / `coderig render` read the
same keys from a `Pulumi.<stack>.yaml` file. Both go through `parse_settings`, so validation and
its messages are identical. Every error names the key path (`coderig:target.gpu.count`), what was
given and what is allowed.

Secrets (`coderig:sshPrivateKey`, `coderig:hfToken`, …) are never needed to plan or render: in a
stack file they are `{secure: v1:…}` and are kept as the opaque `SECRET` marker.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from coderig.core import catalog, hostkeys, sizing
from coderig.core.errors import UserError
from coderig.runtime import idle

NAMESPACE = "coderig"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Secret:
    """A config value that is present but encrypted in the stack file (`secure: v1:…`)."""

    def __repr__(self) -> str:
        return "[secret]"


SECRET = Secret()

# Keys whose values are secrets. They are top-level so `pulumi config set --secret` works on them.
SECRET_KEYS = ("sshPrivateKey", "hfToken", "tlsCertificate", "tlsPrivateKey", "externalApiKey")


class GpuSpec(_Model):
    model: str = Field(description="GPU model on each host, e.g. H100, H200, B200")
    count: int = Field(description="GPUs per host used by the model server")

    @field_validator("model")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        gpu = catalog.GPUS.get(v.upper())
        if gpu is None:
            raise ValueError(f"unknown GPU model {v!r}; allowed: {', '.join(catalog.GPUS)}")
        return gpu.name

    @field_validator("count")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"got {v}; a host needs at least 1 GPU (allowed: 1, 2, 4, 8)")
        if v not in (1, 2, 4, 8):
            raise ValueError(f"got {v}; tensor parallelism splits attention heads evenly, use 1, 2, 4 or 8")
        return v


class SshHost(_Model):
    address: str
    user: str = "ubuntu"
    port: int = Field(default=22, ge=1, le=65535)
    hostKey: str | None = Field(
        default=None, description="the host's public key line, e.g. 'ssh-ed25519 AAAA…' (ssh-keyscan)"
    )
    cacheDevice: str | None = Field(
        default=None, description="block device for the weights cache, formatted only if blank"
    )

    @field_validator("hostKey")
    @classmethod
    def _key_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        kind, key = hostkeys.parse_host_key(v)
        return f"{kind} {key}"


def _check_cache_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"got {v!r}; the weights cache path must be absolute, e.g. /var/lib/coderig")
    return v


NODE_CACHE_PATH = "/var/lib/coderig"  # the weights cache on a machine coderig prepares (ssh, aws)


class _Target(_Model):
    """What differs between target kinds, declared once per kind (class attributes and properties);
    the rest of coderig asks these instead of comparing `kind`."""

    engines: ClassVar[tuple[str, ...]] = ("vllm", "llama.cpp")  # model servers it can run
    idle_mechanism: ClassVar[str | None] = None  # "stop-instances" | "scale-to-zero" | None
    min_gateway_port: ClassVar[int] = 1
    serves_model: ClassVar[bool] = True  # False: only the front door runs here (external)

    @property
    def gpu_spec(self) -> GpuSpec | None:
        """GPUs of one model replica as the stack file gives them (None: CPU or not ours to size)."""
        return getattr(self, "gpu", None)

    @property
    def gpus(self) -> tuple[str | None, int]:
        """(GPU model, GPUs per replica) the planner sizes for."""
        g = self.gpu_spec
        return (g.model, g.count) if g else (None, 0)

    @property
    def replica_count(self) -> int:
        """Model replicas (each on `gpus`)."""
        return 1

    @property
    def instance_type(self) -> str | None:
        return None

    @property
    def over_ssh(self) -> bool:
        """`pulumi up` reaches the machines over SSH with coderig:sshPrivateKey."""
        return False

    @property
    def runs_locally(self) -> bool:
        """The stack runs on the machine that runs `pulumi up` (no install step, no sudo)."""
        return False

    @property
    def node_cache_path(self) -> str:
        return NODE_CACHE_PATH

    @property
    def replica_addresses(self) -> list[str]:
        """Private addresses of the model replicas after the first machine (compose-based targets)."""
        return []


class LocalTarget(_Target):
    kind: Literal["local"]
    gpu: GpuSpec | None = Field(default=None, description="GPUs on this machine; omit for CPU (llama.cpp)")
    cachePath: str = "~/.cache/coderig"

    @property
    def runs_locally(self) -> bool:
        return True

    @property
    def node_cache_path(self) -> str:
        return os.path.expanduser(self.cachePath)


class SshTarget(_Target):
    kind: Literal["ssh"]
    hosts: list[SshHost] = Field(min_length=1)
    gpu: GpuSpec | None = None
    cachePath: str = NODE_CACHE_PATH
    insecureSkipHostKeyCheck: bool = False

    _cache = field_validator("cachePath")(_check_cache_path)

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
        return [h.address for h in self.hosts[1:]]

    @model_validator(mode="after")
    def _pinned(self) -> SshTarget:
        if not self.insecureSkipHostKeyCheck:
            for i, h in enumerate(self.hosts):
                if not h.hostKey:
                    raise _KeyError(
                        f"hosts[{i}].hostKey",
                        f"missing for {h.address}: refusing to connect to an unpinned host; paste the line "
                        "printed by `ssh-keyscan -t ed25519 HOST` (or, knowingly, set insecureSkipHostKeyCheck: true)",
                    )
        addresses = [h.address for h in self.hosts]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"hosts lists an address twice: {addresses}")
        return self


AWS_SUBNET_PREFIX = "10.77.0."  # nodes get .10, .11, … in the subnet coderig creates (10.77.0.0/24)
AWS_FIRST_HOST = 10


class AwsTarget(_Target):
    kind: Literal["aws"]
    idle_mechanism: ClassVar[str | None] = "stop-instances"
    instanceType: str
    count: int = Field(default=1, ge=1, le=16)
    region: str = "us-east-1"
    availabilityZone: str | None = None
    vpcId: str | None = None
    subnetId: str | None = None
    ami: str | None = Field(default=None, description="override the Deep Learning Base GPU AMI lookup")
    allowedCidrs: list[str] = Field(default_factory=list, description="who may reach the gateway port")
    adminCidr: str | None = Field(default=None, description="who may SSH in; none when unset")
    retainWeights: bool = True
    capacityReservationId: str | None = Field(default=None, description="cr-…: an On-Demand Capacity Reservation")
    capacityBlock: bool = Field(default=False, description="capacityReservationId is a Capacity Block for ML")
    spot: bool = Field(default=False, description="spot capacity, stopped (not terminated) on interruption")
    volumeSizeGb: int | None = Field(default=None, ge=100, le=16384)

    @property
    def gpus(self) -> tuple[str | None, int]:
        inst = catalog.AWS_INSTANCES[self.instanceType]
        return inst.gpu, inst.gpu_count

    @property
    def replica_count(self) -> int:
        return self.count

    @property
    def instance_type(self) -> str | None:
        return self.instanceType

    @property
    def private_ips(self) -> list[str | None]:
        """One per node: fixed addresses in the subnet coderig creates; None where the subnet assigns one."""
        if self.subnetId:
            return [None] * self.count  # validation allows count 1 only with an existing subnet
        return [f"{AWS_SUBNET_PREFIX}{AWS_FIRST_HOST + i}" for i in range(self.count)]

    @property
    def replica_addresses(self) -> list[str]:
        return [a for a in self.private_ips[1:] if a]

    @field_validator("instanceType")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in catalog.AWS_INSTANCES:
            raise ValueError(f"unknown instance type {v!r}; allowed: {', '.join(catalog.AWS_INSTANCES)}")
        return v

    @field_validator("allowedCidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            _cidr(c)
        return v

    @field_validator("adminCidr")
    @classmethod
    def _admin(cls, v: str | None) -> str | None:
        return None if v is None else _cidr(v)

    @field_validator("capacityReservationId")
    @classmethod
    def _cr_id(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"cr-[0-9a-f]{8,17}", v):
            raise ValueError(f"got {v!r}; expected a capacity reservation id like cr-0123456789abcdef0")
        return v

    @model_validator(mode="after")
    def _subnet_needs_vpc(self) -> AwsTarget:
        if self.subnetId and not self.vpcId:
            raise ValueError("subnetId is set without vpcId: set both, or neither for a new minimal VPC")
        if self.vpcId and not self.subnetId:
            raise _KeyError("subnetId", "vpcId is set without subnetId: set both, or neither for a new minimal VPC")
        if self.spot and self.capacityReservationId:
            raise _KeyError("spot", "spot cannot use capacityReservationId: choose one (reserved capacity is not spot)")
        if self.capacityBlock and not self.capacityReservationId:
            raise _KeyError("capacityBlock", "needs capacityReservationId (the Capacity Block's cr-… id)")
        if self.count > 1 and self.subnetId:
            raise _KeyError(
                "count",
                f"got {self.count} with subnetId: replicas need fixed private addresses, which coderig assigns "
                "in a subnet it creates; unset vpcId/subnetId or use count: 1",
            )
        return self


def _cidr(c: str) -> str:
    try:
        ipaddress.ip_network(c, strict=False)
    except ValueError:
        raise ValueError(f"{c!r} is not a CIDR like 203.0.113.0/24") from None
    return c


class Toleration(_Model):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesTarget(_Target):
    kind: Literal["kubernetes"]
    engines: ClassVar[tuple[str, ...]] = ("vllm",)
    idle_mechanism: ClassVar[str | None] = "scale-to-zero"
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

    @model_validator(mode="after")
    def _shared_weights(self) -> KubernetesTarget:
        if self.replicas > 1 and not self.storageClass:
            raise _KeyError(
                "storageClass",
                f"replicas is {self.replicas}: the replicas share one weights volume, name a ReadWriteMany "
                "storage class (EFS, CephFS, Filestore, NFS); the default class is usually ReadWriteOnce",
            )
        if self.ingressClass and not self.ingressHost:
            raise _KeyError("ingressClass", "is set without ingressHost: set the host the Ingress serves")
        return self


# Every OpenAI-compatible server answers GET /v1/models once its model is loaded; /health is vLLM's
# own (KServe and others have none), so it is not the default for an endpoint we do not run.
EXTERNAL_HEALTH_PATH = "/v1/models"


class ExternalTarget(_Target):
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

    @model_validator(mode="after")
    def _host_for_ssh(self) -> ExternalTarget:
        if self.frontDoor == "ssh" and self.host is None:
            raise ValueError("frontDoor is ssh but host is not set: add host: {address, user, hostKey}")
        if self.host and not self.host.hostKey and not self.insecureSkipHostKeyCheck:
            raise ValueError("host.hostKey is missing: paste `ssh-keyscan -t ed25519 HOST` output")
        return self


Target = Annotated[
    LocalTarget | SshTarget | AwsTarget | KubernetesTarget | ExternalTarget,
    Field(discriminator="kind"),
]
# kind -> its settings model: the one list of target kinds (the registry and stacks cover exactly these)
TARGET_MODELS: dict[str, type[_Target]] = {
    cls.model_fields["kind"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (LocalTarget, SshTarget, AwsTarget, KubernetesTarget, ExternalTarget)
}
TARGET_KINDS = tuple(TARGET_MODELS)


class ModelSettings(_Model):
    preset: str
    servedName: str | None = None
    maxModelLen: int | None = None
    kvCacheDtype: Literal["fp8", "auto", "bf16"] = "fp8"
    gpuMemoryUtilization: float = Field(default=0.90, gt=0.1, le=0.98)
    maxOutputTokens: int | None = Field(default=None, ge=256)
    extraArgs: list[str] = Field(default_factory=list, description="extra model-server flags, appended")
    parallel: sizing.ParallelSettings | None = Field(default=None, description="override the planned layout")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in catalog.PRESETS:
            raise ValueError(f"unknown preset {v!r}; allowed: {', '.join(catalog.PRESETS)}")
        return v

    @field_validator("servedName")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", v):
            raise ValueError(f"got {v!r}; use letters, digits, '.', '_', ':' or '-' (max 64)")
        return v

    @model_validator(mode="after")
    def _len_within_preset(self) -> ModelSettings:
        preset = catalog.PRESETS[self.preset]
        if self.maxModelLen is not None and not 1 <= self.maxModelLen <= preset.max_context:
            raise _KeyError(
                "maxModelLen",
                f"got {self.maxModelLen}; {self.preset} allows 1..{preset.max_context} tokens",
            )
        if self.maxOutputTokens is not None and self.maxOutputTokens >= self.max_model_len:
            raise _KeyError(
                "maxOutputTokens",
                f"got {self.maxOutputTokens}; it must be below maxModelLen ({self.max_model_len})",
            )
        return self

    @property
    def spec(self) -> catalog.Preset:
        return catalog.PRESETS[self.preset]

    @property
    def served_name(self) -> str:
        return self.servedName or self.spec.served_name

    @property
    def max_model_len(self) -> int:
        return self.maxModelLen or self.spec.default_context

    @property
    def max_output_tokens(self) -> int:
        """Output cap sent to clients: the preset's default, never more than a quarter of the context."""
        if self.maxOutputTokens is not None:
            return self.maxOutputTokens
        return min(self.spec.default_max_tokens, self.max_model_len // 4)


class OfficeHours(_Model):
    timezone: str = "UTC"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"]
    )
    start: str = "08:00"
    end: str = "19:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"got {v!r}; expected HH:MM (24h)")
        return v

    @model_validator(mode="after")
    def _window(self) -> OfficeHours:
        """The reaper's own schedule type decides what a usable window is (one rule, two callers:
        this validation and the Lambda / CronJob, which cannot import pydantic)."""
        try:
            idle.OfficeHours.from_dict(self.model_dump())
        except idle.ScheduleError as exc:
            key, _, why = str(exc).partition(": ")
            if key not in type(self).model_fields:
                key, why = "end", str(exc)
            raise _KeyError(key, why) from None
        return self


class IdlePolicy(_Model):
    stopAfterMinutes: int | None = Field(default=None, ge=5, le=7 * 24 * 60)
    officeHours: OfficeHours | None = None
    dryRun: bool = False

    @property
    def enabled(self) -> bool:
        """A reaper runs when the stack has an idle policy: stopAfterMinutes, officeHours, or both."""
        return self.stopAfterMinutes is not None or self.officeHours is not None

    @property
    def stop_after_minutes(self) -> int:
        """The idle window; with office hours alone, the reapers' default outside the hours."""
        return self.stopAfterMinutes or idle.DEFAULT_STOP_AFTER_MINUTES

    def schedule(self) -> idle.OfficeHours | None:
        """The office hours as the reapers' own type (what they receive through the environment)."""
        return None if self.officeHours is None else idle.OfficeHours.from_dict(self.officeHours.model_dump())


class GatewaySettings(_Model):
    port: int = Field(default=8443, ge=1, le=65535)
    rateLimitPerMinute: int = Field(default=600, ge=1)
    hostnames: list[str] = Field(default_factory=list, description="extra DNS names for the certificate")

    @property
    def rate_per_second(self) -> int:
        """The gateway's per-developer sustained rate (nginx limit_req counts per second)."""
        return max(1, math.ceil(self.rateLimitPerMinute / 60))


DEVELOPER_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class StackSettings(_Model):
    target: Target
    model: ModelSettings
    developers: list[str] = Field(default_factory=list)
    idle: IdlePolicy = Field(default_factory=IdlePolicy)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    environment: str | None = Field(default=None, description="tag value; defaults to the stack name")
    workload: sizing.WorkloadSettings | None = None
    # secrets: only their presence matters here
    sshPrivateKey: Any = None
    hfToken: Any = None
    tlsCertificate: Any = None
    tlsPrivateKey: Any = None
    externalApiKey: Any = None

    @field_validator("developers")
    @classmethod
    def _developers(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in v:
            if not DEVELOPER_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid name; use lowercase letters, digits, '.', '_', '-'")
            if name in seen:
                raise ValueError(f"{name!r} is listed twice; each developer gets exactly one key")
            seen.add(name)
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> StackSettings:
        t = self.target
        if (self.tlsCertificate is None) != (self.tlsPrivateKey is None):
            raise _KeyError("tlsCertificate", "set both tlsCertificate and tlsPrivateKey (secrets), or neither")
        if t.over_ssh and self.sshPrivateKey is None:
            raise _KeyError(
                "sshPrivateKey",
                f"the {t.kind} target connects over SSH and needs it: "
                "`pulumi config set --secret coderig:sshPrivateKey < KEY`",
            )
        engine = self.model.spec.engine
        if t.serves_model and engine not in t.engines:
            # what this target cannot run: refused here, so `coderig plan` says so (not `pulumi up`)
            allowed = ", ".join(name for name, p in catalog.PRESETS.items() if p.engine in t.engines)
            raise _KeyError(
                "model.preset",
                f"{self.model.preset} runs on {engine}; the {t.kind} target runs {', '.join(t.engines)} presets "
                f"(allowed: {allowed}; use the local target for the CPU preset)",
            )
        if self.gateway.port < t.min_gateway_port:
            raise _KeyError(
                "gateway.port",
                f"got {self.gateway.port}; on the {t.kind} target the gateway runs as non-root and listens "
                f"on a port >= {t.min_gateway_port} (allowed: {t.min_gateway_port}-65535; "
                "its Service still exposes 443)",
            )
        gpu = t.gpu_spec
        if t.serves_model and engine == "vllm" and t.gpus[0] is None:
            raise _KeyError(
                "target.gpu",
                f"preset {self.model.preset} runs on vLLM and needs GPUs: set target.gpu: {{model: H200, count: 8}}",
            )
        heads = self.model.spec.attention.attention_heads
        if gpu is not None and heads % gpu.count:
            raise _KeyError(
                "target.gpu.count",
                f"got {gpu.count}; tensor parallelism must divide {self.model.preset}'s {heads} attention heads",
            )
        return self


class _KeyError(ValueError):
    """A model-level problem that belongs to one sub-key (so the message can name it)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


_TOP_KEYS = set(StackSettings.model_fields)


def _key_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item in TARGET_KINDS and parts and parts[-1] == "target":
            continue  # the discriminated-union branch name is not a key
        elif isinstance(item, str) and item.startswith(("function-", "list[", "dict[")):
            continue
        else:
            parts.append(str(item))
    return f"{NAMESPACE}:" + ".".join(parts)


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    msg = str(err.get("msg", ""))
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyError):
        loc = (*loc, *ctx_err.key.split("."))
        msg = str(ctx_err).split(": ", 1)[1]
    else:
        msg = msg.removeprefix("Value error, ")
    path = _key_path(loc)
    given = err.get("input")
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(parent)
        return f"{path}: unknown key; allowed here: {', '.join(sorted(allowed))}"
    if kind == "union_tag_invalid":
        return f"{_key_path((*loc, 'kind'))}: got {err['ctx']['tag']!r}; allowed: {', '.join(TARGET_KINDS)}"
    if kind == "union_tag_not_found":
        return f"{_key_path((*loc, 'kind'))}: missing; allowed: {', '.join(TARGET_KINDS)}"
    if kind == "missing":
        return f"{path}: required but not set"
    if kind == "literal_error":
        return f"{path}: got {given!r}; {msg.lower()}"
    if kind.endswith(("_type", "_parsing")) or kind in ("greater_than_equal", "less_than_equal", "greater_than"):
        return f"{path}: got {given!r}; {msg.lower()}"
    return f"{path}: {msg}"


def _allowed_keys(loc: tuple[Any, ...]) -> set[str]:
    model: Any = StackSettings
    for item in loc:
        if item in TARGET_MODELS:
            model = TARGET_MODELS[item]
            continue
        if isinstance(item, int):
            continue
        field = model.model_fields.get(item) if hasattr(model, "model_fields") else None
        if field is None:
            return set()
        model = _inner_model(field.annotation)
    return set(model.model_fields) if hasattr(model, "model_fields") else set()


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def parse_settings(raw: dict[str, Any]) -> StackSettings:
    """Validate the `coderig:` namespace (keys without the prefix). Raises UserError."""
    problems: list[str] = []
    unknown = sorted(set(raw) - _TOP_KEYS)
    for key in unknown:
        problems.append(f"{NAMESPACE}:{key}: unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    known = {k: v for k, v in raw.items() if k in _TOP_KEYS}
    try:
        settings = StackSettings.model_validate(known)
    except ValidationError as exc:
        problems.extend(_format_error(dict(e)) for e in exc.errors())
        raise UserError(problems) from None
    m = settings.model
    problems.extend(sizing.problems(
        preset=m.spec, serves_model=settings.target.serves_model, gpus=settings.target.gpus,
        max_model_len=m.max_model_len, parallel=m.parallel, workload=settings.workload,
        developers=len(settings.developers),
    ))  # fmt: skip
    if problems:
        raise UserError(problems)
    return settings


def _opaque_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET
        return {k: _opaque_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_opaque_secrets(v) for v in value]
    return value


def namespace_from_stack_file(data: dict[str, Any]) -> dict[str, Any]:
    """The `coderig:` keys of a parsed `Pulumi.<stack>.yaml`, prefix stripped, secrets opaque."""
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise UserError(["config: expected a mapping of keys to values"])
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in config.items():
        ns, sep, name = str(key).partition(":")
        if not sep:
            problems.append(f"{key}: config keys need a namespace, e.g. {NAMESPACE}:{key}")
            continue
        if ns != NAMESPACE:
            continue  # aws:region, kubernetes:context… belong to providers
        out[name] = _opaque_secrets(value)
    if problems:
        raise UserError(problems)
    return out


def load_stack_file(path: str | Path) -> StackSettings:
    """Read and validate `Pulumi.<stack>.yaml`, the file `coderig plan/render` take."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise UserError([f"{p}: no such file (expected a Pulumi.<stack>.yaml)"]) from None
    except yaml.YAMLError as exc:
        raise UserError([f"{p}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise UserError([f"{p}: expected a mapping with a config: section"])
    return parse_settings(namespace_from_stack_file(data))


def stack_name_from_path(path: str | Path) -> str:
    name = Path(path).name
    m = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", name)
    return m.group(1) if m else Path(path).stem
