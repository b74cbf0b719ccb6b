"""Prefill at the peak: the input tokens per second the fleet must compute when agents work the way
they do, against what the layout's GPUs can compute. Pure arithmetic, no I/O.

The traffic (llm-d's measurement of real Claude Code traffic on vLLM, GLM-5.2-FP8 on H200, 2026-07,
quoted in issue #23): a developer's sub-agents fan out to a median of 7 concurrent sessions (p90 51);
96 % of turns reuse at least 90 % of their prefix; the median gap between turns is 2 s; a turn with a
cached prefix reached its first token in 2.68 s.

Demand. At the peak `active` sessions each start a turn every TURN_CYCLE_S (the gap + the cached
first-token time; the output's time is left out, so this is an upper bound). A turn whose prefix is
still cached computes `context × (1 − reuse)` tokens; one whose prefix was evicted computes all
`context` tokens. Prefixes stay cached for `resident ÷ live` of the sessions (LRU over every
developer's sessions), where `resident` is how many whole contexts the GPUs' KV cache (what the
layout holds at the workload's context) and a host KV tier hold:

    demand = active × context × (held × (1 − reuse) + (1 − held)) ÷ TURN_CYCLE_S,
    held = min(1, resident ÷ live)

Capacity. Prefill is compute-bound: tokens/s per GPU = EFFICIENCY × the GPU's dense tensor FLOP/s ÷
FLOPs per token, with FLOPs per token = 2 × active parameters + attention over the `context` before
it (QKᵀ and AV: 2 × query heads × (qk + v dims) × attended tokens per layer; MLA attends the 576-dim
latent and returns 512; DSA attends its top 2048 tokens and its indexer scores every token).
EFFICIENCY is DeepSeek's own production figure (see PREFILL_ANCHOR). Estimates, not measured here
(no GPU): they decide a warning and the replica advice, never a rendered flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from coderig.core.catalog import Preset

# --- the traffic (issue #23, llm-d) ---------------------------------------------------------------
SESSIONS_PER_DEVELOPER = 7  # median sub-agent fan-out (p90: 51)
PREFIX_REUSE = 0.96  # 96 % of turns reuse >= 90 % of their prefix: taken as the share of input cached
TURN_GAP_S = 2.0  # median gap between a session's turns
CACHED_FIRST_TOKEN_S = 2.68  # a turn with a cached prefix: time to first token
TURN_CYCLE_S = TURN_GAP_S + CACHED_FIRST_TOKEN_S

# --- per-GPU prefill --------------------------------------------------------------------------------
# DeepSeek, "DeepSeek-V3/R1 Inference System Overview" (deepseek-ai/open-infra-index, 2025-03-01):
# each H800 node (8 GPUs) averaged ~73.7k input tokens/s during prefill *including cache hits*, and
# 56.3 % of the input tokens hit the KV cache. Computed tokens per GPU: 73.7k × (1 − 0.563) ÷ 8 ≈
# 4,026/s on DeepSeek-V3 (37B active), i.e. 2 × 37e9 FLOPs each; an H800 computes like an H100
# (1,979 dense FP8 TFLOP/s). Their attention at their (unpublished) context is left out, which
# makes EFFICIENCY lower than the truth: capacity errs low.
PREFILL_ANCHOR_TOKENS_PER_S = 73_700 * (1 - 0.563) / 8
PREFILL_ANCHOR_FLOPS_PER_TOKEN = 2 * 37e9
EFFICIENCY = PREFILL_ANCHOR_TOKENS_PER_S * PREFILL_ANCHOR_FLOPS_PER_TOKEN / 1979e12

# Dense (no sparsity) tensor TFLOP/s per GPU, FP8 where the GPU has it (NVIDIA datasheets list twice
# these "with sparsity"): H100 SXM / H200 3,958 → 1,979; HGX B200 and B300 72 PFLOPS FP8 per 8 GPUs →
# 4,500; L40S 1,466 → 733; L4 485 → 242; A100 (no FP8) BF16 312. A10G: no NVIDIA datasheet (AWS's
# variant of the A10), so no figure.
DENSE_TFLOPS: dict[str, float] = {
    "H100": 1979,
    "H200": 1979,
    "B200": 4500,
    "B300": 4500,
    "L40S": 733,
    "L4": 242,
    "A100": 312,
}

# Parameters active per token, from the model cards: DeepSeek-V3.2 671B-A37B; GLM-4.7 355B-A32B
# (GLM-4.5 family); GLM-5 744B-A40B; MiniMax-M2.1 230B-A10B; Qwen3-Coder-480B-A35B; gpt-oss-120b
# 117B with 5.1B active (OpenAI's model card); Qwen3.6-35B-A3B.
ACTIVE_PARAMS: dict[str, float] = {
    "deepseek-v3.2": 37e9,
    "glm-4.7": 32e9,
    "glm-5": 40e9,
    "minimax-m2.1": 10e9,
    "qwen3-coder-480b": 35e9,
    "gpt-oss-120b": 5.1e9,
    "qwen3.6-35b-a3b": 3e9,
}
# DSA: each token's indexer scores every earlier token with `heads × 128` dims, then attends the top
# 2048 (DeepSeek-V3.2's config.json: index_topk 2048, index_n_heads 64, index_head_dim 128; GLM-5's
# technical report, arXiv:2602.15763, architecture table: 32 indexer heads of dim 128)
DSA_TOP_K = 2048
DSA_INDEXER_HEAD_DIM = 128
DSA_INDEXER_HEADS: dict[str, int] = {"deepseek-v3.2": 64, "glm-5": 32}
MLA_V_DIM = 512  # the latent attention returns (kv_lora_rank)


@dataclass(frozen=True)
class Workload:
    """The peak a stack is sized for: `developers × share × sessions` requests of `context` tokens at
    once, `reuse` of each turn's input cached (coderig.core.prefill). Without coderig:workload, every
    listed developer with one full-context request (declared False)."""

    developers: int
    share: float
    context: int
    declared: bool = True
    sessions: float = 1.0  # concurrent sessions per active developer (sub-agent fan-out)
    reuse: float = PREFIX_REUSE

    @property
    def peak(self) -> int:
        return max(1, math.ceil(self.developers * self.share * self.sessions - 1e-9))

    @property
    def live(self) -> float:
        """Every developer's sessions: the prefixes worth keeping cached."""
        return self.developers * self.sessions


def flops_per_token(preset: Preset, context: int) -> float | None:
    """FLOPs to prefill one token sitting behind `context` tokens (None: no active-parameter figure)."""
    active = ACTIVE_PARAMS.get(preset.id)
    if active is None:
        return None
    a = preset.attention
    if a.kind == "mla":
        attended = min(context, DSA_TOP_K) if a.sparse else context
        per_layer = 2 * a.attention_heads * (a.latent_dim + MLA_V_DIM) * attended
        if a.sparse:
            per_layer += 2 * DSA_INDEXER_HEADS.get(preset.id, 64) * DSA_INDEXER_HEAD_DIM * context
        attention = a.layers * per_layer
    else:
        qkv = 2 * a.attention_heads * 2 * a.head_dim
        attention = qkv * (a.layers * context + a.sliding_layers * min(context, a.sliding_window))
    return 2 * active + attention


def tokens_per_s_per_gpu(preset: Preset, gpu: str, context: int) -> float | None:
    flops = flops_per_token(preset, context)
    tflops = DENSE_TFLOPS.get(gpu)
    if flops is None or tflops is None:
        return None
    return EFFICIENCY * tflops * 1e12 / flops


def demand(*, active: int, live: float, context: int, reuse: float, resident: float) -> float:
    """Input tokens per second to compute at the peak (module docstring)."""
    held = min(1.0, resident / live) if live > 0 else 1.0
    return active * context * (held * (1 - reuse) + (1 - held)) / TURN_CYCLE_S


def tier_sessions(tier_tokens: int, context: int) -> float:
    """Whole contexts a host KV tier of `tier_tokens` holds (0 when there is none)."""
    return tier_tokens / context if tier_tokens > 0 and context > 0 else 0.0


@dataclass(frozen=True)
class Check:
    """The peak prefill of one plan: what is needed against what the layout's GPUs do."""

    needed: float  # tokens/s with the host tier (if any)
    needed_without_tier: float
    capacity: float  # tokens/s over every replica
    per_gpu: float
    gpus: int
    tier_tokens: int
    replicas_needed: int  # replicas of this layout that would sustain it (0: none up to MAX_REPLICAS)
    inputs: dict[str, Any] = field(default_factory=dict, compare=False)  # check()'s arguments

    def with_tier(self, tier_tokens_per_replica: int) -> Check:
        """The same check with a host KV tier of `tier_tokens_per_replica` tokens (0: none)."""
        return check(**{**self.inputs, "tier_tokens_per_replica": tier_tokens_per_replica})

    @property
    def sustained(self) -> bool:
        return self.capacity >= self.needed

    @property
    def tier_saves(self) -> float:
        return self.needed_without_tier - self.needed

    def summary(self) -> dict[str, object]:
        return {
            "needed_tokens_per_s": round(self.needed),
            "capacity_tokens_per_s": round(self.capacity),
            "per_gpu_tokens_per_s": round(self.per_gpu),
            "sustained": self.sustained,
            "replicas_needed": self.replicas_needed,
            "host_kv_tier_tokens": self.tier_tokens,
            "host_kv_tier_saves_tokens_per_s": round(self.tier_saves),
        }


MAX_REPLICAS = 64


def check(
    *,
    per_gpu: float,
    gpus: int,
    replicas: int,
    active: int,
    live: float,
    context: int,
    reuse: float,
    resident_per_replica: int,
    tier_tokens_per_replica: int = 0,
) -> Check:
    """The prefill check for `replicas` replicas of a layout on `gpus` GPUs that holds
    `resident_per_replica` whole contexts in its GPUs' KV cache (and a host tier of
    `tier_tokens_per_replica` tokens: 0 when absent)."""

    def needed(n: int, tier: int) -> float:
        resident = n * (resident_per_replica + tier_sessions(tier, context))
        return demand(active=active, live=live, context=context, reuse=reuse, resident=resident)

    enough = [n for n in range(1, MAX_REPLICAS + 1) if per_gpu * gpus * n >= needed(n, tier_tokens_per_replica)]
    return Check(
        needed=needed(replicas, tier_tokens_per_replica),
        needed_without_tier=needed(replicas, 0),
        capacity=per_gpu * gpus * replicas,
        per_gpu=per_gpu,
        gpus=gpus,
        tier_tokens=tier_tokens_per_replica,
        replicas_needed=enough[0] if enough else 0,
        inputs={
            "per_gpu": per_gpu,
            "gpus": gpus,
            "replicas": replicas,
            "active": active,
            "live": live,
            "context": context,
            "reuse": reuse,
            "resident_per_replica": resident_per_replica,
        },
    )


def plan_line(c: Check, replicas: int) -> str:
    verdict = "sustained" if c.sustained else "NOT sustained"
    line = (
        f"  prefill at peak    {c.needed:,.0f} input tokens/s needed, {c.capacity:,.0f} can be computed "
        f"({c.gpus * replicas} GPUs × ~{c.per_gpu:,.0f}/s, coderig.core.prefill): {verdict}"
    )
    if c.tier_tokens:
        line += f"; the host KV tier ({c.tier_tokens:,} tokens per replica) saves {c.tier_saves:,.0f}/s"
    else:
        line += "; no host KV tier"
    if not c.sustained:
        more = f"{c.replicas_needed} replicas would" if c.replicas_needed else "no replica count up to 64 would"
        line += (
            f"; {more} (the target's hosts, count or replicas), or lower coderig:workload.sessionsPerDeveloper "
            "or contextTokens"
        )
    return line
