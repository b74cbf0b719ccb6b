"""The served model name: what clients send and what Claude Code's /model picker, Codex and opencode show.

It defaults to the preset's model name (catalog `served_name`), so a developer recognises it.
Presets that served under another default before (`former_served_name`: DeepSeek V3.2 was
`umans-coder-v0`, the CPU preset `coderig-dev`) keep that name working: while a stack leaves
`coderig:model.servedName` unset, the gateway routes the former name to the model too (LiteLLM alias,
also the native routes' fallback), and `coderig plan` / `pulumi up` warn once with the line that pins
the former name. Pinning it is what a deployed stack does to change nothing on upgrade (a new name
restarts the model servers and needs new bundles); a new stack sets servedName, or accepts the default.
"""

from __future__ import annotations

from coderig.core.catalog import Preset


def former_name(served_name: str | None, preset: Preset) -> str | None:
    """The name an unset servedName gave this preset before, if it changed."""
    return None if served_name else preset.former_served_name


def aliases(former: str | None) -> tuple[str, ...]:
    """Other names the gateway routes to the served model."""
    return (former,) if former else ()


def warnings(preset: str, served: str, former: str | None) -> list[str]:
    if not former:
        return []
    return [
        f"coderig:model.servedName is unset: {preset} is now served as {served!r} (before: {former!r}, still "
        f"accepted). A stack deployed before keeps its name with "
        f"`pulumi config set --path coderig:model.servedName {former}`; else developers need a new bundle"
    ]
