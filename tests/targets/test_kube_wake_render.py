"""What an idle policy adds to the kubernetes front door (coderig.targets.kubernetes.wake): the relay's
account, its token in the relay container only, `--wake scale`, and no 503 gate. The same against the
real API server: tests/kube/test_kube_wake.py."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_stack
from kube_helpers import by_key, glm_config, k8s_config, objects_of, settings_of

from coderig.runtime.kube_reaper import SA_DIR
from coderig.runtime.relay_wake import Gate, control_answer
from coderig.targets import load_stack_file
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import ops as kube_ops
from coderig.targets.kubernetes import wake as kube_wake


def test_the_wake_role_allows_exactly_scaling_the_model_deployment() -> None:
    objs = by_key(objects_of(settings_of(k8s_config()), "prod"))
    role = objs[f"role-{kube_wake.WAKE}"]
    assert role["kind"] == "Role"  # namespaced, never a ClusterRole
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [kube.MODEL],
            "verbs": ["get", "patch"],
        },
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [kube.MODEL], "verbs": ["get"]},
    ]
    binding = objs[f"rolebinding-{kube_wake.WAKE}"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": kube_wake.WAKE, "namespace": "coderig-prod"}]
    assert objs[f"serviceaccount-{kube_wake.WAKE}"]["automountServiceAccountToken"] is False
    keys = list(objs)  # the account exists before the pods that use it
    assert keys.index(f"rolebinding-{kube_wake.WAKE}") < keys.index(f"deployment-{kube.FRONTDOOR}")


def test_the_token_reaches_the_relay_container_only() -> None:
    s = settings_of(k8s_config())
    pod = by_key(objects_of(s, "prod"))[f"deployment-{kube.FRONTDOOR}"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == kube_wake.WAKE and pod["automountServiceAccountToken"] is False
    mounted = {c["name"]: [m["mountPath"] for m in c["volumeMounts"]] for c in pod["containers"]}
    assert [name for name, paths in mounted.items() if str(SA_DIR) in paths] == ["keepalive"]
    volume = next(v for v in pod["volumes"] if v["name"] == kube_wake.TOKEN_VOLUME)["projected"]
    token = volume["sources"][0]["serviceAccountToken"]
    assert token == {"path": "token", "expirationSeconds": 3600} and volume["defaultMode"] == 0o440


def test_the_relay_wakes_by_scale_and_ships_its_modules() -> None:
    s = settings_of(k8s_config())
    relay = kube_fd.keepalive_container(s)
    assert relay is not None
    cmd = relay["command"]
    assert cmd[cmd.index("--wake") + 1] == "scale"
    assert cmd[cmd.index("--served-name") + 1] == s.model.served_name
    budget = int(cmd[cmd.index("--start-budget") + 1])
    assert budget > kube.startup_budget_seconds(s)  # the model pod's startup budget plus its image pull
    env = {e["name"]: e["value"] for e in relay["env"]}
    assert env["CODERIG_NAMESPACE"] == "coderig-prod" and env["CODERIG_DEPLOYMENT"] == kube.MODEL
    assert env["CODERIG_REPLICAS"] == "2"
    data = kube_fd.frontdoor_configmaps(s, "prod")[1]["data"]
    assert {f"{m}" for m in kube_wake.WAKE_MODULES} <= set(data)
    # the gateway does not answer 503 while the model is at zero: the relay holds the request
    assert kube_fd.front_door(s)[1].model_gate_retry_after_s is None
    assert "Retry-After" not in data["nginx.conf"]


def test_without_an_idle_policy_nothing_wakes_and_the_gateway_answers_503() -> None:
    s = settings_of(glm_config())
    objs = by_key(objects_of(s, "prod"))
    assert not [k for k in objs if kube_wake.WAKE in k]
    pod = objs[f"deployment-{kube.FRONTDOOR}"]["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod
    relay = kube_fd.keepalive_container(s)
    assert relay is not None and "--wake" not in relay["command"]
    assert kube_fd.front_door(s)[1].model_gate_retry_after_s == kube.RETRY_AFTER_S


def test_a_relay_asked_to_scale_outside_a_pod_says_what_is_missing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.runtime.sse_keepalive", "--route", "127.0.0.1:1=127.0.0.1:2"]
        + ["--wake", "scale", "--control", "127.0.0.1:3"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--wake scale needs KUBERNETES_SERVICE_HOST, CODERIG_NAMESPACE, CODERIG_DEPLOYMENT" in proc.stderr


def test_coderig_idle_shows_what_the_front_door_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`coderig idle` reads the relay's GET /state in a front-door pod (kubectl exec into its keepalive
    container); the answer here is the relay's own control API on a real Gate."""
    gate = Gate(f"{kube.MODEL}.coderig-prod.svc.cluster.local:8000", None, "http://unused/health", 60)
    gate.settled("stopped")
    gate.wakes_total, gate.last_error = 2, "the model server was not ready within the 60 s start budget"
    status, body = control_answer([gate], "GET", "/state")
    assert status == 200
    reaper = {"last": {"action": "stop", "at": "2026-12-07T03:00:00Z", "reason": "idle 45 min"}, "samples": []}
    calls: list[list[str]] = []

    def kubectl(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        out = json.dumps(body) if "exec" in cmd else json.dumps({"data": {"state.json": json.dumps(reaper)}})
        return subprocess.CompletedProcess(cmd, 0, out, "")

    path = write_stack(tmp_path, k8s_config(), "prod")
    args = argparse.Namespace(stack="prod", config=str(path), json=False)
    assert kube_ops.cmd_idle(args, load_stack_file(path), run=kubectl) == 0
    out = capsys.readouterr().out
    assert f"front door: model stopped since {gate.since}; 0 in flight, 0 requests, 2 wakes" in out, out
    assert "last wake failed: the model server was not ready within the 60 s start budget" in out
    exec_call = next(c for c in calls if "exec" in c)
    assert exec_call[exec_call.index("-c") + 1] == "keepalive" and kube_wake.RELAY_CONTROL in exec_call[-1]
    # a relay that cannot be read is said, not guessed

    def no_exec(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "x") if "exec" in cmd else kubectl(cmd)

    assert kube_ops.cmd_idle(args, load_stack_file(path), run=no_exec) == 0
    assert "front door: its relay's state cannot be read" in capsys.readouterr().out
