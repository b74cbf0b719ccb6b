"""coderig refuses a `coderig:model.extraArgs` token that is not a flag of the pinned `vllm serve`
(coderig/core/vllm_flags.py); tests/vllm/test_vllm_commands.py checks the flag list is vLLM's own."""

from __future__ import annotations

import pytest
from conftest import ssh_config

from coderig.core import vllm_flags
from coderig.core.errors import UserError
from coderig.targets import parse_settings


def test_flags_vllm_takes_pass() -> None:
    args = ["--max-num-seqs", "64", "--max_num_batched_tokens=8192", "--disable-prefix-caching"]
    args += ["--compilation-config.mode=3", "-O3", "-tp", "8", "--seed", "-1", "--hf-overrides", '{"a": -2}']
    assert vllm_flags.unknown_flags(args) == []
    assert parse_settings(ssh_config(extraArgs=args)).model.extraArgs == args


def test_misspelt_and_abbreviated_flags_are_refused_naming_the_key_and_the_fix() -> None:
    with pytest.raises(UserError) as e:
        bad = ["--enable-prefix-cachin", "--max-model", "4096", "--gpu-memory-utilisation=0.9"]
        parse_settings(ssh_config(extraArgs=bad))
    msg = str(e.value)
    assert "coderig:model.extraArgs" in msg
    assert f"'--enable-prefix-cachin' is not a `vllm serve` flag in vLLM {vllm_flags.version()}" in msg
    assert "did you mean --enable-prefix-caching?" in msg
    assert "did you mean --max-model-len?" in msg
    assert "did you mean --gpu-memory-utilization?" in msg
    assert "Traceback" not in msg


def test_an_ambiguous_prefix_lists_what_it_abbreviates() -> None:
    (msg,) = vllm_flags.unknown_flags(["--max-num"])
    assert "it abbreviates --max-num-active-seqs, --max-num-batched-tokens," in msg and "write the whole flag" in msg


def test_llamacpp_presets_are_not_checked_against_vllm() -> None:
    cfg = {"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu", "extraArgs": ["--threads", "2"]}}
    assert parse_settings(cfg).model.extraArgs == ["--threads", "2"]


def test_the_flag_list_is_vllms_and_names_its_version() -> None:
    flags = vllm_flags.serve_flags()
    assert {"--tensor-parallel-size", "--enable-prefix-caching", "--tool-call-parser", "--chat-template"} <= flags
    assert vllm_flags.FLAGS_FILE.read_text().startswith(f"# vllm {vllm_flags.version()} {vllm_flags.HEADER}\n")
