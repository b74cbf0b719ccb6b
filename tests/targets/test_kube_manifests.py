"""The kubernetes target's manifests: schema, plan-driven sizing, security, the front door, settings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import write_stack
from kube_helpers import (
    PRESETS,
    ROOT,
    all_objects,
    by_key,
    containers,
    glm_config,
    k8s_config,
    objects_of,
    settings_of,
)

from coderig import frontdoor, targets
from coderig.cli import main
from coderig.core import engine, planner, versions
from coderig.core.errors import UserError
from coderig.core.secrets import NodeSecrets, placeholder_secrets
from coderig.targets import load_stack_file, parse_settings
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import render as kube_render

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


def test_render_writes_no_manifests_for_other_targets(tmp_path: Path) -> None:
    from conftest import ssh_config

    s = parse_settings({**ssh_config(), "sshPrivateKey": "x"})
    assert not any(path.startswith("kubernetes/") for path in targets.render_stack(s, "x", planner.plan_stack(s)))


# --- the model server follows the plan ------------------------------------------------------------


@pytest.mark.parametrize(("preset", "gpus"), [("deepseek-v3.2", 8), ("glm-4.7", 4)])
def test_probe_budget_shm_and_gpus_follow_the_plan(preset: str, gpus: int) -> None:
    s = settings_of(PRESETS[preset])
    dep = by_key(objects_of(s, "prod"))[f"deployment-{kube.MODEL}"]
    pod = dep["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    probe = vllm["startupProbe"]
    budget = probe["failureThreshold"] * probe["periodSeconds"]
    # worked: 600 s warm-up + weights at the PVC's assumed 125 MiB/s (no weightsReadMBps; slower than the
    # 500 MB/s budget rate): 689 GB -> 5257 s + 600, 362 GB -> 2762 s + 600
    load = {"deepseek-v3.2": 5857, "glm-4.7": 3362}[preset]
    assert load <= budget < load + probe["periodSeconds"]
    fast = settings_of({**PRESETS[preset], "target": {**PRESETS[preset]["target"], "weightsReadMBps": 2000}})
    assert kube.startup_budget_seconds(fast) == {"deepseek-v3.2": 1978, "glm-4.7": 1324}[preset]  # 500 MB/s
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
    pvc = by_key(objects_of(s, "prod"))[f"persistentvolumeclaim-{kube.WEIGHTS}"]
    # worked: weights + 25% + compile caches (8 GiB + 2 GiB per GPU), up to the next 10 GB:
    # 689 × 1.25 = 861.25 + 25.8 (8 GPUs) -> 890; 362 × 1.25 = 452.5 + 17.2 (4 GPUs) -> 470
    assert pvc["spec"]["resources"]["requests"]["storage"] == {"deepseek-v3.2": "890Gi", "glm-4.7": "470Gi"}[preset]
    replicas = PRESETS[preset]["target"].get("replicas", 1)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany" if replicas > 1 else "ReadWriteOnce"]


def test_a_700_gb_model_is_not_killed_by_a_ten_minute_budget() -> None:
    big = settings_of(k8s_config())
    small = settings_of(glm_config())
    big_dep = by_key(objects_of(big, "p"))[f"deployment-{kube.MODEL}"]
    big_probe = big_dep["spec"]["template"]["spec"]["containers"][0]
    small_probe = by_key(objects_of(small, "p"))[f"deployment-{kube.MODEL}"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    big_s = big_probe["startupProbe"]["failureThreshold"] * big_probe["startupProbe"]["periodSeconds"]
    small_s = small_probe["startupProbe"]["failureThreshold"] * small_probe["startupProbe"]["periodSeconds"]
    assert big_s > 600 + big.model.spec.weight_bytes / 1e9  # warm-up + at least 1 GB/s of reading
    assert big_s > small_s  # bigger weights, longer budget
    # Pulumi waits at least as long for the rollout and for the download
    dep = by_key(objects_of(big, "p"))[f"deployment-{kube.MODEL}"]
    assert int(dep["metadata"]["annotations"][kube.PULUMI_TIMEOUT]) >= big_s
    job = by_key(objects_of(big, "p"))[f"job-{kube.WEIGHTS}"]
    # worked: 300 s + twice 689 GB at 100 MB/s (2 × 6890 s) = 14080 s
    assert int(job["metadata"]["annotations"][kube.PULUMI_TIMEOUT]) == 14080


def test_model_pods_wait_for_the_download_jobs_completion_marker() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_weights", ROOT / "coderig" / "runtime" / "fetch_weights.py")
    assert spec and spec.loader
    fw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fw)
    s = settings_of(k8s_config())
    expected = fw.marker_path(Path(engine.HF_HOME), s.model.spec.hf_repo)
    assert kube.marker_path(s) == str(expected)
    objs = by_key(objects_of(s, "prod"))
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
    pods = [kube_fd.pod_spec(o) for o in objs.values() if kube_fd.pod_spec(o) is not None]
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
            # projected: the wake account's token (the restricted profile allows it, like configMap and secret)
            assert set(v) & {"emptyDir", "configMap", "secret", "persistentVolumeClaim", "projected"}, v


def test_only_the_front_door_and_the_reaper_reach_the_model_server() -> None:
    objs = by_key(objects_of(settings_of(k8s_config()), "prod"))
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
    glm = by_key(objects_of(settings_of(glm_config()), "prod"))
    assert len(glm[f"networkpolicy-{kube.MODEL}"]["spec"]["ingress"][0]["from"]) == 1


def test_reaper_rbac_is_limited_to_scaling_the_model_deployment() -> None:
    objs = by_key(objects_of(settings_of(k8s_config()), "prod"))
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
        pod = kube_fd.pod_spec(obj)
        if pod is not None:
            assert pod["automountServiceAccountToken"] is (key == f"cronjob-{kube.IDLE}"), key


# --- front door -----------------------------------------------------------------------------------


def test_front_door_pod_shares_localhost_and_rolls_when_config_or_secrets_change() -> None:
    s = settings_of(k8s_config())
    objs = by_key(objects_of(s, "prod"))
    dep = objs[f"deployment-{kube.FRONTDOOR}"]
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["gateway", "litellm", "keepalive"]
    litellm = pod["containers"][1]
    assert litellm["args"][litellm["args"].index("--host") + 1] == "127.0.0.1"
    conf = objs[f"configmap-{kube.GATEWAY_CONFIG}"]["data"]["nginx.conf"]
    assert "listen 0.0.0.0:8443 ssl;" in conf and "server 127.0.0.1:4000" in conf
    assert "proxy_buffering off;" in conf
    # LiteLLM reaches the model through the pod's keepalive relay (every model path has that one hop),
    # and the relay through the model's ClusterIP Service (only Ready replicas get traffic)
    llm = yaml.safe_load(objs[f"configmap-{kube.LITELLM_CONFIG}"]["data"]["config.yaml"])
    bases = {m["litellm_params"]["api_base"] for m in llm["model_list"]}
    assert bases == {"http://127.0.0.1:4100/v1"}
    relay = pod["containers"][2]["command"]
    assert relay[relay.index("--route") + 1] == f"127.0.0.1:4100={kube.MODEL}.coderig-prod.svc.cluster.local:8000"
    assert dep["spec"]["replicas"] == 2 and objs[f"deployment-{kube.MODEL}"]["spec"]["replicas"] == 2

    def sums(config: dict[str, Any], developers: dict[str, str]) -> tuple[str, str]:
        st = settings_of(config)
        secrets = placeholder_secrets(st.developers)
        secrets = type(secrets)(**{**secrets.__dict__, "developer_keys": developers})
        checks = kube_fd.secret_checksums(kube_fd.secret_objects(st, "prod", secrets))
        objs = by_key(kube_fd.with_secret_checksums(objects_of(st, "prod"), checks))
        d = objs[f"deployment-{kube.FRONTDOOR}"]
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
    dep = by_key(objects_of(settings_of(k8s_config()), "prod"))[f"deployment-{kube.FRONTDOOR}"]
    gateway = dep["spec"]["template"]["spec"]["containers"][0]
    # readiness is the gateway's own cheap endpoint, never the model's health
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/api/hello"
    assert "healthz" not in json.dumps(dep)


def test_ingress_is_streaming_safe() -> None:
    objs = by_key(objects_of(settings_of(k8s_config()), "prod"))
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
    glm = by_key(objects_of(settings_of(glm_config()), "prod"))
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


# --- front door sizing ----------------------------------------------------------------------------


# worked by hand: deepseek-v3.2 on 8× H200 holds 7 full-context requests per replica with TP8
# (tests/core/test_planner.py); streams per front-door pod = ⌈7 × max(1, replicas) ÷ front-door pods⌉
@pytest.mark.parametrize(("replicas", "front", "expected"), [(2, 2, 7), (4, 2, 14), (2, 4, 4), (0, 1, 7)])
def test_litellm_workers_follow_the_streams_each_front_door_pod_carries(
    replicas: int, front: int, expected: int
) -> None:
    """Every model replica's concurrency, spread over the front-door pods (at zero: what start brings)."""

    s = settings_of(k8s_config(replicas=replicas, frontDoorReplicas=front))
    plan = planner.plan_stack(s)
    assert plan.max_concurrent_requests_per_replica == 7
    assert kube_fd.frontdoor_streams_per_pod(s, plan) == expected
    dep = by_key(objects_of(s, "prod"))[f"deployment-{kube.FRONTDOOR}"]
    args = dep["spec"]["template"]["spec"]["containers"][1]["args"]
    assert args[args.index("--num_workers") + 1] == str(frontdoor.litellm_workers(expected))


def test_more_model_replicas_per_front_door_pod_get_more_litellm_workers() -> None:
    def workers(**target: Any) -> int:
        # a team too large for any layout: every replica count gets the most concurrent one, TP8+DCP8
        # (59 full-context requests per replica, not TP8's 7)
        config = {**k8s_config(**target), "workload": {"developers": 1000, "peakActiveShare": 1.0}}
        dep = by_key(objects_of(settings_of(config), "prod"))[f"deployment-{kube.FRONTDOOR}"]
        args = dep["spec"]["template"]["spec"]["containers"][1]["args"]
        return int(args[args.index("--num_workers") + 1])

    assert workers(replicas=4, frontDoorReplicas=2) > workers(replicas=2, frontDoorReplicas=2)
    assert workers(replicas=2, frontDoorReplicas=4) < workers(replicas=2, frontDoorReplicas=2)


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


def test_the_documented_stack_example_is_valid_and_renders(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "Pulumi.gpu.yaml"
    path.write_text(block)

    s = load_stack_file(path)
    assert s.target.kind == "kubernetes"
    files = targets.render_stack(s, "gpu", planner.plan_stack(s))
    manifests = [yaml.safe_load(f.content) for p, f in files.items() if p.startswith("kubernetes/")]
    assert len(manifests) >= 15
    for obj in manifests:
        kubernetes_validate.validate(obj, versions.KUBERNETES_SCHEMA_VERSION, strict=True)


def test_gateway_keys_secret_carries_the_model_key_its_direct_chat_path_sends() -> None:
    s = settings_of(k8s_config())
    assert kube_fd.front_door(s)[1].direct_chat_authorization
    secrets = NodeSecrets(model_api_key="v" * 32, litellm_master_key="sk-" + "m" * 40,
                               developer_keys={"alice": "crk-" + "a" * 40})  # fmt: skip
    (front,) = [o for o in kube_fd.secret_objects(s, "prod", secrets) if o["metadata"]["name"] == kube.SECRET_FRONTDOOR]
    keys = front["stringData"]["gateway-keys.conf"]
    assert "$coderig_model_authorization" in keys and "Bearer " + "v" * 32 in keys


def test_the_host_kv_tier_grows_the_pods_shm_and_memory_request_and_validates() -> None:
    """glm-4.7 on 4×H200 nodes of 1024 GiB: a 496 GiB tier (half the RAM less 4 × 4 GiB for NCCL) in
    /dev/shm, which vLLM maps it from; the memory request counts it, so the scheduler finds a node for it."""
    config = glm_config()
    config["model"]["kvOffload"] = {"hostMemoryGiB": 1024}
    s = settings_of(config)
    dep = by_key(objects_of(s, "prod"))[f"deployment-{kube.MODEL}"]
    pod = dep["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    args = vllm["args"]
    assert args[args.index("--kv-offloading-size") + 1] == "496"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["sizeLimit"] == f"{4 * 4 + 496}Gi"
    assert vllm["resources"]["requests"]["memory"] == f"{32 * 4 + 4 * 4 + 496}Gi"
    kubernetes_validate.validate(dep, versions.KUBERNETES_SCHEMA_VERSION, strict=True)
    without = by_key(objects_of(settings_of(glm_config()), "prod"))[f"deployment-{kube.MODEL}"]
    assert "--kv-offloading-size" not in without["spec"]["template"]["spec"]["containers"][0]["args"]
