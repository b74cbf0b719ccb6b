"""`coderig onboard` and `coderig smoke` for real: the developer bundle of a live `coderig frontdoor
run` (TLS with its own CA, nginx + the pinned LiteLLM) in front of the stand-in model server.

The agents run with HOME set to a temporary directory that holds only what `coderig onboard`
wrote, and no ANTHROPIC_* / OPENAI_* variable in their environment: the configuration under test
is the onboarded one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from frontdoor_fixtures import NPM_PREFIX, FrontDoor, require_tool, running_frontdoor, standin_server
from standin import StandIn

from coderig.client import bundle as clients
from coderig.frontdoor.run import ensure_tls

pytestmark = pytest.mark.integration

MODEL = "umans-coder-v0"
MAX_OUTPUT = 4096  # below Claude Code's own default, so the test sees the bundle's cap applied
KEYS = {"alice": "crk-alice0123456789abcdefABCDEFonboard", "bob": "crk-bob0123456789abcdefABCDEFonboard"}
REPO = Path(__file__).resolve().parents[2]


def make_bundle(door: FrontDoor, developer: str = "alice", **changes: Any) -> dict[str, Any]:
    """The developer bundle ops would hand out for this front door (same code path as the stack)."""
    assert door.ca is not None
    public = clients.stack_outputs(
        project="coderig", stack="dev", host=door.host, port=door.port, served_name=MODEL,
        max_model_len=32768, max_output_tokens=MAX_OUTPUT, developers=sorted(KEYS),
        plan={"preset": "test"}, idle={"stopAfterMinutes": 45}, usd_per_hour=None,
        ca_cert_pem=door.ca.read_text(),
    )  # fmt: skip
    data = clients.developer_bundle({clients.BUNDLE_OUTPUT: public, clients.TOKENS_OUTPUT: KEYS}, developer)
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return data


def write_bundle(tmp_path: Path, data: dict[str, Any], name: str = "alice.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def coderig(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.cli", *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    for token in KEYS.values():
        assert token not in proc.stdout and token not in proc.stderr, "a token was printed"
    return proc


def clean_env(home: Path) -> dict[str, str]:
    """What an agent gets: PATH, HOME (only onboard's files) and a locale. No ANTHROPIC_*, no CA."""
    return {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


@pytest.fixture()
def onboarded(door: FrontDoor, tmp_path: Path) -> tuple[Path, Path]:
    """(bundle file, home) with `coderig onboard` run once into an empty home."""
    bundle = write_bundle(tmp_path, make_bundle(door))
    home = tmp_path / "home"
    home.mkdir()
    proc = coderig("onboard", str(bundle), "--home", str(home))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return bundle, home


# ---------------------------------------------------------------- real agents


def test_claude_code_round_trip_with_only_the_onboarded_home(
    onboarded: tuple[Path, Path], door: FrontDoor, standin: StandIn, tmp_path: Path
) -> None:
    claude = require_tool("claude")
    _bundle, home = onboarded
    work = tmp_path / "work"
    work.mkdir()
    standin.clear()
    proc = subprocess.run(
        [claude, "-p", "Create a file hello.txt containing hello from an onboarded home",
         "--permission-mode", "acceptEdits", "--output-format", "json"],
        cwd=work, env=clean_env(home), capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["subtype"] == "success" and result["is_error"] is False
    assert (work / "hello.txt").read_text() == "hello from an onboarded home\n"

    # the default path: the gateway sends /v1/messages to the model server's native endpoint
    calls = standin.seen("/v1/messages")
    assert calls, "nothing reached the model server"
    assert not standin.seen("/v1/chat/completions")  # no translation on the way
    assert {c.body["model"] for c in calls} == {MODEL}  # every alias (haiku/sonnet/opus) set to the served name
    assert any("Write" in [t["name"] for t in c.body.get("tools", [])] for c in calls)
    last = calls[-1].body["messages"][-1]["content"]
    assert any(b.get("type") == "tool_result" for b in last)  # the Write result came back
    caps = [c.body.get("max_tokens") or c.body.get("max_completion_tokens") for c in calls]
    assert max(caps) == MAX_OUTPUT, caps  # CLAUDE_CODE_MAX_OUTPUT_TOKENS from settings.json applied
    log = [json.loads(line) for line in (door.state_dir / "gateway-access.log").read_text().splitlines()]
    mine = [e for e in log if e["path"] == "/v1/messages" and e["session"]]
    assert mine and all(e["developer"] == "alice" and e["status"] == "200" for e in mine)


def test_codex_round_trip_after_sourcing_use_script(
    onboarded: tuple[Path, Path], door: FrontDoor, standin: StandIn, tmp_path: Path
) -> None:
    require_tool("codex")
    _bundle, home = onboarded
    work = tmp_path / "work"
    work.mkdir()
    standin.clear()
    script = home / ".config" / "coderig" / "use-dev.sh"
    proc = subprocess.run(
        ["bash", "-c", f'. "{script}" && exec codex exec --skip-git-repo-check -s workspace-write '
                       '"Create a file hello.txt containing hello from codex"'],
        cwd=work, env=clean_env(home), capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (work / "hello.txt").read_text() == "hello from codex\n"
    assert standin.seen("/v1/responses") and not standin.seen("/v1/chat/completions")  # native, untranslated
    log = [json.loads(line) for line in (door.state_dir / "gateway-access.log").read_text().splitlines()]
    assert any(e["path"] == "/v1/responses" and e["developer"] == "alice" and e["status"] == "200" for e in log)


def test_opencode_reply_after_sourcing_use_script(
    onboarded: tuple[Path, Path], door: FrontDoor, standin: StandIn, tmp_path: Path
) -> None:
    """opencode through the onboarded provider: baseURL, the token via {file:…}, the CA via
    NODE_EXTRA_CA_CERTS. (The stand-in scripts tool calls for Claude Code's and Codex's tools, not
    opencode's, so this checks a reply, not a file.)"""
    found = require_tool("opencode")
    _bundle, home = onboarded
    work = tmp_path / "work"
    work.mkdir()
    standin.clear()
    env = {**clean_env(home), "PATH": f"{Path(found).parent}:/usr/local/bin:/usr/bin:/bin",
           "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1"}  # fmt: skip
    script = home / ".config" / "coderig" / "use-dev.sh"
    proc = subprocess.run(
        ["bash", "-c", f'. "{script}" && exec opencode run "Say hello"'],
        cwd=work, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "tok0 tok1" in proc.stdout  # the stand-in's reply reached opencode
    assert {c.body["model"] for c in standin.seen("/v1/chat/completions")} == {MODEL}
    log = [json.loads(line) for line in (door.state_dir / "gateway-access.log").read_text().splitlines()]
    assert any(e["path"] == "/v1/chat/completions" and e["developer"] == "alice" and e["status"] == "200" for e in log)


def test_onboard_twice_against_a_real_bundle_is_a_no_op(onboarded: tuple[Path, Path]) -> None:
    bundle, home = onboarded
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    proc = coderig("onboard", str(bundle), "--home", str(home))
    assert proc.returncode == 0
    assert "nothing to change" in proc.stdout
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- smoke


def smoke_lines(bundle: Path) -> tuple[int, list[str]]:
    proc = coderig("smoke", str(bundle), "--timeout", "60")
    return proc.returncode, proc.stdout.splitlines()


def failed_line(lines: list[str]) -> tuple[str, str]:
    index = next(i for i, line in enumerate(lines) if line.strip().startswith("FAIL"))
    return lines[index], lines[index + 1]


def test_smoke_passes_against_a_healthy_front_door(door: FrontDoor, tmp_path: Path) -> None:
    rc, lines = smoke_lines(write_bundle(tmp_path, make_bundle(door)))
    assert rc == 0, "\n".join(lines)
    oks = [line.split()[1] for line in lines if line.strip().startswith("ok")]
    assert oks == ["dns/tcp", "tls", "auth", "model", "chat", "count_tokens", "tool"]
    assert lines[-1] == "coderig smoke: all checks passed"


def test_smoke_wrong_key(door: FrontDoor, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, make_bundle(door, token="crk-revoked0123456789abcdefABCDEF"))
    rc, lines = smoke_lines(bundle)
    assert rc == 1
    fail, fix = failed_line(lines)
    assert "auth" in fail and "401" in fail
    assert "fix:" in fix and "new bundle" in fix and "ANTHROPIC_API_KEY" in fix
    assert sum(line.split()[0] == "ok" for line in lines if line.strip()) == 2  # dns/tcp and tls passed


def test_smoke_wrong_model_name(door: FrontDoor, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, make_bundle(door, **{"model.served_name": "gone-model-v1"}))
    rc, lines = smoke_lines(bundle)
    assert rc == 1
    fail, fix = failed_line(lines)
    assert "model" in fail.split()[1] and "gone-model-v1" in fail
    assert MODEL in fix and "new bundle" in fix


def test_smoke_unknown_ca(door: FrontDoor, tmp_path: Path) -> None:
    other_ca, _cert, _key = ensure_tls(tmp_path / "other-tls", "127.0.0.1", [])
    bundle = write_bundle(tmp_path, make_bundle(door, ca_cert_pem=other_ca.read_text()))
    rc, lines = smoke_lines(bundle)
    assert rc == 1
    fail, fix = failed_line(lines)
    assert "tls" in fail and "not trusted" in fail
    assert "NODE_EXTRA_CA_CERTS" in fix


def test_smoke_stopped_backend(tmp_path: Path) -> None:
    with standin_server(model=MODEL) as model, running_frontdoor(model.url, MODEL, tmp_path / "fd", KEYS) as fd:
        bundle = write_bundle(tmp_path, make_bundle(fd))
        rc, lines = smoke_lines(bundle)
        assert rc == 0, "\n".join(lines)
        model.stop()
        rc, lines = smoke_lines(bundle)
    assert rc == 1
    fail, fix = failed_line(lines)
    assert "chat" in fail
    assert "model server behind it is not ready" in fix and "/healthz: 503" in fix
    assert [line.split()[1] for line in lines if line.strip().startswith("ok")] == ["dns/tcp", "tls", "auth", "model"]
