"""The client bundle: stack-output schema, `coderig bundle`, `coderig onboard` file merges, the
sourceable env script, and the Pulumi outputs (secrets stay secret). `coderig smoke`: test_smoke.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pulumi
import pytest
from client_bundles import BOB_TOKEN, CA, MODEL, TOKEN, assert_no_token, bundle, outputs, public
from conftest import ROOT, run_program, ssh_config

from coderig.cli import main
from coderig.client import bundle as clients
from coderig.client import configs
from coderig.client.bundle import UserError
from coderig.core import planner
from coderig.targets import parse_settings

# ---------------------------------------------------------------- schema


def test_stack_outputs_schema_urls_and_env() -> None:
    out = public()
    assert out["schema_version"] == clients.BUNDLE_SCHEMA_VERSION == 1
    assert out["kind"] == "coderig.stack"
    assert out["endpoint"]["anthropic_base_url"] == "https://gpu1.internal:8443"  # no /v1
    assert out["endpoint"]["openai_base_url"] == "https://gpu1.internal:8443/v1"
    assert out["endpoint"]["tls"] == "self-signed"
    assert out["model"] == {
        "served_name": MODEL,
        "aliases": ["claude-*"],
        "max_model_len": 131072,
        "max_output_tokens": 20000,
    }
    assert out["ca_cert_pem"] == CA
    assert out["cost"]["usd_per_hour"] == 63.3 and "AWS" in out["cost"]["basis"]
    assert out["plan"]["fits"] is True and out["idle"] == {"stopAfterMinutes": 45}
    env = out["client_env"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    for name in (
        "ANTHROPIC_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "CLAUDE_CODE_SUBAGENT_MODEL",
    ):
        assert env[name] == MODEL, name
    assert env["ANTHROPIC_BASE_URL"] == "https://gpu1.internal:8443"
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert 0 < int(env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]) < out["model"]["max_model_len"]
    assert int(env["API_TIMEOUT_MS"]) >= 30 * 60 * 1000
    assert env["NODE_EXTRA_CA_CERTS"] == "~/.config/coderig/dev/ca.pem"
    assert env["ANTHROPIC_API_KEY"] == ""  # neutralises a leftover key
    assert "ANTHROPIC_SMALL_FAST_MODEL" not in env  # deprecated
    assert "ANTHROPIC_AUTH_TOKEN" not in env  # the public part holds no token
    json.dumps(out)  # a stack output must be JSON


def test_provided_certificate_and_plain_http_variants() -> None:
    provided = public(ca_cert_pem=None)
    assert provided["endpoint"]["tls"] == "provided" and provided["ca_cert_pem"] is None
    assert "NODE_EXTRA_CA_CERTS" not in provided["client_env"]
    assert provided["cost"]["usd_per_hour"] == 63.3
    unknown = public(usd_per_hour=None)
    assert unknown["cost"]["usd_per_hour"] is None and "unknown" in unknown["cost"]["basis"]
    v6 = public(host="2001:db8::5", port=443)
    assert v6["endpoint"]["anthropic_base_url"] == "https://[2001:db8::5]"
    assert v6["endpoint"]["openai_base_url"] == "https://[2001:db8::5]/v1"
    plain = public(scheme="http", host="127.0.0.1", ca_cert_pem=None)
    assert plain["endpoint"]["tls"] == "none"
    assert clients.alias_for("Prod_EU") == "prod-eu"


def test_output_cap_must_fit_the_context() -> None:
    with pytest.raises(UserError, match="below max_model_len"):
        public(max_output_tokens=131072)


def test_stack_outputs_from_real_settings() -> None:
    settings = parse_settings(ssh_config())
    plan = planner.plan_stack(settings)
    out = clients.stack_outputs(
        project="coderig", stack="prod", host="gpu1.internal", port=settings.gateway.port,
        served_name=settings.model.served_name, max_model_len=settings.model.max_model_len,
        max_output_tokens=settings.model.max_output_tokens, developers=settings.developers,
        plan=plan.summary(), idle=settings.idle.model_dump(mode="json"), usd_per_hour=plan.usd_per_hour,
    )  # fmt: skip
    env = out["client_env"]
    assert int(env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]) == settings.model.max_output_tokens < settings.model.max_model_len
    assert env["ANTHROPIC_MODEL"] == settings.model.served_name
    assert out["plan"]["max_concurrent_requests"] >= 1


# worked by hand: window = served context − 5% rounded up; threshold = window − min(output, 20000) − 13000
#   40960: 40960 − 2048 = 38912; 38912 − 4096 − 13000 = 21816
#   131072: 131072 − 6554 (6553.6) = 124518; 124518 − 20000 − 13000 = 91518
#   202752: 202752 − 10138 (10137.6) = 192614; 192614 − 20000 − 13000 = 159614
@pytest.mark.parametrize(
    ("max_model_len", "max_output", "window", "threshold"),
    [(40960, 4096, 38912, 21816), (131072, 20000, 124518, 91518), (202752, 32000, 192614, 159614)],
)
def test_claude_code_compacts_before_the_served_context(
    max_model_len: int, max_output: int, window: int, threshold: int
) -> None:
    """Claude Code 2.1.330 compacts at W − min(max output, 20000) − 13000 (W = CLAUDE_CODE_MAX_CONTEXT_TOKENS
    for a model it does not know); the last request before that, plus its max_tokens, fits the server."""
    env = clients.recommended_env(
        anthropic_base_url="https://h", served_name="m", max_model_len=max_model_len,
        max_output_tokens=max_output, api_timeout_ms=1, ca_file=None,
    )  # fmt: skip
    assert "CLAUDE_CODE_AUTO_COMPACT_WINDOW" not in env  # floored at 100k by Claude Code: useless below
    assert int(env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"]) == window
    assert clients.claude_code_compact_threshold(max_model_len, max_output) == threshold
    assert threshold + max_output <= max_model_len - 13000 + max(0, max_output - 20000)
    assert threshold > 14000  # above Claude Code's ~12-14k-token first request


def test_dev_stack_env_holds_a_claude_code_session() -> None:
    dev = {"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu"}, "developers": ["dev"]}
    settings = parse_settings(dev)
    assert settings.model.max_model_len == 40960 and settings.model.max_output_tokens == 4096
    env = clients.recommended_env(
        anthropic_base_url="https://h", served_name="coderig-dev", max_model_len=settings.model.max_model_len,
        max_output_tokens=settings.model.max_output_tokens, api_timeout_ms=1, ca_file=None,
    )  # fmt: skip
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "38912" and env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "4096"
    assert clients.claude_code_compact_threshold(40960, 4096) == 21816


def test_developer_bundle_errors_never_show_tokens() -> None:
    with pytest.raises(UserError) as exc:
        clients.developer_bundle(outputs(), "mallory")
    assert "alice, bob" in str(exc.value)
    assert_no_token(str(exc.value))
    masked = outputs()
    masked[clients.TOKENS_OUTPUT] = "[secret]"
    with pytest.raises(UserError, match="--show-secrets"):
        clients.developer_bundle(masked, "alice")
    old = outputs()
    old[clients.BUNDLE_OUTPUT]["schema_version"] = 99
    with pytest.raises(UserError, match="schema version 99"):
        clients.developer_bundle(old, "alice")
    with pytest.raises(UserError, match="not a developer bundle"):
        clients.load_bundle(public())
    with pytest.raises(UserError, match="no 'clientBundle'"):
        clients.developer_bundle({}, "alice")


# ---------------------------------------------------------------- renderers


def test_claude_settings_merge_keeps_unrelated_keys(tmp_path: Path) -> None:
    paths = configs.ClientPaths.for_home(tmp_path)
    existing = {
        "permissions": {"allow": ["Bash(ls:*)"], "deny": ["WebSearch"]},
        "hooks": {"PostToolUse": [{"matcher": "Write", "hooks": [{"type": "command", "command": "make fmt"}]}]},
        "model": "opus",
        "env": {"HTTPS_PROXY": "http://proxy:3128", "ANTHROPIC_SMALL_FAST_MODEL": "claude-haiku-4-5"},
    }
    merged = configs.claude_settings(existing, bundle(), paths)
    for key in ("permissions", "hooks", "model"):
        assert merged[key] == existing[key]
    env = merged["env"]
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "ANTHROPIC_SMALL_FAST_MODEL" not in env
    assert env["ANTHROPIC_AUTH_TOKEN"] == TOKEN
    assert env["NODE_EXTRA_CA_CERTS"] == str(tmp_path / ".config/coderig/dev/ca.pem")
    assert all(isinstance(v, str) for v in env.values())
    assert existing["env"]["ANTHROPIC_SMALL_FAST_MODEL"] == "claude-haiku-4-5"  # input not mutated
    lines = configs.env_changes(existing["env"], env, [clients.TOKEN_ENV])
    assert "env.ANTHROPIC_SMALL_FAST_MODEL: removed" in lines
    assert "env.ANTHROPIC_AUTH_TOKEN = <secret, not shown>" in lines
    assert_no_token(*lines)


CODEX_EXISTING = """# my codex settings
model = "gpt-5.2-codex"
approval_policy = "on-request"

[model_providers.corp]
name = "Corp"
base_url = "https://llm.corp/v1"
env_key = "CORP_KEY"
wire_api = "responses"

[model_providers."coderig-dev"]
name = "stale"
base_url = "https://old-host:8443/v1"

[model_providers.coderig-dev.http_headers]
X-Old = "1"

[mcp_servers.docs]
command = "docs-mcp"  # a comment that must survive
"""


def test_codex_merge_keeps_everything_else_and_is_stable() -> None:
    b = bundle()
    text = configs.codex_config(CODEX_EXISTING, b)
    data = tomllib.loads(text)
    assert data["model_provider"] == "coderig-dev" and data["model"] == MODEL
    assert data["model_context_window"] == 131072
    provider = data["model_providers"]["coderig-dev"]
    assert provider["wire_api"] == "responses"
    assert provider["base_url"] == "https://gpu1.internal:8443/v1"
    assert provider["env_key"] == "CODERIG_DEV_TOKEN"
    assert "http_headers" not in provider and provider["name"] != "stale"  # the stale table is replaced
    assert data["model_providers"]["corp"]["env_key"] == "CORP_KEY"
    assert data["approval_policy"] == "on-request" and data["mcp_servers"]["docs"]["command"] == "docs-mcp"
    assert "# a comment that must survive" in text and text.startswith("# my codex settings")
    assert TOKEN not in text
    assert configs.codex_config(text, b) == text  # second run: no change
    fresh = configs.codex_config("", b)
    assert tomllib.loads(fresh)["model_providers"]["coderig-dev"]["wire_api"] == "responses"
    with pytest.raises(UserError, match="not valid TOML"):
        configs.codex_config("model = [", b)
    with pytest.raises(UserError, match="add the provider by hand"):  # a dotted key we do not rewrite
        configs.codex_config('model_providers.coderig-dev.name = "x"\n', b)


def test_opencode_provider(tmp_path: Path) -> None:
    paths = configs.ClientPaths.for_home(tmp_path)
    existing = {"theme": "tokyonight", "provider": {"ollama": {"npm": "@ai-sdk/openai-compatible"}}}
    merged = configs.opencode_config(existing, bundle(), paths)
    assert merged["theme"] == "tokyonight" and "ollama" in merged["provider"]
    ours = merged["provider"]["coderig-dev"]
    assert ours["npm"] == "@ai-sdk/openai-compatible"
    assert ours["options"]["baseURL"] == "https://gpu1.internal:8443/v1"
    assert ours["options"]["apiKey"] == "{file:" + str(tmp_path / ".config/coderig/dev/token") + "}"
    assert ours["models"][MODEL]["limit"] == {"context": 131072, "output": 20000}
    assert merged["model"] == f"coderig-dev/{MODEL}"
    assert "$schema" not in merged  # only added to a new file
    assert configs.opencode_config(None, bundle(), paths)["$schema"] == clients.OPENCODE_SCHEMA


def _source(shell: str, script: Path, env: dict[str, str]) -> dict[str, str]:
    proc = subprocess.run([shell, "-c", f'. "{script}" && env -0'], env=env, capture_output=True, check=True)
    pairs = [item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item]
    return {k: v for k, v in pairs}


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_use_script_sources_in_posix_shells(tmp_path: Path, shell: str) -> None:
    if not shutil.which(shell):
        pytest.skip(f"{shell} not installed")
    b = bundle()
    paths = configs.ClientPaths.for_home(tmp_path)
    paths.token_file("dev").parent.mkdir(parents=True)
    paths.token_file("dev").write_text(TOKEN + "\n")
    script = paths.use_script("dev")
    script.write_text(configs.use_script(b, paths))
    assert TOKEN not in script.read_text()  # the script holds no secret
    env = _source(shell, script, {"PATH": os.environ["PATH"], "ANTHROPIC_API_KEY": "sk-ant-leftover"})
    assert env["ANTHROPIC_AUTH_TOKEN"] == TOKEN
    assert env["CODERIG_DEV_TOKEN"] == TOKEN
    assert "ANTHROPIC_API_KEY" not in env
    assert env["ANTHROPIC_BASE_URL"] == "https://gpu1.internal:8443"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == MODEL
    assert env["NODE_EXTRA_CA_CERTS"] == env["CODEX_CA_CERTIFICATE"] == str(paths.ca_file("dev"))
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


# ---------------------------------------------------------------- coderig bundle


def test_bundle_from_saved_outputs_is_0600_and_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(outputs()))
    saved.chmod(0o600)
    out = tmp_path / "alice.json"
    rc = main(["bundle", "--stack", "dev", "--developer", "alice", "--out", str(out), "--outputs", str(saved)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    data = json.loads(out.read_text())
    assert data["kind"] == "coderig.developer" and data["developer"] == "alice" and data["token"] == TOKEN
    assert BOB_TOKEN not in out.read_text()  # one developer's token only
    assert_no_token(captured.out, captured.err)
    assert "alice" in captured.out

    rc = main(["bundle", "--stack", "prod", "--developer", "alice", "--out", str(out), "--outputs", str(saved)])
    assert rc == 2 and "not 'prod'" in capsys.readouterr().err


def test_bundle_runs_pulumi_stack_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir()
    (tmp_path / "outputs.json").write_text(json.dumps(outputs()))
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/args\n'
        '[ -n "$PULUMI_BACKEND_URL" ] && '
        f'echo "$PULUMI_BACKEND_URL $PULUMI_CONFIG_PASSPHRASE_FILE" > {tmp_path}/backend\n'
        f"cat {tmp_path}/outputs.json\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bob.json"
    rc = main(["bundle", "--stack", "dev", "--developer", "bob", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (tmp_path / "args").read_text().split() == [
        "stack", "output", "--json", "--show-secrets", "--stack", "dev"
    ]  # fmt: skip
    assert json.loads(out.read_text())["token"] == BOB_TOKEN
    assert_no_token(captured.out, captured.err)
    assert not (tmp_path / "backend").exists()  # no project-local state here: pulumi's own default
    rc = main(["bundle", "--stack", "dev", "--developer", "mallory", "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "mallory" in err and "coderig:developers" in err
    assert not (tmp_path / "m.json").exists()
    assert_no_token(err)
    # where up.sh made the project-local backend, bundle uses it (and its passphrase file)
    (tmp_path / ".pulumi-state").mkdir()
    (tmp_path / ".pulumi-state" / "passphrase").write_text("p")
    assert main(["bundle", "--stack", "dev", "--developer", "bob", "--out", str(out)]) == 0
    state = tmp_path.resolve() / ".pulumi-state"
    assert (tmp_path / "backend").read_text().split() == [f"file://{state}", str(state / "passphrase")]


# ---------------------------------------------------------------- coderig onboard


@pytest.fixture
def bundle_file(tmp_path: Path) -> Path:
    path = tmp_path / "alice.json"
    path.write_text(json.dumps(clients.developer_bundle(outputs(), "alice")))
    path.chmod(0o600)
    return path


def seed_home(home: Path) -> None:
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(json.dumps({
        "permissions": {"allow": ["Bash(npm test:*)"]},
        "statusLine": {"type": "command", "command": "~/bin/status"},
        "env": {"HTTPS_PROXY": "http://proxy:3128", "ANTHROPIC_SMALL_FAST_MODEL": "claude-3-5-haiku"},
    }, indent=4))  # fmt: skip
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text(CODEX_EXISTING)
    (home / ".config" / "opencode").mkdir(parents=True)
    (home / ".config" / "opencode" / "opencode.json").write_text(json.dumps({"theme": "gruvbox", "provider": {}}))


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def onboard(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["onboard", *args])
    captured = capsys.readouterr()
    assert_no_token(captured.out, captured.err)
    return rc, captured.out + captured.err


def test_onboard_writes_every_client_file_and_parses_back(
    tmp_path: Path, bundle_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    seed_home(home)
    before = snapshot(home)
    rc, out = onboard(capsys, str(bundle_file), "--home", str(home))
    assert rc == 0, out

    settings_path = home / ".claude" / "settings.json"
    settings = json.loads(settings_path.read_text())
    assert settings["permissions"] == {"allow": ["Bash(npm test:*)"]}
    assert settings["statusLine"]["command"] == "~/bin/status"
    assert settings["env"]["HTTPS_PROXY"] == "http://proxy:3128"
    assert settings["env"]["ANTHROPIC_AUTH_TOKEN"] == TOKEN
    assert settings["env"]["ANTHROPIC_MODEL"] == MODEL
    assert "ANTHROPIC_SMALL_FAST_MODEL" not in settings["env"]
    assert stat.S_IMODE(settings_path.stat().st_mode) == 0o600  # it holds the token

    backups = sorted(p for p in home.rglob("*coderig-backup*"))
    assert {p.name.split(".coderig-backup-")[0] for p in backups} == {"settings.json", "config.toml", "opencode.json"}
    for backup in backups:
        original = before[str(backup.relative_to(home)).split(".coderig-backup-")[0]][0]
        assert backup.read_bytes() == original
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600

    codex = tomllib.loads((home / ".codex" / "config.toml").read_text())
    assert codex["model_providers"]["coderig-dev"]["wire_api"] == "responses"
    assert codex["model_providers"]["corp"]["base_url"] == "https://llm.corp/v1"
    assert codex["model_provider"] == "coderig-dev"

    opencode = json.loads((home / ".config" / "opencode" / "opencode.json").read_text())
    assert opencode["theme"] == "gruvbox"
    assert opencode["provider"]["coderig-dev"]["options"]["baseURL"].endswith(":8443/v1")

    token_file = home / ".config" / "coderig" / "dev" / "token"
    assert token_file.read_text().strip() == TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert (home / ".config" / "coderig" / "dev" / "ca.pem").read_text() == CA
    script = home / ".config" / "coderig" / "use-dev.sh"
    assert TOKEN not in script.read_text()
    for text_file in (script, home / ".codex" / "config.toml", home / ".config" / "opencode" / "opencode.json"):
        assert TOKEN not in text_file.read_text(), text_file

    assert "env.ANTHROPIC_AUTH_TOKEN = <secret, not shown>" in out
    assert "env.ANTHROPIC_SMALL_FAST_MODEL: removed" in out
    assert "backup ~/.claude/settings.json.coderig-backup-" in out

    # second run: nothing changes, and it says so
    after_first = snapshot(home)
    rc, out = onboard(capsys, str(bundle_file), "--home", str(home))
    assert rc == 0
    assert "nothing to change" in out
    assert snapshot(home) == after_first
    assert not re.search(r"^\s+(created|changed)\b", out, re.M)
    assert out.count("unchanged") == 6


def test_onboard_dry_run_writes_nothing(tmp_path: Path, bundle_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    seed_home(home)
    before = snapshot(home)
    rc, out = onboard(capsys, str(bundle_file), "--home", str(home), "--dry-run")
    assert rc == 0
    assert snapshot(home) == before
    assert "dry run" in out and "would be changed" in out and "would be created" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _ = onboard(capsys, str(bundle_file), "--home", str(empty), "--dry-run")
    assert rc == 0 and list(empty.iterdir()) == []


def test_onboard_one_client_and_broken_settings(
    tmp_path: Path, bundle_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    rc, _ = onboard(capsys, str(bundle_file), "--home", str(home), "--client", "claude")
    assert rc == 0
    assert (home / ".claude" / "settings.json").exists()
    assert not (home / ".codex").exists() and not (home / ".config" / "opencode").exists()

    broken = tmp_path / "broken"
    (broken / ".claude").mkdir(parents=True)
    (broken / ".claude" / "settings.json").write_text("{ not json")
    rc, out = onboard(capsys, str(bundle_file), "--home", str(broken), "--client", "claude")
    assert rc == 2 and "not valid JSON" in out
    assert (broken / ".claude" / "settings.json").read_text() == "{ not json"  # never clobbered


def test_onboard_updates_when_the_bundle_changes(
    tmp_path: Path, bundle_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert onboard(capsys, str(bundle_file), "--home", str(home))[0] == 0
    moved = clients.developer_bundle(outputs(host="gpu2.internal"), "alice")
    bundle_file.write_text(json.dumps(moved))
    rc, out = onboard(capsys, str(bundle_file), "--home", str(home))
    assert rc == 0
    assert 'env.ANTHROPIC_BASE_URL: "https://gpu1.internal:8443" -> "https://gpu2.internal:8443"' in out
    codex = tomllib.loads((home / ".codex" / "config.toml").read_text())
    assert codex["model_providers"]["coderig-dev"]["base_url"] == "https://gpu2.internal:8443/v1"
    assert len([p for p in (home / ".codex").iterdir() if "backup" in p.name]) == 1


def test_onboard_writes_through_a_dotfiles_symlink(
    tmp_path: Path, bundle_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, dotfiles = tmp_path / "home", tmp_path / "dotfiles"
    (home / ".claude").mkdir(parents=True)
    dotfiles.mkdir()
    (dotfiles / "claude-settings.json").write_text(json.dumps({"theme": "dark"}))
    (home / ".claude" / "settings.json").symlink_to(dotfiles / "claude-settings.json")
    bundle_file.chmod(0o644)
    rc, out = onboard(capsys, str(bundle_file), "--home", str(home), "--client", "claude")
    assert rc == 0
    assert (home / ".claude" / "settings.json").is_symlink()
    data = json.loads((dotfiles / "claude-settings.json").read_text())
    assert data["theme"] == "dark" and data["env"]["ANTHROPIC_MODEL"] == MODEL
    assert stat.S_IMODE((dotfiles / "claude-settings.json").stat().st_mode) == 0o600
    assert "symlink to" in out
    assert f"chmod 600 {bundle_file}" in out  # the bundle was left readable by others


def test_onboard_rejects_a_stack_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "outputs.json"
    wrong.write_text(json.dumps(outputs()))
    rc, out = onboard(capsys, str(wrong), "--home", str(tmp_path / "home"))
    assert rc == 2 and "not a developer bundle" in out


# ---------------------------------------------------------------- Pulumi outputs (mocks)


def test_stack_outputs_under_pulumi_mocks_keep_tokens_secret() -> None:
    from stacks import StackContext, read_settings
    from stacks.outputs import client_outputs

    def program() -> dict[str, Any]:
        settings, secrets = read_settings()
        ctx = StackContext(settings, "prod", "coderig", planner.plan_stack(settings), secrets)
        tokens = pulumi.Output.secret({"alice": TOKEN, "bob": BOB_TOKEN})
        host = pulumi.Output.from_input("gpu1.internal")
        return client_outputs(ctx, host=host, port=settings.gateway.port,
                              ca_pem=pulumi.Output.from_input(CA), tokens=tokens)  # fmt: skip

    run = run_program(ssh_config(), program, stack="prod")
    assert run.error is None, run.error
    assert run.secret_outputs == {clients.TOKENS_OUTPUT}
    assert run.outputs[clients.TOKENS_OUTPUT] == {"alice": TOKEN, "bob": BOB_TOKEN}
    pub = run.outputs[clients.BUNDLE_OUTPUT]
    assert pub["schema_version"] == 1 and pub["stack"] == "prod"
    assert pub["endpoint"]["anthropic_base_url"] == "https://gpu1.internal:8443"
    assert run.outputs["openaiBaseUrl"] == "https://gpu1.internal:8443/v1"
    assert run.outputs["caCertificate"] == CA
    public_text = json.dumps({k: v for k, v in run.outputs.items() if k not in run.secret_outputs})
    assert_no_token(public_text)
    # the developer bundle made from these outputs works end to end
    made = clients.load_bundle(clients.developer_bundle(run.outputs, "alice"))
    assert made.token == TOKEN and made.served_name == "deepseek-v3.2"  # the preset's model name


def test_cli_module_is_registered() -> None:
    proc = subprocess.run([sys.executable, "-m", "coderig.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    for command in ("bundle", "onboard", "smoke"):
        assert command in proc.stdout
