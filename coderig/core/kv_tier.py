"""The host-memory KV tier: vLLM's native CPU offloading (`--kv-offloading-size GiB
--kv-offloading-backend native`), sized from each model host's RAM. Pure.

What the flag does in vLLM 0.34.0 (read in the installed wheel):
- config/cache.py CacheConfig.kv_offloading_size: "Size of the KV cache offloading buffer in GiB. When
  TP > 1, this is the total buffer size summed across all TP ranks"; kv_offloading_backend "native".
- config/vllm.py _post_init_kv_transfer_config: native → the OffloadingConnector with
  cpu_bytes_to_use = size × 2**30, kv_role kv_both (blocks leave the GPU as they complete and come back
  on a prefix hit).
- v1/kv_offload/cpu/spec.py CPUOffloadingSpec: chunks = cpu_bytes ÷ (one worker's KV bytes per block ×
  world_size), so every TP rank's share of a token is stored: the tier holds size ÷ (bytes a token
  takes on one rank × TP) tokens (an MLA latent, replicated on every TP rank, is stored TP times; the
  single-copy layout needs `canonical_layout` in a hand-written --kv-transfer-config).
- v1/kv_offload/config.py: engine_id "distinct per DP rank" (v1/engine/core.py appends `_dp{rank}` to it):
  each data-parallel engine has its own connector and tier of the full size, so coderig renders the
  host's tier ÷ data-parallel engines.
- v1/kv_offload/cpu/shared_offload_region.py: on CUDA the tier is an mmap of files in /dev/shm
  (/dev/shm/vllm_offload_{engine_id}.mmap), and the model container runs with `ipc: host`: the tier
  must fit the host's /dev/shm, a tmpfs whose default size is half the RAM (Linux
  Documentation/filesystems/tmpfs.rst: "The default is half of your physical RAM without swap").
Why: in llm-d's measurements of Claude Code traffic on vLLM (issue #23), a prefix restored from host
memory cost ~59 ms against ~5.7 s to recompute 45k tokens, and without an offload tier queueing pushed
time to first token to 59 s. The recipes' command builder (vllm-project/recipes@8959cf64
taxonomy.yaml kv_offload.offloading_cpu) offers the CPU tier only where a recipe records a verified
run (`requires_opt_in`), and notes the tier "should exceed the aggregate GPU KV cache, or the CPU tier
just mirrors what the GPU already holds": coderig turns it on by default only for those presets and
says when a tier is no larger than the GPUs' KV space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from coderig.core.catalog import AWS_INSTANCES, GiB

KEY = "coderig:model.kvOffload"
# Presets whose vLLM recipe records a verified CPU-offload run (recipes@8959cf64 models/…yaml
# `kv_offload_support: {offloading_cpu: verified}`): the tier is on by default for these only.
RECIPE_VERIFIED = frozenset({"glm-4.7", "minimax-m2.1"})
# What the host keeps for itself before the tier: the OS, Docker, nginx, LiteLLM (~1 GiB resident,
# coderig.core.frontdoor_machine) and the relay, and per GPU the vLLM processes (the 32 GiB per GPU the
# kubernetes target requests for the model pod, coderig.targets.kubernetes.manifests.model_resources).
OS_RESERVE = 8 * GiB
PROCESS_PER_GPU = 32 * GiB
SHM_SHARE = 0.5  # /dev/shm's default size: half the RAM (tmpfs.rst, above)
SHM_OTHER_PER_GPU = 4 * GiB  # NCCL and vLLM's shm broadcast in /dev/shm (kubernetes manifests.shm_size_gi)


class KvOffloadSettings(BaseModel):
    """`coderig:model.kvOffload`: the host-memory KV tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool | None = Field(
        default=None, description="default: on where the preset's vLLM recipe verified it and the host RAM is known"
    )
    hostMemoryGiB: int | None = Field(
        default=None, ge=1, le=1 << 20, description="each model host's RAM (aws: the instance type's)"
    )
    sizeGiB: float | None = Field(default=None, ge=1, description="the tier per host; default: what the host spares")


@dataclass(frozen=True)
class Tier:
    """The tier of one model host (one replica), or why there is none."""

    on: bool
    why: str  # where the figures come from, or why it is off
    host_bytes: int = 0
    reserved_bytes: int = 0  # OS + vLLM processes + sleeping weights
    available_bytes: int = 0  # the most the tier may take: RAM − reserved, within /dev/shm
    size_bytes: int = 0  # the tier on the host (all data-parallel engines)
    engines: int = 1
    tokens: int = 0  # what it holds
    gpu_tokens: int = 0  # what the GPUs' KV space holds, for comparison
    context: int = 0  # tokens per session (the workload's context)

    @property
    def per_engine_gib(self) -> float:
        """`--kv-offloading-size`: GiB per data-parallel engine, rounded down to 1/100 GiB."""
        return math.floor(self.size_bytes / self.engines / GiB * 100) / 100

    def sessions(self, tokens: int) -> int:
        return tokens // self.context if self.context else 0

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"on": self.on, "why": self.why}
        if self.host_bytes:
            out["host_memory_gib"] = round(self.host_bytes / GiB, 1)
            out["available_gib"] = round(self.available_bytes / GiB, 1)
        if self.on:
            out |= {
                "size_gib": round(self.size_bytes / GiB, 2),
                "kv_offloading_size_gib": self.per_engine_gib,
                "engines": self.engines,
                "tokens": self.tokens,
                "sessions": self.sessions(self.tokens),
                "gpu_tokens": self.gpu_tokens,
                "gpu_sessions": self.sessions(self.gpu_tokens),
            }
        return out


def flags(tier: Tier | None) -> list[str]:
    if tier is None or not tier.on:
        return []
    return ["--kv-offloading-size", f"{tier.per_engine_gib:g}", "--kv-offloading-backend", "native"]


def host_memory(s: KvOffloadSettings | None, instance_type: str | None) -> tuple[int | None, str]:
    """Each model host's RAM in bytes and where it was read (None: unknown)."""
    if s is not None and s.hostMemoryGiB is not None:
        return s.hostMemoryGiB * GiB, f"{KEY}.hostMemoryGiB (the preflight checks the host has it)"
    if instance_type:
        ram = AWS_INSTANCES[instance_type].ram_gib
        return ram * GiB, f"{instance_type}'s {ram} GiB of RAM"
    return None, ""


def available(host_bytes: int, gpus: int, sleeping: int) -> tuple[int, int]:
    """(reserved, available) bytes on one host: RAM − (OS + vLLM processes + sleeping weights), within /dev/shm."""
    reserved = OS_RESERVE + PROCESS_PER_GPU * gpus + sleeping
    shm = int(host_bytes * SHM_SHARE) - SHM_OTHER_PER_GPU * gpus
    return reserved, max(min(host_bytes - reserved, shm), 0)


def breakdown(host_bytes: int, gpus: int, sleeping: int) -> str:
    """How the available figure was reached, for the plan and error messages."""
    _, avail = available(host_bytes, gpus, sleeping)
    sleep = f" − {sleeping / GiB:.0f} GiB sleeping weights" if sleeping else ""
    return (
        f"{host_bytes / GiB:.0f} GiB RAM − {OS_RESERVE / GiB:.0f} GiB OS − {gpus} × {PROCESS_PER_GPU / GiB:.0f} GiB "
        f"vLLM processes{sleep}, within /dev/shm ({SHM_SHARE:.0%} of RAM − {SHM_OTHER_PER_GPU / GiB:.0f} GiB per GPU "
        f"for NCCL) = {avail / GiB:.0f} GiB"
    )


def requested(s: KvOffloadSettings | None) -> bool | None:
    """True/False when the stack says, None for the preset's default (a size set asks for the tier)."""
    if s is None:
        return None
    if s.enabled is not None:
        return s.enabled
    return True if s.sizeGiB is not None else None


@dataclass(frozen=True)
class Host:
    """What a stack's model hosts are, as the tier needs them (StackSettings.kv_host builds it)."""

    preset: str
    engine: str  # vllm | llama.cpp
    serves_model: bool
    kind: str
    gpus: int
    instance_type: str | None
    sleeping: int  # weights vLLM sleep mode keeps in host RAM (0: no sleep mode on this stack)


def problems(s: KvOffloadSettings | None, h: Host) -> list[str]:
    """Plan-time errors, every one: a tier larger than the host spares, a host memory above the instance
    type's, or a tier asked for where it cannot be sized."""
    if s is None:
        return []
    it = h.instance_type
    if s.hostMemoryGiB is not None and it and s.hostMemoryGiB > AWS_INSTANCES[it].ram_gib:
        return [
            f"{KEY}.hostMemoryGiB: got {s.hostMemoryGiB}; {it} has {AWS_INSTANCES[it].ram_gib} GiB of RAM "
            "(allowed: at most that, or leave it unset to use it)"
        ]
    host, _ = host_memory(s, it)
    if not requested(s):
        return []
    if h.engine != "vllm" or not h.gpus or not h.serves_model:
        return [
            f"{KEY}: the tier is asked for, but {h.preset} does not run on vLLM with GPUs here "
            f"({h.engine}, {h.gpus} GPUs); remove {KEY}"
        ]
    if host is None:
        return [
            f"{KEY}.hostMemoryGiB: required to size the tier on the {h.kind} target (the hosts' RAM is not known "
            "here); set it to each model host's RAM in GiB (`free -g`, total); the preflight checks the host has it"
        ]
    _, avail = available(host, h.gpus, h.sleeping)
    if s.sizeGiB is not None and s.sizeGiB * GiB > avail:
        return [
            f"{KEY}.sizeGiB: got {s.sizeGiB:g}; each model host spares at most {avail / GiB:.0f} GiB for it "
            f"({breakdown(host, h.gpus, h.sleeping)}); lower it, or leave it unset to use what the host spares"
        ]
    return []


@dataclass(frozen=True)
class RankKv:
    """What the plan's chosen layout puts on one GPU rank (coderig.core.planner.Option)."""

    tensor: int
    data: int
    token_bytes_per_rank: float  # one token's KV on one rank
    kv_space_per_gpu: int
    context: int  # tokens per session (the workload's context)


def tier(s: KvOffloadSettings | None, h: Host, rank: RankKv | None) -> Tier:
    """The tier of each model host of a validated stack (`problems` found nothing)."""
    asked = requested(s)
    if h.engine != "vllm" or rank is None or not h.serves_model:
        return Tier(False, "none: the host KV tier is vLLM's")
    if asked is False:
        return Tier(False, f"off ({KEY}.enabled: false)")
    preset = h.preset
    if asked is None and preset not in RECIPE_VERIFIED:
        return Tier(
            False,
            f"off by default: the {preset} vLLM recipe records no verified CPU-offload run "
            f"(recipes taxonomy.yaml offloading_cpu requires_opt_in); on with {KEY}.enabled: true",
        )
    host, source = host_memory(s, h.instance_type)
    if host is None:
        return Tier(False, f"off: the hosts' RAM is unknown here; set {KEY}.hostMemoryGiB to size it")
    gpus, sleeping = h.gpus, h.sleeping
    reserved, avail = available(host, gpus, sleeping)
    want = int(s.sizeGiB * GiB) if s is not None and s.sizeGiB is not None else avail
    engines = max(rank.data, 1)
    per_token = rank.token_bytes_per_rank * rank.tensor  # every TP rank's share is stored (module docstring)
    tokens = int(want / engines / per_token) * engines if per_token else 0
    gpu_tokens = int(rank.kv_space_per_gpu / rank.token_bytes_per_rank) * engines if rank.token_bytes_per_rank else 0
    why = f"from {source}: {breakdown(host, gpus, sleeping)}"
    if want <= 0:
        return Tier(False, f"off: the host has no RAM to spare ({why})", host, reserved, avail)
    return Tier(True, why, host, reserved, avail, want, engines, tokens, gpu_tokens, rank.context)
