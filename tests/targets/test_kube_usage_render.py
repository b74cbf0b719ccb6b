"""Per-developer accounting in the kubernetes front door (coderig.targets.kubernetes.usage): the relay
runs with the compose front door's accounting flags and keeps its record on the coderig-usage claim. A
request counted for real, and counted on after a relay restart: tests/kube/test_kube_wake.py."""

from __future__ import annotations

from typing import Any

from kube_helpers import by_key, glm_config, k8s_config, objects_of, settings_of

from coderig.core import planner
from coderig.frontdoor.assemble import METRICS_LISTEN, USAGE_DIR, USAGE_FILES, relay_command
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import usage as kube_usage
from coderig.targets.kubernetes.preflight import plan_lines


def pod_of(config: dict[str, Any]) -> dict[str, Any]:
    return by_key(objects_of(settings_of(config), "prod"))[f"deployment-{kube.FRONTDOOR}"]["spec"]["template"]["spec"]


def test_the_relay_counts_with_the_compose_front_doors_flags() -> None:
    s = settings_of(k8s_config())
    relay = kube_fd.keepalive_container(s)
    assert relay is not None
    cmd = relay["command"]
    assert cmd[:4] == ["python3", "-m", "coderig.runtime.usage_slot", "--"]
    # the same relay command, accounting included, that the compose front door runs
    assert cmd[4 : 4 + len(relay_command(kube_fd.front_door(s)[1], usage=True))] == relay_command(
        kube_fd.front_door(s)[1], usage=True
    )
    assert cmd[cmd.index("--usage-file") + 1] == f"{USAGE_DIR}/usage.json"
    assert cmd[cmd.index("--metrics") + 1] == METRICS_LISTEN  # the pod's loopback, never the Service
    assert {"name": kube_usage.USAGE_VOLUME, "mountPath": USAGE_DIR} in relay["volumeMounts"]
    data = kube_fd.frontdoor_configmaps(s, "prod")[1]["data"]
    assert {p.rsplit("/", 1)[1] for p in USAGE_FILES} | {"usage_slot.py"} <= set(data)


def test_the_record_is_on_a_readwritemany_claim_when_one_is_known() -> None:
    objs = by_key(objects_of(settings_of(k8s_config()), "prod"))  # 2 model replicas: efs-rwx is RWX
    claim = objs[f"persistentvolumeclaim-{kube_usage.USAGE_CLAIM}"]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"] and claim["storageClassName"] == "efs-rwx"
    volume = next(v for v in pod_of(k8s_config())["volumes"] if v["name"] == kube_usage.USAGE_VOLUME)
    assert volume == {"name": "usage", "persistentVolumeClaim": {"claimName": kube_usage.USAGE_CLAIM}}
    keys = list(objs)
    assert keys.index(f"persistentvolumeclaim-{kube_usage.USAGE_CLAIM}") < keys.index(f"deployment-{kube.FRONTDOOR}")
    # one model replica: the class may be ReadWriteOnce; coderig:target.usageStorageClass names one
    cfg = glm_config()
    cfg["target"] = {**cfg["target"], "usageStorageClass": "nfs-rwx"}
    claim = by_key(objects_of(settings_of(cfg), "prod"))[f"persistentvolumeclaim-{kube_usage.USAGE_CLAIM}"]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"] and claim["storageClassName"] == "nfs-rwx"


def test_without_a_readwritemany_class_the_record_lives_in_the_pod_and_the_plan_says_so() -> None:
    s = settings_of(glm_config())
    objs = by_key(objects_of(s, "prod"))
    assert f"persistentvolumeclaim-{kube_usage.USAGE_CLAIM}" not in objs
    volume = next(v for v in pod_of(glm_config())["volumes"] if v["name"] == kube_usage.USAGE_VOLUME)
    assert "emptyDir" in volume
    lines = "\n".join(plan_lines(s, planner.plan_stack(s)))
    assert "coderig:target.usageStorageClass" in lines and "a restart starts it again" in lines
    kept = settings_of(k8s_config())
    assert "PVC coderig-usage" in "\n".join(plan_lines(kept, planner.plan_stack(kept)))
