"""`coderig plan` and `coderig render` on stack files (the acceptance cases of the foundation)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, ssh_config

from coderig.cli import main


def test_plan_json_deepseek_on_8xh200(stack_file, capsys):
    rc = main(["plan", "--config", str(stack_file(ssh_config())), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["fits"] is True
    assert out["kv_gb_per_request"] == pytest.approx(5.0, abs=0.4)
    for key in ("weights_gb", "kv_bytes_per_token", "kv_gb_per_request", "max_concurrent_requests", "fits"):
        assert key in out


def test_plan_refuses_8xh100_and_names_a_fit(stack_file, capsys):
    c = ssh_config()
    c["target"]["gpu"]["model"] = "H100"
    rc = main(["plan", "--config", str(stack_file(c))])
    err = capsys.readouterr().err
    assert rc != 0
    assert "weights do not fit" in err and "smallest that fits" in err


def test_plan_refuses_p5_instance(stack_file, capsys):
    c = {"target": {"kind": "aws", "instanceType": "p5.48xlarge"}, "model": {"preset": "deepseek-v3.2"}}
    rc = main(["plan", "--config", str(stack_file(c)), "--json"])
    captured = capsys.readouterr()
    assert rc != 0
    assert json.loads(captured.out)["fits"] is False
    assert "p5en.48xlarge" in captured.err


def test_invalid_config_exits_2_naming_the_key(stack_file, capsys):
    c = ssh_config()
    c["target"]["kind"] = "gcp"
    rc = main(["plan", "--config", str(stack_file(c))])
    assert rc == 2
    assert "coderig:target.kind" in capsys.readouterr().err


def test_aws_plan_shows_cost(stack_file, capsys):
    c = {"target": {"kind": "aws", "instanceType": "p5en.48xlarge"}, "model": {"preset": "deepseek-v3.2"}}
    assert main(["plan", "--config", str(stack_file(c))]) == 0
    out = capsys.readouterr().out
    assert "$63.30/h" in out and "8× H200" in out and "KV per request" in out


def test_render_writes_vllm_command_and_plan(stack_file, tmp_path):
    out = tmp_path / "out"
    assert main(["render", "--config", str(stack_file(ssh_config())), "--out", str(out)]) == 0
    cmd = (out / "model-server" / "command.sh").read_text()
    for flag in (
        "--tensor-parallel-size 8",
        "--tool-call-parser deepseek_v32",
        "--reasoning-parser deepseek_v3",
        "--tokenizer-mode deepseek_v32",
        "--enable-auto-tool-choice",
        "--max-model-len 131072",
        "--host 127.0.0.1",
        "--served-model-name umans-coder-v0",
        """--default-chat-template-kwargs '{"thinking":true}'""",
        """--override-generation-config '{"temperature":1.0,"top_p":0.95}'""",
    ):
        assert flag in cmd
    assert json.loads((out / "plan.json").read_text())["fits"] is True


def test_console_script_runs_from_a_shell(stack_file):
    """The installed `coderig` entry point (what the README tells users to run)."""
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.cli", "plan", "--config", str(ROOT / "Pulumi.dev.yaml"), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["engine"] == "llama.cpp"
