"""`coderig bundle --all --out-dir DIR`: every developer's bundle from one `pulumi stack output`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from client_bundles import BOB_TOKEN, TOKEN, assert_no_token, outputs

from coderig.cli import main
from coderig.client import bundle as clients


def fake_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: dict[str, object]) -> Path:
    """A `pulumi` on PATH that prints `data` as `pulumi stack output --json --show-secrets` and logs each call."""
    (tmp_path / "outputs-src.json").write_text(json.dumps(data))
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncat {tmp_path}/outputs-src.json\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    return tmp_path / "calls"


def test_bundle_all_writes_every_developer_from_one_pulumi_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = fake_pulumi(tmp_path, monkeypatch, outputs())
    out = tmp_path / "bundles"
    assert main(["bundle", "--stack", "dev", "--all", "--out-dir", str(out)]) == 0
    captured = capsys.readouterr()
    assert calls.read_text().splitlines() == ["stack output --json --show-secrets --stack dev"]
    assert sorted(p.name for p in out.iterdir()) == ["alice.json", "bob.json"]
    for name, token, other in (("alice", TOKEN, BOB_TOKEN), ("bob", BOB_TOKEN, TOKEN)):
        path = out / f"{name}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = json.loads(path.read_text())
        assert data["kind"] == clients.DEVELOPER_KIND and data["developer"] == name and data["token"] == token
        assert other not in path.read_text()  # each file holds its own developer's token only
    assert_no_token(captured.out, captured.err)
    assert "wrote 2 bundle(s)" in captured.out and f"coderig onboard {out}/NAME.json" in captured.out


def test_bundle_all_removes_revoked_developers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundles"
    out.mkdir()
    revoked = clients.developer_bundle(outputs(), "bob") | {"developer": "carol"}
    (out / "carol.json").write_text(json.dumps(revoked))  # this stack, a name no longer in the outputs
    other_stack = clients.developer_bundle(outputs(stack="prod"), "bob") | {"developer": "dave"}
    (out / "dave.json").write_text(json.dumps(other_stack))
    (out / "notes.json").write_text('{"mine": true}')
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(outputs()))
    saved.chmod(0o600)
    assert main(["bundle", "--stack", "dev", "--all", "--out-dir", str(out), "--outputs", str(saved)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["alice.json", "bob.json", "dave.json", "notes.json"]
    assert "carol.json" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["--all", "--out", "x.json"],
        ["--all"],
        ["--developer", "alice", "--out-dir", "d"],
        ["--developer", "alice"],
    ],
)
def test_bundle_flags_that_do_not_go_together(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(outputs()))
    assert main(["bundle", "--stack", "dev", *args, "--outputs", str(saved)]) == 2
    assert "--out" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))[1:]  # nothing but the saved outputs


def test_bundle_all_refuses_a_name_that_is_not_a_file_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = outputs()
    data[clients.TOKENS_OUTPUT]["../evil"] = "crk-x"
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(data))
    assert main(["bundle", "--stack", "dev", "--all", "--out-dir", str(tmp_path / "b"), "--outputs", str(saved)]) == 2
    assert "'../evil'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "evil.json").exists()
