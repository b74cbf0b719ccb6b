"""vLLM itself reads every `vllm serve` command coderig renders.

The pinned vLLM (versions.VLLM_VERSION, installed by .ci/vllm-deps.sh with VLLM_TARGET_DEVICE=cpu into
its own venv) runs tests/vllm_check.py once per session over every command: each vLLM preset on every
layout the planner considers for every GPU model and count (TP, TP+EP, DP+EP, TP+DCP), with a pinned
revision, a bf16 cache and `extraArgs`, plus the golden stacks' commands. Its `serve` parser and the
checks `vllm serve` runs before loading anything must accept them all; its registries must hold every
parser and tokenizer mode a preset names; and coderig's committed flag list must be its parser's.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, ssh_config

from coderig.core import catalog, engine, layout, planner, versions, vllm_flags
from coderig.core.errors import UserError
from coderig.core.settings import ModelSettings, load_stack_file, parse_settings

pytestmark = pytest.mark.integration

VLLM_PRESETS = [p for p in catalog.PRESETS.values() if p.engine == "vllm"]
EXTRA_ARGS = ["--max-num-seqs", "64", "--enable-chunked-prefill", "--max_num_batched_tokens=8192"]
# Commands vLLM must refuse: proof the check can fail (argparse, validate_parsed_serve_args,
# validate_api_server_args, in that order).
REFUSED = {
    "unknown flag": ["serve", "m", "--enable-prefix-cache-please"],
    "auto tool choice without a parser": ["serve", "m", "--enable-auto-tool-choice"],
    "unknown tool parser": ["serve", "m", "--enable-auto-tool-choice", "--tool-call-parser", "qwen9_coder"],
    "bad value": ["serve", "m", "--tensor-parallel-size", "two"],
}
# Prefixes of real flags: argparse (so vLLM) accepts them; coderig refuses them.
ABBREVIATED = ["--enable-prefix-cachin", "--max-num-seq", "8"]


def vllm_python() -> str:
    found = os.environ.get("CODERIG_VLLM_PYTHON")
    if not found:
        root = Path.home() / ".cache" / "coderig"
        pythons = sorted(root.glob(f"vllm-{versions.VLLM_VERSION}*/bin/python"))
        found = next((str(p) for p in pythons if (p.parent.parent / ".complete").exists()), None)
    if found and Path(found).exists():
        return found
    message = f"vLLM {versions.VLLM_VERSION} is not installed (source .ci/vllm-deps.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def model(preset: str, **extra: Any) -> ModelSettings:
    return ModelSettings.model_validate({"preset": preset, **extra})


def rendered_commands() -> dict[str, list[str]]:
    """name -> argv after `vllm` for every command coderig renders for a vLLM preset."""
    out: dict[str, list[str]] = {}
    for p in VLLM_PRESETS:
        for gpu in catalog.GPUS.values():
            for count in catalog.GPU_COUNTS:
                for lay in layout.candidates(p, gpu, count):
                    out[f"{p.id} {lay.name}"] = ["serve", *engine.vllm_args(model(p.id), lay)]
        lay = layout.candidates(p, catalog.GPUS["H200"], 8)[0]
        variant = model(p.id, extraArgs=EXTRA_ARGS, revision="0" * 40, kvCacheDtype="bf16", servedName="x.y",
                        chatTemplate="qwen2.5-coder-fenced-tools.jinja")  # fmt: skip
        out[f"{p.id} {lay.name} extraArgs+revision+bf16+chatTemplate"] = ["serve", *engine.vllm_args(variant, lay)]
    for stack in sorted((ROOT / "tests" / "golden" / "stacks").glob("Pulumi.*.yaml")):
        settings = load_stack_file(stack)
        if settings.model.spec.engine == "vllm":
            argv = shlex.split(engine.command_line(settings.model, planner.plan_stack(settings).layout))
            assert argv[:2] == ["vllm", "serve"]
            out[f"golden {stack.name}"] = argv[1:]
    return out


@cache
def _report(python: str) -> dict[str, Any]:
    commands = [{"name": k, "argv": v} for k, v in rendered_commands().items()]
    commands += [{"name": f"refused: {k}", "argv": v} for k, v in REFUSED.items()]
    commands += [{"name": "abbreviated", "argv": ["serve", "m", *ABBREVIATED]}]
    proc = subprocess.run(
        [python, str(ROOT / "tests" / "vllm_check.py")],
        input=json.dumps({"commands": commands}),
        capture_output=True,
        text=True,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return _report(vllm_python())


def test_it_is_the_pinned_vllm(report: dict[str, Any]) -> None:
    assert report["version"] == versions.VLLM_VERSION


def test_every_rendered_command_passes_vllms_parser_and_validators(report: dict[str, Any]) -> None:
    names = rendered_commands().keys()
    results = {r["name"]: r["error"] for r in report["results"] if r["name"] in names}
    assert results.keys() == names
    assert {name: err for name, err in results.items() if err} == {}
    # every layout shape the planner renders was among them
    shapes = {name.split(" ", 1)[1] for name in results if not name.startswith("golden")}
    assert {"TP8", "TP8+DCP2", "DP8+EP", "TP8+EP"} <= shapes, shapes
    assert any(name.startswith("golden Pulumi.ssh") for name in results)


def test_vllm_refuses_what_it_should(report: dict[str, Any]) -> None:
    errors = {r["name"].removeprefix("refused: "): r["error"] for r in report["results"]}
    assert "unrecognized arguments: --enable-prefix-cache-please" in errors["unknown flag"]
    assert "--enable-auto-tool-choice requires --tool-call-parser" in errors["auto tool choice without a parser"]
    assert "invalid tool call parser: qwen9_coder" in errors["unknown tool parser"]
    assert "--tensor-parallel-size" in errors["bad value"] and "two" in errors["bad value"]


@pytest.mark.parametrize("preset", VLLM_PRESETS, ids=lambda p: p.id)
def test_preset_parsers_are_in_vllms_registries(report: dict[str, Any], preset: catalog.Preset) -> None:
    reg = report["registries"]
    assert preset.tool_call_parser in reg["tool_call_parser"]
    if preset.reasoning_parser:  # argparse does not check it; vLLM only does at engine config
        assert preset.reasoning_parser in reg["reasoning_parser"]
    if preset.tokenizer_mode:
        assert preset.tokenizer_mode in reg["tokenizer_mode"]


def test_committed_flag_list_is_vllms(report: dict[str, Any]) -> None:
    """coderig/core/vllm_serve_flags.txt is what the pinned vLLM's parser has. To regenerate it after a
    pin change: CODERIG_UPDATE_VLLM_FLAGS=1 uv run pytest tests/vllm -k flag_list."""
    text = f"# vllm {report['version']} {vllm_flags.HEADER}\n" + "\n".join(report["flags"]) + "\n"
    if os.environ.get("CODERIG_UPDATE_VLLM_FLAGS") == "1":
        vllm_flags.FLAGS_FILE.write_text(text)
    assert vllm_flags.FLAGS_FILE.read_text() == text
    assert vllm_flags.version() == versions.VLLM_VERSION


def test_coderig_refuses_the_abbreviations_vllms_parser_accepts(report: dict[str, Any]) -> None:
    """argparse takes a unique prefix of a flag, so vLLM runs these; coderig refuses them at plan time."""
    assert [r["error"] for r in report["results"] if r["name"] == "abbreviated"] == [None]
    with pytest.raises(UserError) as refused:
        parse_settings(ssh_config(extraArgs=ABBREVIATED))
    assert "coderig:model.extraArgs" in str(refused.value)
    assert "did you mean --enable-prefix-caching?" in str(refused.value)
    assert "did you mean --max-num-seqs?" in str(refused.value)
