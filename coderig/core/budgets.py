"""Time and size budgets derived from a preset's weights: the cache volume's size, how long a model
server may take to load, how long a first download and a node's readiness wait may take. Pure
arithmetic; the planner (`coderig.core.planner`) decides whether the model fits, this module only
how long and how large the steps around it may be."""

from __future__ import annotations

import math

from coderig.core import compile_caches
from coderig.core.catalog import GB, Preset


def caches_bytes(preset: Preset, gpus: int) -> int:
    """The compile caches of a replica on `gpus` GPUs (coderig.core.compile_caches; llama.cpp writes none)."""
    return compile_caches.cache_bytes(gpus) if preset.engine == "vllm" else 0


def weights_and_caches_bytes(preset: Preset, gpus: int) -> int:
    return preset.weight_bytes + caches_bytes(preset, gpus)


def weights_volume_gb(preset: Preset, gpus: int) -> int:
    """Cache volume size: weights + 25% headroom (partial downloads, a second revision) + the compile
    caches of a replica on `gpus` GPUs, min 100 GB."""
    return max(100, math.ceil((preset.weight_bytes * 1.25 + caches_bytes(preset, gpus)) / GB / 10) * 10)


# Throughputs the time budgets assume. Loading reads the cache volume (gp3 tops out at 2000 MiB/s);
# the first download depends on the uplink to the model hub or mirror.
LOAD_BYTES_PER_S = 500 * 10**6
DOWNLOAD_BYTES_PER_S = 100 * 10**6
ENGINE_WARMUP_S = 600  # CUDA graph capture, torch.compile, kernel JIT
# EC2 stopped -> running and OS boot: ~1-2 min for current types with encrypted EBS
# (martysweet.co.uk/ec2-launch-times, 2023); 8-GPU types with EFA boot slower: 180 s (bench/idle_week.py)
EC2_BOOT_S = 180


def load_budget_seconds(preset: Preset, read_bytes_per_s: int = LOAD_BYTES_PER_S) -> int:
    """How long a model server may take to become healthy once the weights are on the volume, read at
    LOAD_BYTES_PER_S or the volume's own throughput where that is slower (coderig.core.restart)."""
    rate = min(LOAD_BYTES_PER_S, read_bytes_per_s)
    if preset.engine == "llama.cpp":
        return 120 + math.ceil(preset.weight_bytes / rate)
    return ENGINE_WARMUP_S + math.ceil(preset.weight_bytes / rate)


def download_budget_seconds(preset: Preset) -> int:
    """How long a first download may take before the readiness wait gives up (×2 safety)."""
    return 300 + 2 * math.ceil(preset.weight_bytes / DOWNLOAD_BYTES_PER_S)


IMAGE_PULL_S = 900  # first pull of the images on a fresh machine (vLLM's is ~10 GB)


def ready_budget_seconds(preset: Preset | None, *, download: bool = True) -> int:
    """How long a node's readiness wait may take after `docker compose up`: image pull, the first
    download (unless `download` is False), then the load, with 50% margin. `preset` None: a front
    door only (no weights, no model server)."""
    if preset is None:
        return math.ceil(IMAGE_PULL_S * 1.5)
    dl = math.ceil(preset.weight_bytes / DOWNLOAD_BYTES_PER_S) if download else 0
    return math.ceil((IMAGE_PULL_S + dl + load_budget_seconds(preset)) * 1.5)
