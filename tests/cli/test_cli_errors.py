"""Item 12: bad input and a missing environment print `coderig: …` lines and an exit code, never a
traceback. Each runs the real command line (`python -m coderig.cli`) in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_stack

from coderig.client import bundle as clients

AWS_STACK = {"target": {"kind": "aws", "instanceType": "p5en.48xlarge"}, "model": {"preset": "deepseek-v3.2"}}


def coderig(*args: str, cwd: Path, env: dict[str, str] | None = None, stdout: int | None = None):
    return subprocess.run(
        [sys.executable, "-m", "coderig.cli", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def assert_one_liners(proc: subprocess.CompletedProcess[str], code: int) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert all(line.startswith("coderig: ") for line in lines), lines
    return [line for line in lines if not line.startswith("coderig: warning: ")]


def test_render_into_an_existing_file(tmp_path: Path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    proc = coderig("render", "--config", str(ROOT / "Pulumi.dev.yaml"), "--out", str(out), cwd=tmp_path)
    lines = assert_one_liners(proc, 2)
    assert len(lines) == 1 and str(out) in lines[0]
    assert out.read_text() == "not a directory"


def test_plan_on_a_directory(tmp_path: Path):
    proc = coderig("plan", "--config", str(tmp_path), cwd=tmp_path)
    lines = assert_one_liners(proc, 2)
    assert len(lines) == 1 and str(tmp_path) in lines[0]


def test_plan_on_a_binary_file(tmp_path: Path):
    blob = tmp_path / "Pulumi.x.yaml"
    blob.write_bytes(b"\xff\xfe\x00binary")
    assert_one_liners(coderig("plan", "--config", str(blob), cwd=tmp_path), 2)


def no_aws_credentials(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-role lookup (and no wait for it)
    }


@pytest.mark.parametrize("command", ["idle", "stop", "start"])
def test_aws_commands_without_credentials(tmp_path: Path, command: str):
    write_stack(tmp_path, AWS_STACK, name="gpu")
    proc = coderig(command, "gpu", cwd=tmp_path, env=no_aws_credentials(tmp_path))
    lines = assert_one_liners(proc, 2)
    assert len(lines) == 1
    assert "credentials" in lines[0] and "AWS_PROFILE" in lines[0], lines


def test_aws_idle_with_an_unknown_profile(tmp_path: Path):
    write_stack(tmp_path, AWS_STACK, name="gpu")
    env = no_aws_credentials(tmp_path) | {"AWS_PROFILE": "nosuch"}
    lines = assert_one_liners(coderig("idle", "gpu", cwd=tmp_path, env=env), 2)
    assert "nosuch" in lines[0]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("client_tests", ROOT / "tests" / "client" / "test_clients.py")
    assert spec and spec.loader
    client_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client_tests)  # the client tests' stack outputs
    outputs = client_tests.outputs

    path = tmp_path / "alice.json"
    path.write_text(json.dumps(clients.developer_bundle(outputs(), "alice")))
    path.chmod(0o600)
    return path


def test_onboard_into_a_closed_pipe(tmp_path: Path, bundle: Path):
    """`coderig onboard … | head`, with the reader already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = coderig("onboard", str(bundle), "--home", str(tmp_path / "home"), cwd=tmp_path, stdout=write)
    finally:
        os.close(write)
    assert_one_liners(proc, 0)
    assert (tmp_path / "home" / ".claude" / "settings.json").exists()  # the work is done; only the report is lost


def test_onboard_piped_to_head(tmp_path: Path, bundle: Path):
    shell = f"{sys.executable} -m coderig.cli onboard {bundle} --home {tmp_path / 'home'} --dry-run | head -c 1"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
