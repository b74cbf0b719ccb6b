"""Model presets, GPUs and AWS GPU instance types.

Architecture numbers come from each model's `config.json` on Hugging Face (the `source` of each
preset) and are what KV-cache sizing needs: layers that keep a per-token cache, KV heads, head
dimension, or the MLA latent size. Parser names are those of the vLLM version pinned in
`coderig.versions` (see the vLLM tool-calling and reasoning-output docs for that release).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GiB = 1024**3
GB = 10**9


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: int


# Usable memory per GPU as the clouds and `nvidia-smi` report it.
GPUS: dict[str, Gpu] = {
    g.name: g
    for g in (
        Gpu("L4", 24 * GiB),
        Gpu("A10G", 24 * GiB),
        Gpu("L40S", 48 * GiB),
        Gpu("A100", 80 * GiB),
        Gpu("H100", 80 * GiB),
        Gpu("H200", 141 * GiB),
        Gpu("B200", 179 * GiB),
        Gpu("B300", 268 * GiB),
    )
}
GPU_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class AwsInstance:
    name: str
    gpu: str
    gpu_count: int
    usd_per_hour: float  # us-east-1 on-demand, checked 2026-11


AWS_INSTANCES: dict[str, AwsInstance] = {
    i.name: i
    for i in (
        AwsInstance("g6.xlarge", "L4", 1, 0.805),
        AwsInstance("g6e.xlarge", "L40S", 1, 1.861),
        AwsInstance("g6e.12xlarge", "L40S", 4, 10.49),
        AwsInstance("g6e.48xlarge", "L40S", 8, 30.13),
        AwsInstance("p4de.24xlarge", "A100", 8, 40.97),
        AwsInstance("p5.48xlarge", "H100", 8, 55.04),
        AwsInstance("p5en.48xlarge", "H200", 8, 63.30),
        AwsInstance("p6-b200.48xlarge", "B200", 8, 113.93),
    )
}


@dataclass(frozen=True)
class Attention:
    """What the model server caches per token (or per request) for one sequence.

    kind "gqa": each cached layer stores K and V: 2 × kv_heads × head_dim × bytes per element.
    kind "mla": each layer stores one compressed latent; bytes per layer depend on the cache dtype
    (DeepSeek V3.2 FP8 "with scale" = 656 B: 512 latent + 16 scale + 64×2 rope).
    Sliding-window layers cache at most `sliding_window` tokens; linear-attention layers keep a
    fixed state per request (`state_bytes_per_request`).
    """

    kind: Literal["gqa", "mla"]
    layers: int  # layers with a per-token cache over the whole context
    kv_heads: int = 0
    head_dim: int = 0
    mla_bytes_per_layer: dict[str, int] = field(default_factory=dict)  # by kv dtype
    sliding_layers: int = 0
    sliding_window: int = 0
    state_bytes_per_request: int = 0
    attention_heads: int = 0  # query heads: tensor parallelism must divide them


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    hf_repo: str
    served_name: str
    engine: Literal["vllm", "llama.cpp"]
    weight_bytes: int
    attention: Attention
    max_context: int
    default_context: int
    source: str  # where the architecture numbers were read
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    tokenizer_mode: str | None = None
    extra_args: tuple[str, ...] = ()
    chat_template_kwargs: dict[str, object] | None = None  # turns thinking on, where the model has it
    temperature: float | None = None
    top_p: float | None = None
    default_max_tokens: int = 32000
    gguf_file: str | None = None  # llama.cpp: file inside hf_repo


PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset(
            id="deepseek-v3.2",
            title="DeepSeek V3.2 (base of umans-coder-v0), 671B MoE, FP8, sparse MLA",
            hf_repo="deepseek-ai/DeepSeek-V3.2",
            served_name="umans-coder-v0",
            engine="vllm",
            weight_bytes=689 * GB,
            attention=Attention(
                kind="mla", layers=61, attention_heads=128, mla_bytes_per_layer={"fp8": 656, "bf16": 1152}
            ),
            max_context=163840,
            default_context=131072,
            source="huggingface.co/deepseek-ai/DeepSeek-V3.2/blob/main/config.json "
            "(num_hidden_layers 61, kv_lora_rank 512, qk_rope_head_dim 64); FlashMLA sparse FP8 = 656 B",
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
            source="huggingface.co/zai-org/GLM-4.7-FP8/blob/main/config.json "
            "(num_hidden_layers 92, num_key_value_heads 8, head_dim 128)",
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
                kind="mla", layers=78, attention_heads=64, mla_bytes_per_layer={"fp8": 656, "bf16": 1152}
            ),
            max_context=202752,
            default_context=131072,
            source="huggingface.co/zai-org/GLM-5-FP8/blob/main/config.json "
            "(num_hidden_layers 78, kv_lora_rank 512, qk_rope_head_dim 64)",
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
            weight_bytes=230 * GB,
            attention=Attention(kind="gqa", layers=62, kv_heads=8, head_dim=128, attention_heads=48),
            max_context=196608,
            default_context=131072,
            source="huggingface.co/MiniMaxAI/MiniMax-M2.1/blob/main/config.json "
            "(num_hidden_layers 62, num_key_value_heads 8, head_dim 128)",
            tool_call_parser="minimax_m2",
            # minimax_m2 separates the thinking into reasoning_content (LiteLLM turns it into thinking
            # blocks); minimax_m2_append_think would leave <think> text in what Claude Code shows.
            reasoning_parser="minimax_m2",
            # pure TP8 is not supported for this checkpoint (vLLM recipe): shard experts instead
            extra_args=("--trust-remote-code", "--enable-expert-parallel"),
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
            source="huggingface.co/Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8/blob/main/config.json "
            "(num_hidden_layers 62, num_key_value_heads 8, head_dim 128)",
            tool_call_parser="qwen3_coder",  # no reasoning parser: Qwen3-Coder does not think
            # the FP8 checkpoint fails with pure TP8 (vLLM recipe): shard experts instead
            extra_args=("--enable-expert-parallel",),
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
            source="huggingface.co/openai/gpt-oss-120b/blob/main/config.json "
            "(36 layers alternating sliding/full, num_key_value_heads 8, head_dim 64, sliding_window 128)",
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
                state_bytes_per_request=30 * 2**20,
                attention_heads=16,
            ),
            max_context=262144,
            default_context=131072,
            source="huggingface.co/Qwen/Qwen3.6-35B-A3B/blob/main/config.json "
            "(40 layers, full attention every 4th: 10 layers, num_key_value_heads 2, head_dim 256)",
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
            served_name="coderig-dev",
            engine="llama.cpp",
            weight_bytes=1_280_000_000,
            attention=Attention(kind="gqa", layers=28, kv_heads=8, head_dim=128, attention_heads=16),
            max_context=40960,
            default_context=16384,
            source="huggingface.co/Qwen/Qwen3-1.7B/blob/main/config.json "
            "(num_hidden_layers 28, num_key_value_heads 8, head_dim 128, max_position_embeddings 40960)",
            gguf_file="Qwen3-1.7B-Q4_K_M.gguf",
            chat_template_kwargs={"enable_thinking": False},
            temperature=0.6,
            top_p=0.95,
            default_max_tokens=4096,
        ),
    )
}
