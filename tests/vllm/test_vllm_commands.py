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

from coderig.core import catalog, engine, kv_tier, layout, mtp, planner, versions, vllm_flags
from coderig.core.catalog import Preset
from coderig.core.errors import UserError
from coderig.core.settings import ModelSettings
from coderig.targets import load_stack_file, parse_settings

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
    "unknown offload backend": ["serve", "m", "--kv-offloading-size", "8", "--kv-offloading-backend", "disk"],
    "unknown speculative method": [
        "serve",
        "m",
        "--speculative-config",
        '{"method":"mtpx","num_speculative_tokens":1}',
    ],
    "no draft tokens": ["serve", "m", "--speculative-config", '{"method":"mtp","num_speculative_tokens":0}'],
    "unknown speculative key": ["serve", "m", "--speculative-config", '{"method":"mtp","draft_tokens":3}'],
}
# Prefixes of real flags: argparse (so vLLM) accepts them; coderig refuses them.
ABBREVIATED = ["--enable-prefix-cachin", "--max-num-seq", "8"]


# Each tool parser's model output for one Write call, in the format its model's chat template renders a
# call in (so the format the model was trained to emit): Qwen3-Coder's template (<function=…><parameter=…>),
# GLM-4.7's (<arg_key>/<arg_value>), MiniMax-M2's (<invoke name=…>), DeepSeek V3.2's DSML
# (vllm/tokenizers/deepseek_v32_encoding.py). gpt-oss (`openai`): at 0.34 that parser is a stub
# (GptOssToolParser.extract_tool_calls raises NotImplementedError); vLLM reads gpt-oss calls from harmony
# token ids (entrypoints/openai/parser/harmony_utils.py), which a marker tokenizer cannot stand in for.
WRITE_ARGS = {"file_path": "/a.txt", "content": "hi"}
TOOL_OUTPUTS = {
    "qwen3_coder": "<tool_call>\n<function=Write>\n<parameter=file_path>\n/a.txt\n</parameter>\n"
    "<parameter=content>\nhi\n</parameter>\n</function>\n</tool_call>",
    "glm47": "<tool_call>Write<arg_key>file_path</arg_key><arg_value>/a.txt</arg_value>"
    "<arg_key>content</arg_key><arg_value>hi</arg_value></tool_call>",
    "minimax_m2": '<minimax:tool_call>\n<invoke name="Write">\n<parameter name="file_path">/a.txt</parameter>\n'
    '<parameter name="content">hi</parameter>\n</invoke>\n</minimax:tool_call>',
    "deepseek_v32": '<｜DSML｜function_calls>\n<｜DSML｜invoke name="Write">\n'
    '<｜DSML｜parameter name="file_path" string="true">/a.txt</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="content" string="true">hi</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜function_calls>",
}
NOT_EXERCISED = {"openai"}
MARKERS = ["<tool_call>", "</tool_call>", "<function=", "</function>", "<parameter=", "</parameter>", "<arg_key>",
           "</arg_key>", "<arg_value>", "</arg_value>", "<minimax:tool_call>", "</minimax:tool_call>",
           "<｜DSML｜function_calls>", "</｜DSML｜function_calls>", "<｜DSML｜invoke", "</｜DSML｜invoke>",
           "<｜DSML｜parameter", "</｜DSML｜parameter>", "<think>", "</think>"]  # fmt: skip


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
        # the host KV tier and MTP, each way the stack can set them
        mtp_on = model(p.id, mtp=True) if p.id in mtp.MTP else model(p.id)
        tier = kv_tier.flags(kv_tier.Tier(True, "test", size_bytes=96 * 2**30 + 2**29, engines=lay.data))
        out[f"{p.id} {lay.name} kvOffload+mtp"] = ["serve", *engine.vllm_args(mtp_on, lay, tier=tier)]
        out[f"{p.id} {lay.name} mtp off"] = ["serve", *engine.vllm_args(model(p.id, mtp=False), lay)]
    for stack in sorted((ROOT / "tests" / "golden" / "stacks").glob("Pulumi.*.yaml")):
        settings = load_stack_file(stack)
        if settings.model.spec.engine == "vllm":
            plan = planner.plan_stack(settings)
            argv = shlex.split(engine.command_line(settings.model, plan.layout, kv_tier.flags(plan.kv_tier)))
            assert argv[:2] == ["vllm", "serve"]
            out[f"golden {stack.name}"] = argv[1:]
    return out


PROSE = "I will write /a.txt now."


def _tool_cases() -> list[dict[str, str]]:
    cases = [{"id": parser, "parser": parser, "text": text} for parser, text in TOOL_OUTPUTS.items()]
    return cases + [{"id": f"{parser} on prose", "parser": parser, "text": PROSE} for parser in TOOL_OUTPUTS]


@cache
def _report(python: str) -> dict[str, Any]:
    commands = [{"name": k, "argv": v} for k, v in rendered_commands().items()]
    commands += [{"name": f"refused: {k}", "argv": v} for k, v in REFUSED.items()]
    commands += [{"name": "abbreviated", "argv": ["serve", "m", *ABBREVIATED]}]
    proc = subprocess.run(
        [python, str(ROOT / "tests" / "vllm_check.py")],
        input=json.dumps({"commands": commands, "tool_outputs": _tool_cases(), "markers": MARKERS}),
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
    assert any("--kv-offloading-size" in rendered_commands()[n] for n in results if n.startswith("golden"))
    assert any(name.startswith("golden Pulumi.ssh") for name in results)


def test_vllm_refuses_what_it_should(report: dict[str, Any]) -> None:
    errors = {r["name"].removeprefix("refused: "): r["error"] for r in report["results"]}
    assert "unrecognized arguments: --enable-prefix-cache-please" in errors["unknown flag"]
    assert "--enable-auto-tool-choice requires --tool-call-parser" in errors["auto tool choice without a parser"]
    assert "invalid tool call parser: qwen9_coder" in errors["unknown tool parser"]
    assert "--tensor-parallel-size" in errors["bad value"] and "two" in errors["bad value"]
    assert "--kv-offloading-backend" in errors["unknown offload backend"]
    assert "disk" in errors["unknown offload backend"]
    assert "method 'mtpx' is not one vLLM names" in errors["unknown speculative method"]
    assert "greater than 0" in errors["no draft tokens"]
    assert "not SpeculativeConfig fields: ['draft_tokens']" in errors["unknown speculative key"]


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


@pytest.mark.parametrize("preset", VLLM_PRESETS, ids=lambda p: p.id)
def test_each_tool_parser_extracts_a_call_from_its_models_format(report: dict[str, Any], preset: Preset) -> None:
    name = preset.tool_call_parser
    if name in NOT_EXERCISED:
        pytest.skip(f"{name}: a stub at this vLLM; gpt-oss calls are parsed from harmony token ids")
    got = report["tool_calls"][name]
    assert got["error"] is None and got["called"], got
    ((tool, arguments),) = got["calls"]
    assert tool == "Write" and json.loads(arguments) == WRITE_ARGS


def test_a_parser_finds_no_call_in_prose(report: dict[str, Any]) -> None:
    """The check can fail: without its model's markers a parser reports no call."""
    assert set(TOOL_OUTPUTS) >= {p.tool_call_parser for p in VLLM_PRESETS} - NOT_EXERCISED
    for parser in TOOL_OUTPUTS:
        got = report["tool_calls"][f"{parser} on prose"]
        assert got["error"] is None and not got["called"] and got["calls"] == [], (parser, got)
