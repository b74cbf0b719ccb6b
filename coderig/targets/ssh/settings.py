"""The `coderig:target` settings of kind `ssh`: machines coderig reaches over SSH with pinned host keys."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from coderig.core.frontdoor_machine import FrontDoorMachine, ssh_front_door_checks
from coderig.core.settings_base import Loc
from coderig.core.target_base import (
    HOST_KEY_HELP,
    NODE_CACHE_PATH,
    WEIGHTS_READ_HELP,
    GpuSpec,
    SshHost,
    TargetSettings,
    check_cache_path,
)


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


class SshTarget(TargetSettings):
    kind: Literal["ssh"]
    idle_actions: ClassVar[tuple[str, ...]] = ("sleep", "stop")
    hosts: list[SshHost] = Field(min_length=1)
    gpu: GpuSpec | None = None
    cachePath: str = NODE_CACHE_PATH
    insecureSkipHostKeyCheck: bool = False
    frontDoor: SshHost | None = Field(default=None, description="a small always-on host for the gateway")
    weightsReadMBps: int | None = Field(default=None, ge=10, le=1_000_000, description=WEIGHTS_READ_HELP)

    _cache = field_validator("cachePath")(check_cache_path)

    @property
    def replica_count(self) -> int:
        return len(self.hosts)

    @property
    def over_ssh(self) -> bool:
        return True

    @property
    def ssh_machines(self) -> list[SshHost]:
        return [self.frontDoor, *self.hosts] if self.frontDoor else list(self.hosts)

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
