"""Capacity planner: the per-GPU memory model, the layout choice and workload sizing, against reference
figures (131072 tokens, FP8 KV, vLLM 0.28's allocation; see coderig/core/layout.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from coderig.core import budgets, layout, plan_text, planner
from coderig.core.catalog import AWS_INSTANCES, GB, GPUS, PRESETS
from coderig.core.layout import Layout

CTX = 131072
H200 = GPUS["H200"]


def test_deepseek_latent_is_5_24_gb_and_the_indexer_adds_1_06():
    """The reference figure: one 131072-token request's MLA latent, 656 B (fp8_ds_mla) × 61 layers =
    5.24 GB; vLLM 0.28 also caches the DSA indexer keys (132 B × 61 layers) → 6.30 GB per request."""
    p = PRESETS["deepseek-v3.2"]
    assert pytest.approx(5.24, abs=0.005) == 656 * 61 * CTX / GB
    assert planner.kv_bytes_per_token(p, "fp8", H200) == (656 + 132) * 61
    assert planner.kv_bytes_per_request(p, "fp8", CTX, H200) / GB == pytest.approx(6.30, abs=0.005)
    plan = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX)
    assert plan.indexer_bytes_per_request == 132 * 61 * CTX
    assert (plan.kv_bytes_per_request - plan.indexer_bytes_per_request) / GB == pytest.approx(5.24, abs=0.005)
    # Blackwell's sparse backend (FlashInfer-MLA-sparse) keeps standard fp8: 576 B; bf16 is 1152 B
    assert planner.kv_bytes_per_token(p, "fp8", GPUS["B200"]) == (576 + 132) * 61
    assert planner.kv_bytes_per_token(p, "bf16", H200) == (1152 + 132) * 61


def test_deepseek_tp8_on_8xh200_holds_single_digit_requests_per_gpu_rank():
    p = PRESETS["deepseek-v3.2"]
    plan = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX, parallel=Layout(8))
    c = plan.chosen
    assert c is not None and plan.fits
    # every TP rank holds the whole latent of every request
    assert c.kv_per_request_per_gpu == plan.kv_bytes_per_request
    # worked: 141 GiB × 0.90 = 136.26 GB usable; 689 GB ÷ 8 = 86.125 GB of weights; 3.22 GB overhead
    # (3 GiB); 136.26 − 86.13 − 3.22 = 46.91 GB of KV space ÷ 6.30 GB per request = 7.4 -> 7
    assert c.usable_per_gpu == 136_257_837_465
    assert c.weights_per_gpu == 86_125_000_000
    assert c.kv_space_per_gpu == 46_911_611_993
    assert c.per_replica == 7
    assert 1 <= plan.max_concurrent_requests < 10  # not the pooled 71


def test_deepseek_layouts_on_h200_and_b200():
    p = PRESETS["deepseek-v3.2"]
    h = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX)
    # FlashMLA-sparse (Hopper, fp8_ds_mla) runs decode context parallelism since vLLM 0.34
    assert [o.layout.name for o in h.options] == ["TP8", "TP8+DCP2", "TP8+DCP4", "TP8+DCP8", "DP8+EP"]
    assert h.options[3].kv_per_request_per_gpu == pytest.approx(h.kv_bytes_per_request / 8, abs=1)
    dep = h.options[4]
    # DP attention: attention/dense weights whole on every rank, experts over 8; each rank its own requests
    # worked: 23.82 GB dense whole + 665.18 GB of experts ÷ 8 = 106.96 GB per GPU; 136.26 − 106.96 − 3.22
    # = 26.07 GB ÷ 6.30 GB = 4 requests per rank, × 8 ranks = 32
    assert dep.weights_per_gpu == 106_964_822_528
    assert dep.kv_per_request_per_gpu == h.kv_bytes_per_request
    assert dep.per_replica == 32
    assert dep.per_replica > h.options[0].per_replica
    b = planner.plan(p, gpu="B200", gpu_count=8, max_model_len=CTX)
    names = [o.layout.name for o in b.options]
    assert names == ["TP8", "TP8+DCP2", "TP8+DCP4", "TP8+DCP8", "DP8+EP"]
    dcp8 = b.options[3]
    assert dcp8.kv_per_request_per_gpu == pytest.approx(b.kv_bytes_per_request / 8, abs=1)
    assert dcp8.per_replica > b.options[0].per_replica


def test_layout_choice_follows_the_rule():
    p = PRESETS["deepseek-v3.2"]
    small = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX, workload=planner.Workload(5, 1.0, CTX))
    assert small.layout == Layout(8) and small.carried  # TP8 carries 5: lowest latency wins
    big = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX, workload=planner.Workload(40, 0.5, CTX))
    # 20 > 7 (TP8), 14 (DCP2): TP8+DCP4 holds 29, before DP8+EP (32) on latency
    assert big.layout == Layout(8, decode_context=4) and big.carried
    huge = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX, workload=planner.Workload(200, 1.0, CTX))
    assert huge.layout == Layout(8, decode_context=8) and not huge.carried  # the most concurrency (59)
    assert huge.advice and "replicas of 8× H200" in huge.advice and "on AWS" in huge.advice
    # shorter requests pack more: 20 at 32k tokens fit TP8 (29), but TP8 keeps 29 of the 40 developers'
    # prefixes and recomputing the rest is more prefill than its GPUs do (coderig.core.prefill,
    # tests/core/test_prefill.py); TP8+DCP2 holds 58, all of them
    short = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX, workload=planner.Workload(40, 0.5, 32768))
    assert short.options[0].per_replica_at_peak == 29
    assert short.layout == Layout(8, decode_context=2) and short.prefill and short.prefill.sustained


def test_glm47_tp8_per_request_and_per_rank():
    p = PRESETS["glm-4.7"]
    # 2 × 8 KV heads × 128 × 1 B × 92 layers × 131072 tokens
    assert planner.kv_bytes_per_request(p, "fp8", CTX) / GB == pytest.approx(24.7, abs=0.05)
    plan = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX, parallel=Layout(8))
    c = plan.chosen
    assert c is not None
    assert c.kv_per_request_per_gpu == 2 * 1 * 128 * 92 * CTX  # one KV head per rank: 3.09 GB
    # worked: 136.26 GB usable − 362 GB ÷ 8 (45.25 GB) − 3.22 GB = 87.79 GB ÷ 3.09 GB = 28.4 -> 28
    assert c.weights_per_gpu == 45_250_000_000
    assert c.per_replica == 28
    assert planner.kv_bytes_per_token(p, "bf16") == 2 * 2 * 8 * 128 * 92


def test_qwen36_on_4_gpus_counts_replicated_kv_heads():
    p = PRESETS["qwen3.6-35b-a3b"]
    g = GPUS["H100"]
    tp4 = Layout(4)
    # 2 KV heads over 4 ranks: each rank keeps one whole head (replicated twice), not half a head
    per_rank = planner.kv_bytes_per_token(p, "fp8", g, tp4)
    assert per_rank == 10 * 2 * 1 * 256 * 1
    assert planner.kv_bytes_per_token(p, "fp8", g) == 10 * 2 * 2 * 256 * 1  # both heads, one copy
    plan = planner.plan(p, gpu="H100", gpu_count=4, max_model_len=CTX, parallel=tp4)
    c = plan.chosen
    assert c is not None
    state = 2 * p.attention.state_bytes_per_request // 4
    assert c.kv_per_request_per_gpu == per_rank * CTX + state


def test_sliding_window_layers_are_capped_at_the_window_plus_one_batch():
    p = PRESETS["gpt-oss-120b"]
    g = GPUS["H100"]
    window = 128 - 1 + layout.batched_tokens(g)
    assert window == 127 + 8192
    short = planner.kv_bytes_per_request(p, "fp8", window, g)
    long = planner.kv_bytes_per_request(p, "fp8", CTX, g)
    assert long - short == 18 * 2 * 8 * 64 * (CTX - window)  # only the 18 full-attention layers grow


def test_minimax_needs_expert_parallelism_beyond_tp4():
    p = PRESETS["minimax-m2.1"]
    assert [x.name for x in layout.candidates(p, H200, 8)] == ["TP8+EP", "DP8+EP"]
    assert [x.name for x in layout.candidates(p, H200, 4)] == ["TP4", "DP4+EP"]
    assert layout.problems(p, H200, Layout(8))[0][0] == "expert"
    assert "--enable-expert-parallel" not in p.extra_args  # the layout decides it


def test_layout_flags():
    assert Layout(8).flags() == ["--tensor-parallel-size", "8"]
    assert Layout(1, data=8, expert=True).flags() == [
        "--tensor-parallel-size", "1", "--data-parallel-size", "8", "--enable-expert-parallel",
    ]  # fmt: skip
    assert Layout(8, decode_context=8).flags() == ["--tensor-parallel-size", "8", "--decode-context-parallel-size", "8"]


def test_deepseek_fits_8xh200_not_8xh100():
    p = PRESETS["deepseek-v3.2"]
    ok = planner.plan(p, gpu="H200", gpu_count=8, max_model_len=CTX)
    assert ok.fits
    bad = planner.plan(p, gpu="H100", gpu_count=8, max_model_len=CTX)
    assert not bad.fits
    assert "weights do not fit" in bad.reason
    assert bad.suggestion and "H200" not in bad.reason
    assert "p5en.48xlarge" in bad.suggestion  # the suggestion is a configuration that really fits


def test_suggestion_is_the_smallest_fitting_configuration():
    p = PRESETS["glm-4.7"]
    s = planner.smallest_fit(p, CTX, "fp8", 0.9)
    # worked: 362 GB of FP8 weights. Every configuration with less memory than 2× B300 (2 × 268 GiB =
    # 536 GiB) has under 362 GB of GPU memory in all (1× B300 268 GiB, 2× H200 282 GiB, 4× H100 320 GiB)
    # or is larger (4× H200 564 GiB, 8× H100 640 GiB). On 2× B300: 259 GB usable per GPU (90%) − 181 GB
    # weights − 3.2 GB overhead leaves 74.8 GB, 12.3 GB per full-context request: 6 of them.
    assert s.startswith("smallest that fits: 2× B300 (536 GiB)")
    tp2 = planner.plan(p, gpu="B300", gpu_count=2, max_model_len=CTX, suggest=False)
    assert tp2.fits and tp2.max_concurrent_requests_per_replica == 6


def test_weights_fit_but_context_does_not():
    # MiniMax-M2.1 (230 GB) on 2× H200 with a BF16 cache: weights fit, one 196k request does not
    p = PRESETS["minimax-m2.1"]
    r = planner.plan(p, gpu="H200", gpu_count=2, max_model_len=196608, kv_cache_dtype="bf16")
    assert not r.fits
    assert planner.plan(p, gpu="H200", gpu_count=2, max_model_len=196608, kv_cache_dtype="fp8").fits
    assert "lower maxModelLen" in r.reason


def test_cpu_preset_one_slot_q8_0_and_budgets():
    p = PRESETS["qwen3-1.7b-cpu"]
    r = planner.plan(p, gpu=None, gpu_count=0, max_model_len=40960)
    assert r.fits and r.engine == "llama.cpp" and r.kv_cache_dtype == "q8_0"
    assert r.kv_bytes_per_token == math.ceil(28 * 2 * 8 * 128 * 34 / 32)  # q8_0: 34 bytes per 32 values
    assert r.max_concurrent_requests_per_replica == 1
    assert "KV cache q8_0" in plan_text.format_plan(r)
    big = PRESETS["deepseek-v3.2"]
    assert budgets.load_budget_seconds(big) > 1800  # a 700 GB load cannot use a 10-minute budget
    assert budgets.weights_volume_gb(big, 8) >= 689 * 1.25
    assert budgets.download_budget_seconds(big) > budgets.load_budget_seconds(big)


def test_external_plan_prints_no_sizing():
    r = planner.plan(PRESETS["qwen3-coder-480b"], gpu=None, gpu_count=0, max_model_len=CTX, external=True)
    text = plan_text.format_plan(r)
    for absent in ("weights", "KV per", "concurrency", "layout"):
        assert absent not in text
    assert "weights_gb" not in r.summary() and "kv_gb_per_request" not in r.summary()


def test_aws_plan_costs():
    assert AWS_INSTANCES["p5en.48xlarge"].usd_per_hour == pytest.approx(63.3, abs=1)
    assert AWS_INSTANCES["p6-b200.48xlarge"].usd_per_hour == pytest.approx(114, abs=1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_catalog_entries_are_complete(preset):
    p = PRESETS[preset]
    assert p.source and p.checked in ("verified", "secondary", "unverified")
    assert p.default_context <= p.max_context
    assert p.attention.attention_heads > 0
    assert 0 <= p.expert_bytes < p.weight_bytes
    if p.engine == "vllm":
        assert p.tool_call_parser, "every vLLM preset needs a tool-call parser for agents"
        assert layout.candidates(p, H200, 8), "at least one layout on 8 GPUs"
    else:
        assert p.gguf_file and p.gguf_file.endswith(".gguf")


def test_estimates_are_marked_in_the_plan():
    text = plan_text.format_plan(planner.plan(PRESETS["glm-5"], gpu="B200", gpu_count=8, max_model_len=CTX))
    assert "(estimate)" in text and "architecture secondary" in text


def test_expert_parallelism_on_a_dense_model_is_refused() -> None:
    """Every vLLM preset in the catalog is MoE, so the dense branch is shown on a dense variant of one
    (its expert weights folded into the dense ones): expert: true has nothing to shard there."""
    moe = PRESETS["glm-4.7"]
    dense = dataclasses.replace(moe, id="dense-variant", expert_bytes=0)
    found = layout.problems(dense, GPUS["H200"], Layout(tensor=8, expert=True))
    assert ("expert", "got true; dense-variant is a dense model, it has no experts to shard (allowed: false)") in found
    assert not [p for p in layout.problems(dense, GPUS["H200"], Layout(tensor=8)) if p[0] == "expert"]
    assert not [p for p in layout.problems(moe, GPUS["H200"], Layout(tensor=8, expert=True)) if p[0] == "expert"]
