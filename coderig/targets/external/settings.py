"""The `coderig:target` settings of kind `external`: an OpenAI-compatible endpoint that already exists
gets only the front door, on this workstation or on an SSH host."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from coderig.core.settings_base import Loc
from coderig.core.target_base import HOST_KEY_HELP, SshHost, TargetSettings


def _external_host_pinned(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    host = given.get("host")
    if isinstance(host, dict) and not host.get("hostKey") and given.get("insecureSkipHostKeyCheck") is not True:
        return [(("host", "hostKey"), f"missing for {host.get('address')}: {HOST_KEY_HELP}", None)]
    return []


def _external_host_for_ssh(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    if given.get("frontDoor") == "ssh" and given.get("host") is None:
        return [(("host",), "frontDoor is ssh but host is not set: add host: {address, user, hostKey}", None)]
    return []


# Every OpenAI-compatible server answers GET /v1/models once its model is loaded; /health is vLLM's
# own (KServe and others have none), so it is not the default for an endpoint we do not run.
EXTERNAL_HEALTH_PATH = "/v1/models"


class ExternalTarget(TargetSettings):
    kind: Literal["external"]
    serves_model: ClassVar[bool] = False
    counts_usage: ClassVar[bool] = False  # no relay: the model server is someone else's
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
    def upstream(self) -> tuple[str, str] | None:
        return self.endpoint, self.healthPath

    @property
    def ssh_machines(self) -> list[SshHost]:
        return [self.host] if self.frontDoor == "ssh" and self.host else []

    @property
    def runs_locally(self) -> bool:
        return self.frontDoor == "local"

    given_checks = (_external_host_pinned, _external_host_for_ssh)
