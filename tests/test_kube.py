"""The `kubernetes` target: manifests (pure), their schema, the Pulumi graph, and scale-to-zero."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pytest
import yaml
from conftest import run_program, write_stack
from frontdoor_fixtures import require_tool
from standin import StandIn, start_standin

from coderig import frontdoor, targets
from coderig.cli import main
from coderig.cli import ops as cli_ops
from coderig.core import engine, planner, versions
from coderig.core.errors import UserError
from coderig.core.secrets import NodeSecrets, placeholder_secrets
from coderig.core.settings import load_stack_file, parse_settings
from coderig.runtime import idle, kube_reaper
from coderig.runtime.idle import ReaperError
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import ops as kube_ops
from coderig.targets.kubernetes import render as kube_render

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # pulumi's marker of a secret value in mock inputs


def k8s_config(**target: Any) -> dict[str, Any]:
    """deepseek-v3.2 on 8×H200, two replicas sharing the weights, an Ingress, scale-to-zero."""
    return {
        "target": {
            "kind": "kubernetes",
            "gpu": {"model": "H200", "count": 8},
            "replicas": 2,
            "kubeconfig": "~/.kube/gpu-cluster",
            "context": "prod-gpu",
            "namespace": "coderig-prod",
            "storageClass": "efs-rwx",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
            "ingressHost": "llm.example.com",
            "ingressClass": "nginx",
            **target,
        },
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072},
        "developers": ["alice", "bob"],
        "idle": {"stopAfterMinutes": 45},
        "hfToken": {"secure": "v1:opaque"},
    }


def glm_config() -> dict[str, Any]:
    """glm-4.7 on 4×H200, one replica, ClusterIP, no Ingress, no scale-to-zero."""
    return {
        "target": {"kind": "kubernetes", "gpu": {"model": "H200", "count": 4}, "serviceType": "ClusterIP"},
        "model": {"preset": "glm-4.7"},
        "developers": ["carol"],
    }


PRESETS = {"deepseek-v3.2": k8s_config(), "glm-4.7": glm_config()}


def settings_of(config: dict[str, Any]):
    raw = dict(config)
    if isinstance(raw.get("hfToken"), dict):
        raw["hfToken"] = "opaque"
    return parse_settings(raw)


def by_key(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {kube_render.object_key(o): o for o in objs}


def all_objects(config: dict[str, Any]) -> list[dict[str, Any]]:
    s = settings_of(config)
    secrets = kube.secret_objects(s, "prod", placeholder_secrets(s.developers))
    return kube.with_secret_checksums(kube_render.objects(s, "prod"), kube.secret_checksums(secrets)) + secrets


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


# --- schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_manifest_validates_against_the_pinned_kubernetes_schema(preset: str) -> None:
    objs = all_objects(PRESETS[preset])
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "PersistentVolumeClaim", "Job", "Deployment", "Service", "ConfigMap", "Secret",
            "NetworkPolicy", "PodDisruptionBudget"} <= kinds  # fmt: skip
    for obj in objs:
        # strict: an unknown or misspelt field is an error, not silently dropped by the API server
        kubernetes_validate.validate(obj, versions.KUBERNETES_SCHEMA_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    dep = by_key(all_objects(k8s_config()))[f"deployment-{kube.MODEL}"]
    dep["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureTreshold"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, versions.KUBERNETES_SCHEMA_VERSION, strict=True)


def test_coderig_render_writes_the_manifests_and_they_validate(tmp_path: Path) -> None:
    from coderig.cli import main

    path = write_stack(tmp_path, k8s_config(), "prod")
    out = tmp_path / "out"
    assert main(["render", "--config", str(path), "--out", str(out)]) == 0
    files = sorted((out / "kubernetes").glob("*.yaml"))
    assert len(files) >= 15
    kinds = []
    for f in files:
        text = f.read_text()
        obj = yaml.safe_load(text)
        kinds.append(obj["kind"])
        kubernetes_validate.validate(obj, versions.KUBERNETES_SCHEMA_VERSION, strict=True)
        assert "placeholder-not-a-secret" not in text
    # Secrets are never rendered; the first file says which ones Pulumi creates
    assert "Secret" not in kinds
    assert "Secrets are not rendered" in files[0].read_text()
    assert kinds[0] == "Namespace"


def test_render_writes_nothing_for_other_targets(tmp_path: Path) -> None:
    from conftest import ssh_config

    s = parse_settings({**ssh_config(), "sshPrivateKey": "x"})
    assert kube_render.render_manifests(s, "x") == {}


# --- the model server follows the plan ------------------------------------------------------------


@pytest.mark.parametrize(("preset", "gpus"), [("deepseek-v3.2", 8), ("glm-4.7", 4)])
def test_probe_budget_shm_and_gpus_follow_the_plan(preset: str, gpus: int) -> None:
    s = settings_of(PRESETS[preset])
    dep = by_key(kube_render.objects(s, "prod"))[f"deployment-{kube.MODEL}"]
    pod = dep["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    probe = vllm["startupProbe"]
    budget = probe["failureThreshold"] * probe["periodSeconds"]
    load = planner.load_budget_seconds(s.model.spec)
    assert load <= budget < load + probe["periodSeconds"]
    assert probe["httpGet"]["path"] == "/health"
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert vllm["livenessProbe"]["httpGet"]["path"] == "/health"
    # GPUs: requested and limited to the plan's count, and vLLM shards over exactly that many
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    args = vllm["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == str(gpus)
    assert args[args.index("--host") + 1] == "0.0.0.0"
    # /dev/shm: a memory emptyDir sized for tensor parallelism, counted in the memory request
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{kube.shm_size_gi(gpus)}Gi"}
    assert kube.shm_size_gi(gpus) == 4 * gpus
    assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]
    assert int(vllm["resources"]["requests"]["memory"].removesuffix("Gi")) > kube.shm_size_gi(gpus)
    # the weights volume: planner size, shared (RWX) only when replicas share it
    pvc = by_key(kube_render.objects(s, "prod"))[f"persistentvolumeclaim-{kube.WEIGHTS}"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == f"{planner.weights_volume_gb(s.model.spec)}Gi"
    replicas = PRESETS[preset]["target"].get("replicas", 1)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany" if replicas > 1 else "ReadWriteOnce"]


def test_a_700_gb_model_is_not_killed_by_a_ten_minute_budget() -> None:
    big = settings_of(k8s_config())
    small = settings_of(glm_config())
    big_dep = by_key(kube_render.objects(big, "p"))[f"deployment-{kube.MODEL}"]
    big_probe = big_dep["spec"]["template"]["spec"]["containers"][0]
    small_probe = by_key(kube_render.objects(small, "p"))[f"deployment-{kube.MODEL}"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    big_s = big_probe["startupProbe"]["failureThreshold"] * big_probe["startupProbe"]["periodSeconds"]
    small_s = small_probe["startupProbe"]["failureThreshold"] * small_probe["startupProbe"]["periodSeconds"]
    assert big_s > 600 + big.model.spec.weight_bytes / 1e9  # warm-up + at least 1 GB/s of reading
    assert big_s > small_s  # bigger weights, longer budget
    # Pulumi waits at least as long for the rollout and for the download
    dep = by_key(kube_render.objects(big, "p"))[f"deployment-{kube.MODEL}"]
    assert int(dep["metadata"]["annotations"][kube.PULUMI_TIMEOUT]) >= big_s
    job = by_key(kube_render.objects(big, "p"))[f"job-{kube.WEIGHTS}"]
    assert int(job["metadata"]["annotations"][kube.PULUMI_TIMEOUT]) == planner.download_budget_seconds(big.model.spec)


def test_model_pods_wait_for_the_download_jobs_completion_marker() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_weights", ROOT / "coderig" / "runtime" / "fetch_weights.py")
    assert spec and spec.loader
    fw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fw)
    s = settings_of(k8s_config())
    expected = fw.marker_path(Path(engine.HF_HOME), s.model.spec.hf_repo)
    assert kube.marker_path(s) == str(expected)
    objs = by_key(kube_render.objects(s, "prod"))
    init = objs[f"deployment-{kube.MODEL}"]["spec"]["template"]["spec"]["initContainers"][0]
    assert str(expected) in init["command"][-1]
    job = objs[f"job-{kube.WEIGHTS}"]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_HOME"] == engine.HF_HOME and env["CODERIG_REPO"] == s.model.spec.hf_repo
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"  # retries resume the download
    # the Job runs the node runtime's fetcher, shipped as a ConfigMap
    script = objs[f"configmap-{kube.WEIGHTS_SCRIPT}"]["data"]["fetch_weights.py"]
    assert script == (ROOT / "coderig" / "runtime" / "fetch_weights.py").read_text()
    # it lands in the GPU pool like the model server (same zone for a ReadWriteOnce volume)
    model_pod = objs[f"deployment-{kube.MODEL}"]["spec"]["template"]["spec"]
    assert job["spec"]["template"]["spec"]["nodeSelector"] == model_pod["nodeSelector"]
    assert job["spec"]["template"]["spec"]["tolerations"] == model_pod["tolerations"]


# --- security -------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_pod_is_restricted(preset: str) -> None:
    objs = by_key(all_objects(PRESETS[preset]))
    ns = next(o for o in objs.values() if o["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = [kube.pod_spec(o) for o in objs.values() if kube.pod_spec(o) is not None]
    assert len(pods) >= 3
    for pod in pods:
        assert pod is not None
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsUser"] != 0
        for c in containers(pod):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert sc["privileged"] is False
            assert "resources" in c and c["resources"]["requests"], c["name"]
        for v in pod["volumes"]:
            assert set(v) & {"emptyDir", "configMap", "secret", "persistentVolumeClaim"}, v


def test_only_the_front_door_and_the_reaper_reach_the_model_server() -> None:
    objs = by_key(kube_render.objects(settings_of(k8s_config()), "prod"))
    pol = objs[f"networkpolicy-{kube.MODEL}"]["spec"]
    model_labels = objs[f"deployment-{kube.MODEL}"]["spec"]["template"]["metadata"]["labels"]
    front_labels = objs[f"deployment-{kube.FRONTDOOR}"]["spec"]["template"]["metadata"]["labels"]
    idle_labels = objs[f"cronjob-{kube.IDLE}"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert pol["policyTypes"] == ["Ingress"]
    assert pol["podSelector"]["matchLabels"].items() <= model_labels.items()
    (rule,) = pol["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": engine.MODEL_PORT}]
    allowed = [src["podSelector"]["matchLabels"] for src in rule["from"]]
    assert len(allowed) == 2
    assert allowed[0].items() <= front_labels.items()
    assert allowed[1].items() <= idle_labels.items()
    assert not allowed[0].items() <= model_labels.items()
    # without scale-to-zero, only the front door
    glm = by_key(kube_render.objects(settings_of(glm_config()), "prod"))
    assert len(glm[f"networkpolicy-{kube.MODEL}"]["spec"]["ingress"][0]["from"]) == 1


def test_reaper_rbac_is_limited_to_scaling_the_model_deployment() -> None:
    objs = by_key(kube_render.objects(settings_of(k8s_config()), "prod"))
    rules = objs[f"role-{kube.IDLE}"]["rules"]
    assert objs[f"role-{kube.IDLE}"]["kind"] == "Role"  # namespaced, never a ClusterRole
    for rule in rules:
        assert rule["resourceNames"], rule
        assert "*" not in rule["verbs"] and "delete" not in rule["verbs"] and "create" not in rule["verbs"]
    writable = {(r["resources"][0], v) for r in rules for v in r["verbs"] if v in ("patch", "update")}
    assert writable == {("deployments/scale", "patch"), ("deployments/scale", "update"), ("configmaps", "patch")}
    assert next(r for r in rules if r["resources"] == ["deployments/scale"])["resourceNames"] == [kube.MODEL]
    assert next(r for r in rules if r["resources"] == ["configmaps"])["resourceNames"] == [kube.IDLE_STATE]
    binding = objs[f"rolebinding-{kube.IDLE}"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": kube.IDLE, "namespace": "coderig-prod"}]
    # only the reaper's pod gets an API token
    for key, obj in objs.items():
        pod = kube.pod_spec(obj)
        if pod is not None:
            assert pod["automountServiceAccountToken"] is (key == f"cronjob-{kube.IDLE}"), key


# --- front door -----------------------------------------------------------------------------------


def test_front_door_pod_shares_localhost_and_rolls_when_config_or_secrets_change() -> None:
    s = settings_of(k8s_config())
    objs = by_key(kube_render.objects(s, "prod"))
    dep = objs[f"deployment-{kube.FRONTDOOR}"]
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["gateway", "litellm"]
    litellm = pod["containers"][1]
    assert litellm["args"][litellm["args"].index("--host") + 1] == "127.0.0.1"
    conf = objs[f"configmap-{kube.GATEWAY_CONFIG}"]["data"]["nginx.conf"]
    assert "listen 0.0.0.0:8443 ssl;" in conf and "server 127.0.0.1:4000" in conf
    assert "proxy_buffering off;" in conf
    # LiteLLM balances through the model's ClusterIP Service (only Ready replicas get traffic)
    llm = yaml.safe_load(objs[f"configmap-{kube.LITELLM_CONFIG}"]["data"]["config.yaml"])
    bases = {m["litellm_params"]["api_base"] for m in llm["model_list"]}
    assert bases == {f"http://{kube.MODEL}.coderig-prod.svc.cluster.local:8000/v1"}
    assert dep["spec"]["replicas"] == 2 and objs[f"deployment-{kube.MODEL}"]["spec"]["replicas"] == 2

    def sums(config: dict[str, Any], developers: dict[str, str]) -> tuple[str, str]:
        st = settings_of(config)
        secrets = placeholder_secrets(st.developers)
        secrets = type(secrets)(**{**secrets.__dict__, "developer_keys": developers})
        checks = kube.secret_checksums(kube.secret_objects(st, "prod", secrets))
        d = by_key(kube.with_secret_checksums(kube_render.objects(st, "prod"), checks))[f"deployment-{kube.FRONTDOOR}"]
        ann = d["spec"]["template"]["metadata"]["annotations"]
        return ann[kube.CONFIG_CHECKSUM], ann[kube.SECRET_CHECKSUM]

    keys = {"alice": "crk-" + "a" * 40, "bob": "crk-" + "b" * 40}
    base = sums(k8s_config(), keys)
    assert base == sums(k8s_config(), dict(keys))  # deterministic
    revoked = sums(k8s_config(), {"alice": keys["alice"]})
    assert revoked[0] == base[0] and revoked[1] != base[1]  # a revoked key rolls the pods
    cfg = k8s_config()
    cfg["model"] = {**cfg["model"], "maxModelLen": 65536}
    assert sums(cfg, keys)[0] != base[0]  # new LiteLLM config rolls the pods


def test_front_door_stays_ready_when_the_model_is_at_zero() -> None:
    dep = by_key(kube_render.objects(settings_of(k8s_config()), "prod"))[f"deployment-{kube.FRONTDOOR}"]
    gateway = dep["spec"]["template"]["spec"]["containers"][0]
    # readiness is the gateway's own cheap endpoint, never the model's health
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/api/hello"
    assert "healthz" not in json.dumps(dep)


def test_ingress_is_streaming_safe() -> None:
    objs = by_key(kube_render.objects(settings_of(k8s_config()), "prod"))
    ing = objs[f"ingress-{kube.GATEWAY}"]
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert ann["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 1800
    assert int(ann["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 1800
    assert ann["nginx.ingress.kubernetes.io/proxy-body-size"] == "32m"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["llm.example.com"], "secretName": kube.SECRET_TLS}]
    assert objs[f"poddisruptionbudget-{kube.FRONTDOOR}"]["spec"]["maxUnavailable"] == 1
    glm = by_key(kube_render.objects(settings_of(glm_config()), "prod"))
    assert f"ingress-{kube.GATEWAY}" not in glm
    assert glm[f"service-{kube.GATEWAY}"]["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize(
    ("config", "key", "allowed"),
    [
        (
            {
                "target": {"kind": "kubernetes", "gpu": {"model": "L4", "count": 1}},
                "model": {"preset": "qwen3-1.7b-cpu"},
            },
            "coderig:model.preset: qwen3-1.7b-cpu runs on llama.cpp",
            "allowed: deepseek-v3.2, glm-4.7",
        ),
        ({**glm_config(), "gateway": {"port": 443}}, "coderig:gateway.port: got 443", "allowed: 1024-65535"),
    ],
)
def test_what_the_target_cannot_run_fails_coderig_plan_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], key: str, allowed: str
) -> None:
    """Refused when the settings are read (`coderig plan`, `coderig render`, `pulumi up` alike), not
    first by the manifest renderer."""
    from coderig.cli import main

    path = write_stack(tmp_path, config, "bad")
    assert main(["plan", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert key in err and allowed in err, err
    assert main(["render", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError) as problems:
        parse_settings(config)
    assert [p for p in problems.value.problems if p.startswith(key)], problems.value.problems
    # the same settings on a node target are fine (port 443 as root, llama.cpp on CPU)
    ok = write_stack(tmp_path, {**config, "target": {"kind": "local", "gpu": config["target"]["gpu"]}}, "ok")
    assert main(["plan", "--config", str(ok)]) != 2, capsys.readouterr().err


# --- the Pulumi graph (mocks) ---------------------------------------------------------------------


def test_pulumi_graph_names_provider_ordering_and_secrets() -> None:
    run = run_program(k8s_config())
    assert run.error is None, run.error
    names = [r.name for r in run.resources]
    assert len(names) == len(set(names)), "resource names must be unique"
    k8s_res = [r for r in run.resources if r.typ.startswith("kubernetes:")]
    (prov,) = run.of_type("pulumi:providers:kubernetes")
    assert prov.inputs["kubeconfig"] == os.path.expanduser("~/.kube/gpu-cluster")
    assert prov.inputs["context"] == "prod-gpu"
    for r in k8s_res:
        assert r.provider and f"::{prov.name}::" in r.provider, r.name
    kinds = {r.typ.split(":")[-1] for r in k8s_res}
    assert {"Namespace", "PersistentVolumeClaim", "Job", "Deployment", "Service", "Ingress", "CronJob", "Role",
            "RoleBinding", "NetworkPolicy", "PodDisruptionBudget", "Secret", "ConfigMap"} <= kinds  # fmt: skip
    # every manifest of coderig.kube became a resource, and nothing else
    s = settings_of(k8s_config())
    expected = {kube_render.object_key(o) for o in all_objects(k8s_config())}
    assert {r.name.removeprefix("k8s-") for r in k8s_res} == expected
    assert len(s.developers) == 2

    # Secrets: values only as Pulumi secrets; no token appears in any other resource's inputs
    secrets = run.of_type("kubernetes:core/v1:Secret")
    assert {r.inputs["metadata"]["name"] for r in secrets} == {
        kube.SECRET_MODEL, kube.SECRET_FRONTDOOR, kube.SECRET_TLS, kube.SECRET_HF
    }  # fmt: skip
    for r in secrets:
        assert SECRET_SIG in r.inputs["stringData"], r.name
    tokens = [v for v in run.outputs["developerTokens"].values()]
    master = next(r for r in secrets if r.inputs["metadata"]["name"] == kube.SECRET_FRONTDOOR)
    keys_conf = master.inputs["stringData"]["value"]["gateway-keys.conf"]
    assert all(t in keys_conf for t in tokens) and len(tokens) == 2
    public = json.dumps([r.inputs for r in run.resources if r.typ != "kubernetes:core/v1:Secret"], default=str)
    for secret_value in [*tokens, master.inputs["stringData"]["value"]["LITELLM_MASTER_KEY"]]:
        assert secret_value not in public
    assert "developerTokens" in run.secret_outputs
    assert tokens[0] not in json.dumps({k: v for k, v in run.outputs.items() if k != "developerTokens"}, default=str)

    # the pod template carries the (public) checksum of its Secrets, not marked secret itself
    dep = run.named(f"k8s-deployment-{kube.FRONTDOOR}")
    ann = dep.inputs["spec"]["template"]["metadata"]["annotations"]
    assert len(ann[kube.SECRET_CHECKSUM]) == 64 and SECRET_SIG not in json.dumps(dep.inputs["spec"])
    # the idle reaper's state is created once, then left to the reaper; endpoint from the Ingress
    assert run.outputs["anthropicBaseUrl"].startswith("https://llm.example.com")
    assert run.outputs["namespace"] == "coderig-prod"


def test_pulumi_graph_for_glm_without_idle_or_ingress() -> None:
    run = run_program(glm_config())
    assert run.error is None, run.error
    names = {r.name for r in run.resources}
    assert f"k8s-cronjob-{kube.IDLE}" not in names and f"k8s-ingress-{kube.GATEWAY}" not in names
    assert f"k8s-secret-{kube.SECRET_HF}" not in names
    assert run.outputs["anthropicBaseUrl"].startswith(f"https://{kube.GATEWAY}.coderig.svc.cluster.local")


# --- the weights survive destroy, renames and spec changes ----------------------------------------


def creation_opts(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, pulumi.ResourceOptions]:
    """The ResourceOptions the Namespace and the PVCs were created with, by resource name (the mocks do
    not see retainOnDelete or ignoreChanges)."""
    import components.kube as ck

    seen: dict[str, pulumi.ResourceOptions] = {}

    def recording(real: Any) -> Any:
        class Recording(real):  # type: ignore[misc,valid-type]
            def __init__(self, name: str, *args: Any, opts: pulumi.ResourceOptions | None = None, **kw: Any):
                seen[name] = opts or pulumi.ResourceOptions()
                super().__init__(name, *args, opts=opts, **kw)

        return Recording

    for kind in (("v1", "Namespace"), ("v1", "PersistentVolumeClaim")):
        monkeypatch.setitem(ck.KINDS, kind, recording(ck.KINDS[kind]))
    run = run_program(config)
    assert run.error is None, run.error
    return seen


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out |= _leaves(v, f"{prefix}.{k}" if prefix else k)
        return out
    return {prefix: obj}


def pvc_of(config: dict[str, Any]) -> dict[str, Any]:
    (pvc,) = [o for o in kube_render.objects(settings_of(config), "prod") if o["kind"] == "PersistentVolumeClaim"]
    return pvc


def test_destroy_and_config_changes_never_delete_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """DESIGN: never delete cached weights on replace. Deleting the Namespace deletes its PVCs, and with
    the usual Delete reclaim policy a deleted PVC takes ~700 GB of downloaded weights with it."""
    opts = creation_opts(k8s_config(), monkeypatch)
    ns = opts["k8s-namespace-coderig-prod"]
    pvc = opts[f"k8s-persistentvolumeclaim-{kube.WEIGHTS}"]
    assert ns.retain_on_delete is True and pvc.retain_on_delete is True
    assert set(pvc.ignore_changes or []) >= {"spec.accessModes", "spec.storageClassName",
                                             "spec.resources.requests.storage"}  # fmt: skip
    # nothing else is kept behind by `pulumi destroy`
    assert set(opts) == {"k8s-namespace-coderig-prod", f"k8s-persistentvolumeclaim-{kube.WEIGHTS}"}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # 1 -> 2 replicas flips ReadWriteOnce -> ReadWriteMany
        (k8s_config(replicas=1), k8s_config(replicas=2)),
        (k8s_config(), k8s_config(storageClass="cephfs")),
        # another preset: another size (a shrink, here)
        (k8s_config(), {**k8s_config(), "model": {"preset": "glm-4.7"}}),
        (glm_config(), {**glm_config(), "target": {**glm_config()["target"], "storageClass": "gp3"}}),
    ],
)
def test_every_pvc_change_a_stack_edit_can_make_is_ignored_not_replaced(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    """A PVC's spec is immutable: pulumi-kubernetes would replace (delete) the claim for any of these
    changes. Each one must be under ignore_changes, so the old PVC and its weights stay."""
    old, new = _leaves(pvc_of(before)["spec"]), _leaves(pvc_of(after)["spec"])
    changed = {f"spec.{k}" for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    assert changed, "the variation should touch the PVC"
    assert changed <= set(kube.WEIGHTS_PVC_FIXED_FIELDS), changed
    assert pvc_of(before)["metadata"]["name"] == pvc_of(after)["metadata"]["name"]


def test_a_new_weights_volume_name_makes_a_new_pvc_and_keeps_the_old(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented way to really move the weights (new storage class, RWO -> RWX): a new PVC name."""
    cfg = k8s_config(weightsVolumeName="coderig-weights-rwx")
    objs = by_key(kube_render.objects(settings_of(cfg), "prod"))
    assert f"persistentvolumeclaim-{kube.WEIGHTS}" not in objs
    assert objs["persistentvolumeclaim-coderig-weights-rwx"]["metadata"]["name"] == "coderig-weights-rwx"
    for key in (f"job-{kube.WEIGHTS}", f"deployment-{kube.MODEL}"):
        pod = kube.pod_spec(objs[key])
        assert pod is not None
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == ["coderig-weights-rwx"], key
    opts = creation_opts(cfg, monkeypatch)
    assert opts["k8s-persistentvolumeclaim-coderig-weights-rwx"].retain_on_delete is True
    with pytest.raises(UserError) as err:
        parse_settings({**k8s_config(weightsVolumeName="Weights_2"), "hfToken": "x"})
    assert err.value.problems[0].startswith("coderig:target.weightsVolumeName: got 'Weights_2'")


# --- front door sizing ----------------------------------------------------------------------------


@pytest.mark.parametrize(("replicas", "front", "per_pod_factor"), [(2, 2, 1), (4, 2, 2), (2, 4, 0.5), (0, 1, 1)])
def test_litellm_workers_follow_the_streams_each_front_door_pod_carries(
    replicas: int, front: int, per_pod_factor: float
) -> None:
    """Every model replica's concurrency, spread over the front-door pods (at zero: what start brings)."""

    s = settings_of(k8s_config(replicas=replicas, frontDoorReplicas=front))
    per_replica = planner.plan_stack(s).max_concurrent_requests
    expected = math.ceil(per_replica * max(1, replicas) / front)
    assert expected == math.ceil(per_replica * per_pod_factor)
    assert kube.frontdoor_streams_per_pod(s) == expected
    dep = by_key(kube_render.objects(s, "prod"))[f"deployment-{kube.FRONTDOOR}"]
    args = dep["spec"]["template"]["spec"]["containers"][1]["args"]
    assert args[args.index("--num_workers") + 1] == str(frontdoor.litellm_workers(expected))


def test_more_model_replicas_per_front_door_pod_get_more_litellm_workers() -> None:
    def workers(**target: Any) -> int:
        dep = by_key(kube_render.objects(settings_of(k8s_config(**target)), "prod"))[f"deployment-{kube.FRONTDOOR}"]
        args = dep["spec"]["template"]["spec"]["containers"][1]["args"]
        return int(args[args.index("--num_workers") + 1])

    assert workers(replicas=4, frontDoorReplicas=2) > workers(replicas=2, frontDoorReplicas=2)
    assert workers(replicas=2, frontDoorReplicas=4) < workers(replicas=2, frontDoorReplicas=2)


# --- scale to zero: the reaper on real metrics text -----------------------------------------------


class FakeApiServer:
    """A loopback stand-in for the API server: the model Deployment, its scale, the state ConfigMap."""

    def __init__(self, token: str, replicas: int = 2, namespace: str = "coderig-prod") -> None:
        self.token = token
        self.ns = namespace
        self.replicas = replicas
        self.ready = replicas
        self.state = "{}"
        self.scales: list[int] = []
        self.requests: list[tuple[str, str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _reply(self, code: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body: dict[str, Any] = json.loads(self.rfile.read(length)) if length else {}
                api.requests.append((self.command, self.path, self.headers.get("Content-Type", "")))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._reply(401, {"kind": "Status", "code": 401})
                dep = f"/apis/apps/v1/namespaces/{api.ns}/deployments/{kube.MODEL}"
                cm = f"/api/v1/namespaces/{api.ns}/configmaps/{kube.IDLE_STATE}"
                if self.command == "GET" and self.path == dep:
                    return self._reply(200, api.deployment())
                if self.command == "PATCH" and self.path == f"{dep}/scale":
                    api.replicas = body["spec"]["replicas"]
                    api.ready = api.replicas
                    api.scales.append(api.replicas)
                    return self._reply(200, {"spec": {"replicas": api.replicas}})
                if self.command == "GET" and self.path == cm:
                    return self._reply(200, {"data": {"state.json": api.state}})
                if self.command == "PATCH" and self.path == cm:
                    api.state = body["data"]["state.json"]
                    return self._reply(200, {})
                return self._reply(403, {"kind": "Status", "code": 403, "message": "forbidden"})

            do_GET = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def deployment(self) -> dict[str, Any]:
        return {
            "metadata": {"generation": 3},
            "spec": {"replicas": self.replicas},
            "status": {
                "observedGeneration": 3,
                "replicas": self.replicas,
                "updatedReplicas": self.replicas,
                "readyReplicas": self.ready,
            },  # fmt: skip
        }

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[FakeApiServer, kube_reaper.KubeApi]]:
    token_file = tmp_path / "token"
    token_file.write_text("sa-token-123\n")
    srv = FakeApiServer("sa-token-123")
    yield srv, kube_reaper.KubeApi(srv.url, token_file=token_file)
    srv.stop()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    srv = start_standin(model="umans-coder-v0", delay=0.05)
    yield srv
    srv.stop()


def reaper_cfg(port: int, **kw: Any) -> kube_reaper.ReaperConfig:
    return kube_reaper.ReaperConfig(**{
        "namespace": "coderig-prod", "deployment": kube.MODEL, "metrics_host": "model-pods", "metrics_port": port,
        "state_configmap": kube.IDLE_STATE, "stop_after_minutes": 10, "period_seconds": 60,
        "model_name": "umans-coder-v0", **kw,
    })  # fmt: skip


def test_reaper_config_round_trips_from_the_cronjobs_environment() -> None:
    s = settings_of({**k8s_config(), "idle": {"stopAfterMinutes": 45, "officeHours": {"timezone": "Europe/Paris"}}})
    cron = by_key(kube_render.objects(s, "prod"))[f"cronjob-{kube.IDLE}"]
    env = {
        e["name"]: e["value"] for e in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    cfg = kube_reaper.ReaperConfig.from_env(env)
    assert cfg.stop_after_minutes == 45 and cfg.period_seconds == 300 and cfg.replicas == 2
    assert cfg.metrics_host == f"{kube.MODEL_PODS}.coderig-prod.svc.cluster.local"
    assert cfg.deployment == kube.MODEL and cfg.namespace == "coderig-prod" and cfg.model_name == "umans-coder-v0"
    assert cfg.schedule is not None and cfg.schedule.timezone == "Europe/Paris"
    assert cron["spec"]["schedule"] == "*/5 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_reaper_keeps_a_model_with_requests_in_flight_on_real_vllm_metrics(api_server) -> None:
    srv, api = api_server
    busy = (FIXTURES / "vllm_metrics_busy.txt").read_text()
    now = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    reports = [
        kube_reaper.reap(reaper_cfg(8000), api, now=now + timedelta(minutes=i),
                      addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"], get=lambda url: busy)
        for i in range(30)  # half an hour of runs: a busy server is never stopped
    ]  # fmt: skip
    assert {r.action for r in reports} == {"keep"}
    assert "requests running or queued" in reports[-1].reason
    assert srv.scales == []


def test_reaper_scales_to_zero_after_the_window_on_real_idle_metrics(api_server) -> None:
    srv, api = api_server
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    actions = []
    for i in range(20):
        r = kube_reaper.reap(reaper_cfg(8000), api, now=t0 + timedelta(minutes=i),
                          addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"], get=lambda url: text)  # fmt: skip
        actions.append(r.action)
        if r.action == "stop":
            assert r.applied
            break
    # the first scrape counts the whole counter as activity: the window must pass after it
    assert actions[-1] == "stop" and len(actions) >= 11
    assert srv.scales == [0]
    state = json.loads(srv.state)
    assert state["replicas_before"] == 2 and state["last"]["action"] == "stop"
    assert ("PATCH", f"/apis/apps/v1/namespaces/coderig-prod/deployments/{kube.MODEL}/scale",
            "application/merge-patch+json") in srv.requests  # fmt: skip
    # at zero: nothing more to do, and never a stop again
    r = kube_reaper.reap(
        reaper_cfg(8000), api, now=t0 + timedelta(minutes=30), addrs=lambda h, p: [], get=lambda u: None
    )
    assert r.action == "keep" and srv.scales == [0]


def test_reaper_never_stops_without_data(api_server) -> None:
    srv, api = api_server
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    cases = [
        (lambda h, p: ["10.0.0.5"], lambda url: None),  # replica does not answer
        (lambda h, p: [], lambda url: text),  # DNS has no replica although 2 are ready
        (lambda h, p: ["10.0.0.5"], lambda url: "not prometheus {{{"),  # garbage
        (lambda h, p: ["10.0.0.5"], lambda url: text.replace("vllm:num_requests_running", "x")),  # signal missing
    ]
    srv.replicas = srv.ready = 1
    for addrs, get in cases:
        srv.state = "{}"
        reports = [
            kube_reaper.reap(reaper_cfg(8000), api, now=t0 + timedelta(minutes=i), addrs=addrs, get=get)
            for i in range(40)
        ]
        assert {r.action for r in reports} == {"keep"}
        assert "not stopping without data" in reports[-1].reason, reports[-1].reason
    assert srv.scales == []


def test_reaper_reports_an_unreachable_api_server_in_one_line() -> None:
    api = kube_reaper.KubeApi(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(ReaperError, match="GET http://127.0.0.1"):
        kube_reaper.reap(reaper_cfg(8000), api)


def test_reaper_leaves_a_rollout_alone(api_server) -> None:
    srv, api = api_server
    srv.ready = 1  # one of two replicas still loading
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    r = kube_reaper.reap(reaper_cfg(8000), api, addrs=lambda h, p: ["10.0.0.5"], get=lambda u: text)
    assert r.action == "keep" and "rollout in progress: 1/2" in r.reason
    assert srv.scales == []


def _stream(standin: StandIn, tokens: int) -> None:
    body = json.dumps({
        "model": "umans-coder-v0", "stream": True,
        "messages": [{"role": "user", "content": f"hi [standin tokens={tokens} delay=0.05]"}],
    }).encode()  # fmt: skip
    req = urllib.request.Request(f"{standin.url}/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()


def test_reaper_against_a_live_model_server_never_stops_mid_request(api_server, standin: StandIn) -> None:
    """Real HTTP all the way: the API server stand-in, and a vLLM-shaped stand-in streaming a reply."""
    srv, api = api_server
    srv.replicas = srv.ready = 1
    cfg = reaper_cfg(standin.port)
    addrs = lambda h, p: ["127.0.0.1"]  # noqa: E731
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    worker = threading.Thread(target=_stream, args=(standin, 60))
    worker.start()
    for _ in range(100):
        if standin.running:
            break
        threading.Event().wait(0.02)
    # an old idle history (window covered, nothing happened) and a request running right now
    old = [{"at": (t0 - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"), "running": 0, "completed": 0}
           for m in range(30, 0, -1)]  # fmt: skip
    srv.state = json.dumps({"samples": old, "counters": {"127.0.0.1": 0}, "up_since": "2026-11-18T01:00:00Z"})
    r = kube_reaper.reap(cfg, api, now=t0, addrs=addrs)
    assert r.action == "keep" and "1 requests running" in r.reason
    worker.join()
    assert srv.scales == []
    # once it finished, its completion is activity; only a full idle window later does it stop
    stops = []
    for i in range(1, 15):
        r = kube_reaper.reap(cfg, api, now=t0 + timedelta(minutes=i), addrs=addrs)
        stops.append(r.action == "stop")
    assert stops.index(True) >= 9 and srv.scales == [0]


def test_reaper_final_check_catches_a_request_that_just_arrived(api_server) -> None:
    srv, api = api_server
    idle_text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    busy_text = (FIXTURES / "vllm_metrics_busy.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    old = [{"at": (t0 - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"), "running": 0, "completed": 0}
           for m in range(30, 0, -1)]  # fmt: skip
    done = idle.metric_sum(idle.parse_prometheus(idle_text), idle.VLLM_SUCCESS_TOTAL)
    counters = {"10.0.0.5": done, "10.0.0.6": done}
    srv.state = json.dumps({"samples": old, "counters": counters, "up_since": "2026-11-18T01:00:00Z"})
    calls = iter([idle_text, idle_text, idle_text, busy_text])
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: next(calls))  # fmt: skip
    assert r.action == "keep" and "started while deciding" in r.reason
    assert srv.scales == []
    # a short request that started and finished between the two looks also keeps the model
    quick = idle_text.replace('finished_reason="stop",model_name="umans-coder-v0"} 1270.0',
                              'finished_reason="stop",model_name="umans-coder-v0"} 1271.0')  # fmt: skip
    assert quick != idle_text
    srv.state = json.dumps({"samples": old, "counters": counters, "up_since": "2026-11-18T01:00:00Z"})
    calls = iter([idle_text, idle_text, idle_text, quick])
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: next(calls))  # fmt: skip
    assert r.action == "keep" and "completed while deciding" in r.reason, r.reason
    assert srv.scales == []
    # and with nothing new on the final look, it stops
    srv.state = json.dumps({"samples": old, "counters": counters, "up_since": "2026-11-18T01:00:00Z"})
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: idle_text)  # fmt: skip
    assert r.action == "stop" and srv.scales == [0]


def test_reaper_dry_run_and_office_hours_start(api_server) -> None:
    srv, api = api_server
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)  # a Wednesday, 04:00 in Paris
    reports = [
        kube_reaper.reap(reaper_cfg(8000, dry_run=True), api, now=t0 + timedelta(minutes=i),
                      addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"], get=lambda u: text)
        for i in range(25)
    ]  # fmt: skip
    assert reports[-1].action == "stop" and not reports[-1].applied and srv.scales == []
    # parked at zero with office hours: started when they begin, to the replicas it had
    srv.replicas = 0
    srv.state = json.dumps({"replicas_before": 3})
    hours = idle.OfficeHours.from_dict({"timezone": "Europe/Paris", "start": "08:00", "end": "19:00"})
    r = kube_reaper.reap(reaper_cfg(8000, schedule=hours), api, now=datetime(2026, 11, 18, 8, 30, tzinfo=UTC),
                      addrs=lambda h, p: [], get=lambda u: None)  # fmt: skip
    assert r.action == "start" and r.applied and srv.scales == [3]


def cron_mounts(s: Any) -> list[dict[str, Any]]:
    cron = by_key(kube_render.objects(s, "prod"))[f"cronjob-{kube.IDLE}"]
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]


def test_reaper_code_runs_standalone_from_its_configmap(tmp_path: Path) -> None:
    """The CronJob mounts only this ConfigMap into a plain python image: no pydantic, no yaml."""
    s = settings_of(k8s_config())
    cm = by_key(kube_render.objects(s, "prod"))[f"configmap-{kube.IDLE_CODE}"]
    mount = [m for m in cron_mounts(s) if m["name"] == "code"][0]["mountPath"]
    assert mount == "/opt/coderig/coderig/runtime"
    pkg = tmp_path / mount.lstrip("/")
    pkg.mkdir(parents=True)
    for name, text in cm["data"].items():
        (pkg / name).write_text(text)
    blocker = tmp_path / "block"
    blocker.mkdir()
    for mod in ("pydantic", "yaml", "pulumi", "boto3"):
        (blocker / f"{mod}.py").write_text(f"raise ImportError('{mod} is not in the reaper image')\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{blocker}:{tmp_path / 'opt'}"}
    res = subprocess.run([sys.executable, "-m", "coderig.runtime.kube_reaper", "reap"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout) == {"level": "error", "error": "CODERIG_STOP_AFTER_MINUTES is not set"}
    cron = by_key(kube_render.objects(s, "prod"))[f"cronjob-{kube.IDLE}"]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "coderig.runtime.kube_reaper", "reap"]
    env2 = {e["name"]: e["value"] for e in container["env"]} | {"PATH": os.environ["PATH"]}
    env2["PYTHONPATH"] = f"{blocker}:{tmp_path / 'opt'}"
    res = subprocess.run([sys.executable, "-m", "coderig.runtime.kube_reaper", "reap"], env=env2, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1 and "not running in a pod" in res.stdout


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
    budget = planner.load_budget_seconds(s.model.spec) + planner.IMAGE_PULL_S
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
    assert settings is not None and targets.REGISTRY[settings.target.kind].ops is kube_ops
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
    monkeypatch.setitem(kube_ops.COMMANDS, "stop", lambda a, st: kube_ops.cmd_stop(a, st, run=quiet))
    assert main(["stop", "prod", "--config", str(path)]) == 0
    assert loads == [str(path)]
    # and it probes for the stack's served model name
    assert quiet.calls[0][-1] == settings_of(k8s_config()).model.served_name


@pytest.mark.parametrize(
    ("target", "key"),
    [
        ({"replicas": -1}, "coderig:target.replicas"),
        ({"replicas": 3, "storageClass": None}, "coderig:target.storageClass: replicas is 3"),
        ({"namespace": "Coder_Rig"}, "coderig:target.namespace"),
        ({"ingressHost": None}, "coderig:target.ingressClass"),
    ],
)
def test_kubernetes_settings_errors_name_the_key(target: dict[str, Any], key: str) -> None:
    with pytest.raises(UserError) as err:
        parse_settings({**k8s_config(**target), "hfToken": "x"})
    assert any(p.startswith(key) for p in err.value.problems), err.value.problems


def test_rendered_render_contributor_is_registered() -> None:
    assert targets.REGISTRY["kubernetes"].render is kube_render.render_manifests
    assert math.isfinite(float(versions.KUBERNETES_SCHEMA_VERSION.rsplit(".", 1)[0]))


def test_reaper_keeps_when_one_replica_is_silent_even_with_an_idle_history(api_server) -> None:
    srv, api = api_server
    text = (FIXTURES / "vllm_metrics_idle.txt").read_text()
    t0 = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)
    old = [{"at": (t0 - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"), "running": 0, "completed": 0}
           for m in range(30, 0, -1)]  # fmt: skip
    srv.state = json.dumps({"samples": old, "counters": {}, "up_since": "2026-11-18T01:00:00Z"})
    r = kube_reaper.reap(reaper_cfg(8000), api, now=t0, addrs=lambda h, p: ["10.0.0.5", "10.0.0.6"],
                      get=lambda u: text if "10.0.0.5" in u else None)  # fmt: skip
    assert r.action == "keep" and "metrics from 1/2 replicas" in r.reason
    assert srv.scales == []


# --- the gateway while the model is at zero (real nginx) ------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Ok(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _ok(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _ok


class _KeyedModel(_Ok):
    """Like `vllm --api-key`: /v1/* needs the model key; /health does not."""

    key = "v" * 32
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._ok()


@pytest.mark.integration
def test_gateway_answers_503_with_retry_after_while_the_model_is_at_zero(tmp_path: Path) -> None:
    """The k8s gateway config (kube.gateway_spec) in real nginx, on loopback, plain HTTP: a model with
    no ready replica (connection refused, as a Service without endpoints) gives 503 + Retry-After in
    the client's error shape; a missing key is still a 401; with the model up, requests go through."""
    import dataclasses

    nginx = require_tool("nginx")  # skipped on a workstation without nginx, a failure in CI

    lite_port, model_port, gw_port = _free_port(), _free_port(), _free_port()
    lite = ThreadingHTTPServer(("127.0.0.1", lite_port), _Ok)
    threading.Thread(target=lite.serve_forever, daemon=True).start()
    s = settings_of(k8s_config())
    key = "crk-" + "k" * 40
    (tmp_path / "keys.conf").write_text(
        frontdoor.render_gateway_keys({"alice": key}, "sk-" + "m" * 40, model_key=_KeyedModel.key)
    )
    spec = dataclasses.replace(
        kube.front_door(s)[1],
        listen=f"127.0.0.1:{gw_port}",
        litellm=f"127.0.0.1:{lite_port}",
        model_health_url=f"http://127.0.0.1:{model_port}/health",
        direct_chat_backends=(f"127.0.0.1:{model_port}",),
        keys_include=str(tmp_path / "keys.conf"),
        tls_cert=None,
        tls_key=None,
        pid_path=str(tmp_path / "nginx.pid"),
        temp_dir=str(tmp_path),
    )
    assert (spec.error_log, spec.access_log) == ("/dev/stderr", "/dev/stdout")  # as in the pod
    (tmp_path / "nginx.conf").write_text(frontdoor.render_gateway_conf(spec))
    proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    model: ThreadingHTTPServer | None = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/api/hello", timeout=1)
                break
            except OSError:
                threading.Event().wait(0.05)

        def call(path: str, headers: dict[str, str]) -> tuple[int, str | None, dict[str, Any]]:
            req = urllib.request.Request(f"http://127.0.0.1:{gw_port}{path}", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json", **headers})  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.headers.get("Retry-After"), json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers.get("Retry-After"), json.loads(exc.read() or b"{}")

        status, retry, body = call("/v1/messages", {"x-api-key": key})
        assert (status, retry) == (503, str(kube.RETRY_AFTER_S)), body
        assert body["type"] == "error"
        status, retry, body = call("/v1/chat/completions", {"Authorization": f"Bearer {key}"})
        assert (status, retry) == (503, str(kube.RETRY_AFTER_S)) and "error" in body
        assert call("/v1/messages", {})[0] == 401
        model = ThreadingHTTPServer(("127.0.0.1", model_port), _KeyedModel)
        threading.Thread(target=model.serve_forever, daemon=True).start()
        assert call("/v1/messages", {"x-api-key": key})[0] == 200
        # the direct chat path: the gateway sends the model key from the keys Secret, never the developer's
        assert call("/v1/chat/completions", {"Authorization": f"Bearer {key}"})[0] == 200
        assert _KeyedModel.seen[-1]["authorization"] == f"Bearer {_KeyedModel.key}"
        assert key not in json.dumps(_KeyedModel.seen)
    finally:
        proc.terminate()
        proc.wait(10)
        lite.shutdown()
        if model is not None:
            model.shutdown()


def test_the_documented_stack_example_is_valid_and_renders(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "Pulumi.gpu.yaml"
    path.write_text(block)
    from coderig.core.settings import load_stack_file

    s = load_stack_file(path)
    assert s.target.kind == "kubernetes"
    files = targets.render_stack(s, "gpu")
    manifests = [yaml.safe_load(f.content) for p, f in files.items() if p.startswith("kubernetes/")]
    assert len(manifests) >= 15
    for obj in manifests:
        kubernetes_validate.validate(obj, versions.KUBERNETES_SCHEMA_VERSION, strict=True)


def test_load_balancer_address_becomes_the_endpoint_host() -> None:
    from components.kube import _plain, lb_host

    fallback = "coderig-gateway.coderig.svc.cluster.local"
    assert lb_host({"loadBalancer": {"ingress": [{"hostname": "a1.elb.amazonaws.com"}]}}, fallback) == (
        "a1.elb.amazonaws.com"
    )
    assert lb_host({"load_balancer": {"ingress": [{"ip": "203.0.113.7"}]}}, fallback) == "203.0.113.7"
    assert lb_host({"loadBalancer": {}}, fallback) == fallback
    assert lb_host(None, fallback) == fallback

    class Obj:  # an output type object, as the SDK may hand it over
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    status = Obj(load_balancer=Obj(ingress=[Obj(hostname="lb.example", ip=None)]))
    assert lb_host(_plain(status), fallback) == "lb.example"


def test_stop_probe_reads_running_requests_from_a_live_model_server(standin: StandIn) -> None:
    """The snippet `coderig stop` runs in the front-door pod, here against the vLLM-shaped stand-in."""
    probe = [sys.executable, "-c", kube_ops._RUNNING_PROBE, "127.0.0.1", str(standin.port), "umans-coder-v0"]
    assert subprocess.run(probe, capture_output=True, text=True, timeout=30, check=True).stdout.split() == ["1", "0"]
    worker = threading.Thread(target=_stream, args=(standin, 40))
    worker.start()
    for _ in range(100):
        if standin.running:
            break
        threading.Event().wait(0.02)
    out = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=True).stdout.split()
    worker.join()
    assert out == ["1", "1"]


def test_gateway_keys_secret_carries_the_model_key_its_direct_chat_path_sends() -> None:
    s = settings_of(k8s_config())
    assert kube.front_door(s)[1].direct_chat_authorization
    secrets = NodeSecrets(model_api_key="v" * 32, litellm_master_key="sk-" + "m" * 40,
                               developer_keys={"alice": "crk-" + "a" * 40})  # fmt: skip
    (front,) = [o for o in kube.secret_objects(s, "prod", secrets) if o["metadata"]["name"] == kube.SECRET_FRONTDOOR]
    keys = front["stringData"]["gateway-keys.conf"]
    assert "$coderig_model_authorization" in keys and "Bearer " + "v" * 32 in keys
