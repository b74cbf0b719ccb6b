"""The dev stack holds a real Claude Code session (issue 11): three model turns (a tool call, the tool
result, a follow-up answer) through the front door, with the dev stack's bundle settings, against a
stand-in that serves exactly the dev stack's context and rejects any prompt over it with
llama-server's error (the dev preset runs llama.cpp). No request is rejected.

The control run shows the check can fail: the same first turn against the context the dev stack
served before (16384 tokens over 2 llama.cpp slots = 8192 per request) is rejected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from frontdoor_fixtures import NPM_PREFIX, require_tool, running_frontdoor, standin_server

from coderig.targets import load_stack_file

pytestmark = pytest.mark.integration

KEYS = {"dev": "crk-dev0123456789abcdefABCDEFcontext00"}
DEV = load_stack_file(ROOT / "Pulumi.dev.yaml")
SERVED = DEV.model.served_name
CONTEXT = DEV.model.max_model_len
MAX_OUTPUT = DEV.model.max_output_tokens


def onboard(door_bundle: Path, home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.cli", "onboard", str(door_bundle), "--home", str(home), "--client", "claude"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def claude(home: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run(
        [require_tool("claude"), "-p", *args, "--permission-mode", "acceptEdits", "--output-format", "json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def session(tmp_path: Path, context: int) -> tuple[list[subprocess.CompletedProcess[str]], object]:
    """Front door + stand-in serving `context` tokens, the dev stack's bundle env, then Claude Code:
    create a file (tool call + tool result), then a follow-up turn in the same session."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with (
        standin_server(model=SERVED, max_model_len=context, engine="llama.cpp") as model,
        running_frontdoor(model.url, SERVED, tmp_path / "fd", KEYS, "--bundles-dir", str(tmp_path / "bundles"),
                          "--max-model-len", str(CONTEXT), "--max-tokens", str(MAX_OUTPUT)) as _door,
    ):  # fmt: skip
        bundle = tmp_path / "bundles" / "dev.json"
        env = json.loads(bundle.read_text())["client_env"]
        # the dev stack's bundle settings: Claude Code compacts before the served context
        assert int(env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"]) < CONTEXT
        assert int(env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]) == MAX_OUTPUT
        onboard(bundle, home)
        runs = [claude(home, work, "Create a file notes.txt containing first turn")]
        if runs[0].returncode == 0:
            runs.append(claude(home, work, "--continue", "Reply with one word: done"))
        return runs, model


def test_a_three_turn_claude_code_session_fits_the_dev_context(tmp_path: Path) -> None:
    runs, model = session(tmp_path, CONTEXT)
    for run in runs:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert json.loads(run.stdout)["is_error"] is False
    assert (tmp_path / "work" / "notes.txt").read_text() == "first turn\n"
    # the gateway sends /v1/messages to the model server natively where its engine serves it (llama.cpp
    # does), else through LiteLLM to /v1/chat/completions: count the turns on either
    turns = model.seen("/v1/messages") + model.seen("/v1/chat/completions")  # type: ignore[attr-defined]
    turns = [t for t in turns if not t.path.endswith("count_tokens")]
    assert len(turns) >= 3, [t.path for t in turns]
    second = json.dumps(turns[1].body["messages"])
    assert '"tool_result"' in second or '"role": "tool"' in second  # the tool result came back
    # every prompt stayed under the served context (the stand-in would have answered 400)
    print(f"largest prompt estimate {model.max_prompt_tokens_seen} of {CONTEXT} tokens over {len(turns)} turns")  # type: ignore[attr-defined]
    assert 0 < model.max_prompt_tokens_seen < CONTEXT  # type: ignore[attr-defined]


def test_the_old_dev_context_rejects_claude_codes_first_request(tmp_path: Path) -> None:
    runs, model = session(tmp_path, 8192)
    assert runs[0].returncode != 0 or json.loads(runs[0].stdout).get("is_error") is True
    assert model.max_prompt_tokens_seen >= 8192  # type: ignore[attr-defined]
