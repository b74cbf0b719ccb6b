"""The bundle's Claude Code window settings against Claude Code's real first request, counted by a real
tokenizer: Claude Code 2.1.330 (the pinned CLI) sends its first turn through `coderig frontdoor run` with
the bundle of a qwen2.5-coder-1.5b-cpu stack (32768 tokens served); the stand-in records it; the real
Qwen2.5-Coder server counts its tokens (llama.cpp's /v1/messages/count_tokens, the preset's template).
It must fit the served context with the output reserve, stay below the point where the bundle makes
Claude Code compact, and the stand-in's byte estimate must not under-count it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import realmodel
from conftest import ROOT
from frontdoor_fixtures import NPM_PREFIX, free_port, require_tool, running_frontdoor, standin_server

from coderig.client import bundle
from coderig.core import engine
from coderig.core.settings import ModelSettings

pytestmark = pytest.mark.integration

KEYS = {"dev": "crk-dev0123456789abcdefABCDEFwindow000"}
MODEL = ModelSettings(preset="qwen2.5-coder-1.5b-cpu")
CONTEXT, MAX_OUTPUT = MODEL.max_model_len, MODEL.max_output_tokens


def first_request(tmp_path: Path) -> tuple[dict[str, object], int]:
    """Claude Code's first /v1/messages body through the front door with the bundle's settings, and the
    stand-in's estimate of its prompt tokens."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    served = MODEL.served_name
    with (
        standin_server(model=served, max_model_len=CONTEXT, engine="llama.cpp") as model,
        running_frontdoor(model.url, served, tmp_path / "fd", KEYS, "--bundles-dir", str(tmp_path / "bundles"),
                          "--max-model-len", str(CONTEXT), "--max-tokens", str(MAX_OUTPUT)),
    ):  # fmt: skip
        onboard = [sys.executable, "-m", "coderig.cli", "onboard", str(tmp_path / "bundles" / "dev.json"),
                   "--home", str(home), "--client", "claude"]  # fmt: skip
        done = subprocess.run(onboard, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        env = {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
        run = subprocess.run(
            [require_tool("claude"), "-p", "Reply with one word: ok", "--output-format", "json"],
            cwd=work, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        turns = [t for t in model.seen("/v1/messages") if not t.path.endswith("count_tokens")]
        assert turns, [t.path for t in model.requests]
        first = max(turns, key=lambda t: len(json.dumps(t.body)))
        return first.body, model.max_prompt_tokens_seen


def test_claude_codes_first_request_fits_the_bundles_window_in_real_tokens(tmp_path: Path) -> None:
    if realmodel.xllamacpp_python() is None or not (realmodel.CACHE / realmodel.QWEN_15B.file).exists():
        realmodel.require("xllamacpp and the Qwen GGUF files")
    body, estimate = first_request(tmp_path)
    argv = engine.llamacpp_args(MODEL, str(realmodel.CACHE / realmodel.QWEN_15B.file), port=free_port())
    with realmodel.serve_argv(realmodel.QWEN_15B, argv, tmp_path) as srv:
        counted = realmodel.post(srv.url + "/v1/messages/count_tokens", {**body, "model": MODEL.served_name})
    tokens = counted["input_tokens"]
    threshold = bundle.claude_code_compact_threshold(CONTEXT, MAX_OUTPUT)
    print(f"Claude Code first request: {len(json.dumps(body))} bytes, {tokens} Qwen2.5 tokens (stand-in estimate "
          f"{estimate}); context {CONTEXT}, max output {MAX_OUTPUT}, compacts at {threshold}")  # fmt: skip
    assert tokens > 5000  # the ~49 KB system prompt and tool definitions, really counted
    assert tokens + MAX_OUTPUT <= CONTEXT
    assert tokens < threshold, "Claude Code would compact on its first turn"
    assert estimate >= tokens  # the stand-in's estimate over-counts, so what passes it passes the server
