"""Every compile, autotune and JIT cache of the model server lives on the weights volume, on every
target, from the one table in coderig.core.compile_caches (its docstring cites the pinned vLLM 0.28.0
and FlashInfer 0.6.16.post3 code that decides each default)."""

from __future__ import annotations

import posixpath

from conftest import ssh_config
from kube_helpers import by_key, k8s_config, objects_of, settings_of

from coderig.core import engine, planner
from coderig.core.compile_caches import COMPILE_CACHES, compile_cache_env
from coderig.targets import parse_settings
from coderig.targets.compose import machines
from coderig.targets.compose.rendered import render_node
from coderig.targets.kubernetes import manifests as kube

# what each variable would default to without coderig (the pinned code's defaults): none on the volume
DEFAULTS_OFF_VOLUME = {
    "VLLM_CACHE_ROOT": "~/.cache/vllm",
    "TRITON_CACHE_DIR": "~/.triton/cache",
    "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor_<user>",
    "DG_JIT_CACHE_DIR": "$VLLM_CACHE_ROOT/deep_gemm",
    "FLASHINFER_WORKSPACE_BASE": "~",
    "CUDA_CACHE_PATH": "~/.nv/ComputeCache",
}


def test_the_table_names_every_cache_once_below_the_mount() -> None:
    assert set(COMPILE_CACHES) == set(DEFAULTS_OFF_VOLUME)
    env = compile_cache_env("/cache/")
    for var, path in env.items():
        assert posixpath.normpath(path) == path and path.startswith("/cache/"), (var, path)
    # distinct homes, except DeepGEMM's, which is where vLLM itself would put it (below VLLM_CACHE_ROOT)
    assert env["DG_JIT_CACHE_DIR"] == env["VLLM_CACHE_ROOT"] + "/deep_gemm"
    others = [p for v, p in env.items() if v != "DG_JIT_CACHE_DIR"]
    assert len(set(others)) == len(others)
    assert not any(a != b and b.startswith(a + "/") for a in others for b in others)


def test_compose_model_server_keeps_its_caches_on_the_weights_volume() -> None:
    c = ssh_config()
    c["sshPrivateKey"] = "present"
    settings = parse_settings(c)
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    model = render_node(settings, spec).compose["services"]["model"]
    assert f"{settings.target.cachePath}:{engine.CACHE_MOUNT}" in model["volumes"]  # type: ignore[union-attr]
    env = model["environment"]
    assert {k: env[k] for k in COMPILE_CACHES} == compile_cache_env(engine.CACHE_MOUNT)


def test_kubernetes_model_pod_keeps_its_caches_on_the_weights_volume_not_tmp() -> None:
    objs = by_key(objects_of(settings_of(k8s_config()), "prod"))
    pod = objs[f"deployment-{kube.MODEL}"]["spec"]["template"]["spec"]
    (vllm,) = [c for c in pod["containers"] if c["name"] == "vllm"]
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert {k: env[k] for k in COMPILE_CACHES} == compile_cache_env(engine.CACHE_MOUNT)
    mounts = {m["mountPath"]: m["name"] for m in vllm["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts[engine.CACHE_MOUNT]]  # the weights volume, kept
    assert not any(str(v).startswith("/tmp/") for k, v in env.items() if k != "HOME")  # nothing lost on restart
