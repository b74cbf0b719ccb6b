"""The three real coding agents (Claude Code, Codex, opencode) on a real model through a deployed gateway:
each is asked to create a file with given content through a tool call, then, in the same session, a
second file. What is checked is what happened, never the prose: the agent's own record of the tool call
(Claude Code's session transcript, Codex's and opencode's JSON events), the files on disk, and that the
second turn continued the first turn's session.

Each agent runs with the home `coderig onboard` wrote (its provider, token and CA unchanged) and only
flags that shrink the first prompt, cap the steps and keep the task narrow, because a small model on two
shared CPU cores reads every prompt token: one file tool, a two-sentence system prompt, at most
MAX_STEPS model calls per turn. Temperature 0 is the server's default (the stack's `--temp 0`): none of
the three sends a temperature with these settings (seen in their captured requests).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontdoor_fixtures import NPM_PREFIX

MAX_STEPS = 3  # model calls per turn: the tool call, the closing answer, one spare
FIRST = ("hello.txt", "hello from the dev stack")
SECOND = ("second.txt", "second turn")
STOP = "the task is done: answer with the word done and call no more tools."
AGENT = "You are a coding agent."
TIMEOUT = 900  # per turn; the first prompt on 2 busy cores takes minutes


def ask(target: tuple[str, str]) -> str:
    return f"Create the file {target[0]} containing exactly: {target[1]}"


@dataclass
class Run:
    """Two turns of one agent: seconds per turn, and the session both turns belong to."""

    agent: str
    session: str = ""
    seconds: list[float] = field(default_factory=list)

    def timed(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
        )
        self.seconds.append(round(time.monotonic() - t0, 1))
        return proc


def base_env(home: Path) -> dict[str, str]:
    """What an agent gets: PATH, HOME (only onboard's files) and a locale; no ANTHROPIC_* / OPENAI_*."""
    return {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def sourced(home: Path, stack: str, command: list[str]) -> list[str]:
    """`command` after sourcing the onboarded use-<stack>.sh (Codex and opencode read the token there)."""
    script = home / ".config" / "coderig" / f"use-{stack}.sh"
    quoted = " ".join(_sh(c) for c in command)
    return ["bash", "-c", f'. "{script}" && exec {quoted}']


def _sh(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _file_is(work: Path, target: tuple[str, str]) -> None:
    path = work / target[0]
    assert path.exists(), f"{target[0]} was not created"
    assert path.read_text() in (target[1], target[1] + "\n"), path.read_text()  # `echo` adds the newline


def claude_code(claude: str, home: Path, work: Path) -> Run:
    """`claude -p` twice: a new session (--session-id), then --resume of it. ENABLE_TOOL_SEARCH=false:
    otherwise 2.1.330 sends a `DeferredToolPlaceholder` tool (defer_loading) that llama.cpp shows the
    model like any other tool, and a small model calls it."""
    run = Run("claude", session=str(uuid.uuid4()))
    env = base_env(home) | {"ENABLE_TOOL_SEARCH": "false"}
    system = f"{AGENT} Create files with the Write tool. When a tool result says the file was created, {STOP}"
    flags = [
        "--tools",
        "Write",
        "--system-prompt",
        system,
        "--permission-mode",
        "acceptEdits",
        "--output-format",
        "json",
        "--max-turns",
        str(MAX_STEPS),
    ]
    for target, session in ((FIRST, ["--session-id", run.session]), (SECOND, ["--resume", run.session])):
        proc = run.timed([claude, "-p", ask(target), *flags, *session], work, env)
        out = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
        assert out.get("subtype") in ("success", "error_max_turns"), proc.stdout[-2000:] + proc.stderr[-2000:]
        assert out["session_id"] == run.session, out  # the second turn continued the first one's session
        _file_is(work, target)
    (transcript,) = (home / ".claude" / "projects").glob(f"*/{run.session}.jsonl")
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    writes = [
        b["input"]
        for d in lines
        if d.get("type") == "assistant"
        for b in d["message"]["content"]
        if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "Write"
    ]
    assert [Path(w["file_path"]).name for w in writes][:1] == [FIRST[0]], writes
    assert any(Path(w["file_path"]).name == SECOND[0] for w in writes), writes
    users = [d["message"]["content"] for d in lines if d.get("type") == "user"]
    prompts = [c for c in users if isinstance(c, str)]
    assert prompts == [ask(FIRST), ask(SECOND)], prompts  # both turns in one session, in order
    _file_is(work, FIRST)  # the second turn did not overwrite the first file
    return run


def codex(home: Path, work: Path, stack: str, tmp: Path) -> Run:
    """`codex exec --json`, then `codex exec resume <thread>`: the base instructions replaced by a short
    file, the multi-agent, goals and skill tools and web search off; the shell tool writes the file in
    Codex's workspace-write sandbox. TMPDIR: Codex refuses to place its sandbox helper under the temp
    directory, where the test's CODEX_HOME is."""
    run = Run("codex")
    instructions = tmp / "codex-instructions.md"
    instructions.write_text(
        f"{AGENT} Run shell commands with the exec_command tool. When a command has created the file, {STOP}\n"
    )
    scratch = tmp / "codex-tmp"
    scratch.mkdir()
    env = base_env(home) | {"TMPDIR": str(scratch)}
    flags = [
        "--json",
        "--skip-git-repo-check",
        "-c",
        'sandbox_mode="workspace-write"',
        "--disable",
        "multi_agent",
        "--disable",
        "goals",
        "--disable",
        "skill_search",
        "-c",
        'web_search="disabled"',
        "-c",
        f'model_instructions_file="{instructions}"',
    ]
    for target in (FIRST, SECOND):
        cmd = ["codex", "exec", *(["resume", run.session] if run.session else []), *flags, ask(target)]
        proc = run.timed(sourced(home, stack, cmd), work, env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        events = _events(proc.stdout)
        (thread,) = {e["thread_id"] for e in events if e["type"] == "thread.started"}
        assert thread == (run.session or thread), (thread, run.session)  # resume continues the same thread
        run.session = thread
        items = [e["item"] for e in events if e["type"] == "item.completed"]
        commands = [i for i in items if i["type"] == "command_execution"]
        assert any(c["exit_code"] == 0 and target[0] in c["command"] for c in commands), (items, proc.stderr[-2000:])
        assert len([e for e in events if e["type"] == "turn.completed"]) == 1
        _file_is(work, target)
    _file_is(work, FIRST)
    return run


def opencode(home: Path, work: Path, stack: str) -> Run:
    """`opencode run --format json` twice, the second with --session: an agent with only the write tool
    (OPENCODE_CONFIG_CONTENT adds it; the onboarded provider is unchanged), `steps` capped."""
    run = Run("opencode")
    agent = {
        "mode": "primary",
        "temperature": 0,
        "steps": MAX_STEPS,
        "tools": {"*": False, "write": True},
        "permission": {"edit": "allow"},
        "prompt": f"{AGENT} Create files with the write tool. When a tool result says the file was written, {STOP}",
    }
    env = base_env(home) | {
        "OPENCODE_CONFIG_CONTENT": json.dumps({"agent": {"rig": agent}}),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
    }
    for target in (FIRST, SECOND):
        session = ["--session", run.session] if run.session else []
        cmd = ["opencode", "run", "--agent", "rig", "--format", "json", *session, ask(target)]
        proc = run.timed(sourced(home, stack, cmd), work, env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        events = _events(proc.stdout)
        assert not [e for e in events if e["type"] == "error"], proc.stdout[-3000:]
        (session_id,) = {e["sessionID"] for e in events}
        assert session_id == (run.session or session_id), (session_id, run.session)  # --session continues it
        run.session = session_id
        writes = [e["part"]["state"] for e in events if e["type"] == "tool_use" and e["part"]["tool"] == "write"]
        done = [Path(w["input"]["filePath"]).name for w in writes if w["status"] == "completed"]
        assert target[0] in done, writes
        _file_is(work, target)
    _file_is(work, FIRST)
    return run
