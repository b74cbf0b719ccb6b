"""Model presets, GPUs and AWS GPU instance types.

Architecture numbers are what KV-cache and weight sizing need: layers that keep a per-token cache,
KV heads, head dimension or the MLA latent, the DSA indexer, and how much of the checkpoint is
routed experts. Each preset says where they were read (`source`) and how far that goes
(`checked`): "verified" (read in the pinned vLLM's code or the vLLM recipes), "secondary" (a
verbatim copy of the model's config.json, not the file on Hugging Face itself) or "unverified".
Checkpoint sizes (`weight_bytes`) and the routed-expert share are estimates unless
`weights_source` names where they were read; `coderig plan` marks estimates as such. Sources: the
vLLM 0.28.0 wheel (model_executor/models/*.py) and vllm-project/recipes at 8959cf64.

Parser names are those of the vLLM version pinned in `coderig.core.versions` (see the vLLM
tool-calling and reasoning-output docs for that release).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GiB = 1024**3
GB = 10**9


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: int
    sm: int  # CUDA compute capability × 10: picks vLLM's attention backend (platforms/cuda.py)


# Usable memory per GPU as the clouds and `nvidia-smi` report it.
GPUS: dict[str, Gpu] = {
    g.name: g
    for g in (
        Gpu("L4", 24 * GiB, 89),
        Gpu("A10G", 24 * GiB, 86),
        Gpu("L40S", 48 * GiB, 89),
        Gpu("A100", 80 * GiB, 80),
        Gpu("H100", 80 * GiB, 90),
        Gpu("H200", 141 * GiB, 90),
        Gpu("B200", 179 * GiB, 100),
        Gpu("B300", 268 * GiB, 103),
    )
}
GPU_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class AwsInstance:
    name: str
    gpu: str
    gpu_count: int
    usd_per_hour: float  # us-east-1 on-demand, checked 2026-11
    # Host memory (GiB), AWS's accelerated-computing instance specifications (the EC2 instance-type
    # pages; the same figures in openshift-docs rosa-sdpolicy-am-aws-compute-types.adoc and torchx
    # named_resources_aws.py): what the host KV tier is sized from (coderig.core.kv_tier).
    ram_gib: int = 0


AWS_INSTANCES: dict[str, AwsInstance] = {
    i.name: i
    for i in (
        AwsInstance("g6.xlarge", "L4", 1, 0.805, 16),
        AwsInstance("g6e.xlarge", "L40S", 1, 1.861, 32),
        AwsInstance("g6e.12xlarge", "L40S", 4, 10.49, 384),
        AwsInstance("g6e.48xlarge", "L40S", 8, 30.13, 1536),
        AwsInstance("p4de.24xlarge", "A100", 8, 40.97, 1152),
        AwsInstance("p5.48xlarge", "H100", 8, 55.04, 2048),
        AwsInstance("p5en.48xlarge", "H200", 8, 63.30, 2048),
        AwsInstance("p6-b200.48xlarge", "B200", 8, 113.93, 2048),
    )
}


@dataclass(frozen=True)
class Attention:
    """What the model server caches per token (or per request) for one sequence.

    kind "gqa": each cached layer stores K and V: 2 × kv_heads × head_dim × bytes per element.
    kind "mla": each layer stores one compressed latent of `latent_dim` elements (kv_lora_rank +
    qk_rope_head_dim = 512 + 64); its bytes depend on the cache dtype and the backend
    (coderig.core.layout.mla_backend). DSA models (DeepSeek V3.2, GLM-5) add a lightning-indexer
    key cache of `indexer_bytes_per_layer` per token per layer whatever the cache dtype
    (vLLM 0.28 model_executor/models/deepseek_v2.py: Indexer.__init__ builds
    DeepseekV32IndexerCache(head_dim = 128 + 128 // 128 * 4 = 132, dtype=torch.uint8)).
    Sliding-window layers cache at most the window plus one batch of tokens; linear-attention
    layers keep a fixed state per request (`state_bytes_per_request`, split over TP ranks).
    """

    kind: Literal["gqa", "mla"]
    layers: int  # layers with a per-token cache over the whole context
    kv_heads: int = 0
    head_dim: int = 0
    latent_dim: int = 0  # MLA: elements cached per token per layer
    indexer_bytes_per_layer: int = 0  # DSA: sparse-MLA models (FlashMLA-sparse / FlashInfer-sparse backends)
    sliding_layers: int = 0
    sliding_window: int = 0
    state_bytes_per_request: int = 0
    attention_heads: int = 0  # query heads: tensor parallelism must divide them

    @property
    def sparse(self) -> bool:
        return self.indexer_bytes_per_layer > 0


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    hf_repo: str
    served_name: str  # the default model name clients send: the model's own name, so developers recognise it
    engine: Literal["vllm", "llama.cpp"]
    weight_bytes: int
    attention: Attention
    max_context: int
    default_context: int
    source: str  # where the architecture numbers were read
    checked: Literal["verified", "secondary", "unverified"]  # how far the source goes (module docstring)
    weights_source: str | None = None  # where weight_bytes was read; None: an estimate
    # Routed-expert bytes in the checkpoint (0: dense). Under expert parallelism they are split over
    # every GPU; attention, dense layers, shared experts and embeddings follow the attention TP
    # group and are replicated over data-parallel ranks (vLLM 0.28 fused_moe/config.py:
    # FusedMoEParallelConfig.make). An estimate: MoE layers × experts × 3 × hidden × moe_intermediate
    # × bytes per parameter, from the config numbers in `source`.
    expert_bytes: int = 0
    # Largest tensor-parallel size the checkpoint loads without expert parallelism (FP8 block
    # quantisation must divide the per-rank expert width); above it TP needs --enable-expert-parallel.
    max_plain_tp: int = 8
    data_parallel_attention: bool = False  # the recipe offers single-node DP attention + EP ("dep")
    decode_context: bool = False  # the recipe marks decode context parallelism supported
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    tokenizer_mode: str | None = None
    extra_args: tuple[str, ...] = ()
    chat_template_kwargs: dict[str, object] | None = None  # turns thinking on, where the model has it
    temperature: float | None = None
    top_p: float | None = None
    default_max_tokens: int = 32000
    gguf_file: str | None = None  # llama.cpp: file inside hf_repo
    # What this preset served as before the default became the model's own name: a stack that leaves
    # coderig:model.servedName unset is warned (settings.warnings) and the gateway keeps accepting it.
    former_served_name: str | None = None
    # A chat template shipped with coderig (coderig/core/templates/) instead of the model's own, rendered
    # as the server's --chat-template; a stack picks another or the model's own with coderig:model.chatTemplate.
    chat_template: str | None = None


def _experts(moe_layers: int, experts: int, hidden: int, moe_intermediate: int, bytes_per_param: float) -> int:
    """Routed-expert bytes: gate, up and down projections (3 × hidden × moe_intermediate) per expert."""
    return int(moe_layers * experts * 3 * hidden * moe_intermediate * bytes_per_param)


def _qwen25_coder_cpu(size: str, weight_bytes: int, layers: int, head_dim: int, heads: int) -> Preset:
    """Qwen2.5-Coder-Instruct Q4_K_M on llama.cpp (CPU): the real model coderig's own tests run
    (tests/realmodel.py). Numbers read from the GGUF header of Qwen's file (qwen2.block_count,
    attention.head_count(_kv), embedding_length / head_count, context_length); size = the file's."""
    name = f"Qwen2.5-Coder-{size}-Instruct"
    return Preset(
        id=f"qwen2.5-coder-{size.lower()}-cpu",
        title=f"{name}, GGUF Q4_K_M, llama.cpp on CPU (dev, tests)",
        hf_repo=f"Qwen/{name}-GGUF",
        served_name="coderig-dev",
        engine="llama.cpp",
        weight_bytes=weight_bytes,
        weights_source=f"Qwen/{name}-GGUF q4_k_m file size (sha256-verified in tests/realmodel.py)",
        attention=Attention(kind="gqa", layers=layers, kv_heads=2, head_dim=head_dim, attention_heads=heads),
        max_context=32768,
        default_context=32768,
        source=f"GGUF header of Qwen/{name}-GGUF's q4_k_m file (tests/model/test_real_tool_calls.py reads it)",
        checked="verified",
        gguf_file=f"qwen2.5-coder-{size.lower()}-instruct-q4_k_m.gguf",
        chat_template="qwen2.5-coder-fenced-tools.jinja",
        default_max_tokens=4096,
    )


RECIPES = "vllm-project/recipes@8959cf64 models/"  # the vLLM recipes read for layouts and sizes

PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset(
            id="deepseek-v3.2",
            title="DeepSeek V3.2 (base of umans-coder-v0), 671B MoE, FP8, sparse MLA",
            hf_repo="deepseek-ai/DeepSeek-V3.2",
            served_name="deepseek-v3.2",
            former_served_name="umans-coder-v0",
            engine="vllm",
            weight_bytes=689 * GB,
            attention=Attention(
                kind="mla", layers=61, attention_heads=128, latent_dim=512 + 64, indexer_bytes_per_layer=132
            ),
            max_context=163840,
            default_context=131072,
            source="config.json (verbatim copy, hao-yiwen.github.io deepseek-v3-architecture): num_hidden_layers 61, "
            "kv_lora_rank 512, qk_rope_head_dim 64, index_head_dim 128, 256 routed experts, first_k_dense_replace 3; "
            f"{RECIPES}deepseek-ai/DeepSeek-V3.2.yaml (671B, context 163840, supports_dcp, single_node_dep); "
            "656/576/1152 B per latent and the 132 B indexer from vLLM 0.28 code",
            checked="secondary",
            # 58 MoE layers + the MTP layer × 256 experts × 3 × 7168 × 2048, FP8
            expert_bytes=_experts(58 + 1, 256, 7168, 2048, 1),
            data_parallel_attention=True,
            decode_context=True,
            tool_call_parser="deepseek_v32",
            reasoning_parser="deepseek_v3",
            tokenizer_mode="deepseek_v32",
            chat_template_kwargs={"thinking": True},
            temperature=1.0,
            top_p=0.95,
            default_max_tokens=20000,
        ),
        Preset(
            id="glm-4.7",
            title="GLM-4.7, 355B MoE, FP8, GQA",
            hf_repo="zai-org/GLM-4.7-FP8",
            served_name="glm-4.7",
            engine="vllm",
            weight_bytes=362 * GB,
            attention=Attention(kind="gqa", layers=92, kv_heads=8, head_dim=128, attention_heads=96),
            max_context=202752,
            default_context=131072,
            source="num_hidden_layers 92, num_attention_heads 96, num_key_value_heads 8, head_dim 128, hidden 5120, "
            "160 experts (apxml.com/models/glm-47, not config.json itself); "
            f"{RECIPES}zai-org/GLM-4.7.yaml (358B, context 202752, single_node_dep)",
            checked="secondary",
            # 89 MoE layers (first 3 dense) + the MTP layer × 160 × 3 × 5120 × 1536, FP8
            expert_bytes=_experts(89 + 1, 160, 5120, 1536, 1),
            data_parallel_attention=True,
            tool_call_parser="glm47",
            reasoning_parser="glm45",
            chat_template_kwargs={"enable_thinking": True},
            temperature=1.0,
            top_p=0.95,
        ),
        Preset(
            id="glm-5",
            title="GLM-5, 744B MoE, FP8, sparse MLA (DSA)",
            hf_repo="zai-org/GLM-5-FP8",
            served_name="glm-5",
            engine="vllm",
            weight_bytes=756 * GB,
            attention=Attention(
                kind="mla", layers=78, attention_heads=64, latent_dim=512 + 64, indexer_bytes_per_layer=132
            ),
            max_context=202752,
            default_context=131072,
            source="78 layers (3 dense), kv_lora_rank 512, qk_rope_head_dim 64, 64 heads, index_head_dim 128, "
            "256 experts (NVIDIA Megatron-Bridge docs, GLM-5 report table; not config.json itself); "
            f"{RECIPES}zai-org/GLM-5.yaml (744B, context 202752; no single_node_dep, no supports_dcp)",
            checked="secondary",
            # 75 MoE layers + the MTP layer × 256 × 3 × 6144 × 2048, FP8
            expert_bytes=_experts(75 + 1, 256, 6144, 2048, 1),
            tool_call_parser="glm47",
            reasoning_parser="glm45",
            chat_template_kwargs={"enable_thinking": True},
            temperature=1.0,
            top_p=0.95,
        ),
        Preset(
            id="minimax-m2.1",
            title="MiniMax-M2.1, 230B MoE, FP8, GQA",
            hf_repo="MiniMaxAI/MiniMax-M2.1",
            served_name="minimax-m2.1",
            engine="vllm",
            weight_bytes=230 * GB,  # the recipe says "~220 GB for weights"; kept conservative
            attention=Attention(kind="gqa", layers=62, kv_heads=8, head_dim=128, attention_heads=48),
            max_context=196608,
            default_context=131072,
            source="num_hidden_layers 62, num_attention_heads 48, num_key_value_heads 8, head_dim 128, hidden 3072, "
            "256 experts (test fixtures quoting config.json); "
            f"{RECIPES}MiniMaxAI/MiniMax-M2.1.yaml (230B, context 196608, moe_intermediate 1536, "
            '"pure TP8 is not supported", TP4+EP / DEP on 8 GPUs)',
            checked="secondary",
            expert_bytes=_experts(62, 256, 3072, 1536, 1),
            max_plain_tp=4,  # 1536 / 8 = 192 is not a multiple of the FP8 block (128): recipe
            data_parallel_attention=True,
            tool_call_parser="minimax_m2",
            # minimax_m2 separates the thinking into reasoning_content (LiteLLM turns it into thinking
            # blocks); minimax_m2_append_think would leave <think> text in what Claude Code shows.
            reasoning_parser="minimax_m2",
            extra_args=("--trust-remote-code",),
            temperature=1.0,
            top_p=0.95,
        ),
        Preset(
            id="qwen3-coder-480b",
            title="Qwen3-Coder-480B-A35B-Instruct, FP8, GQA",
            hf_repo="Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8",
            served_name="qwen3-coder-480b",
            engine="vllm",
            weight_bytes=482 * GB,
            attention=Attention(kind="gqa", layers=62, kv_heads=8, head_dim=128, attention_heads=96),
            max_context=262144,
            default_context=131072,
            source="num_hidden_layers 62, num_attention_heads 96, num_key_value_heads 8, head_dim 128, hidden 6144, "
            "160 experts, moe_intermediate 2560 (config.json reproductions); "
            f"{RECIPES}Qwen/Qwen3-Coder-480B-A35B-Instruct.yaml (fp8 pins tp 4; -dp 8 --enable-expert-parallel)",
            checked="secondary",
            weights_source="third-party `du` of the FP8 checkpoint: 450G in 50 safetensors (GiB: 483 GB)",
            expert_bytes=_experts(62, 160, 6144, 2560, 1),
            max_plain_tp=4,  # 2560 / 8 = 320 is not a multiple of the FP8 block (128): recipe
            data_parallel_attention=True,
            tool_call_parser="qwen3_coder",  # no reasoning parser: Qwen3-Coder does not think
            temperature=0.7,
            top_p=0.8,
        ),
        Preset(
            id="gpt-oss-120b",
            title="gpt-oss-120b, 117B MoE, MXFP4, alternating sliding-window attention",
            hf_repo="openai/gpt-oss-120b",
            served_name="gpt-oss-120b",
            engine="vllm",
            weight_bytes=65 * GB,
            attention=Attention(
                kind="gqa",
                layers=18,
                kv_heads=8,
                head_dim=64,
                sliding_layers=18,
                sliding_window=128,
                attention_heads=64,
            ),
            max_context=131072,
            default_context=131072,
            source="36 layers alternating sliding-128/full, 64 heads, num_key_value_heads 8, head_dim 64 (not read "
            "here); the alternation (even layers slide) from vLLM 0.28 models/gpt_oss.py; "
            f"{RECIPES}openai/gpt-oss-120b.yaml (120B, context 131072, TP 1/2/4/8, no single-node dep)",
            checked="unverified",
            # 36 layers × 128 experts × 3 × 2880 × 2880, MXFP4 (4.25 bits per parameter with scales)
            expert_bytes=_experts(36, 128, 2880, 2880, 4.25 / 8),
            tool_call_parser="openai",
            reasoning_parser="openai_gptoss",
            temperature=1.0,
            top_p=1.0,
        ),
        Preset(
            id="qwen3.6-35b-a3b",
            title="Qwen3.6-35B-A3B, MoE, BF16, hybrid linear/full attention",
            hf_repo="Qwen/Qwen3.6-35B-A3B",
            served_name="qwen3.6-35b-a3b",
            engine="vllm",
            weight_bytes=72 * GB,
            attention=Attention(
                kind="gqa",
                layers=10,
                kv_heads=2,
                head_dim=256,
                # 30 Gated DeltaNet layers × (conv 8192 × 3 × 2 B + SSM 32 × 128 × 128 × 4 B), vLLM 0.28
                # mamba_utils.py: MambaStateShapeCalculator.gated_delta_net_state_shape (split over TP)
                state_bytes_per_request=30 * (8192 * 3 * 2 + 32 * 128 * 128 * 4),
                attention_heads=16,
            ),
            max_context=262144,
            default_context=131072,
            source="40 layers (full attention every 4th: 10), 16 heads, num_key_value_heads 2, head_dim 256, "
            "256 experts, moe_intermediate 512 (Qwen3.6 test fixture; linear_num_value_heads 32 from Qwen3.5); "
            f"{RECIPES}Qwen/Qwen3.6-35B-A3B.yaml (35B, context 262144, tp/tep/dep)",
            checked="secondary",
            expert_bytes=_experts(40, 256, 2048, 512, 2),
            data_parallel_attention=True,
            tool_call_parser="qwen3_coder",
            reasoning_parser="qwen3",
            chat_template_kwargs={"enable_thinking": True},
            temperature=0.6,
            top_p=0.95,
        ),
        Preset(
            id="qwen3-1.7b-cpu",
            title="Qwen3-1.7B, GGUF Q4_K_M, llama.cpp on CPU (dev)",
            hf_repo="ggml-org/Qwen3-1.7B-GGUF",
            served_name="qwen3-1.7b",
            former_served_name="coderig-dev",
            engine="llama.cpp",
            weight_bytes=1_280_000_000,
            attention=Attention(kind="gqa", layers=28, kv_heads=8, head_dim=128, attention_heads=16),
            max_context=40960,
            # The whole window: Claude Code's first request alone is ~12-14k tokens (48.7 KB of system
            # prompt and 12 tool definitions, measured with Claude Code 2.1.330), so a multi-turn session
            # needs room above it; the bundle makes Claude Code compact before this limit.
            default_context=40960,
            source="num_hidden_layers 28, num_key_value_heads 8, head_dim 128, max_position_embeddings 40960 "
            "(Qwen/Qwen3-1.7B config.json, not read here; only 28 layers / hidden 2048 seen in a copy)",
            checked="unverified",
            gguf_file="Qwen3-1.7B-Q4_K_M.gguf",
            chat_template_kwargs={"enable_thinking": False},
            temperature=0.6,
            top_p=0.95,
            default_max_tokens=4096,
        ),
        _qwen25_coder_cpu("0.5B", 491_400_064, layers=24, head_dim=64, heads=14),
        _qwen25_coder_cpu("1.5B", 1_117_320_768, layers=28, head_dim=128, heads=12),
    )
}

# llama.cpp's KV cache type (engine.llamacpp_args passes it for K and V): q8_0 stores blocks of 32
# int8 values + one fp16 scale = 34 bytes per 32 elements (ggml/src/ggml-common.h: block_q8_0).
LLAMACPP_CACHE_TYPE = "q8_0"
LLAMACPP_CACHE_BYTES_PER_ELEMENT = 34 / 32
