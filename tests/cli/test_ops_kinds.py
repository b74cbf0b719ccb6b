"""`coderig idle|stop|start` on a kind without an idle mechanism (external) names the kinds that have one
and what to do instead (ssh/local: `idle` needs a policy, stop/start are the reaper's); the kubernetes
`idle` error carries no unrelated hint; `frontdoor run` speaks the stack's rate-limit unit; an external
stack's health probe is configurable."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import HOST_KEY, ssh_config, write_stack
from kube_helpers import k8s_config
from programs import external_config

from coderig.cli import build_parser, main
from coderig.cli import frontdoor as cli_frontdoor
from coderig.core import planner
from coderig.targets import load_stack_file
from coderig.targets.compose.machines import node_specs
from coderig.targets.compose.ops import ComposeOperations
from coderig.targets.compose.spec import front_door
from coderig.targets.kubernetes import ops as kube_ops

LOCAL = {"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu"}, "developers": ["dev"]}
KINDS: dict[str, tuple[dict[str, Any], str]] = {
    "local": (LOCAL, "`docker compose -p coderig stop` stops the model"),
    "ssh": (ssh_config(), "on each host, `sudo docker compose -p coderig stop` stops the model"),
    "external": (external_config(), "the endpoint's own platform starts and stops its model"),
}


@pytest.mark.parametrize("command", ["idle", "stop", "start"])
def test_kinds_without_idle_mechanism_say_what_works(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, instead = KINDS["external"]
    path = write_stack(tmp_path, config, "prod")
    assert main([command, "prod", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"coderig: coderig:target.kind is external: `coderig {command}` works on local, ssh, aws and kubernetes"
    )
    assert instead in err
    assert "stopAfterMinutes" not in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["local", "ssh"])
@pytest.mark.parametrize("command", ["idle", "stop", "start"])
def test_ssh_and_local_idle_needs_a_policy_and_stop_start_are_the_reapers(
    kind: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_stack(tmp_path, KINDS[kind][0], "prod")
    assert main([command, "prod", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    if command == "idle":
        assert "has no idle policy: set coderig:idle.stopAfterMinutes" in err
    else:
        assert "the reaper sleeps or stops the model and the next request wakes it" in err
        assert "docker compose -p coderig stop model" in err
    assert "Traceback" not in err


def _kube_args(path: Path) -> argparse.Namespace:
    return argparse.Namespace(stack="prod", config=str(path), json=False, timeout=None)


def test_kubernetes_idle_error_has_no_unrelated_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_stack(tmp_path, k8s_config(), "prod")

    def unreachable(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "The connection to the server localhost:8080 was refused")

    assert kube_ops.cmd_idle(_kube_args(path), load_stack_file(path), run=unreachable) == 1
    err = capsys.readouterr().err
    assert "connection to the server" in err
    assert "coderig:idle" not in err and "stopAfterMinutes" not in err

    def not_yet(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", 'Error from server (NotFound): configmaps "x" not found')

    assert kube_ops.cmd_idle(_kube_args(path), load_stack_file(path), run=not_yet) == 1
    assert "the idle CronJob has not run since `pulumi up`" in capsys.readouterr().err


def test_kubernetes_idle_without_policy_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = k8s_config()
    config.pop("idle", None)
    path = write_stack(tmp_path, config, "prod")
    assert main(["idle", "prod", "--config", str(path)]) == 1
    assert "has no idle policy" in capsys.readouterr().err


@pytest.mark.parametrize(("front_door", "asked"), [(False, "ubuntu@gpu1.internal"), (True, "admin@door.internal")])
def test_ssh_idle_asks_the_machine_holding_the_relay(
    front_door: bool, asked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The relay and the reaper run on the first machine: the front door's when the stack has one."""
    config = ssh_config()
    config["idle"] = {"stopAfterMinutes": 30, "action": "sleep"}
    if front_door:
        config["target"]["frontDoor"] = {"address": "door.internal", "user": "admin", "hostKey": HOST_KEY}
    path = write_stack(tmp_path, config, "prod")
    ran: list[list[str]] = []
    status = {"relay": {"routes": []}, "reaper": None}

    def fake(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, json.dumps(status), "")

    args = argparse.Namespace(stack="prod", config=str(path), json=True, ssh_key=None)
    assert ComposeOperations(run=fake).idle(args, load_stack_file(path)) == 0
    assert [cmd[0] for cmd in ran] == ["ssh"] and asked in ran[0], ran
    assert json.loads(capsys.readouterr().out) == status


# ---------------------------------------------------------------- frontdoor run: one rate-limit unit


def _run_args(*extra: str) -> argparse.Namespace:
    argv = ["frontdoor", "run", "--backend", "http://127.0.0.1:1/v1", "--model", "m", "--listen", "127.0.0.1:1",
            "--keys-file", "k.json", *extra]  # fmt: skip
    return build_parser().parse_args(argv)


def test_rate_limit_is_per_minute_like_the_stack() -> None:
    assert cli_frontdoor.rate_per_second(_run_args()) == 10  # default 600/min, the stack's default
    assert cli_frontdoor.rate_per_second(_run_args("--rate-limit-per-minute", "90")) == 2  # rounded up, as nodes do


def test_old_rate_limit_flag_is_refused_naming_the_new_one(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["frontdoor", "run", "--backend", "http://127.0.0.1:1/v1", "--model", "m", "--listen",
               "127.0.0.1:1", "--keys-file", "k.json", "--rate-limit", "5"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "--rate-limit-per-minute 300" in err and "coderig:gateway.rateLimitPerMinute" in err


# ---------------------------------------------------------------- external health probe


def test_external_health_probe_defaults_to_models_and_is_configurable(tmp_path: Path) -> None:
    assert _run_args().health_path == "/v1/models"  # frontdoor run's default matches the stack's
    settings = load_stack_file(write_stack(tmp_path, external_config(), "ext"))
    _route, gateway = front_door(settings, node_specs(settings, planner.plan_stack(settings))[0])
    assert gateway.model_health_url == "https://kserve.internal/v1/models"
    config = external_config()
    config["target"]["healthPath"] = "/health"
    settings = load_stack_file(write_stack(tmp_path, config, "ext"))
    _route, gateway = front_door(settings, node_specs(settings, planner.plan_stack(settings))[0])
    assert gateway.model_health_url == "https://kserve.internal/health"


def test_external_health_path_must_be_a_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = external_config()
    config["target"]["healthPath"] = "health"
    assert main(["plan", "--config", str(write_stack(tmp_path, config, "ext"))]) == 2
    assert "coderig:target.healthPath" in capsys.readouterr().err


# ---------------------------------------------------------------- render into a non-empty directory


def test_render_refuses_a_non_empty_directory_then_replaces_only_its_own_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rendered"
    kube = write_stack(tmp_path, k8s_config(), "gpu")
    local = write_stack(tmp_path, LOCAL, "dev")
    assert main(["render", "--config", str(kube), "--out", str(out)]) == 0
    old = set((out / ".coderig-render").read_text().splitlines()[1:])
    assert any(p.startswith("kubernetes/") for p in old)
    (out / "NOTES.md").write_text("mine\n")
    (out / "kubernetes" / "my-patch.yaml").write_text("mine\n")
    capsys.readouterr()

    assert main(["render", "--config", str(local), "--out", str(out)]) == 1
    assert "is not empty: pass --force" in capsys.readouterr().err
    assert (out / "kubernetes").is_dir()  # nothing changed

    assert main(["render", "--config", str(local), "--out", str(out), "--force"]) == 0
    new = set((out / ".coderig-render").read_text().splitlines()[1:])
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == new | {".coderig-render", "NOTES.md", "kubernetes/my-patch.yaml"}
    assert not any(p.startswith("kubernetes/") for p in new) and "node/compose.yaml" in new
    assert (out / "NOTES.md").read_text() == "mine\n"


def test_render_force_ignores_manifest_paths_outside_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    (out / ".coderig-render").write_text("../victim.txt\n/etc/hostname\n")
    local = write_stack(tmp_path, LOCAL, "dev")
    assert main(["render", "--config", str(local), "--out", str(out), "--force"]) == 0
    assert victim.read_text() == "keep\n"
