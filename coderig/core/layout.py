"""Parallel layouts of one model replica on the pinned vLLM and what one GPU of each holds.
Pure arithmetic, no I/O. Paths below are inside the vLLM wheel's `vllm/` package, first read at 0.28.0.
Re-read at the pin, 0.34.0 (every path below still exists there): the 656 B fp8_ds_mla row
(v1/attention/backend.py: get_fp8_ds_mla_row_bytes), the 132 B indexer key, the batched-token tiers,
the CUDA MLA backend priorities, and decode context parallelism on Hopper's FlashMLA-sparse, which
0.34 supports (see mla_backend). The GQA, sliding-window and mamba rules are as read at 0.28.0.

A layout is (tensor, data, decode_context, expert): `tensor × data` GPUs per replica.

KV cache per GPU rank (per token, per layer):
- GQA: 2 × max(1, kv_heads // tensor) × head_dim × bytes. Heads split over TP ranks down to one per
  rank and are replicated beyond (config/model.py: ModelConfig.get_num_kv_heads;
  model_executor/layers/linear.py: QKVParallelLinear). Decode context parallelism on GQA is refused.
- MLA: one latent per token per layer, `num_kv_heads=1`, on every TP rank in full
  (model_executor/layers/attention/mla_attention.py: MLAAttention.get_kv_cache_spec): 1152 B bf16,
  576 B fp8, 656 B `fp8_ds_mla` (FlashMLA-sparse: 512 fp8 + 16 B scales + 64 bf16 rope,
  v1/attention/backends/mla/flashmla_sparse.py). DSA models add the indexer key cache, 132 B
  (model_executor/models/deepseek_v2.py: Indexer, DeepseekV32IndexerCache), in the same block group
  (v1/kv_cache_interface.py: UniformTypeKVCacheSpecs). Decode context parallelism stripes both over
  `decode_context` ranks (v1/kv_cache_interface.py: FullAttentionSpec.max_memory_usage_bytes divides
  max_model_len by dcp) where the backend returns the softmax LSE (v1/worker/cp_utils.py:
  check_attention_cp_compatibility; FlashMLA-sparse, the Hopper sparse backend, does not; the
  Blackwell FlashInfer-MLA-sparse does, with 576 B fp8).
- Data-parallel attention: every DP rank is its own engine with its own KV pool holding only its own
  requests (docs/serving/data_parallel_deployment.md: "Each DP engine has an independent KV cache").
- Sliding-window layers hold min(window − 1 + max_num_batched_tokens, context) tokens
  (v1/kv_cache_interface.py: SlidingWindowSpec.max_admission_blocks_per_request; the batched-token
  default per GPU from engine/arg_utils.py); linear-attention state is split over TP ranks
  (model_executor/layers/mamba/mamba_utils.py) and held twice with prefix caching ("align" mode).
Block rounding (at most one block per request) is left out.

Weights per GPU rank: attention, dense layers, shared experts and embeddings follow the attention
TP group (÷ tensor, replicated over DP ranks); routed experts are split over all `tensor × data`
ranks with expert parallelism, and flattened over the same ranks by MoE tensor parallelism without it
(model_executor/layers/fused_moe/config.py: FusedMoEParallelConfig.make).

Free memory per rank: total × gpu_memory_utilization − non-KV memory (weights, activations at
max_num_batched_tokens, CUDA graphs, NCCL/all2all buffers), measured per worker
(v1/worker/gpu_worker.py: Worker.determine_available_memory); the non-weight part is the
OVERHEAD_PER_GPU heuristic here. vLLM gives every rank of an engine the smallest block count of
any rank (v1/core/kv_cache_utils.py: get_kv_cache_configs) and reports "Maximum concurrency for
L tokens per request" = blocks ÷ blocks per request, so concurrency is what the tightest rank holds,
× data-parallel engines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coderig.core.catalog import GiB, Gpu, Preset

# Activations at max_num_batched_tokens, CUDA graphs, NCCL / all2all buffers, sparse-MLA workspaces:
# not a vLLM constant (v1/worker/gpu_worker.py profiles them at start and gives the KV cache what is
# left); 3 GiB per rank is a heuristic, not measured here (no GPU). Unverified.
OVERHEAD_PER_GPU = 3 * GiB
GQA_ELEMENT_BYTES = {"fp8": 1.0, "bf16": 2.0, "auto": 2.0, "q8_0": 34 / 32}
MLA_BF16_BYTES_PER_ELEMENT = 2
FP8_DS_MLA_BYTES = 656  # mla_attention.py: state_content_bytes=656 if kv_cache_dtype == "fp8_ds_mla"


@dataclass(frozen=True)
class Layout:
    tensor: int
    data: int = 1
    decode_context: int = 1
    expert: bool = False

    @property
    def gpus(self) -> int:
        return self.tensor * self.data

    @property
    def name(self) -> str:
        parts = [f"TP{self.tensor}"] if self.tensor > 1 or self.data == 1 else []
        if self.data > 1:
            parts.append(f"DP{self.data}")
        if self.decode_context > 1:
            parts.append(f"DCP{self.decode_context}")
        if self.expert:
            parts.append("EP")
        return "+".join(parts)

    def flags(self) -> list[str]:
        """vLLM flags (engine/arg_utils.py: --tensor-parallel-size, --data-parallel-size,
        --decode-context-parallel-size, --enable-expert-parallel; tests/vllm has the pinned vLLM parse them)."""
        out = ["--tensor-parallel-size", str(self.tensor)]
        if self.data > 1:
            out += ["--data-parallel-size", str(self.data)]
        if self.decode_context > 1:
            out += ["--decode-context-parallel-size", str(self.decode_context)]
        if self.expert:
            out.append("--enable-expert-parallel")
        return out

    def as_dict(self) -> dict[str, object]:
        return {"tensor": self.tensor, "data": self.data, "decode_context": self.decode_context, "expert": self.expert}


@dataclass(frozen=True)
class MlaBackend:
    name: str
    fp8_bytes: int  # bytes per latent with --kv-cache-dtype fp8
    decode_context: bool  # returns the LSE for decode: can run under decode context parallelism


def mla_backend(preset: Preset, gpu: Gpu | None) -> MlaBackend:
    """The MLA backend vLLM 0.34 picks (platforms/cuda.py: _get_backend_priorities) as far as sizing goes."""
    sm = gpu.sm if gpu else 0
    if preset.attention.sparse:
        if sm >= 100:  # Blackwell: FlashInfer-MLA-sparse keeps "standard" fp8 (576 B), supports DCP
            return MlaBackend("FLASHINFER_MLA_SPARSE", 576, True)
        # Hopper: FlashAttn-MLA-sparse comes first but takes no fp8 cache and no DCP (supported_kv_cache_dtypes,
        # supports_dcp unset), so fp8 or DCP runs FlashMLA-sparse: fp8 → fp8_ds_mla, and since vLLM 0.34 it
        # runs DCP (v1/attention/backends/mla/flashmla_sparse.py: FlashMLASparseImpl.supports_dcp = True,
        # can_return_lse_for_decode = True; at 0.28 it had neither)
        return MlaBackend("FLASHMLA_SPARSE", FP8_DS_MLA_BYTES, True)
    return MlaBackend("FLASHMLA", 576, True)


def kv_dtype_label(preset: Preset, kv_dtype: str, gpu: Gpu | None) -> str:
    if preset.attention.kind == "mla" and kv_dtype == "fp8":
        b = mla_backend(preset, gpu)
        return "fp8 (fp8_ds_mla)" if b.fp8_bytes == FP8_DS_MLA_BYTES else "fp8"
    return "bf16" if kv_dtype == "auto" else kv_dtype


def _kv_heads(preset: Preset, layout: Layout | None) -> int:
    heads = preset.attention.kv_heads
    return heads if layout is None else max(1, heads // layout.tensor)


def kv_bytes_per_token(preset: Preset, kv_dtype: str, gpu: Gpu | None = None, layout: Layout | None = None) -> float:
    """Bytes cached per token over the layers that keep the whole context: one copy of the model's
    cache (layout None), or what one GPU rank of `layout` holds."""
    a = preset.attention
    if a.kind == "mla":
        latent = a.latent_dim * MLA_BF16_BYTES_PER_ELEMENT
        if kv_dtype == "fp8":
            latent = mla_backend(preset, gpu).fp8_bytes
        per_layer = latent + a.indexer_bytes_per_layer
        return per_layer * a.layers / (layout.decode_context if layout else 1)
    return 2 * _kv_heads(preset, layout) * a.head_dim * GQA_ELEMENT_BYTES[kv_dtype] * a.layers


def batched_tokens(gpu: Gpu | None) -> int:
    """vLLM's default max_num_batched_tokens for the API server (engine/arg_utils.py; the same tiers at
    0.28 and 0.34, which keeps GB10 on the small one)."""
    if gpu is None:
        return 2048
    if gpu.memory_bytes >= 160 * GiB:
        return 16384
    if gpu.memory_bytes >= 70 * GiB and gpu.name != "A100":
        return 8192
    return 2048


def kv_bytes_per_request(
    preset: Preset, kv_dtype: str, context: int, gpu: Gpu | None = None, layout: Layout | None = None
) -> int:
    """KV cache of one request holding `context` tokens: one copy (layout None) or on one rank."""
    a = preset.attention
    full = kv_bytes_per_token(preset, kv_dtype, gpu, layout) * context
    per_sliding_layer = 2 * _kv_heads(preset, layout) * a.head_dim * GQA_ELEMENT_BYTES[kv_dtype]
    sliding = a.sliding_layers * per_sliding_layer * min(context, a.sliding_window - 1 + batched_tokens(gpu))
    state = 0
    if a.state_bytes_per_request:
        state = 2 * a.state_bytes_per_request // (layout.tensor if layout else 1)
    return math.ceil(full + sliding) + state


def weights_per_gpu(preset: Preset, layout: Layout) -> int:
    dense = preset.weight_bytes - preset.expert_bytes
    return math.ceil(dense / layout.tensor + preset.expert_bytes / layout.gpus)


def problems(preset: Preset, gpu: Gpu | None, layout: Layout) -> list[tuple[str, str]]:
    """Why vLLM 0.28 would not run `preset` with `layout`: (settings sub-key, message) pairs."""
    a = preset.attention
    out: list[tuple[str, str]] = []
    moe = preset.expert_bytes > 0
    if a.attention_heads % layout.tensor:
        out.append(("tensor", f"got {layout.tensor}; it must divide {preset.id}'s {a.attention_heads} attention heads"))
    elif a.kind == "gqa" and max(a.kv_heads, layout.tensor) % min(a.kv_heads, layout.tensor):
        # model attention classes assert kv_heads % tp == 0 or tp % kv_heads == 0
        out.append(("tensor", f"got {layout.tensor}; it must divide or be a multiple of {a.kv_heads} KV heads"))
    if layout.expert and not moe:
        out.append(("expert", f"got true; {preset.id} is a dense model, it has no experts to shard (allowed: false)"))
    if moe and not layout.expert and layout.gpus > preset.max_plain_tp:
        out.append(
            (
                "expert",
                f"got false; {preset.id} shards its FP8 experts over at most {preset.max_plain_tp} GPUs without "
                f"expert parallelism (vLLM recipe), this layout uses {layout.gpus}: set expert: true",
            )
        )
    dcp = layout.decode_context
    if dcp > 1:
        if a.kind != "mla":
            out.append(
                (
                    "decodeContext",
                    f"got {dcp}; {preset.id} uses GQA attention, decode context parallelism is for MLA (allowed: 1)",
                )
            )
        elif layout.tensor % dcp:
            out.append(("decodeContext", f"got {dcp}; it must divide tensor ({layout.tensor})"))
        elif not mla_backend(preset, gpu).decode_context:
            b = mla_backend(preset, gpu)
            out.append(
                (
                    "decodeContext",
                    f"got {dcp}; on {gpu.name if gpu else 'this GPU'} vLLM runs {preset.id} with {b.name}, which "
                    "cannot run decode context parallelism (v1/worker/cp_utils.py); allowed: 1",
                )
            )
    return out


def candidates(preset: Preset, gpu: Gpu | None, gpus: int) -> list[Layout]:
    """The layouts coderig considers for `gpus` GPUs, lowest per-request latency first: tensor
    parallelism shards each request's attention and experts over every GPU; decode context
    parallelism adds a gather per layer, more with more ranks; data-parallel attention runs each
    request's attention on one GPU and moves tokens to experts all-to-all."""
    moe = preset.expert_bytes > 0
    out = [Layout(gpus, expert=moe and gpus > preset.max_plain_tp)]
    if preset.attention.kind == "mla" and preset.decode_context:
        d = 2
        while d <= gpus:
            out.append(Layout(gpus, decode_context=d, expert=out[0].expert))
            d *= 2
    if moe and preset.data_parallel_attention and gpus > 1:
        out.append(Layout(1, data=gpus, expert=True))
    return [lay for lay in out if not problems(preset, gpu, lay)]
