"""The plan as `coderig plan` prints it and `plan.txt` holds it: one line per figure, each with the
arithmetic that produced it. Reads a `coderig.core.planner.Plan`; decides nothing."""

from __future__ import annotations

from coderig.core import kv_tier, mtp, prefill
from coderig.core import layout as lay
from coderig.core.catalog import GB, GPUS, PRESETS, GiB, Preset
from coderig.core.layout import OVERHEAD_PER_GPU
from coderig.core.planner import RULE, Plan


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _sessions(n: float) -> str:
    return "" if n == 1 else f" × {n:g} sessions"


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def _kv_breakdown(p: Plan, preset: Preset) -> str:
    a = preset.attention
    if a.kind == "mla":
        latent = p.kv_bytes_per_token // a.layers - a.indexer_bytes_per_layer
        idx = f" + {a.indexer_bytes_per_layer} B indexer" if a.indexer_bytes_per_layer else ""
        return f"{a.layers} layers × ({latent} B latent{idx})"
    return f"{a.layers} layers × 2 × {a.kv_heads} KV heads × {a.head_dim}, {p.kv_cache_dtype}"


def format_plan(p: Plan, stack: str = "") -> str:
    preset = mtp.effective(PRESETS[p.preset], p.mtp_on)
    est = "weights" in p.estimates
    arch = "" if "architecture" not in p.estimates else f" (architecture {preset.checked}, see catalog)"
    lines = [f"stack {stack}: {p.preset} ({p.engine})" if stack else f"{p.preset} ({p.engine})"]
    if not p.served_here:
        lines += [
            f"  max-model-len      {p.max_model_len} tokens (what the front door and clients assume it serves)",
            f"  fits: {p.reason}",
        ]
        return "\n".join(lines)
    if p.gpu:
        where = f"{p.gpu_count}× {p.gpu}" + (f" ({p.instance_type})" if p.instance_type else "")
        lines.append(
            f"  GPUs per replica   {where}, {p.gpu_memory_bytes * p.gpu_count / GB:.1f} GB, replicas {p.replicas}"
        )
    lines += [
        f"  weights            {_gb(p.weights_bytes)}" + (" (estimate)" if est else ""),
        f"  max-model-len      {p.max_model_len} tokens, KV cache {p.kv_cache_dtype}",
        f"  KV per token       {p.kv_bytes_per_token} bytes: {_kv_breakdown(p, preset)}{arch}",
    ]
    req = f"  KV per request     {p.kv_bytes_per_request / GB:.2f} GB at full context"
    if p.indexer_bytes_per_request:
        latent = p.kv_bytes_per_request - p.indexer_bytes_per_request
        req += f" ({latent / GB:.2f} GB latent + {p.indexer_bytes_per_request / GB:.2f} GB indexer)"
    lines.append(req)
    c = p.chosen
    if c is None:
        lines.append(
            f"  concurrency        1 request at a time per replica (--parallel 1: each request gets the whole "
            f"{p.max_model_len}-token context)"
        )
    else:
        lines += [
            f"  layout             {c.layout.name} ({' '.join(c.layout.flags())}): {p.why}",
            f"  per GPU            {_gb(c.usable_per_gpu)} usable ({p.gpu_memory_utilization:.0%}) − "
            f"{_gb(c.weights_per_gpu)} weights − {_gb(OVERHEAD_PER_GPU)} overhead = {_gb(max(c.kv_space_per_gpu, 0))} "
            f"KV; {c.kv_per_request_per_gpu / GB:.2f} GB per full-context request",
            f"  concurrency        {c.per_replica} full-context requests per replica, "
            f"{p.max_concurrent_requests} in total ({_n(p.replicas, 'replica')})",
        ]
        alts = " · ".join(f"{o.layout.name} {o.per_replica}" for o in p.options)
        backend = lay.mla_backend(preset, GPUS[p.gpu]) if p.gpu and preset.attention.kind == "mla" else None
        if backend and preset.decode_context and not backend.decode_context:
            alts += f"; no TP+DCP on {p.gpu} ({backend.name} cannot run decode context parallelism)"
        lines.append(f"  layouts            full-context requests per replica: {alts}")
        lines.append(f"  layout rule        {RULE}")
    if p.engine == "vllm":
        lines.append(f"  speculative        {mtp.describe(PRESETS[p.preset], p.mtp_on)}")
    if p.kv_tier is not None and p.engine == "vllm":
        lines.append(_tier_line(p.kv_tier))
    if p.workload is not None:
        w = p.workload
        src = "coderig:workload" if w.declared else "no coderig:workload: every developer, full context"
        verdict = "carried" if p.carried else "NOT carried"
        who = f"{_n(w.developers, 'developer')} × {w.share:.0%}{_sessions(w.sessions)}"
        line = (
            f"  workload           {who} at {w.context} tokens = "
            f"{_n(w.peak, 'concurrent request')} ({src}): {verdict}, capacity {p.capacity_at_peak}"
        )
        lines.append(line + (f"; {p.advice}" if p.advice else ""))
        if p.prefill is not None:
            lines.append(prefill.plan_line(p.prefill, p.replicas))
    lines.append(f"  {'fits' if p.fits else 'DOES NOT FIT'}: {p.reason}")
    if p.suggestion:
        lines.append(f"  {p.suggestion}")
    return "\n".join(lines)


def _tier_line(t: kv_tier.Tier) -> str:
    if not t.on:
        return f"  host KV tier       {t.why}"
    line = (
        f"  host KV tier       {t.size_bytes / GiB:.0f} GiB per host (--kv-offloading-size {t.per_engine_gib:g} × "
        f"{t.engines} engine{'s' if t.engines > 1 else ''}): {t.tokens} tokens, {t.sessions(t.tokens)} sessions "
        f"of {t.context} tokens, beside the GPUs' {t.gpu_tokens} tokens ({t.sessions(t.gpu_tokens)} sessions); {t.why}"
    )
    if t.tokens <= t.gpu_tokens:
        line += "; no larger than the GPUs' KV space, so it mostly mirrors what they hold (recipes taxonomy.yaml)"
    return line
