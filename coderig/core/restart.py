"""Restart to first token: how long a model server takes from start to its first token, cold (no
compile caches: compile and autotune) and warm (the caches on the weights volume hit, which
coderig.core.compile_caches arranges on every target). Pure arithmetic, no I/O.

    restart = weights ÷ the volume's read throughput + engine start
    engine start (warm) = WARM_ENGINE_S; (cold) = WARM_ENGINE_S + COLD_COMPILE_S

Sources of the figures (none measured here: this machine has no GPU):
- COLD_COMPILE_S: llm-d's measurement quoted in issue #23: DeepSeek-V4-Pro on 8×B200 was ready in
  8 min cold and 1 min 44 s once the kernel caches were kept. Both starts read the same weights from
  the same volume, so the difference, 6 min 16 s, is what compiling and autotuning cost and what the
  caches save. It was measured on a 1.6T-parameter MoE on 8 GPUs (DeepGEMM JIT, FlashInfer autotune
  per expert shape): the upper end for smaller models.
- WARM_ENGINE_S: vllm-project/vllm#20264 (a cache hit, vLLM V1): "Directly load the compiled graph
  ... from the cache", torch.compile 7.5 s, CUDA graph capture 17 s, engine init 34 s, and the first
  response 59 s after the start with the weights read in 0.9 s: process start, cache load,
  profiling, CUDA graph capture (never cached) and the first forward pass.
- Read throughput per target (ReadRate, declared on each kind's settings): gp3 at the throughput
  coderig provisions (aws); a data-center NVMe drive's sequential read (ssh, local); an unknown PVC
  class assumed at gp3's baseline (kubernetes); or the stack's `weightsReadMBps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MiB = 1024**2
MB = 10**6

COLD_COMPILE_S = 8 * 60 - (60 + 44)  # issue #23 (llm-d): 8 min cold − 1 min 44 s warm = 376 s
WARM_ENGINE_S = 60  # vllm-project/vllm#20264: 59 s from start to first response on a cache hit

# Samsung PM9A3 (PCIe 4.0 U.2 / E1.S data-center NVMe): "up to 6,500 MB/s read" (Samsung's launch,
# reported by Engadget 2021-03); one drive, no RAID: the weights cache is one file system.
LOCAL_NVME_READ = 6500 * MB
# EBS gp3 baseline: 3,000 IOPS and 125 MiB/s without provisioned throughput (AWS EBS user guide,
# "General Purpose SSD volumes"); the EBS CSI driver's gp3 class provisions nothing more by default.
PVC_BASELINE_READ = 125 * MiB


@dataclass(frozen=True)
class ReadRate:
    """The weights volume's sequential read throughput and where the figure comes from."""

    bytes_per_s: int
    source: str


def nvme(stack_value_mbps: int | None, key: str) -> ReadRate:
    if stack_value_mbps:
        return ReadRate(stack_value_mbps * MB, f"{key}: {stack_value_mbps} MB/s")
    return ReadRate(LOCAL_NVME_READ, f"local NVMe: a PM9A3's sequential read; set {key} for yours")


def pvc(stack_value_mbps: int | None, key: str, storage_class: str | None) -> ReadRate:
    if stack_value_mbps:
        return ReadRate(stack_value_mbps * MB, f"{key}: {stack_value_mbps} MB/s")
    cls = f"storage class {storage_class}" if storage_class else "the cluster's default storage class"
    return ReadRate(PVC_BASELINE_READ, f"{cls}: its throughput unknown here, gp3's baseline assumed; set {key}")


def gp3(throughput_mibs: int) -> ReadRate:
    return ReadRate(throughput_mibs * MiB, f"EBS gp3 at the {throughput_mibs} MiB/s coderig provisions")


@dataclass(frozen=True)
class Restart:
    weights_bytes: int
    read: ReadRate

    @property
    def read_s(self) -> int:
        return math.ceil(self.weights_bytes / self.read.bytes_per_s)

    @property
    def warm_s(self) -> int:
        return self.read_s + WARM_ENGINE_S

    @property
    def cold_s(self) -> int:
        return self.warm_s + COLD_COMPILE_S

    def summary(self) -> dict[str, object]:
        return {
            "cold_s": self.cold_s,
            "warm_s": self.warm_s,
            "weights_read_s": self.read_s,
            "read_bytes_per_s": self.read.bytes_per_s,
            "read_source": self.read.source,
            "compile_s": COLD_COMPILE_S,
            "engine_warm_s": WARM_ENGINE_S,
        }


def duration(seconds: int) -> str:
    m, s = divmod(seconds, 60)
    if not m:
        return f"{s} s"
    return f"{m} min {s:02d} s" if s else f"{m} min"


def estimate(weights_bytes: int, engine: str, serves_model: bool, read: ReadRate) -> Restart | None:
    """The estimate where vLLM runs here (llama.cpp compiles nothing; an external endpoint restarts elsewhere)."""
    return Restart(weights_bytes, read) if serves_model and engine == "vllm" else None


def plan_line(r: Restart) -> str:
    gb = r.weights_bytes / 10**9
    return (
        f"  restart            to first token: cold {duration(r.cold_s)}, warm {duration(r.warm_s)} = "
        f"{gb:.0f} GB weights ÷ {r.read.bytes_per_s / MB:.0f} MB/s ({r.read.source}) = {duration(r.read_s)} "
        f"+ engine start {duration(WARM_ENGINE_S)} with the compile caches, + {duration(COLD_COMPILE_S)} compile and "
        "autotune without them (coderig.core.restart cites each figure)"
    )
