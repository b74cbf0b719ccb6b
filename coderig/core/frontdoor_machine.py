"""The front-door machine: a small always-on machine that holds the gateway, the developer keys and
the reaper, with the GPU machines behind the mutual-TLS replica links. Set under `coderig:target`:

    aws:  frontDoor: {instanceType: t3.medium}
    ssh:  frontDoor: {address: 10.0.0.4, user: ubuntu, hostKey: "ssh-ed25519 AAAA…"}

Unset (the default, and every existing stack): the first GPU machine is the front door, as before.
What it costs always on is stated by the plan (`monthly_cost`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from coderig.core.settings_base import Loc, Model

HOURS_PER_MONTH = 730  # AWS's own monthly figure (365 × 24 / 12) on its pricing pages


@dataclass(frozen=True)
class FrontDoorType:
    name: str
    vcpus: int
    memory_gib: float
    usd_per_hour: float


# us-east-1 on-demand Linux, https://aws.amazon.com/ec2/pricing/on-demand/ (checked 2026-12: t3.medium
# $0.0416/h ≈ $30/month). x86_64 like the GPU nodes, so the gateway images built for them run here.
# T3 launches "unlimited": a month of CPU above baseline (20 % of 2 vCPUs for t3.small/medium) adds
# $0.05 per vCPU-hour; a gateway relaying streams stays far below it.
FRONT_DOOR_TYPES: dict[str, FrontDoorType] = {
    t.name: t
    for t in (
        FrontDoorType("t3.small", 2, 2, 0.0208),
        FrontDoorType("t3.medium", 2, 4, 0.0416),
        FrontDoorType("t3.large", 2, 8, 0.0832),
        FrontDoorType("m7i.large", 2, 8, 0.1008),
    )
}
DEFAULT_FRONT_DOOR_TYPE = "t3.medium"  # LiteLLM's proxy holds ~1 GiB resident; 4 GiB leaves room for nginx
FRONT_DOOR_ROOT_GB = 30
# https://aws.amazon.com/ebs/pricing/ (us-east-1): gp3 $0.08 per GB-month;
# https://aws.amazon.com/vpc/pricing/ : every public IPv4 address $0.005 per hour since 2024-02-01.
GP3_USD_PER_GB_MONTH = 0.08
PUBLIC_IPV4_USD_PER_HOUR = 0.005


class AwsFrontDoor(Model):
    instanceType: str = Field(default=DEFAULT_FRONT_DOOR_TYPE, description="the always-on front-door instance (no GPU)")

    @field_validator("instanceType")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FRONT_DOOR_TYPES:
            raise ValueError(f"got {v!r}; allowed: {', '.join(FRONT_DOOR_TYPES)}")
        return v


@dataclass(frozen=True)
class MonthlyCost:
    instance_type: str
    instance: float
    volume: float
    address: float

    @property
    def total(self) -> float:
        return self.instance + self.volume + self.address

    def line(self) -> str:
        return (
            f"${self.total:,.2f}/month always on ({self.instance_type} ${self.instance:,.2f}, "
            f"{FRONT_DOOR_ROOT_GB} GB gp3 ${self.volume:,.2f}, public IPv4 ${self.address:,.2f}; us-east-1 on demand)"
        )


def monthly_cost(instance_type: str) -> MonthlyCost:
    """What the always-on front door costs a month: instance, root volume and its public address."""
    t = FRONT_DOOR_TYPES[instance_type]
    return MonthlyCost(
        instance_type,
        instance=t.usd_per_hour * HOURS_PER_MONTH,
        volume=FRONT_DOOR_ROOT_GB * GP3_USD_PER_GB_MONTH,
        address=PUBLIC_IPV4_USD_PER_HOUR * HOURS_PER_MONTH,
    )


def ssh_front_door_checks(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """An ssh front door is pinned like every host, and is not one of the GPU hosts."""
    door = given.get("frontDoor")
    if not isinstance(door, dict):
        return []
    out: list[tuple[Loc, str, Any]] = []
    address = door.get("address")
    if not door.get("hostKey") and given.get("insecureSkipHostKeyCheck") is not True:
        out.append(
            (
                ("frontDoor", "hostKey"),
                f"missing for {address}: refusing to connect to an unpinned host; paste the line printed by "
                "`ssh-keyscan -t ed25519 HOST` (or, knowingly, set insecureSkipHostKeyCheck: true)",
                None,
            )
        )
    hosts = given.get("hosts")
    gpu_addresses = [h.get("address") for h in hosts if isinstance(h, dict)] if isinstance(hosts, list) else []
    if isinstance(address, str) and address in gpu_addresses:
        out.append(
            (
                ("frontDoor", "address"),
                f"got {address!r}, already hosts[{gpu_addresses.index(address)}].address; the front door is a "
                "separate small machine that stays up while the GPU hosts stop (omit frontDoor to keep the "
                "gateway on the first GPU host)",
                address,
            )
        )
    return out


@dataclass(frozen=True)
class FrontDoorMachine:
    """A stack's front-door machine as the plan states it: an instance type or a host, and its cost
    (None: a host the stack is given, which costs coderig nothing to keep up)."""

    machine: str
    cost: MonthlyCost | None

    def plan_line(self) -> str:
        where = f"{self.machine} " + (self.cost.line() if self.cost else "(your host, always on)")
        return (
            f"  front door         {where}: holds the gateway, the keys and the reaper; "
            "the GPU machines behind it stop when idle"
        )

    def summary(self) -> dict[str, object]:
        return {"machine": self.machine, "usd_per_month": round(self.cost.total, 2) if self.cost else None}
