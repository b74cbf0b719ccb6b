"""coderig:model.chatTemplate and a preset's chat template, rendered as the model server's --chat-template."""

from __future__ import annotations

import pytest
from conftest import ssh_config

from coderig.core import engine, templates
from coderig.core.errors import UserError
from coderig.core.layout import Layout
from coderig.core.settings import ModelSettings
from coderig.targets import parse_settings

FENCED = "qwen2.5-coder-fenced-tools.jinja"


def _template_arg(args: list[str]) -> str | None:
    return args[args.index("--chat-template") + 1] if "--chat-template" in args else None


def test_the_small_qwen_coder_presets_get_the_fenced_template_after_jinja() -> None:
    for preset in ("qwen2.5-coder-0.5b-cpu", "qwen2.5-coder-1.5b-cpu"):
        args = engine.llamacpp_args(ModelSettings(preset=preset), "/cache/models/x.gguf")
        assert _template_arg(args) == templates.text(FENCED)
        assert args.index("--jinja") < args.index("--chat-template")  # llama-server takes any template after it
    fenced = templates.text(FENCED)
    assert "```json" in fenced and "<tool_call>" not in fenced


def test_a_stack_turns_it_off_or_picks_one() -> None:
    own = ModelSettings(preset="qwen2.5-coder-1.5b-cpu", chatTemplate="model")
    assert _template_arg(engine.llamacpp_args(own, "/x.gguf")) is None
    assert _template_arg(engine.llamacpp_args(ModelSettings(preset="qwen3-1.7b-cpu"), "/x.gguf")) is None
    picked = ModelSettings(preset="qwen3-1.7b-cpu", chatTemplate=FENCED)
    assert _template_arg(engine.llamacpp_args(picked, "/x.gguf")) == templates.text(FENCED)
    vllm = engine.vllm_args(ModelSettings(preset="qwen3.6-35b-a3b", chatTemplate=FENCED), Layout(8))
    assert _template_arg(vllm) == templates.text(FENCED)
    assert "--chat-template" not in engine.vllm_args(ModelSettings(preset="qwen3.6-35b-a3b"), Layout(8))


def test_an_unknown_template_is_refused_naming_the_key_and_what_is_allowed() -> None:
    with pytest.raises(UserError) as e:
        parse_settings(ssh_config(chatTemplate="qwen-fenced"))
    msg = str(e.value)
    assert "coderig:model.chatTemplate" in msg and "'qwen-fenced'" in msg
    assert f"allowed: model, {FENCED}" in msg
