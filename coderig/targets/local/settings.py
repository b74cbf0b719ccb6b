"""The `coderig:target` settings of kind `local`: the node bundle on this workstation (Docker Compose)."""

from __future__ import annotations

import os
from typing import ClassVar, Literal

from pydantic import Field

from coderig.core.target_base import WEIGHTS_READ_HELP, GpuSpec, TargetSettings


class LocalTarget(TargetSettings):
    kind: Literal["local"]
    idle_actions: ClassVar[tuple[str, ...]] = ("sleep", "stop")
    gpu: GpuSpec | None = Field(default=None, description="GPUs on this machine; omit for CPU (llama.cpp)")
    cachePath: str = "~/.cache/coderig"
    weightsReadMBps: int | None = Field(default=None, ge=10, le=1_000_000, description=WEIGHTS_READ_HELP)

    @property
    def runs_locally(self) -> bool:
        return True

    @property
    def node_cache_path(self) -> str:
        return os.path.expanduser(self.cachePath)
