"""The `coderig:target` settings: one pydantic model per target kind, and what differs between the
kinds, declared once on each model (class attributes and properties; the rest of coderig asks these
instead of comparing `kind`)."""

from __future__ import annotations

import difflib
import os
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from coderig.core import catalog, hostkeys
from coderig.core.settings_base import KeyProblem, Loc, Model, cidr, is_everyone

# Every AWS region name, per partition (aws, aws-cn, aws-us-gov, aws-eusc), as botocore 1.44.5 lists
# them in botocore/data/endpoints.json ("partitions"[].regions; see also
# https://docs.aws.amazon.com/global-infrastructure/latest/regions/aws-regions.html). The isolated
# partitions (us-iso*, eu-isoe) are left out: coderig's AMI lookup and instance types do not exist there.
# tests/core/test_settings.py checks this list against the installed botocore's endpoints.json.
AWS_REGIONS = (
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-central-1", "ca-west-1", "eu-central-1",
    "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3",
    "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1", "us-east-1", "us-east-2",
    "us-west-1", "us-west-2",
    "cn-north-1", "cn-northwest-1",
    "us-gov-east-1", "us-gov-west-1",
    "eusc-de-east-1",
)  # fmt: skip
HOST_KEY_HELP = "paste the line printed by `ssh-keyscan -t ed25519 HOST`"


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
            out.append((
                ("hosts", i, "hostKey"),
                f"missing for {address}: refusing to connect to an unpinned host; {HOST_KEY_HELP} "
                "(or, knowingly, set insecureSkipHostKeyCheck: true)",
                None,
            ))  # fmt: skip
        if isinstance(address, str) and address in seen:
            out.append((
                ("hosts", i, "address"),
                f"got {address!r}, already hosts[{seen[address]}].address; list each machine once",
                address,
            ))  # fmt: skip
        elif isinstance(address, str):
            seen[address] = i
    return out


def _external_host_pinned(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    host = given.get("host")
    if isinstance(host, dict) and not host.get("hostKey") and given.get("insecureSkipHostKeyCheck") is not True:
        return [(("host", "hostKey"), f"missing for {host.get('address')}: {HOST_KEY_HELP}", None)]
    return []


def _aws_zone_in_region(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """An availability zone is its region's name plus a letter (us-east-1a), or a Local Zone of the
    region (us-east-1-bos-1a)."""
    zone, region = given.get("availabilityZone"), given.get("region", "us-east-1")
    if not isinstance(zone, str) or region not in AWS_REGIONS:
        return []  # an unknown region is its own problem
    if re.fullmatch(re.escape(region) + r"([a-z]|-[a-z]+-\d+[a-z])", zone):
        return []
    return [(
        ("availabilityZone",),
        f"got {zone!r}: not a zone of region {region} (coderig:target.region); "
        f"expected {region}a, {region}b, … (see `aws ec2 describe-availability-zones --region {region}`)",
        zone,
    )]  # fmt: skip


class GpuSpec(Model):
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


class SshHost(Model):
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


class _Target(Model):
    """What differs between target kinds, declared once per kind (class attributes and properties);
    the rest of coderig asks these instead of comparing `kind`."""

    engines: ClassVar[tuple[str, ...]] = ("vllm", "llama.cpp")  # model servers it can run
    idle_mechanism: ClassVar[str | None] = None  # "stop-instances" | "scale-to-zero" | None
    idle_actions: ClassVar[tuple[str, ...]] = ()  # what coderig:idle.action may choose (ssh, local)
    min_gateway_port: ClassVar[int] = 1
    serves_model: ClassVar[bool] = True  # False: only the front door runs here (external)

    def idle_action_problem(self, action: str, engine: str) -> str | None:
        """Why `coderig:idle.action` cannot be `action` here (None: it can)."""
        if not self.idle_actions:
            does = self.idle_mechanism or "nothing: it runs no model of its own"
            return f"got {action!r}; idle.action is for the ssh and local targets (this target does {does})"
        if action == "stop" and self.replica_count > 1:
            return (
                f"got 'stop' with {self.replica_count} hosts: the reaper on the first host stops its own model "
                "container only; use idle.action: sleep (every host's model sleeps through its link)"
            )
        if action == "sleep" and engine != "vllm":
            return (
                f"got 'sleep', but {engine} has no sleep mode (vLLM's level 1 frees the GPU and keeps the weights "
                "in host RAM); use idle.action: stop (the model container stops, the weights stay on disk)"
            )
        return None

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

    @property
    def warnings(self) -> list[str]:
        """Accepted, but worth a line from `coderig plan` and `pulumi up`."""
        return []


class LocalTarget(_Target):
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


class SshTarget(_Target):
    kind: Literal["ssh"]
    idle_actions: ClassVar[tuple[str, ...]] = ("sleep", "stop")
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

    given_checks = (_ssh_hosts_pinned_and_distinct,)


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

    @field_validator("region")
    @classmethod
    def _known_region(cls, v: str) -> str:
        if v not in AWS_REGIONS:
            near = difflib.get_close_matches(v, AWS_REGIONS, n=3)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise ValueError(f"got {v!r}: not an AWS region; {hint}allowed: {', '.join(AWS_REGIONS)}")
        return v

    given_checks = (_aws_zone_in_region,)

    @property
    def warnings(self) -> list[str]:
        return [
            f"coderig:target.allowedCidrs: {c} lets every address on the internet reach the gateway port "
            "(only developer keys stand in the way); list your offices' or VPN's CIDRs"
            for c in self.allowedCidrs
            if is_everyone(c)
        ]

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
            cidr(c)
        return v

    @field_validator("adminCidr")
    @classmethod
    def _admin(cls, v: str | None) -> str | None:
        return None if v is None else cidr(v)

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
            raise KeyProblem("subnetId", "vpcId is set without subnetId: set both, or neither for a new minimal VPC")
        if self.spot and self.capacityReservationId:
            raise KeyProblem(
                "spot", "spot cannot use capacityReservationId: choose one (reserved capacity is not spot)"
            )
        if self.capacityBlock and not self.capacityReservationId:
            raise KeyProblem("capacityBlock", "needs capacityReservationId (the Capacity Block's cr-… id)")
        if self.count > 1 and self.subnetId:
            raise KeyProblem(
                "count",
                f"got {self.count} with subnetId: replicas need fixed private addresses, which coderig assigns "
                "in a subnet it creates; unset vpcId/subnetId or use count: 1",
            )
        return self


class Toleration(Model):
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
            raise KeyProblem(
                "storageClass",
                f"replicas is {self.replicas}: the replicas share one weights volume, name a ReadWriteMany "
                "storage class (EFS, CephFS, Filestore, NFS); the default class is usually ReadWriteOnce",
            )
        if self.ingressClass and not self.ingressHost:
            raise KeyProblem("ingressClass", "is set without ingressHost: set the host the Ingress serves")
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
        return self

    given_checks = (_external_host_pinned,)


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
