"""Capacity planner: does a preset fit on a GPU configuration, and how many full-context requests
run at once. Pure arithmetic, no I/O.

Memory model (per model replica, all GPUs of one host or pod):
    usable   = GPU memory × count × gpu_memory_utilization        (what vLLM may take)
    overhead = activations, CUDA graphs, NCCL buffers: OVERHEAD_PER_GPU × count
    kv space = usable − weights − overhead
    fits     ⇔ kv space ≥ one request at max-model-len
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coderig.core.catalog import AWS_INSTANCES, GB, GPU_COUNTS, GPUS, GiB, Preset

if TYPE_CHECKING:
    from coderig.core.settings import StackSettings

OVERHEAD_PER_GPU = 3 * GiB
ELEMENT_BYTES = {"fp8": 1, "bf16": 2, "auto": 2}


def kv_bytes_per_token(preset: Preset, kv_dtype: str) -> int:
    """Bytes cached per token of context, summed over the layers that cache the whole context."""
    a = preset.attention
    if a.kind == "mla":
        per_layer = a.mla_bytes_per_layer["fp8" if kv_dtype == "fp8" else "bf16"]
    else:
        per_layer = 2 * a.kv_heads * a.head_dim * ELEMENT_BYTES[kv_dtype]
    return per_layer * a.layers


def kv_bytes_per_request(preset: Preset, kv_dtype: str, context: int) -> int:
    """KV cache of one request holding `context` tokens, sliding-window and fixed state included."""
    a = preset.attention
    full = kv_bytes_per_token(preset, kv_dtype) * context
    per_sliding_layer = 2 * a.kv_heads * a.head_dim * ELEMENT_BYTES[kv_dtype]
    sliding = a.sliding_layers * per_sliding_layer * min(context, a.sliding_window)
    return full + sliding + a.state_bytes_per_request


@dataclass(frozen=True)
class Plan:
    preset: str
    engine: str
    gpu: str | None
    gpu_count: int
    replicas: int
    max_model_len: int
    kv_cache_dtype: str
    gpu_memory_utilization: float
    gpu_memory_bytes: int
    usable_bytes: int
    weights_bytes: int
    overhead_bytes: int
    kv_bytes_per_token: int
    kv_bytes_per_request: int
    kv_space_bytes: int
    max_concurrent_requests: int
    fits: bool
    reason: str
    suggestion: str | None
    usd_per_hour: float | None
    instance_type: str | None

    def summary(self) -> dict[str, object]:
        """The JSON form `coderig plan --json` prints and the stack exports."""
        out: dict[str, object] = {
            "preset": self.preset,
            "engine": self.engine,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "replicas": self.replicas,
            "instance_type": self.instance_type,
            "max_model_len": self.max_model_len,
            "kv_cache_dtype": self.kv_cache_dtype,
            "gpu_memory_gb": round(self.gpu_memory_bytes / GB, 1),
            "weights_gb": round(self.weights_bytes / GB, 1),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_gb_per_request": round(self.kv_bytes_per_request / GB, 2),
            "kv_space_gb": round(max(self.kv_space_bytes, 0) / GB, 1),
            "max_concurrent_requests": self.max_concurrent_requests,
            "fits": self.fits,
            "reason": self.reason,
            "suggestion": self.suggestion,
            "usd_per_hour": self.usd_per_hour,
        }
        return out


def plan(
    preset: Preset,
    *,
    gpu: str | None,
    gpu_count: int,
    max_model_len: int,
    kv_cache_dtype: str = "fp8",
    gpu_memory_utilization: float = 0.90,
    replicas: int = 1,
    instance_type: str | None = None,
    external: bool = False,
    suggest: bool = True,
) -> Plan:
    kv_tok = kv_bytes_per_token(preset, kv_cache_dtype)
    kv_req = kv_bytes_per_request(preset, kv_cache_dtype, max_model_len)
    usd = AWS_INSTANCES[instance_type].usd_per_hour * replicas if instance_type else None
    if external:
        return Plan(
            preset.id, preset.engine, None, 0, 0, max_model_len, kv_cache_dtype, gpu_memory_utilization,
            0, 0, preset.weight_bytes, 0, kv_tok, kv_req, 0, 0, True,
            "the model is served by an external endpoint; only the front door runs here", None, None, None,
        )  # fmt: skip
    if preset.engine == "llama.cpp" and gpu is None:
        need = preset.weight_bytes + kv_req
        return Plan(
            preset.id, preset.engine, None, 0, replicas, max_model_len, kv_cache_dtype,
            gpu_memory_utilization, 0, 0, preset.weight_bytes, 0, kv_tok, kv_req, 0, 1, True,
            f"runs on CPU with llama.cpp; needs about {need / GB:.1f} GB of RAM per replica",
            None, usd, instance_type,
        )  # fmt: skip
    if gpu is None:
        raise ValueError(f"{preset.id} runs on vLLM and needs a GPU model")
    total = GPUS[gpu].memory_bytes * gpu_count
    usable = int(total * gpu_memory_utilization)
    overhead = OVERHEAD_PER_GPU * gpu_count
    kv_space = usable - preset.weight_bytes - overhead
    concurrent = max(kv_space // kv_req, 0) if kv_req else 0
    where = f"{gpu_count}× {gpu} ({total / GiB:.0f} GiB, {gpu_memory_utilization:.0%} usable)"
    if preset.weight_bytes + overhead > usable:
        fits = False
        reason = (
            f"the weights do not fit: {preset.id} needs {preset.weight_bytes / GB:.0f} GB of weights + "
            f"{overhead / GB:.0f} GB overhead, {where} gives {usable / GB:.0f} GB"
        )
    elif concurrent < 1:
        fits = False
        reason = (
            f"the weights fit but no full-context request does: one {max_model_len}-token request needs "
            f"{kv_req / GB:.1f} GB of KV cache, {where} leaves {kv_space / GB:.1f} GB; lower maxModelLen"
        )
    else:
        fits = True
        reason = f"fits on {where}: {concurrent} concurrent {max_model_len}-token requests"
    suggestion = None
    if not fits and suggest:
        suggestion = smallest_fit(preset, max_model_len, kv_cache_dtype, gpu_memory_utilization)
    return Plan(
        preset.id, preset.engine, gpu, gpu_count, replicas, max_model_len, kv_cache_dtype,
        gpu_memory_utilization, total, usable, preset.weight_bytes, overhead, kv_tok, kv_req,
        kv_space, int(concurrent), fits, reason, suggestion, usd, instance_type,
    )  # fmt: skip


def smallest_fit(preset: Preset, max_model_len: int, kv_cache_dtype: str, util: float) -> str:
    """The smallest GPU configuration of the catalog that holds the preset, and the cheapest AWS type."""
    options = []
    for g in GPUS.values():
        for n in GPU_COUNTS:
            p = plan(preset, gpu=g.name, gpu_count=n, max_model_len=max_model_len,
                     kv_cache_dtype=kv_cache_dtype, gpu_memory_utilization=util, suggest=False)  # fmt: skip
            if p.fits:
                options.append((g.memory_bytes * n, n, g.name))
    if not options:
        return f"no GPU configuration in the catalog holds {preset.id} at maxModelLen {max_model_len}"
    _, n, name = min(options)
    text = f"smallest that fits: {n}× {name} ({GPUS[name].memory_bytes * n / GiB:.0f} GiB)"
    aws = [
        i for i in AWS_INSTANCES.values()
        if plan(preset, gpu=i.gpu, gpu_count=i.gpu_count, max_model_len=max_model_len,
                kv_cache_dtype=kv_cache_dtype, gpu_memory_utilization=util, suggest=False).fits
    ]  # fmt: skip
    if aws:
        cheapest = min(aws, key=lambda i: i.usd_per_hour)
        text += f"; on AWS: {cheapest.name} (${cheapest.usd_per_hour:.2f}/h)"
    return text


def weights_volume_gb(preset: Preset) -> int:
    """Cache volume size: weights + 25% headroom (partial downloads, a second revision), min 100 GB."""
    return max(100, math.ceil(preset.weight_bytes * 1.25 / GB / 10) * 10)


# Throughputs the time budgets assume. Loading reads the cache volume (gp3 tops out at 2000 MiB/s);
# the first download depends on the uplink to the model hub or mirror.
LOAD_BYTES_PER_S = 500 * 10**6
DOWNLOAD_BYTES_PER_S = 100 * 10**6
ENGINE_WARMUP_S = 600  # CUDA graph capture, torch.compile, kernel JIT


def load_budget_seconds(preset: Preset) -> int:
    """How long a model server may take to become healthy once the weights are on the volume."""
    if preset.engine == "llama.cpp":
        return 120 + math.ceil(preset.weight_bytes / LOAD_BYTES_PER_S)
    return ENGINE_WARMUP_S + math.ceil(preset.weight_bytes / LOAD_BYTES_PER_S)


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


def plan_stack(settings: StackSettings) -> Plan:
    """The plan for a validated stack: the GPUs of one replica come from the target."""
    t = settings.target
    m = settings.model
    gpu, count = t.gpus
    return plan(
        m.spec,
        gpu=gpu,
        gpu_count=count,
        max_model_len=m.max_model_len,
        kv_cache_dtype=m.kvCacheDtype,
        gpu_memory_utilization=m.gpuMemoryUtilization,
        replicas=t.replica_count,
        instance_type=t.instance_type,
        external=not t.serves_model,
    )


def format_plan(p: Plan, stack: str = "") -> str:
    s = p.summary()
    lines = [f"stack {stack}: {p.preset} ({p.engine})" if stack else f"{p.preset} ({p.engine})"]
    if p.gpu:
        where = f"{p.gpu_count}× {p.gpu}" + (f" ({p.instance_type})" if p.instance_type else "")
        lines.append(f"  GPUs per replica   {where}, {s['gpu_memory_gb']} GB, replicas {p.replicas}")
    lines += [
        f"  weights            {s['weights_gb']} GB",
        f"  max-model-len      {p.max_model_len} tokens, KV cache {p.kv_cache_dtype}",
        f"  KV per token       {p.kv_bytes_per_token} bytes",
        f"  KV per request     {s['kv_gb_per_request']} GB at full context",
    ]
    if p.gpu:
        lines.append(f"  KV space           {s['kv_space_gb']} GB → {p.max_concurrent_requests} concurrent requests")
    if p.usd_per_hour is not None:
        month = p.usd_per_hour * 24 * 30
        lines.append(f"  cost               ${p.usd_per_hour:.2f}/h on demand (${month:,.0f}/month if never stopped)")
    lines.append(f"  {'fits' if p.fits else 'DOES NOT FIT'}: {p.reason}")
    if p.suggestion:
        lines.append(f"  {p.suggestion}")
    return "\n".join(lines)
