"""`coderig frontdoor run --bundles-dir` gives developers a way in with no hand-written file:
front door -> its bundles -> `coderig onboard` into an empty home -> the real Claude Code completes a
Write tool round trip; `coderig smoke` passes on the same bundle; SIGHUP rewrites the bundles.

Claude Code's stderr is kept in the test's temporary directory (claude-stderr.txt) and checked: the
only line it may hold is `[claude-code:unrecognized_model] {"model": "<served>", …}`, which Claude Code
2.1.330 prints in -p mode for every model it does not know and no setting removes (README:
Troubleshooting onboarding).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from frontdoor_fixtures import NPM_PREFIX, require_tool, running_frontdoor, standin_server

pytestmark = pytest.mark.integration

MODEL = "umans-coder-v0"
KEYS = {"alice": "crk-alice0123456789abcdefABCDEFbundles", "bob": "crk-bob0123456789abcdefABCDEFbundles"}
REPO = Path(__file__).resolve().parents[2]
UNRECOGNIZED = "[claude-code:unrecognized_model]"


def coderig(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    for token in KEYS.values():
        assert token not in proc.stdout and token not in proc.stderr, "a token was printed"
    return proc


def test_frontdoor_bundles_onboard_smoke_and_claude_code(tmp_path: Path) -> None:
    claude = require_tool("claude")
    bundles = tmp_path / "bundles"
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(model.url, MODEL, tmp_path / "fd", KEYS, "--bundles-dir", str(bundles), "--name", "laptop")
        as door,
    ):  # fmt: skip
        assert door.ca is not None
        assert sorted(p.name for p in bundles.iterdir()) == ["alice.json", "bob.json"]
        alice = bundles / "alice.json"
        assert stat.S_IMODE(alice.stat().st_mode) == 0o600
        data = json.loads(alice.read_text())
        assert data["kind"] == "coderig.developer" and data["developer"] == "alice" and data["alias"] == "laptop"
        assert data["ca_cert_pem"] == door.ca.read_text() and data["endpoint"]["tls"] == "self-signed"
        assert data["endpoint"]["anthropic_base_url"] == door.url
        assert data["model"]["max_model_len"] == 131072  # what the backend's /v1/models reports
        assert data["client_env"]["ANTHROPIC_CUSTOM_MODEL_OPTION"] == MODEL
        assert data["client_env"]["ANTHROPIC_CUSTOM_MODEL_OPTION_NAME"] == f"{MODEL} (coderig laptop)"

        home = tmp_path / "home"
        home.mkdir()
        proc = coderig("onboard", str(alice), "--home", str(home))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = coderig("smoke", str(alice), "--timeout", "60")
        assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "coderig smoke: all checks passed", (
            proc.stdout + proc.stderr
        )

        work = tmp_path / "work"
        work.mkdir()
        model.clear()
        env = {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
        run = subprocess.run(
            [claude, "-p", "Create a file hello.txt containing hello from a front door bundle",
             "--permission-mode", "acceptEdits", "--output-format", "json"],
            cwd=work, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        (tmp_path / "claude-stderr.txt").write_text(run.stderr)
        print(f"Claude Code stderr ({tmp_path / 'claude-stderr.txt'}):\n{run.stderr}")
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        result = json.loads(run.stdout)
        assert result["subtype"] == "success" and result["is_error"] is False
        assert (work / "hello.txt").read_text() == "hello from a front door bundle\n"
        # /v1/messages goes to the model server's own endpoint (the default native path)
        calls = [c for c in model.seen("/v1/messages") if not c.path.endswith("count_tokens")]
        assert calls and '"tool_result"' in json.dumps(calls[-1].body["messages"])  # the Write result came back
        other = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith(UNRECOGNIZED)]
        assert other == [], other  # nothing but the harmless line README's troubleshooting explains
        for line in run.stderr.splitlines():
            if line.startswith(UNRECOGNIZED):
                assert json.loads(line[len(UNRECOGNIZED) :])["model"] == MODEL

        # SIGHUP: bob revoked, carol added -> the bundles follow the keys file
        door.write_keys({"alice": KEYS["alice"], "carol": "crk-carol0123456789abcdefABCDEFbundles"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sorted(p.name for p in bundles.iterdir()) != ["alice.json", "carol.json"]:
            time.sleep(0.2)
        assert sorted(p.name for p in bundles.iterdir()) == ["alice.json", "carol.json"]
        assert json.loads((bundles / "carol.json").read_text())["developers"] == ["alice", "carol"]
