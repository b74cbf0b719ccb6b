"""README's "How coderig configures vLLM" lists every flag any preset renders (so it cannot rot), and
its plan excerpt is what `coderig plan` prints for the stack it names."""

from __future__ import annotations

import re
from pathlib import Path

from coderig.core import catalog, engine, kv_tier, layout, mtp, plan_text, planner, vllm_flags
from coderig.core.settings import ModelSettings
from coderig.targets import parse_settings
from coderig.targets.compose import idle as node_idle

ROOT = Path(__file__).resolve().parents[2]


def section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("### How coderig configures vLLM\n", 1)[1].split("\n## ", 1)[0]


def rendered_flags() -> set[str]:
    """Every option of every `vllm serve` command coderig renders: each preset on each GPU count and
    layout, with MTP each way, a host KV tier, a pinned revision and a chat template, plus sleep mode."""
    out: set[str] = set()
    tier = kv_tier.flags(kv_tier.Tier(True, "test", size_bytes=2**30))
    for p in (p for p in catalog.PRESETS.values() if p.engine == "vllm"):
        models = [ModelSettings(preset=p.id, revision="0" * 40, chatTemplate="qwen2.5-coder-fenced-tools.jinja")]
        models += [ModelSettings(preset=p.id, mtp=on) for on in (True, False) if p.id in mtp.MTP]
        for count in catalog.GPU_COUNTS:
            layouts = [x for g in ("B200", "H200") for x in layout.candidates(p, catalog.GPUS[g], count)]
            for lay in layouts:
                for m in models:
                    out |= {k for k in map(vllm_flags.flag_key, engine.vllm_args(m, lay, tier=tier)) if k}
    target = {"kind": "local", "gpu": {"model": "H200", "count": 8}}
    config = {"target": target, "model": {"preset": "glm-4.7"}, "idle": {"stopAfterMinutes": 30}}
    out |= {k for k in map(vllm_flags.flag_key, node_idle.model_overrides(parse_settings(config))[0]) if k}
    return out


def test_every_rendered_flag_is_in_the_section():
    listed = set(re.findall(r"`(--[a-z0-9-]+)`", section()))
    flags = rendered_flags()
    assert {"--kv-offloading-size", "--speculative-config", "--enable-sleep-mode", "--revision"} <= flags
    assert flags - listed == set(), "README 'How coderig configures vLLM' lacks these rendered flags"
    # and it names no flag coderig never renders
    assert listed - flags == set()


def test_the_plan_excerpt_is_what_coderig_plan_prints():
    target = {"kind": "aws", "instanceType": "p5en.48xlarge"}
    s = parse_settings({"target": target, "model": {"preset": "glm-4.7"}, "developers": ["a"]})
    (block,) = re.findall(r"```text\n(.*?)```", section(), re.S)
    printed = plan_text.format_plan(planner.plan_stack(s)).splitlines()
    assert block.strip() and all(line in printed for line in block.splitlines())
