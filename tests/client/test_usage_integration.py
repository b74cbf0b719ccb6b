"""Who used what, for real: two developers onboard from the bundles of a live `coderig frontdoor run`
(TLS, nginx, the pinned LiteLLM, the relay) in front of the stand-in; alice runs Claude Code and
opencode, bob runs Codex and Claude Code; `coderig usage --json` then equals, token for token and
developer by developer, what the model server reported, and counts the requests the gateway logged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ssh_config, write_stack
from tests.frontdoor_fixtures import NPM_PREFIX, free_port, require_tool, running_frontdoor, standin_server

pytestmark = pytest.mark.integration

MODEL = "umans-coder-v0"
KEYS = {"alice": "crk-alice0123456789abcdefABCDEFusage0", "bob": "crk-bob0123456789abcdefABCDEFusage00"}
REPO = Path(__file__).resolve().parents[2]
MODEL_PATHS = ("/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions", "/v1/responses")


def coderig(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    for token in KEYS.values():
        assert token not in proc.stdout and token not in proc.stderr, "a token was printed"
    return proc


def agent(cmd: str, home: Path, work: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
    }
    script = home / ".config" / "coderig" / "use-laptop.sh"
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["bash", "-c", f'. "{script}" && exec {cmd}'],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, cmd + "\n" + proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_usage_equals_what_the_model_server_reported_for_three_real_agents(tmp_path: Path) -> None:
    for tool in ("claude", "codex", "opencode"):
        require_tool(tool)
    bundles, metrics = tmp_path / "bundles", f"127.0.0.1:{free_port()}"
    write_stack(tmp_path, ssh_config(), "laptop")
    args = ("--bundles-dir", str(bundles), "--name", "laptop", "--metrics-listen", metrics)
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(model.url, MODEL, tmp_path / "fd", KEYS, *args) as door,
    ):
        homes = {}
        for dev in KEYS:
            homes[dev] = tmp_path / f"home-{dev}"
            homes[dev].mkdir()
            proc = coderig("onboard", str(bundles / f"{dev}.json"), "--home", str(homes[dev]))
            assert proc.returncode == 0, proc.stdout + proc.stderr
        claude = "claude -p 'Create a file hello.txt containing hello from {dev}' --permission-mode acceptEdits"
        agent(claude.format(dev="alice"), homes["alice"], tmp_path / "w-alice-claude")
        agent('opencode run "Say hello"', homes["alice"], tmp_path / "w-alice-opencode")
        agent(
            "codex exec --skip-git-repo-check -s workspace-write 'Create a file hello.txt containing hello from codex'",
            homes["bob"],
            tmp_path / "w-bob-codex",
        )
        agent(claude.format(dev="bob"), homes["bob"], tmp_path / "w-bob-claude")
        assert (tmp_path / "w-bob-codex" / "hello.txt").read_text() == "hello from codex\n"
        # the claude-* fallback: the model server's 404, replayed by the gateway to LiteLLM, whose hop
        # through the relay carries bob's name (LiteLLM forwards the gateway's x- headers)
        hello = {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        before = len(model.reported)
        assert door.post("/v1/messages", hello, key=KEYS["bob"]).status == 200
        assert [e for _t, e, _d in door.stream("/v1/messages", {**hello, "stream": True}, KEYS["bob"])][
            -1
        ] == "message_stop"
        assert [(r["api"], r["developer"]) for r in model.reported[before:]] == [("chat", "bob"), ("chat", "bob")]

        # bob leaves (SIGHUP re-reads the keys): his key is refused from now on, his history stays
        door.write_keys({"alice": KEYS["alice"]})
        deadline = time.monotonic() + 20
        while door.post("/v1/messages", hello, key=KEYS["bob"]).status != 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert door.post("/v1/messages", hello, key=KEYS["bob"]).status == 401
        live = coderig(
            "usage", "laptop", "--record", f"http://{metrics}/usage", "--json", "--usd-per-hour", "2.5", cwd=tmp_path
        )
        assert live.returncode == 0, live.stderr
        reported = list(model.reported)
    access = [json.loads(line) for line in (tmp_path / "fd" / "gateway-access.log").read_text().splitlines()]

    # what the model server reported, per developer (every generating answer; the gateway's header names them)
    expected: dict[str, dict[str, int]] = {}
    for r in reported:
        row = expected.setdefault(r["developer"], {"input_tokens": 0, "output_tokens": 0})
        row["input_tokens"] += r["input"]
        row["output_tokens"] += r["output"]
    assert set(expected) == {"alice", "bob"}, expected
    apis = {(r["developer"], r["api"]) for r in reported}
    assert {("alice", "messages"), ("alice", "chat"), ("bob", "responses"), ("bob", "messages")} <= apis, apis

    for source in (json.loads(live.stdout), None):
        if source is None:  # the record the relay wrote when the front door stopped: the same figures
            out = coderig("usage", "laptop", "--record", str(tmp_path / "fd" / "usage.json"), "--json", cwd=tmp_path)
            assert out.returncode == 0, out.stderr
            source = json.loads(out.stdout)
        got = {d["developer"]: {k: d[k] for k in ("input_tokens", "output_tokens")} for d in source["developers"]}
        assert got == expected
        requests = {d["developer"]: d["requests"] for d in source["developers"]}
        logged = {dev: sum(1 for e in access if e["developer"] == dev and e["path"] in MODEL_PATHS) for dev in KEYS}
        assert requests == logged, (requests, logged)
        assert all(d["p50_ttft_s"] is not None for d in source["developers"])
    cost = json.loads(live.stdout)
    assert cost["usd_per_hour"] == 2.5 and cost["awake_hours"] > 0
