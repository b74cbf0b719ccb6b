"""MTP speculative decoding (coderig.core.mtp): on for presets whose checkpoints carry MTP layers, with
the recipe's draft length; the plan counts the MTP layer's weights and KV; a stack key turns it off;
presets without MTP say so; asking for it on one fails at plan time naming the key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ssh_config

from coderig.core import engine, mtp, plan_text, planner
from coderig.core.catalog import PRESETS
from coderig.core.errors import UserError
from coderig.targets import parse_settings

VLLM = [p for p in PRESETS.values() if p.engine == "vllm"]


def settings(**model: Any):
    return parse_settings(ssh_config(**model))


@pytest.mark.parametrize("preset", VLLM, ids=lambda p: p.id)
def test_every_vllm_preset_either_has_mtp_or_says_why_not(preset):
    assert (preset.id in mtp.MTP) != (preset.id in mtp.NO_MTP)


def test_deepseek_renders_the_recipes_draft_length():
    s = settings()
    args = engine.vllm_args(s.model, planner.plan_stack(s).layout)
    i = args.index("--speculative-config")
    assert json.loads(args[i + 1]) == {"method": "mtp", "num_speculative_tokens": 3}


def test_the_plan_counts_the_mtp_layers_weights_and_kv():
    on = planner.plan_stack(settings())
    off = planner.plan_stack(settings(mtp=False))
    assert on.mtp_on and not off.mtp_on
    assert on.weights_bytes - off.weights_bytes == mtp.MTP["deepseek-v3.2"].weight_bytes
    # one more MLA layer: (656 latent + 132 indexer) B per token
    assert on.kv_bytes_per_token - off.kv_bytes_per_token == 656 + 132
    assert on.kv_bytes_per_token == (656 + 132) * 62
    assert "62 layers × (656 B latent + 132 B indexer)" in plan_text.format_plan(on)
    assert on.max_concurrent_requests <= off.max_concurrent_requests


def test_a_stack_key_turns_it_off():
    s = settings(mtp=False)
    assert "--speculative-config" not in engine.vllm_args(s.model, planner.plan_stack(s).layout)
    assert "speculative        MTP off: off (coderig:model.mtp: false)" in plan_text.format_plan(planner.plan_stack(s))


def test_presets_without_mtp_say_so():
    s = settings(preset="qwen3-coder-480b")
    assert "--speculative-config" not in engine.vllm_args(s.model, planner.plan_stack(s).layout)
    assert "speculative        none: its checkpoint has no MTP layers" in plan_text.format_plan(planner.plan_stack(s))


def test_mtp_on_a_model_without_mtp_layers_fails_at_plan_time_naming_the_key():
    c = ssh_config(preset="minimax-m2.1", mtp=True)
    c["target"]["gpu"]["count"] = 4
    with pytest.raises(UserError) as exc:
        parse_settings(c)
    (why,) = exc.value.problems
    assert why.startswith("coderig:model.mtp: got true, but minimax-m2.1 has no MTP layers")


def test_glm5_is_off_by_default_where_its_recipe_warns_and_on_when_asked():
    assert not settings(preset="glm-5").model.mtp_on
    assert "Tool calling + MTP" in plan_text.format_plan(planner.plan_stack(settings(preset="glm-5")))
    s = settings(preset="glm-5", mtp=True)
    args = engine.vllm_args(s.model, planner.plan_stack(s).layout)
    assert json.loads(args[args.index("--speculative-config") + 1])["num_speculative_tokens"] == 3
