"""Capacity planner against the reference sizing (131072 tokens, FP8 KV)."""

from __future__ import annotations

import pytest

from coderig.core import planner
from coderig.core.catalog import AWS_INSTANCES, GB, GPUS, PRESETS

CTX = 131072


@pytest.mark.parametrize(
    ("preset", "low", "high"),
    [("deepseek-v3.2", 4.9, 5.4), ("glm-4.7", 23.0, 25.0), ("minimax-m2.1", 15.5, 16.7)],
)
def test_reference_kv_per_request(preset, low, high):
    kv = planner.kv_bytes_per_request(PRESETS[preset], "fp8", CTX) / GB
    assert low <= kv <= high


def test_kv_formulae():
    # DeepSeek V3.2: 656 B/layer (FP8 sparse MLA) × 61 layers
    assert planner.kv_bytes_per_token(PRESETS["deepseek-v3.2"], "fp8") == 656 * 61
    # GQA: 2 × kv_heads × head_dim × bytes × layers; BF16 doubles FP8
    assert planner.kv_bytes_per_token(PRESETS["glm-4.7"], "fp8") == 2 * 8 * 128 * 92
    assert planner.kv_bytes_per_token(PRESETS["glm-4.7"], "bf16") == 2 * 2 * 8 * 128 * 92


def test_sliding_window_layers_are_capped_at_the_window():
    p = PRESETS["gpt-oss-120b"]
    short = planner.kv_bytes_per_request(p, "fp8", 128)
    long = planner.kv_bytes_per_request(p, "fp8", CTX)
    per_layer = 2 * 8 * 64
    assert long - short == 18 * per_layer * (CTX - 128)  # only the 18 full-attention layers grow


def test_deepseek_fits_8xh200_not_8xh100():
    p = PRESETS["deepseek-v3.2"]
    ok = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX)
    assert ok.fits and ok.max_concurrent_requests > 50
    assert ok.kv_bytes_per_request * ok.max_concurrent_requests <= ok.kv_space_bytes
    bad = planner.plan(p, gpu="H100", gpu_count=8, max_model_len=CTX)
    assert not bad.fits
    assert "weights do not fit" in bad.reason
    assert bad.suggestion and "H200" not in bad.reason
    # the suggestion is a configuration that really fits
    assert "p5en.48xlarge" in bad.suggestion


def test_suggestion_is_the_smallest_fitting_configuration():
    p = PRESETS["glm-4.7"]
    s = planner.smallest_fit(p, CTX, "fp8", 0.9)
    fitting = [
        (GPUS[g].memory_bytes * n, n, g)
        for g in GPUS
        for n in (1, 2, 4, 8)
        if planner.plan(p, gpu=g, gpu_count=n, max_model_len=CTX, suggest=False).fits
    ]
    _, n, g = min(fitting)
    assert f"{n}× {g}" in s


def test_weights_fit_but_context_does_not():
    # MiniMax-M2.1 (230 GB) on 2× H200 with a BF16 cache: weights fit, one 196k request (50 GB) does not
    p = PRESETS["minimax-m2.1"]
    r = planner.plan(p, gpu="H200", gpu_count=2, max_model_len=196608, kv_cache_dtype="bf16")
    assert not r.fits
    assert planner.plan(p, gpu="H200", gpu_count=2, max_model_len=196608, kv_cache_dtype="fp8").fits
    assert "lower maxModelLen" in r.reason


def test_cpu_preset_and_budgets():
    p = PRESETS["qwen3-1.7b-cpu"]
    r = planner.plan(p, gpu=None, gpu_count=0, max_model_len=16384)
    assert r.fits and r.engine == "llama.cpp"
    big = PRESETS["deepseek-v3.2"]
    assert planner.load_budget_seconds(big) > 1800  # a 700 GB load cannot use a 10-minute budget
    assert planner.weights_volume_gb(big) >= 689 * 1.25
    assert planner.download_budget_seconds(big) > planner.load_budget_seconds(big)


def test_aws_plan_costs():
    assert AWS_INSTANCES["p5en.48xlarge"].usd_per_hour == pytest.approx(63.3, abs=1)
    assert AWS_INSTANCES["p6-b200.48xlarge"].usd_per_hour == pytest.approx(114, abs=1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_catalog_entries_are_complete(preset):
    p = PRESETS[preset]
    assert p.source.startswith("huggingface.co/") and "config.json" in p.source
    assert p.default_context <= p.max_context
    assert p.attention.attention_heads > 0
    if p.engine == "vllm":
        assert p.tool_call_parser, "every vLLM preset needs a tool-call parser for agents"
    else:
        assert p.gguf_file and p.gguf_file.endswith(".gguf")
