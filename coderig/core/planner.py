"""Capacity planner: does a preset fit on a GPU configuration, with which parallel layout, and how
many requests run at once. Pure arithmetic, no I/O.

Memory model, per GPU rank of one replica (coderig.core.layout has the formulas and cites the
vLLM 0.28.0 files they come from: v1/worker/gpu_worker.py, v1/core/kv_cache_utils.py,
v1/kv_cache_interface.py, config/model.py, model_executor/layers/attention/mla_attention.py,
model_executor/models/deepseek_v2.py, model_executor/layers/fused_moe/config.py, v1/worker/cp_utils.py,
docs/serving/data_parallel_deployment.md):
    usable    = GPU memory × gpu_memory_utilization
                (coderig passes --gpu-memory-utilization, 0.90 unless coderig:model.gpuMemoryUtilization
                says otherwise; vLLM 0.28's own default is 0.92, config/cache.py: CacheConfig)
    weights   = attention/dense ÷ tensor + routed experts ÷ (tensor × data)
    overhead  = layout.OVERHEAD_PER_GPU (activations, CUDA graphs, NCCL; a heuristic)
    kv space  = usable − weights − overhead
    per rank  = kv space ÷ one full-context request's KV on that rank
                (GQA: heads split down to 1 per rank, replicated beyond; MLA: the whole latent on every
                TP rank, ÷ decode_context under DCP; + the DSA indexer's 132 B per token per layer)
    replica   = per rank × data-parallel engines (each DP engine holds only its own requests)
    total     = replica × replicas

Layout rule (printed by `coderig plan`): of the layouts the pinned vLLM runs for the preset on the
GPUs (layout.candidates: TP; TP + decode context parallelism for MLA where the recipe and the
attention backend support it; data-parallel attention + expert parallelism for MoE), take the one
with the lowest per-request latency (TP < TP+DCP < DP+EP) that still carries the stack's workload
and sustains its peak prefill (coderig.core.prefill: a layout holding more contexts in its KV cache
recomputes fewer evicted prefixes), else the lowest-latency one that carries it, else the one with the
most full-context concurrency. `coderig:model.parallel` overrides it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coderig.core import layout as lay
from coderig.core import mtp
from coderig.core import prefill as pf
from coderig.core.catalog import AWS_INSTANCES, GB, GPU_COUNTS, GPUS, LLAMACPP_CACHE_TYPE, GiB, Preset
from coderig.core.kv_tier import RankKv, Tier
from coderig.core.kv_tier import tier as host_tier
from coderig.core.layout import OVERHEAD_PER_GPU, Layout, kv_bytes_per_request, kv_bytes_per_token
from coderig.core.prefill import Workload

if TYPE_CHECKING:
    from coderig.core.settings import StackSettings

__all__ = ["OVERHEAD_PER_GPU", "Layout", "Plan", "Workload", "kv_bytes_per_request", "kv_bytes_per_token", "plan"]

RULE = (
    "the lowest-latency layout (TP < TP+DCP < DP+EP) that carries the workload and sustains its peak prefill, "
    "else that carries it, else the one with the most full-context concurrency"
)


@dataclass(frozen=True)
class Option:
    """One layout on one replica's GPUs: what its tightest rank holds."""

    layout: Layout
    usable_per_gpu: int
    weights_per_gpu: int
    kv_per_request_per_gpu: int  # full context
    per_replica: int  # full-context requests at once
    per_replica_at_peak: int  # requests of the workload's context at once

    @property
    def kv_space_per_gpu(self) -> int:
        return self.usable_per_gpu - self.weights_per_gpu - OVERHEAD_PER_GPU


def _option(preset: Preset, gpu: str, layout: Layout, ctx: int, peak_ctx: int, kv_dtype: str, util: float) -> Option:
    g = GPUS[gpu]
    usable = int(g.memory_bytes * util)
    weights = lay.weights_per_gpu(preset, layout)
    space = usable - weights - OVERHEAD_PER_GPU
    full = kv_bytes_per_request(preset, kv_dtype, ctx, g, layout)
    at_peak = kv_bytes_per_request(preset, kv_dtype, peak_ctx, g, layout)
    per_rank = max(space // full, 0) if full else 0
    per_rank_peak = max(space // at_peak, 0) if at_peak else 0
    return Option(layout, usable, weights, full, per_rank * layout.data, per_rank_peak * layout.data)


@dataclass(frozen=True)
class Plan:
    preset: str
    engine: str
    served_here: bool
    gpu: str | None
    gpu_count: int
    replicas: int
    max_model_len: int
    kv_cache_dtype: str  # as the engine names it (fp8, fp8 (fp8_ds_mla), bf16, q8_0)
    gpu_memory_utilization: float
    gpu_memory_bytes: int  # one GPU
    weights_bytes: int
    kv_bytes_per_token: int  # one copy of the model's cache, all layers
    kv_bytes_per_request: int  # one copy, at max-model-len
    indexer_bytes_per_request: int  # part of kv_bytes_per_request (DSA models)
    fits: bool
    reason: str
    estimates: tuple[str, ...] = ()  # which figures are estimates ("weights", "architecture")
    chosen: Option | None = None
    options: tuple[Option, ...] = ()
    why: str = ""  # how the layout was chosen
    workload: Workload | None = None
    advice: str | None = None  # what carries the workload when this stack does not
    suggestion: str | None = None
    usd_per_hour: float | None = None
    instance_type: str | None = None
    ram_bytes: int = 0  # CPU (llama.cpp): weights + one slot's KV
    prefill: pf.Check | None = None  # the peak's prefill against the layout (None: no per-GPU figure)
    mtp_on: bool = False  # MTP speculative decoding on (coderig.core.mtp; the figures include its layer)
    kv_tier: Tier | None = None  # the host-memory KV tier of each model host (coderig.core.kv_tier)

    @property
    def layout(self) -> Layout:
        return self.chosen.layout if self.chosen else Layout(max(1, self.gpu_count))

    @property
    def max_concurrent_requests_per_replica(self) -> int:
        if not self.served_here:
            return 0
        return self.chosen.per_replica if self.chosen else 1  # llama.cpp: one slot

    @property
    def max_concurrent_requests(self) -> int:
        """Full-context requests at once over all replicas."""
        return self.max_concurrent_requests_per_replica * self.replicas

    @property
    def capacity_at_peak(self) -> int:
        if self.chosen is None:
            return self.max_concurrent_requests
        return self.chosen.per_replica_at_peak * self.replicas

    @property
    def carried(self) -> bool | None:
        if self.workload is None or not self.served_here:
            return None
        return self.capacity_at_peak >= self.workload.peak

    def summary(self) -> dict[str, object]:
        """The JSON form `coderig plan --json` prints and the stack exports."""
        out: dict[str, object] = {
            "preset": self.preset,
            "engine": self.engine,
            "served_here": self.served_here,
            "max_model_len": self.max_model_len,
            "fits": self.fits,
            "reason": self.reason,
            "usd_per_hour": self.usd_per_hour,
        }
        if not self.served_here:
            return out
        out |= {
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "replicas": self.replicas,
            "instance_type": self.instance_type,
            "kv_cache_dtype": self.kv_cache_dtype,
            "gpu_memory_gb": round(self.gpu_memory_bytes * self.gpu_count / GB, 1),
            "weights_gb": round(self.weights_bytes / GB, 1),
            "estimates": list(self.estimates),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_gb_per_request": round(self.kv_bytes_per_request / GB, 2),
            "max_concurrent_requests_per_replica": self.max_concurrent_requests_per_replica,
            "max_concurrent_requests": self.max_concurrent_requests,
            "suggestion": self.suggestion,
        }
        if self.chosen is not None:
            c = self.chosen
            out |= {
                "parallel": c.layout.as_dict(),
                "layout": c.layout.name,
                "layout_rule": self.why,
                "per_gpu": {
                    "usable_gb": round(c.usable_per_gpu / GB, 1),
                    "weights_gb": round(c.weights_per_gpu / GB, 1),
                    "overhead_gb": round(OVERHEAD_PER_GPU / GB, 1),
                    "kv_space_gb": round(max(c.kv_space_per_gpu, 0) / GB, 1),
                    "kv_gb_per_request": round(c.kv_per_request_per_gpu / GB, 2),
                },
                "layouts": [
                    {
                        "layout": o.layout.name,
                        "parallel": o.layout.as_dict(),
                        "max_concurrent_requests_per_replica": o.per_replica,
                    }
                    for o in self.options
                ],
            }
        else:
            out["ram_gb"] = round(self.ram_bytes / GB, 1)
        if self.kv_tier is not None:
            out["kv_tier"] = self.kv_tier.summary()
        out["mtp"] = self.mtp_on
        if self.workload is not None:
            w = self.workload
            out["workload"] = {
                "developers": w.developers,
                "peak_active_share": w.share,
                "context_tokens": w.context,
                "declared": w.declared,
                "peak_concurrent_requests": w.peak,
                "capacity": self.capacity_at_peak,
                "carried": self.carried,
                "advice": self.advice,
                "sessions_per_developer": w.sessions,
                "prefix_reuse": w.reuse,
                "prefill": self.prefill.summary() if self.prefill else None,
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
    parallel: Layout | None = None,
    workload: Workload | None = None,
    kv_tier_tokens: int = 0,
) -> Plan:
    usd = AWS_INSTANCES[instance_type].usd_per_hour * replicas if instance_type else None
    estimates = (("weights",) if preset.weights_source is None else ()) + (
        ("architecture",) if preset.checked != "verified" else ()
    )
    if external:
        return Plan(
            preset=preset.id,
            engine=preset.engine,
            served_here=False,
            gpu=None,
            gpu_count=0,
            replicas=0,
            max_model_len=max_model_len,
            kv_cache_dtype=kv_cache_dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            gpu_memory_bytes=0,
            weights_bytes=0,
            kv_bytes_per_token=0,
            kv_bytes_per_request=0,
            indexer_bytes_per_request=0,
            fits=True,
            reason="the model is served by an external endpoint; only the front door runs here",
        )
    g = GPUS[gpu] if gpu else None
    if preset.engine == "llama.cpp":
        kv_cache_dtype = LLAMACPP_CACHE_TYPE
    kv_tok = math.ceil(kv_bytes_per_token(preset, kv_cache_dtype, g))
    kv_req = kv_bytes_per_request(preset, kv_cache_dtype, max_model_len, g)
    indexer = preset.attention.indexer_bytes_per_layer * preset.attention.layers * max_model_len
    label = lay.kv_dtype_label(preset, kv_cache_dtype, g)
    workload = workload or Workload(1, 1.0, max_model_len, declared=False)
    served = functools.partial(
        Plan,
        preset=preset.id,
        engine=preset.engine,
        served_here=True,
        replicas=replicas,
        max_model_len=max_model_len,
        kv_cache_dtype=label,
        gpu_memory_utilization=gpu_memory_utilization,
        weights_bytes=preset.weight_bytes,
        kv_bytes_per_token=kv_tok,
        kv_bytes_per_request=kv_req,
        indexer_bytes_per_request=indexer,
        estimates=estimates,
        workload=workload,
        usd_per_hour=usd,
        instance_type=instance_type,
    )
    if preset.engine == "llama.cpp" and gpu is None:
        need = preset.weight_bytes + kv_req
        return served(
            gpu=None,
            gpu_count=0,
            gpu_memory_bytes=0,
            fits=True,
            reason=f"runs on CPU with llama.cpp; needs about {need / GB:.1f} GB of RAM per replica",
            ram_bytes=need,
        )
    if gpu is None or g is None:
        raise ValueError(f"{preset.id} runs on vLLM and needs a GPU model")
    layouts = [parallel] if parallel else lay.candidates(preset, g, gpu_count)
    layouts = layouts or [Layout(gpu_count, expert=preset.expert_bytes > 0 and gpu_count > preset.max_plain_tp)]
    options = tuple(
        _option(preset, gpu, x, max_model_len, workload.context, kv_cache_dtype, gpu_memory_utilization)
        for x in layouts
    )
    per_gpu = pf.tokens_per_s_per_gpu(preset, gpu, workload.context)
    peak = {"active": workload.peak, "live": workload.live, "context": workload.context, "reuse": workload.reuse}
    peak["tier_tokens_per_replica"] = kv_tier_tokens  # the host KV tier (KVTIER sizes it; 0: none)

    def prefill_of(o: Option) -> pf.Check | None:
        if per_gpu is None:
            return None
        n, held = max(replicas, 1), o.per_replica_at_peak
        return pf.check(per_gpu=per_gpu, gpus=o.layout.gpus, replicas=n, resident_per_replica=held, **peak)

    def sustains(o: Option) -> bool:
        c = prefill_of(o)
        return c is None or c.sustained

    chosen, why = _choose(options, workload, max(replicas, 1), overridden=parallel is not None, sustains=sustains)
    where = f"{gpu_count}× {gpu} ({g.memory_bytes * gpu_count / GiB:.0f} GiB, {gpu_memory_utilization:.0%} usable)"
    if chosen.weights_per_gpu + OVERHEAD_PER_GPU > chosen.usable_per_gpu:
        fits = False
        reason = (
            f"the weights do not fit: {preset.id} with {chosen.layout.name} puts {chosen.weights_per_gpu / GB:.0f} GB "
            f"of weights + {OVERHEAD_PER_GPU / GB:.0f} GB overhead on each GPU, {where} gives "
            f"{chosen.usable_per_gpu / GB:.0f} GB per GPU"
        )
    elif chosen.per_replica < 1:
        fits = False
        reason = (
            f"the weights fit but no full-context request does: one {max_model_len}-token request needs "
            f"{chosen.kv_per_request_per_gpu / GB:.1f} GB of KV cache on each GPU with {chosen.layout.name}, {where} "
            f"leaves {chosen.kv_space_per_gpu / GB:.1f} GB per GPU; lower maxModelLen"
        )
    else:
        fits = True
        reason = f"fits on {where}: {chosen.per_replica} concurrent {max_model_len}-token requests per replica"
    suggestion = None
    if not fits and suggest:
        suggestion = smallest_fit(preset, max_model_len, kv_cache_dtype, gpu_memory_utilization, gpu=gpu)
    p = served(
        gpu=gpu,
        gpu_count=gpu_count,
        gpu_memory_bytes=g.memory_bytes,
        fits=fits,
        reason=reason,
        chosen=chosen,
        options=options,
        why=why,
        suggestion=suggestion,
        prefill=prefill_of(chosen) if fits else None,
    )
    if fits and suggest and not p.carried:
        p = _with_advice(p, preset, kv_cache_dtype)
    return p


def _choose(
    options: tuple[Option, ...], w: Workload, replicas: int, *, overridden: bool, sustains: Callable[[Option], bool]
) -> tuple[Option, str]:
    if overridden:
        return options[0], "set by coderig:model.parallel"
    fitting = [o for o in options if o.per_replica >= 1]
    carrying = [o for o in fitting if o.per_replica_at_peak * replicas >= w.peak]  # lowest latency first
    for o in carrying:
        if sustains(o):
            return o, "the lowest-latency layout that carries the workload"
    if carrying:
        return carrying[0], "the lowest-latency layout that carries the workload (none sustains its prefill)"
    if not fitting:
        return options[0], "no layout holds a full-context request"
    best = max(fitting, key=lambda o: o.per_replica)  # max() keeps the first (lowest latency) of equals
    return best, "no layout carries the workload: the one with the most full-context concurrency"


def _best_at(preset: Preset, gpu: str, count: int, kv_dtype: str, util: float, ctx: int, w: Workload) -> Option | None:
    p = plan(
        preset,
        gpu=gpu,
        gpu_count=count,
        max_model_len=ctx,
        kv_cache_dtype=kv_dtype,
        gpu_memory_utilization=util,
        suggest=False,
        workload=w,
    )
    fitting = [o for o in p.options if o.per_replica >= 1]
    return max(fitting, key=lambda o: o.per_replica_at_peak) if fitting else None


def _with_advice(p: Plan, preset: Preset, kv_dtype: str) -> Plan:
    """What carries the workload when this stack does not: more replicas here, or an AWS instance type."""
    w, c = p.workload, p.chosen
    assert w is not None and c is not None and p.gpu is not None  # noqa: S101 - a fitting GPU plan
    parts: list[str] = []
    if c.per_replica_at_peak:
        n = math.ceil(w.peak / c.per_replica_at_peak)
        cost = f", ${AWS_INSTANCES[p.instance_type].usd_per_hour * n:.2f}/h" if p.instance_type else ""
        parts.append(f"{n} replicas of {p.gpu_count}× {p.gpu} with {c.layout.name}{cost}")
    aws = []
    for i in AWS_INSTANCES.values():
        o = _best_at(preset, i.gpu, i.gpu_count, kv_dtype, p.gpu_memory_utilization, p.max_model_len, w)
        if o and o.per_replica_at_peak:
            n = math.ceil(w.peak / o.per_replica_at_peak)
            aws.append((n * i.usd_per_hour, n, i.name, o.layout.name))
    if aws:
        usd, n, name, layout_name = min(aws)
        parts.append(f"on AWS {n}× {name} with {layout_name} (${usd:.2f}/h)")
    advice = "would carry it: " + "; or ".join(parts) if parts else "no catalog configuration carries it"
    return dataclasses.replace(p, advice=advice)


def smallest_fit(preset: Preset, max_model_len: int, kv_cache_dtype: str, util: float, gpu: str | None = None) -> str:
    """What holds the preset, for the hardware in the stack file first: the smallest count per host of
    the same `gpu`, then the smallest configuration of another GPU, then the cheapest AWS type."""

    def fits(gpu: str, n: int) -> bool:
        return plan(
            preset,
            gpu=gpu,
            gpu_count=n,
            max_model_len=max_model_len,
            kv_cache_dtype=kv_cache_dtype,
            gpu_memory_utilization=util,
            suggest=False,
        ).fits

    parts = []
    if gpu:
        same = [n for n in GPU_COUNTS if fits(gpu, n)]
        parts.append(
            f"with your GPU: {same[0]}× {gpu} per host ({GPUS[gpu].memory_bytes * same[0] / GiB:.0f} GiB)"
            if same
            else f"no count of {gpu} per host holds it ({GPU_COUNTS[-1]} at most; each host is a replica holding "
            "a whole copy, so more hosts do not help)"
        )
    options = [
        (g.memory_bytes * n, n, g.name) for g in GPUS.values() if g.name != gpu for n in GPU_COUNTS if fits(g.name, n)
    ]
    if not options and not parts:
        return f"no GPU configuration in the catalog holds {preset.id} at maxModelLen {max_model_len}"
    if options:
        _, n, name = min(options)
        other = "other GPUs: " if gpu else ""
        parts.append(f"{other}smallest that fits: {n}× {name} ({GPUS[name].memory_bytes * n / GiB:.0f} GiB)")
    text = "; ".join(parts)
    aws = [i for i in AWS_INSTANCES.values() if fits(i.gpu, i.gpu_count)]
    if aws:
        cheapest = min(aws, key=lambda i: i.usd_per_hour)
        text += f"; on AWS: {cheapest.name} (${cheapest.usd_per_hour:.2f}/h)"
    return text


def plan_stack(settings: StackSettings) -> Plan:
    """The plan for a validated stack: the GPUs of one replica come from the target."""
    t = settings.target
    m = settings.model
    gpu, count = t.gpus
    w = settings.workload
    if w is not None:
        developers = w.developers or len(settings.developers)
        workload = Workload(
            developers,
            w.peakActiveShare,
            w.contextTokens or m.max_model_len,
            sessions=w.sessionsPerDeveloper,
            reuse=w.prefixReuse,
        )
    else:
        workload = Workload(max(1, len(settings.developers)), 1.0, m.max_model_len, declared=False)
    p = plan(
        mtp.effective(m.spec, m.mtp_on),
        gpu=gpu,
        gpu_count=count,
        max_model_len=m.max_model_len,
        kv_cache_dtype=m.kvCacheDtype,
        gpu_memory_utilization=m.gpuMemoryUtilization,
        replicas=t.replica_count,
        instance_type=t.instance_type,
        external=not t.serves_model,
        parallel=m.parallel.layout(count) if m.parallel and count else None,
        workload=workload,
    )
    c = p.chosen
    rank = None
    if c is not None and p.fits:
        per_token = c.kv_per_request_per_gpu / p.max_model_len
        rank = RankKv(c.layout.tensor, c.layout.data, per_token, c.kv_space_per_gpu, workload.context)
    tier = host_tier(m.kvOffload, settings.kv_host, rank) if p.served_here else None
    fill = p.prefill.with_tier(tier.tokens) if p.prefill and tier and tier.on else p.prefill  # what the tier adds
    return dataclasses.replace(p, mtp_on=m.mtp_on, kv_tier=tier, prefill=fill)
