"""What every `coderig:target` settings model shares: the GPU and host shapes, and the base class on
which each kind declares its differences (class attributes and properties; the rest of coderig asks
these instead of comparing `kind`). Each kind's own model lives in its folder, e.g.
`coderig.targets.ssh.settings`, and reaches validation through its registry entry (`coderig.targets`):
core knows no kind by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from coderig.core import catalog, hostkeys, restart
from coderig.core.settings_base import Model

if TYPE_CHECKING:
    from coderig.core.frontdoor_machine import FrontDoorMachine

HOST_KEY_HELP = "paste the line printed by `ssh-keyscan -t ed25519 HOST`"


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
        if v not in catalog.GPU_COUNTS:
            more = (
                f"; for {v} GPUs in all, list {v // 8} hosts of 8 (each host is a model replica)"
                if v > 8 and v % 8 == 0
                else ""
            )
            raise ValueError(
                f"got {v}: the count is GPUs per host (per model replica), which tensor parallelism splits the "
                f"model over evenly: use 1, 2, 4 or 8{more}"
            )
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


def check_cache_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"got {v!r}; the weights cache path must be absolute, e.g. /var/lib/coderig")
    return v


NODE_CACHE_PATH = "/var/lib/coderig"  # the weights cache on a machine coderig prepares (ssh, aws)
WEIGHTS_READ_KEY = "coderig:target.weightsReadMBps"
WEIGHTS_READ_HELP = "the weights volume's sequential read, MB/s, for the plan's restart estimate"


class TargetSettings(Model):
    """What differs between target kinds, declared once per kind (class attributes and properties);
    the rest of coderig asks these instead of comparing `kind`."""

    if TYPE_CHECKING:
        # each kind declares `kind: Literal["<its name>"]`, the tag validation picks its model by
        kind: Any

    engines: ClassVar[tuple[str, ...]] = ("vllm", "llama.cpp")  # model servers it can run
    min_gateway_port: ClassVar[int] = 1
    serves_model: ClassVar[bool] = True  # False: only the front door runs here (external)
    # the gateway's relay keeps the usage record (coderig usage, daily budgets); False: nothing counts
    counts_usage: ClassVar[bool] = True
    idle_actions: ClassVar[tuple[str, ...]] = ()  # what coderig:idle.action may choose (ssh, local)

    def idle_action_problem(self, action: str, engine: str) -> str | None:
        """Why `coderig:idle.action` cannot be `action` here (None: it can)."""
        if not self.idle_actions:
            return (
                f"got {action!r}; idle.action is for the ssh and local targets (aws stops its instances, kubernetes "
                "scales the model to zero, an external endpoint idles on its own platform): remove it"
            )
        if action == "stop" and self.front_door_machine is not None:
            return (
                "got 'stop' with a frontDoor: a model container is stopped by the reaper on its own host, and "
                "the front door holds no GPU host's docker; use idle.action: sleep (the front door sleeps every "
                "host's model through its link), or omit frontDoor"
            )
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
    def upstream(self) -> tuple[str, str] | None:
        """(base URL, health path) of the model endpoint a target that serves no model forwards to."""
        return None

    @property
    def ssh_machines(self) -> list[SshHost]:
        """The machines reached over SSH, the first machine (gateway, relay, reaper) first; [] when none."""
        return []

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

    @property
    def front_door_machine(self) -> FrontDoorMachine | None:
        """The separate always-on machine holding the gateway (None: the first machine holds it)."""
        return None

    def volume_problems(self, preset: catalog.Preset) -> list[str]:
        """Why the weights volume the stack sizes cannot hold `preset`'s weights and compile caches."""
        return []

    @property
    def weights_read(self) -> restart.ReadRate:
        """The weights volume's read throughput the restart estimate uses: the stack's
        `weightsReadMBps` where the kind has the key, else a local NVMe drive's."""
        return restart.nvme(getattr(self, "weightsReadMBps", None), WEIGHTS_READ_KEY)

    @property
    def machine_wake(self) -> dict[str, str] | None:
        """How the front-door machine's relay starts GPU machines the idle policy stopped: its `--wake`
        mechanism and that mechanism's options, as relay flags without the dashes (None: it does not)."""
        return None
