"""The `coderig:target` settings of kind `aws`: EC2 GPU instances in a region coderig knows."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from coderig.core import budgets, catalog, restart
from coderig.core.frontdoor_machine import AwsFrontDoor, FrontDoorMachine, monthly_cost
from coderig.core.settings_base import Loc, cidr, is_everyone
from coderig.core.target_base import TargetSettings

# Every AWS region name, per partition (aws, aws-cn, aws-us-gov, aws-eusc), as botocore 1.44.5 lists
# them in botocore/data/endpoints.json ("partitions"[].regions; see also
# https://docs.aws.amazon.com/global-infrastructure/latest/regions/aws-regions.html). The isolated
# partitions (us-iso*, eu-isoe) are left out: coderig's AMI lookup and instance types do not exist there.
# tests/core/test_settings.py checks this list against the installed botocore's endpoints.json.
AWS_REGIONS = (
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "cn-north-1",
    "cn-northwest-1",
    "us-gov-east-1",
    "us-gov-west-1",
    "eusc-de-east-1",
)


def _aws_zone_in_region(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """An availability zone is its region's name plus a letter (us-east-1a), or a Local Zone of the
    region (us-east-1-bos-1a)."""
    zone, region = given.get("availabilityZone"), given.get("region", "us-east-1")
    if not isinstance(zone, str) or region not in AWS_REGIONS:
        return []  # an unknown region is its own problem
    if re.fullmatch(re.escape(region) + r"([a-z]|-[a-z]+-\d+[a-z])", zone):
        return []
    return [
        (
            ("availabilityZone",),
            f"got {zone!r}: not a zone of region {region} (coderig:target.region); "
            f"expected {region}a, {region}b, … (see `aws ec2 describe-availability-zones --region {region}`)",
            zone,
        )
    ]


AWS_SUBNET_PREFIX = "10.77.0."  # nodes get .10, .11, … in the subnet coderig creates (10.77.0.0/24)
AWS_FIRST_HOST = 10


def _on(value: Any) -> bool:
    """A flag as given (YAML true, or the string pydantic would take as true)."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "yes", "1"))


def _aws_combinations(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """Keys that do not go together, every one of them, whatever else is wrong (a given-check: it runs
    even when another key fails its own validation)."""
    vpc, subnet, reservation, count = (given.get(k) for k in ("vpcId", "subnetId", "capacityReservationId", "count"))
    both = "set both, or neither for a new minimal VPC"
    out: list[tuple[Loc, str, Any]] = []
    if subnet and not vpc:
        out.append((("vpcId",), f"subnetId is set without vpcId: {both}", None))
    if vpc and not subnet:
        out.append((("subnetId",), f"vpcId is set without subnetId: {both}", None))
    if _on(given.get("spot")) and reservation:
        spot = "spot cannot use capacityReservationId: choose one (reserved capacity is not spot)"
        out.append((("spot",), spot, True))
    if _on(given.get("capacityBlock")) and not reservation:
        out.append((("capacityBlock",), "needs capacityReservationId (the Capacity Block's cr-… id)", True))
    if given.get("frontDoor") is not None and subnet:
        fixed = "needs the subnet coderig creates (fixed link addresses): unset vpcId/subnetId"
        out.append((("frontDoor",), fixed, None))
    if isinstance(count, int) and count > 1 and subnet:
        replicas = (
            f"got {count} with subnetId: replicas need fixed private addresses, which coderig assigns "
            "in a subnet it creates; unset vpcId/subnetId or use count: 1"
        )
        out.append((("count",), replicas, count))
    return out


# The weights volume's throughput coderig.targets.aws.resources.weights_volume provisions at every size
# volumeSizeGb allows (>= 100 GB at 500 IOPS per GiB: >= 50,000 IOPS, over the 8,000 that gp3's
# 2000 MiB/s cap needs at 0.25 MiB/s per IOPS); tests/core/test_restart.py checks the two agree.
WEIGHTS_VOLUME_MIBS = 2000


class AwsTarget(TargetSettings):
    kind: Literal["aws"]
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
    frontDoor: AwsFrontDoor | None = Field(default=None, description="an always-on instance for the gateway")

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
    def weights_read(self) -> restart.ReadRate:
        return restart.gp3(WEIGHTS_VOLUME_MIBS)

    def volume_problems(self, preset: catalog.Preset) -> list[str]:
        size = self.volumeSizeGb
        need = budgets.weights_and_caches_bytes(preset, self.gpus[1]) / 10**9
        if size is None or size >= need:
            return []
        return [
            f"coderig:target.volumeSizeGb: got {size}; the volume holds {preset.weight_bytes / 10**9:.0f} GB of "
            f"{preset.id} weights and its compile caches, {need:.0f} GB (allowed: {math.ceil(need)}..16384; "
            f"unset: {budgets.weights_volume_gb(preset, self.gpus[1])}, with headroom)"
        ]

    @property
    def private_ips(self) -> list[str | None]:
        """One per node: fixed addresses in the subnet coderig creates; None where the subnet assigns one."""
        if self.subnetId:
            return [None] * self.count  # validation allows count 1 only with an existing subnet
        return [f"{AWS_SUBNET_PREFIX}{AWS_FIRST_HOST + i}" for i in range(self.count)]

    @property
    def replica_addresses(self) -> list[str]:
        return [a for a in (self.private_ips if self.frontDoor else self.private_ips[1:]) if a]

    @property
    def front_door_machine(self) -> FrontDoorMachine | None:
        door = self.frontDoor
        return FrontDoorMachine(door.instanceType, monthly_cost(door.instanceType)) if door else None

    @property
    def machine_wake(self) -> dict[str, str] | None:
        """The front door starts this stack's stopped GPU instances (coderig.runtime.aws_wake)."""
        return {"wake": "ec2", "aws-region": self.region} if self.frontDoor else None

    @field_validator("region")
    @classmethod
    def _known_region(cls, v: str) -> str:
        if v not in AWS_REGIONS:
            near = difflib.get_close_matches(v, AWS_REGIONS, n=3)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise ValueError(f"got {v!r}: not an AWS region; {hint}allowed: {', '.join(AWS_REGIONS)}")
        return v

    given_checks = (_aws_zone_in_region, _aws_combinations)

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
