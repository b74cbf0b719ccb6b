"""MTP (multi-token prediction) speculative decoding: which presets' checkpoints carry MTP layers, the
draft length their vLLM recipe gives, and what turning it on changes in the plan. Pure.

vLLM runs a checkpoint's own MTP layers as the draft model with `--speculative-config
{"method":"mtp","num_speculative_tokens":N}` (vLLM 0.34.0 config/speculative.py: SpeculativeConfig,
`hf_config_override` maps deepseek_v3/deepseek_v32/glm_moe_dsa → deepseek_mtp, Glm4MoeForCausalLM →
glm4_moe_mtp, qwen3_5_moe → qwen3_5_mtp, each with `n_predict = num_nextn_predict_layers`). Without it
the target model skips those layers' weights (model_executor/models/deepseek_v2.py load_weights:
`get_spec_layer_idx_from_weight_name` → continue; glm4_moe.py: `skip_spec_layers`), so:
- weights on the GPUs: the checkpoint (`Preset.weight_bytes`, which includes the MTP layers) with MTP
  on, the checkpoint minus `MtpSpec.weight_bytes` with it off;
- KV cache: the MTP layer has its own attention, cached in the same pool as the target's layers, so
  each token costs `layers + MTP layers` layers (one layer however many tokens it drafts: the draft
  reuses it for each step).
Why it matters for agents: llm-d measured MTP at ~1.6–2× output speed on GLM-5.2 (3 draft tokens,
64–70 % accepted) and DeepSeek R1 1.63× time per output token at low load (issue #23).
The vLLM recipes (vllm-project/recipes@8959cf64 models/…yaml) list MTP as an opt-in feature
(`opt_in_features: [spec_decoding]`) with the draft lengths used below; none advises against it except
where `default_on` is False (the reason is in `note`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from coderig.core.catalog import GB, Preset
from coderig.core.catalog import RECIPES as _RECIPES

MTP_KEY = "coderig:model.mtp"
# The MTP layer counts are the models' config.json values as quoted with the catalog's architecture numbers
# (coderig.core.catalog sources: "secondary"), not read from Hugging Face here; the recipes' MTP commands
# and the catalog's expert counts ("+ the MTP layer") agree with one layer each.
_CONFIG = "config.json, secondary"


@dataclass(frozen=True)
class MtpSpec:
    layers: int  # MTP layers in the checkpoint (config.json num_nextn_predict_layers / mtp_num_hidden_layers)
    draft_tokens: int  # num_speculative_tokens, from the model's vLLM recipe
    weight_bytes: int  # the MTP layers' share of the checkpoint (an estimate, see `source`)
    expert_bytes: int  # the part of it the catalog's Preset.expert_bytes counts (routed experts)
    source: str
    default_on: bool = True
    note: str = ""  # why it is off by default, when it is


MTP: dict[str, MtpSpec] = {
    "deepseek-v3.2": MtpSpec(
        layers=1,
        draft_tokens=3,
        # DeepSeek-V3's model card: "685B, which includes 671B of the Main Model weights and 14B of the
        # Multi-Token Prediction (MTP) Module weights"; V3.2 keeps the architecture; ~1 byte/param (FP8)
        weight_bytes=14 * GB,
        expert_bytes=256 * 3 * 7168 * 2048,
        source=f"num_nextn_predict_layers 1 ({_CONFIG}); {_RECIPES}deepseek-ai/DeepSeek-V3.2.yaml spec_decoding: "
        '{"method":"mtp","num_speculative_tokens":3}',
    ),
    "glm-4.7": MtpSpec(
        layers=1,
        draft_tokens=1,
        # one MoE layer: 160 experts × 3 × 5120 × 1536 + attention (96 × 128 + 2 × 8 × 128) × 5120 × 2, FP8
        weight_bytes=4 * GB,
        expert_bytes=160 * 3 * 5120 * 1536,
        source=f"num_nextn_predict_layers 1 ({_CONFIG}); {_RECIPES}zai-org/GLM-4.7.yaml: "
        "--speculative-config.method mtp --speculative-config.num_speculative_tokens 1 "
        '("1 speculative token gives ~90%+ acceptance and best throughput")',
    ),
    "glm-5": MtpSpec(
        layers=1,
        draft_tokens=3,
        # one MoE layer: 256 experts × 3 × 6144 × 2048 (9.7B) + attention, FP8
        weight_bytes=10 * GB,
        expert_bytes=256 * 3 * 6144 * 2048,
        source=f"num_nextn_predict_layers 1 ({_CONFIG}); {_RECIPES}zai-org/GLM-5.yaml spec_decoding: "
        "num_speculative_tokens 3",
        default_on=False,
        note="the GLM-5 recipe says tool calling with MTP needs a newer vLLM than its tested release "
        '("Tool calling + MTP: If you need both, use the latest vLLM main branch"), and agents call tools',
    ),
    "qwen3.6-35b-a3b": MtpSpec(
        layers=1,
        draft_tokens=2,
        # one MoE layer: 256 experts × 3 × 2048 × 512 (0.8B) + attention, BF16
        weight_bytes=2 * GB,
        expert_bytes=0,  # catalog's expert_bytes counts the 40 main layers only
        source=f"mtp_num_hidden_layers 1 ({_CONFIG}); {_RECIPES}Qwen/Qwen3.6-35B-A3B.yaml guide: "
        '--speculative-config \'{"method": "mtp", "num_speculative_tokens": 2}\'',
    ),
}

# Every other vLLM preset, and why it has no MTP to turn on.
NO_MTP: dict[str, str] = {
    "minimax-m2.1": "vLLM 0.34.0 has no MTP draft for MiniMax-M2 (config/speculative.py MTPModelTypes: "
    "minimax_m3_mtp only), and its recipe offers no spec_decoding",
    "qwen3-coder-480b": "its checkpoint has no MTP layers and its recipe offers no spec_decoding",
    "gpt-oss-120b": "its checkpoint has no MTP layers (the recipe's speculative decoding is EAGLE3 with a "
    "separate draft checkpoint, nvidia/gpt-oss-120b-Eagle3-v3, which coderig does not fetch)",
}


def spec(preset: Preset) -> MtpSpec | None:
    return MTP.get(preset.id)


def enabled(preset: Preset, setting: bool | None) -> bool:
    """MTP on for this preset: the stack's `coderig:model.mtp`, else the preset's default."""
    s = spec(preset)
    if s is None:
        return False
    return s.default_on if setting is None else setting


def problem(preset: Preset, setting: bool | None) -> str | None:
    """`coderig:model.mtp: true` on a model without MTP layers."""
    if setting and spec(preset) is None:
        why = NO_MTP.get(preset.id, f"{preset.id} runs on {preset.engine}, which coderig runs without MTP")
        with_mtp = ", ".join(MTP)
        return (
            f"{MTP_KEY}: got true, but {preset.id} has no MTP layers to draft with ({why}); remove it "
            f"(presets with MTP: {with_mtp})"
        )
    return None


def flags(preset: Preset, on: bool) -> list[str]:
    s = spec(preset)
    if not on or s is None:
        return []
    config = {"method": "mtp", "num_speculative_tokens": s.draft_tokens}
    return ["--speculative-config", json.dumps(config, separators=(",", ":"))]


def effective(preset: Preset, on: bool) -> Preset:
    """The preset as the planner sizes it: MTP layers' KV added when on, their weights removed when off."""
    s = spec(preset)
    if s is None:
        return preset
    if on:
        a = dataclasses.replace(preset.attention, layers=preset.attention.layers + s.layers)
        return dataclasses.replace(preset, attention=a)
    experts = preset.expert_bytes - s.expert_bytes
    return dataclasses.replace(preset, weight_bytes=preset.weight_bytes - s.weight_bytes, expert_bytes=experts)


def describe(preset: Preset, on: bool) -> str:
    """One line for the plan."""
    s = spec(preset)
    if s is None:
        return f"none: {NO_MTP.get(preset.id, f'{preset.engine} runs without speculative decoding here')}"
    if on:
        return (
            f"MTP on, {s.draft_tokens} draft token{'s' if s.draft_tokens > 1 else ''} "
            f"({s.layers} MTP layer: +{s.weight_bytes / GB:.0f} GB weights (estimate), +1 layer of KV per token); "
            f"{s.source}; off with {MTP_KEY}: false"
        )
    why = s.note if not s.default_on else f"off ({MTP_KEY}: false)"
    return f"MTP off: {why}; on with {MTP_KEY}: true ({s.draft_tokens} draft tokens, {s.source})"
