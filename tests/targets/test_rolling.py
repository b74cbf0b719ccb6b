"""Rolling model restarts (coderig.targets.compose.rolling): the order, and the restart-gate's delete run
for real in bash on a bundle directory written from a rendered replica, with the shipped wait-ready.sh
and the sshd test hosts' stand-in `docker` (tests/sshhost.py FAKE_DOCKER)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ssh_config
from sshhost import FAKE_DOCKER

from coderig.core import planner
from coderig.frontdoor import native
from coderig.targets import parse_settings
from coderig.targets.compose import commands, rolling
from coderig.targets.compose.rendered import RenderedNode, render_nodes


def test_the_gate_outwaits_the_gateways_fail_timeout() -> None:
    # the gateway leaves a failed replica alone for native.FAIL_TIMEOUT_S; the next restart waits longer
    assert rolling.GATEWAY_SETTLE_S > native.FAIL_TIMEOUT_S
    assert f"sleep {rolling.GATEWAY_SETTLE_S};" in rolling.gate_delete_command("0" * 64, {}, "/opt/coderig", None)
    assert f"fail_timeout={native.FAIL_TIMEOUT_S}s;" in "\n".join(native.balanced_servers("z", ["a:1"], 8, 4))


def test_replicas_restart_first_and_the_first_machine_last() -> None:
    assert rolling.restart_order([True]) == []  # one machine: nothing to roll
    assert rolling.restart_order([True, True, True]) == [1, 2, 0]
    assert rolling.restart_after([True, True, True]) == {2: 1, 0: 2}
    assert rolling.restart_after([True, True]) == {0: 1}
    # a front door runs no model server: not in the chain
    assert rolling.restart_order([False, True, True]) == [1, 2]
    assert rolling.restart_after([False, True, True]) == {2: 1}
    assert rolling.restart_after([False, True]) == {}


def replica() -> RenderedNode:
    c = ssh_config()
    c["target"]["hosts"].append({"address": "10.0.0.6", "user": "root", "hostKey": c["target"]["hosts"][0]["hostKey"]})
    s = parse_settings(c)
    return render_nodes(s, planner.plan_stack(s))[1]


def write_bundle(d: Path, node: RenderedNode) -> None:
    for path, f in node.files.items():
        (d / path).parent.mkdir(parents=True, exist_ok=True)
        (d / path).write_text(f.content)
        (d / path).chmod(f.mode)


@pytest.fixture
def node_dir(tmp_path: Path) -> tuple[Path, Path, RenderedNode]:
    """(bundle directory, stand-in docker's work directory, the replica) with the stack up."""
    node = replica()
    bundle = tmp_path / "opt-coderig"
    write_bundle(bundle, node)
    work = tmp_path / "docker"
    (work / "bin").mkdir(parents=True)
    (work / "bin" / "docker").write_text(FAKE_DOCKER.replace("WORK", str(work)))
    (work / "bin" / "docker").chmod(0o755)
    (work / "docker.state").touch()  # compose is up, every service healthy
    return bundle, work, node


def run_delete(bundle: Path, work: Path, node: RenderedNode, digest: str, **env: str) -> subprocess.CompletedProcess:
    wait = commands.wait_env(node, str(bundle)) | {"CODERIG_POLL_SECONDS": "1", **env}
    command = rolling.gate_delete_command(digest, wait, str(bundle), None, settle_s=1)
    path = f"{work / 'bin'}:{os.environ['PATH']}"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env={"PATH": path})


def calls(work: Path) -> str:
    return (work / "docker.calls").read_text() if (work / "docker.calls").exists() else ""


def test_the_digest_is_what_bash_computes_from_the_files_on_disk(node_dir) -> None:  # noqa: ANN001
    bundle, work, node = node_dir
    digest = rolling.model_files_digest(node.files)
    done = run_delete(bundle, work, node, digest)
    # the files are the ones the gate was made with (a destroy): no wait, not a single docker call
    assert done.returncode == 0 and "no restart on this machine" in done.stdout, done.stdout + done.stderr
    assert calls(work) == ""


def test_a_new_model_half_on_disk_waits_for_this_machine_to_be_ready(node_dir) -> None:  # noqa: ANN001
    bundle, work, node = node_dir
    before = rolling.model_files_digest(node.files)  # the gate was made with the old files
    compose = bundle / "compose.yaml"
    compose.write_text(compose.read_text() + "# new model half\n")
    done = run_delete(bundle, work, node, before)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the next machine restarts once this one is ready again" in done.stdout
    assert "wait-ready: ready after" in done.stdout  # the shipped script ran, against this bundle
    assert "ready; 1 s for the gateway to take it back" in done.stdout
    assert f"compose --project-directory {bundle} -p coderig ps -a --format" in calls(work)


def test_a_machine_that_does_not_come_back_stops_the_roll(node_dir) -> None:  # noqa: ANN001
    bundle, work, node = node_dir
    before = rolling.model_files_digest(node.files)
    (bundle / "scripts" / "volume.sh").write_text("# changed\n")  # a script is in the model half too
    (work / "docker.state").unlink()  # no container comes up
    done = run_delete(bundle, work, node, before, CODERIG_BUDGET_SECONDS="3")
    assert done.returncode != 0, done.stdout  # the delete fails: Pulumi does not restart the next machine
    assert "wait-ready: FAIL" in done.stdout, done.stdout + done.stderr
