"""The host-memory KV tier (coderig.core.kv_tier): sized from the host's RAM minus what the OS, vLLM's
processes and sleep mode need, within /dev/shm; rendered as --kv-offloading-size per data-parallel
engine; printed beside the GPUs' capacity; refused at plan time when it asks for more than the host has."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ssh_config

from coderig.core import engine, kv_tier, plan_text, planner
from coderig.core.catalog import GiB
from coderig.core.errors import UserError
from coderig.targets import parse_settings
from coderig.targets.compose import idle as node_idle


def stack(model: dict[str, Any] | None = None, target: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    c = ssh_config(**(model or {}))
    c["target"].update(target or {})
    c.update(top)
    return c


def minimax(**offload: Any) -> dict[str, Any]:
    """MiniMax-M2.1 on 4× H200 over ssh: its recipe records a verified CPU-offload run."""
    return stack({"preset": "minimax-m2.1", "kvOffload": offload}, {"gpu": {"model": "H200", "count": 4}})


def aws(model: dict[str, Any], instance: str = "p5en.48xlarge") -> dict[str, Any]:
    return {"target": {"kind": "aws", "instanceType": instance}, "model": model, "developers": ["alice"]}


def problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(UserError) as exc:
        parse_settings(config)
    return exc.value.problems


def test_minimax_on_ssh_sizes_the_tier_from_the_declared_ram():
    """1024 GiB − 8 GiB OS − 4 × 32 GiB vLLM = 888 GiB, but /dev/shm holds 512 − 4 × 4 = 496 GiB: the
    tier is 496 GiB; a token takes 2 × 8 heads × 128 × 62 layers = 126976 B over the 4 TP ranks."""
    s = parse_settings(minimax(hostMemoryGiB=1024))
    p = planner.plan_stack(s)
    t = p.kv_tier
    assert t is not None and t.on
    assert t.size_bytes == 496 * GiB and t.per_engine_gib == 496 and t.engines == 1
    assert t.tokens == 496 * GiB // 126976
    assert t.gpu_tokens > 0 and t.tokens > t.gpu_tokens
    args = engine.vllm_args(s.model, p.layout, tier=kv_tier.flags(t))
    i = args.index("--kv-offloading-size")
    assert args[i : i + 4] == ["--kv-offloading-size", "496", "--kv-offloading-backend", "native"]
    text = plan_text.format_plan(p)
    assert f"{t.tokens} tokens, {t.tokens // 131072} sessions of 131072 tokens, beside the GPUs' {t.gpu_tokens}" in text
    assert p.summary()["kv_tier"]["kv_offloading_size_gib"] == 496  # type: ignore[index]


def test_the_tier_is_split_over_data_parallel_engines():
    """Each DP engine allocates its own --kv-offloading-size (engine_id differs per DP rank)."""
    c = minimax(hostMemoryGiB=1024)
    c["model"]["parallel"] = {"data": 4, "expert": True}
    s = parse_settings(c)
    t = planner.plan_stack(s).kv_tier
    assert t is not None and t.on and t.engines == 4
    assert t.per_engine_gib == 124  # 496 / 4
    assert "--kv-offloading-size" in engine.command_line(s.model, planner.plan_stack(s).layout, kv_tier.flags(t))


def test_sleep_mode_weights_come_out_of_the_tier():
    """With idle sleep (the ssh default for vLLM), the ~230 GB of weights wait in host RAM too."""
    awake = planner.plan_stack(parse_settings(minimax(hostMemoryGiB=512))).kv_tier
    asleep = planner.plan_stack(parse_settings(minimax(hostMemoryGiB=512) | {"idle": {"stopAfterMinutes": 30}}))
    assert awake is not None and asleep.kv_tier is not None
    assert asleep.kv_tier.reserved_bytes - awake.reserved_bytes == 230 * 10**9
    assert asleep.kv_tier.size_bytes < awake.size_bytes


@pytest.mark.parametrize(
    "config",
    [
        ssh_config(),
        ssh_config() | {"idle": {"stopAfterMinutes": 30}},
        ssh_config() | {"idle": {"stopAfterMinutes": 30, "action": "stop"}},
        aws({"preset": "deepseek-v3.2"}),
    ],
)
def test_sleeping_weights_agree_with_the_compose_idle_action(config: dict[str, Any]):
    s = parse_settings(config)
    assert (s.sleeping_weights > 0) == (node_idle.action(s) == "sleep")


def test_aws_reads_the_instance_types_ram():
    s = parse_settings(aws({"preset": "glm-4.7"}))
    t = planner.plan_stack(s).kv_tier
    # p5en.48xlarge: 2048 GiB; /dev/shm 1024 − 8 × 4 = 992 GiB is the tighter bound
    assert t is not None and t.on and t.host_bytes == 2048 * GiB and t.size_bytes == 992 * GiB
    assert "p5en.48xlarge's 2048 GiB of RAM" in t.why


def test_off_by_default_where_the_recipe_records_no_verified_run_and_on_when_asked():
    off = planner.plan_stack(parse_settings(aws({"preset": "deepseek-v3.2"}))).kv_tier
    assert off is not None and not off.on and "records no verified CPU-offload run" in off.why
    on = planner.plan_stack(parse_settings(aws({"preset": "deepseek-v3.2", "kvOffload": {"enabled": True}})))
    t = on.kv_tier
    assert t is not None and t.on
    # MLA: each of the 8 TP ranks stores the whole latent, so a token costs 8 copies in the tier
    c = on.chosen
    assert c is not None
    assert t.tokens == int(t.size_bytes / (c.kv_per_request_per_gpu / on.max_model_len * 8))


def test_a_stack_key_turns_it_off():
    s = parse_settings(aws({"preset": "glm-4.7", "kvOffload": {"enabled": False}}))
    p = planner.plan_stack(s)
    assert p.kv_tier is not None and not p.kv_tier.on
    assert "--kv-offloading-size" not in engine.command_line(s.model, p.layout, kv_tier.flags(p.kv_tier))
    assert "host KV tier       off (coderig:model.kvOffload.enabled: false)" in plan_text.format_plan(p)


def test_unknown_host_ram_leaves_it_off_and_says_which_key_sizes_it():
    t = planner.plan_stack(parse_settings(minimax())).kv_tier
    assert t is not None and not t.on and "coderig:model.kvOffload.hostMemoryGiB" in t.why


def test_more_than_the_host_has_fails_at_plan_time_naming_the_key():
    (why,) = problems(minimax(hostMemoryGiB=1024, sizeGiB=900))
    assert why.startswith("coderig:model.kvOffload.sizeGiB: got 900; each model host spares at most 496 GiB")
    (why,) = problems(aws({"preset": "glm-4.7", "kvOffload": {"hostMemoryGiB": 4096}}))
    assert why.startswith("coderig:model.kvOffload.hostMemoryGiB: got 4096; p5en.48xlarge has 2048 GiB")
    (why,) = problems(minimax(enabled=True))
    assert why.startswith("coderig:model.kvOffload.hostMemoryGiB: required to size the tier on the ssh target")


def test_every_problem_at_once_with_the_others():
    c = minimax(hostMemoryGiB=64, sizeGiB=100) | {"workload": {"peakActiveShare": 0.5, "contextTokens": 10**6}}
    c["model"]["mtp"] = True
    found = problems(c)
    assert any(p.startswith("coderig:workload.contextTokens: got 1000000") for p in found)
    assert any(p.startswith("coderig:model.mtp: got true") for p in found)
    assert any(p.startswith("coderig:model.kvOffload.sizeGiB: got 100") for p in found)


def test_llamacpp_has_no_tier_to_ask_for():
    c = {"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu", "kvOffload": {"enabled": True}}}
    (why,) = problems(c)
    assert why.startswith("coderig:model.kvOffload: the tier is asked for, but qwen3-1.7b-cpu does not run on vLLM")


def test_a_tier_no_larger_than_the_gpus_kv_space_says_so():
    s = parse_settings(minimax(hostMemoryGiB=1024, sizeGiB=10))
    p = planner.plan_stack(s)
    assert p.kv_tier is not None and p.kv_tier.on and p.kv_tier.tokens < p.kv_tier.gpu_tokens
    assert "mostly mirrors what they hold" in plan_text.format_plan(p)


def test_the_preflight_gets_the_tier_and_the_ram_it_was_sized_from():
    from coderig.targets.compose import commands, machines

    s = parse_settings(minimax(hostMemoryGiB=1024))
    (spec,) = machines.node_specs(s, planner.plan_stack(s))
    env = commands.preflight_env(s, spec)
    assert env["CODERIG_KV_TIER_BYTES"] == str(496 * GiB) and env["CODERIG_KV_HOST_BYTES"] == str(1024 * GiB)
    s = parse_settings(minimax())
    (spec,) = machines.node_specs(s, planner.plan_stack(s))
    assert "CODERIG_KV_TIER_BYTES" not in commands.preflight_env(s, spec)


def test_a_tier_below_one_gib_is_refused_naming_the_key():
    (why,) = problems(minimax(hostMemoryGiB=1024, sizeGiB=0.5))
    assert why.startswith("coderig:model.kvOffload.sizeGiB: got 0.5"), why
