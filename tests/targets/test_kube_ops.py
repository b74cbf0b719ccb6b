"""`coderig start|stop|idle` on a kubernetes stack, against a fake kubectl and a live stand-in."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import write_stack
from kube_helpers import (  # noqa: F401 - MODEL is read by conftest's standin fixture
    MODEL,
    glm_config,
    k8s_config,
    settings_of,
    stream_chat,
)
from standin import StandIn

from coderig import targets
from coderig.cli import main
from coderig.cli import ops as cli_ops
from coderig.core import budgets
from coderig.targets import load_stack_file
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import ops as kube_ops

# --- coderig start / stop for a kubernetes stack --------------------------------------------------


class FakeKubectl:
    def __init__(self, running: str = "2 0", fail: set[str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.running = running
        self.fail = fail or set()

    def __call__(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        verb = cmd[cmd.index("--namespace") + 2]
        out = self.running if verb == "exec" else ""
        code = 1 if verb in self.fail else 0
        return subprocess.CompletedProcess(cmd, code, out, "boom" if code else "")


def ops_args(path: Path, **kw: Any) -> argparse.Namespace:
    kw = {"timeout": None, **kw}
    return argparse.Namespace(stack="prod", config=str(path), no_wait=False, dry_run=False,
                              force=False, json=False, **kw)  # fmt: skip


def test_start_scales_back_and_waits_for_ready(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_stack(tmp_path, k8s_config(), "prod")
    kubectl = FakeKubectl()
    assert kube_ops.cmd_start(ops_args(path), load_stack_file(path), run=kubectl) == 0
    prefix = ["kubectl", "--kubeconfig", os.path.expanduser("~/.kube/gpu-cluster"), "--context", "prod-gpu",
              "--namespace", "coderig-prod"]  # fmt: skip
    s = settings_of(k8s_config())
    budget = kube.startup_budget_seconds(s) + budgets.IMAGE_PULL_S
    assert kubectl.calls == [
        [*prefix, "scale", f"deployment/{kube.MODEL}", "--replicas=2"],
        [*prefix, "rollout", "status", f"deployment/{kube.MODEL}", f"--timeout={budget}s"],
    ]
    assert "ready: 2 model replica(s)" in capsys.readouterr().out
    # an explicit shorter --timeout never cuts the model's load budget
    kubectl = FakeKubectl()
    assert kube_ops.cmd_start(ops_args(path, timeout=1800.0), load_stack_file(path), run=kubectl) == 0
    assert kubectl.calls[-1][-1] == f"--timeout={max(budget, 1800)}s"
    failing = FakeKubectl(fail={"rollout"})
    assert kube_ops.cmd_start(ops_args(path), load_stack_file(path), run=failing) == 1


def test_stop_refuses_while_requests_run(tmp_path: Path) -> None:
    path = write_stack(tmp_path, k8s_config(), "prod")
    busy = FakeKubectl(running="2 3")
    assert kube_ops.cmd_stop(ops_args(path), load_stack_file(path), run=busy) == 1
    assert not any("scale" in c for c in busy.calls)
    unknown = FakeKubectl(fail={"exec"})
    assert kube_ops.cmd_stop(ops_args(path), load_stack_file(path), run=unknown) == 1
    assert not any("scale" in c for c in unknown.calls)
    quiet = FakeKubectl(running="2 0")
    assert kube_ops.cmd_stop(ops_args(path), load_stack_file(path), run=quiet) == 0
    assert quiet.calls[-1][-2:] == [f"deployment/{kube.MODEL}", "--replicas=0"]
    # the probe runs inside the front door (the only pods the NetworkPolicy lets through)
    exec_call = quiet.calls[0]
    assert exec_call[exec_call.index("exec") + 1] == f"deployment/{kube.FRONTDOOR}"


def test_ops_commands_dispatch_by_target_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_stack(tmp_path, k8s_config(), "prod")
    settings = cli_ops.stack_settings(ops_args(path))
    assert settings is not None and targets.REGISTRY[settings.target.kind].operations is kube_ops.OPERATIONS
    assert cli_ops.stack_settings(argparse.Namespace(stack="nope", config=None)) is None
    glm = write_stack(tmp_path, {**glm_config(), "gateway": {"port": 80}}, "bad")
    assert main(["start", "prod", "--config", str(glm)]) == 2
    assert "coderig: coderig:gateway.port" in capsys.readouterr().err


def test_ops_commands_read_the_validated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No guess from raw YAML: an invalid stack file stops `coderig start|stop|idle` with the key named."""
    bad = write_stack(tmp_path, k8s_config(replicas=3, storageClass=None), "bad")
    for command in ("start", "stop", "idle"):
        assert main([command, "prod", "--config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "coderig: coderig:target.storageClass: replicas is 3" in err, err


def test_stop_reads_the_stack_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_stack(tmp_path, k8s_config(), "prod")
    loads: list[str] = []
    real = cli_ops.load_stack_file

    def counting(p: str | Path) -> Any:
        loads.append(str(p))
        return real(p)

    monkeypatch.setattr(cli_ops, "load_stack_file", counting)
    quiet = FakeKubectl(running="2 0")
    monkeypatch.setattr(kube_ops.OPERATIONS, "run", quiet)
    assert main(["stop", "prod", "--config", str(path)]) == 0
    assert loads == [str(path)]
    # and it probes for the stack's served model name
    assert quiet.calls[0][-1] == settings_of(k8s_config()).model.served_name


def test_stop_probe_reads_running_requests_from_a_live_model_server(standin: StandIn) -> None:
    """The snippet `coderig stop` runs in the front-door pod, here against the vLLM-shaped stand-in."""
    probe = [sys.executable, "-c", kube_ops._RUNNING_PROBE, "127.0.0.1", str(standin.port), "umans-coder-v0"]
    assert subprocess.run(probe, capture_output=True, text=True, timeout=30, check=True).stdout.split() == ["1", "0"]
    worker = threading.Thread(target=stream_chat, args=(standin, 40))
    worker.start()
    for _ in range(100):
        if standin.running:
            break
        threading.Event().wait(0.02)
    out = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=True).stdout.split()
    worker.join()
    assert out == ["1", "1"]
