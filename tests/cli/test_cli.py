"""`coderig plan` and `coderig render` on stack files (the acceptance cases of the foundation)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml
from conftest import ROOT, ssh_config
from kube_helpers import k8s_config

from coderig.cli import main


def test_plan_json_deepseek_on_8xh200(stack_file, capsys):
    rc = main(["plan", "--config", str(stack_file(ssh_config())), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["fits"] is True
    # (61 layers + the MTP layer, on by default) × (656 B fp8_ds_mla latent + 132 B DSA indexer) × 131072 tokens
    assert out["kv_gb_per_request"] == pytest.approx(6.40, abs=0.01)
    assert out["mtp"] is True
    assert out["parallel"] == {"tensor": 8, "data": 1, "decode_context": 1, "expert": False}
    assert 1 <= out["max_concurrent_requests_per_replica"] <= 9  # the latent is on every TP rank
    assert out["max_concurrent_requests"] == out["max_concurrent_requests_per_replica"] * out["replicas"]
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
        "--served-model-name deepseek-v3.2",
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


# --- parallel layouts and workload (issue 11) -------------------------------------------------------

LAYOUT_CASES = [
    # (GPU, model.parallel, workload, flags the model server must get)
    ("H200", None, None, ["--tensor-parallel-size 8"]),
    ("H200", {"data": 8, "expert": True}, None,
     ["--tensor-parallel-size 1", "--data-parallel-size 8", "--enable-expert-parallel"]),
    # 29 at once (one session each): one ssh replica of TP8+DCP4 holds 29 (DCP2 14); two Kubernetes
    # replicas of DCP2 hold 28
    ("H200", None, {"developers": 58, "peakActiveShare": 0.5, "sessionsPerDeveloper": 1},
     ["--tensor-parallel-size 8", "--decode-context-parallel-size 4"]),
    ("B200", {"tensor": 8, "decodeContext": 8}, None,
     ["--tensor-parallel-size 8", "--decode-context-parallel-size 8"]),
]  # fmt: skip


def _layout_config(kind: str, gpu: str, parallel: Any, workload: Any) -> dict[str, Any]:
    c = ssh_config() if kind == "ssh" else k8s_config()
    c["target"]["gpu"]["model"] = gpu
    if parallel is not None:
        c["model"]["parallel"] = parallel
    if workload is not None:
        c["workload"] = workload
    return c


@pytest.mark.parametrize(("gpu", "parallel", "workload", "flags"), LAYOUT_CASES)
def test_each_layout_reaches_compose_the_deployment_and_command_sh(
    stack_file, tmp_path, gpu, parallel, workload, flags
):
    rendered = {}
    for kind in ("ssh", "kubernetes"):
        out = tmp_path / kind
        assert main(["render", "--config", str(stack_file(_layout_config(kind, gpu, parallel, workload))),
                     "--out", str(out)]) == 0  # fmt: skip
        rendered[f"{kind} command.sh"] = (out / "model-server" / "command.sh").read_text()
        if kind == "ssh":
            compose = yaml.safe_load((out / "node" / "compose.yaml").read_text())
            rendered["compose.yaml"] = " ".join(compose["services"]["model"]["command"])
        else:
            dep = yaml.safe_load((out / "kubernetes" / "06-deployment-coderig-model.yaml").read_text())
            model = next(c for c in dep["spec"]["template"]["spec"]["containers"] if "vllm" in c["image"])
            rendered["Deployment"] = " ".join(model.get("command", []) + model.get("args", []))
    for where, text in rendered.items():
        for flag in flags:
            assert flag in text, f"{flag} missing from {where}"
        if "--enable-expert-parallel" not in flags:
            assert "--enable-expert-parallel" not in text, where


def test_plan_prints_layout_rule_and_workload(stack_file, capsys):
    w = {"developers": 400, "peakActiveShare": 0.5, "contextTokens": 65536, "sessionsPerDeveloper": 1}
    c = _layout_config("ssh", "H200", None, w)
    assert main(["plan", "--config", str(stack_file(c))]) == 0
    out = capsys.readouterr().out
    assert "layout rule        the lowest-latency layout" in out
    assert "NOT carried" in out and "on AWS" in out and "/h" in out
    assert main(["plan", "--config", str(stack_file(c)), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["workload"]["peak_concurrent_requests"] == 200 and js["workload"]["carried"] is False
    assert js["parallel"] == {"tensor": 8, "data": 1, "decode_context": 8, "expert": False}  # 119 at 64k


@pytest.mark.parametrize(
    ("gpu", "parallel", "key"),
    [
        ("H200", {"tensor": 4}, "coderig:model.parallel:"),  # 4 × 1 ≠ 8
        ("H200", {"tensor": 2, "data": 2, "expert": True}, "coderig:model.parallel:"),
        ("H200", {"tensor": 8, "decodeContext": 16}, "coderig:model.parallel.decodeContext"),  # must divide TP
        ("B200", {"tensor": 8, "decodeContext": 3}, "coderig:model.parallel.decodeContext"),
        ("H200", {"tensor": 0}, "coderig:model.parallel.tensor"),
        ("H200", {"tensor": 8, "pipeline": 2}, "coderig:model.parallel.pipeline"),
        ("H200", {"expert": "maybe"}, "coderig:model.parallel.expert"),
    ],
)
def test_invalid_parallel_exits_2_naming_the_key(stack_file, capsys, gpu, parallel, key):
    rc = main(["plan", "--config", str(stack_file(_layout_config("ssh", gpu, parallel, None)))])
    err = capsys.readouterr().err
    assert rc == 2 and key in err, err


def test_parallel_refusals_for_dense_and_gqa_models(stack_file, capsys):
    c = ssh_config()
    c["model"] = {"preset": "glm-4.7", "parallel": {"tensor": 8, "decodeContext": 2}}
    assert main(["plan", "--config", str(stack_file(c))]) == 2
    assert "coderig:model.parallel.decodeContext: got 2; glm-4.7 uses GQA" in capsys.readouterr().err
    c["model"] = {"preset": "minimax-m2.1", "parallel": {"tensor": 8}}
    assert main(["plan", "--config", str(stack_file(c))]) == 2
    assert "coderig:model.parallel.expert: got false" in capsys.readouterr().err
    dev = {"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu", "parallel": {"expert": True}},
           "developers": ["dev"]}  # fmt: skip
    assert main(["plan", "--config", str(stack_file(dev))]) == 2
    assert "coderig:model.parallel: set, but this stack runs no vLLM" in capsys.readouterr().err


def test_every_problem_is_reported_at_once(stack_file, capsys):
    c = _layout_config("ssh", "H200", {"tensor": 4, "decodeContext": 3}, {"peakActiveShare": 1, "contextTokens": 10**6})
    c["developers"] = []
    assert main(["plan", "--config", str(stack_file(c))]) == 2
    err = capsys.readouterr().err
    for key in ("coderig:model.parallel:", "coderig:model.parallel.decodeContext",
                "coderig:workload.developers", "coderig:workload.contextTokens"):  # fmt: skip
        assert key in err, err


@pytest.mark.parametrize(
    ("workload", "key"),
    [
        ({"developers": 10}, "coderig:workload.peakActiveShare"),  # no cited default: required
        ({"peakActiveShare": 0}, "coderig:workload.peakActiveShare"),
        ({"peakActiveShare": 1.5}, "coderig:workload.peakActiveShare"),
        ({"peakActiveShare": "half"}, "coderig:workload.peakActiveShare"),
        ({"peakActiveShare": 0.5, "developers": 0}, "coderig:workload.developers"),
        ({"peakActiveShare": 0.5, "contextTokens": 0}, "coderig:workload.contextTokens"),
        ({"peakActiveShare": 0.5, "contextTokens": 200000}, "coderig:workload.contextTokens"),  # > maxModelLen
        ({"peakActiveShare": 0.5, "users": 3}, "coderig:workload.users"),
    ],
)
def test_invalid_workload_exits_2_naming_the_key(stack_file, capsys, workload, key):
    rc = main(["plan", "--config", str(stack_file(_layout_config("ssh", "H200", None, workload)))])
    err = capsys.readouterr().err
    assert rc == 2 and key in err, err
