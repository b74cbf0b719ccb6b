"""The flags of the pinned vLLM's `vllm serve`, so coderig refuses a misspelt or abbreviated one in
`coderig:model.extraArgs` at plan time instead of on the node.

vLLM's parser (argparse) accepts any unambiguous prefix of a flag (`--enable-prefix-cachin` runs as
`--enable-prefix-caching`, `--max-model` as `--max-model-len`), and an unknown flag only fails when the
container starts. `vllm_serve_flags.txt` holds every option string of `vllm serve` at
versions.VLLM_VERSION, written from vLLM's own parser by tests/vllm_check.py; tests/vllm/
test_vllm_commands.py regenerates it from the installed vLLM and fails when it differs.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coderig.core import catalog, versions

FLAGS_FILE = Path(__file__).with_name("vllm_serve_flags.txt")
HEADER = "`vllm serve` option strings, from vLLM's own parser (tests/vllm_check.py); do not edit"
_NUMBER = re.compile(r"-\d")
_OPT_LEVEL = re.compile(r"-O\d?")  # vLLM's parse_args turns -O3 / -O into --optimization-level


def header_version(text: str) -> str:
    """The vLLM version named on the file's first line (`# vllm 0.34.0 ...`)."""
    return text.split("\n", 1)[0].split()[2]


def version() -> str:
    return header_version(FLAGS_FILE.read_text())


@functools.cache
def serve_flags() -> frozenset[str]:
    lines = FLAGS_FILE.read_text().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def flag_key(token: str) -> str | None:
    """The option a command-line token names, as vLLM's parser looks it up, or None for a value.
    vLLM's FlexibleArgumentParser turns `_` into `-` before the first `.`, and `--group.key=v` sets one
    key of the `--group` JSON option (utils/argparse_utils.py: parse_args)."""
    if not token.startswith("-") or len(token) == 1 or _NUMBER.match(token):
        return None
    key = token.split("=", 1)[0]
    if key.startswith("--"):
        key = key.split(".", 1)[0].replace("_", "-")
    return key


def unknown_flags(args: list[str]) -> list[str]:
    """One message per token of `args` that is not a flag of the pinned `vllm serve`."""
    flags = serve_flags()
    out: list[str] = []
    for token in args:
        key = flag_key(token)
        if key is None or key in flags or _OPT_LEVEL.fullmatch(token.split("=", 1)[0]):
            continue
        near = [f for f in sorted(flags) if f.startswith(key)] or difflib.get_close_matches(key, flags, n=1)
        hint = "remove it"
        if len(near) == 1:
            hint = f"did you mean {near[0]}?"
        elif near:
            hint = f"it abbreviates {', '.join(near[:4])}; write the whole flag"
        out.append(f"{token!r} is not a `vllm serve` flag in vLLM {version()} ({hint})")
    return out


def checked_extra_args(args: list[str], model: Mapping[str, Any]) -> list[str]:
    """`coderig:model.extraArgs`, given the model keys validated before it (`preset`, `image`: declared
    before extraArgs, pydantic validates in order): refused (ValueError, every bad token) when the preset
    runs the pinned vLLM and a token is not one of its flags. Another vLLM `image`: each node asks that
    image's own parser instead (coderig.targets.compose.image_check)."""
    if model.get("image") not in (None, versions.VLLM_IMAGE):
        return args
    preset = catalog.PRESETS.get(model.get("preset", ""))
    if preset is not None and preset.engine == "vllm" and (bad := unknown_flags(args)):
        raise ValueError("; ".join(bad))
    return args
