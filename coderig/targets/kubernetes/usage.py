"""Per-developer accounting in the kubernetes front door (#19): the relay in each front-door pod counts
every model request, as the compose front door's does (coderig.frontdoor.assemble.relay_command with
usage), and keeps its record on a volume so the counters survive a pod restart.

The front-door pods are a Deployment (rolling updates with a surge pod, no downtime), which gives a pod
no volume of its own: they share one ReadWriteMany claim, `coderig-usage`, and each relay takes a free
record slot on it (coderig.runtime.usage_slot: usage-N.json under an flock held for the relay's life);
the next pod takes the slot back and loads its record. A ReadWriteMany class is known when the stack
has more than one model replica (its weights claim is ReadWriteMany already) or is named by
`coderig:target.usageStorageClass`; otherwise the record lives in the pod (an emptyDir) and a pod
restart starts it again, which `coderig plan` says.
"""

from __future__ import annotations

from coderig import frontdoor
from coderig.core.settings import StackSettings
from coderig.frontdoor.assemble import USAGE_DIR, USAGE_FILES, relay_command
from coderig.targets.kubernetes.manifests import Obj, empty_dir, meta, target

USAGE_CLAIM = "coderig-usage"
USAGE_VOLUME = "usage"
USAGE_SIZE = "1Gi"  # a record is a few hundred bytes per developer and day
SLOT_MODULE = "coderig.runtime.usage_slot"
# the modules the relay's accounting runs from, shipped next to it (ConfigMap key -> path)
SHIPPED = (*USAGE_FILES, "coderig/runtime/usage_slot.py")


def kept(settings: StackSettings) -> bool:
    """The record is on a ReadWriteMany claim (survives a pod restart), not in the pod."""
    t = target(settings)
    return t.usageStorageClass is not None or t.replicas > 1


def plan_note(settings: StackSettings) -> str:
    if kept(settings):
        return (
            f"each front-door pod's relay counts requests and tokens per developer into a record on "
            f"PVC {USAGE_CLAIM} (ReadWriteMany, {USAGE_SIZE}); a restarted pod carries on from it"
        )
    return (
        "each front-door pod counts requests and tokens per developer, but its record lives in the pod "
        "(a restart starts it again): set coderig:target.usageStorageClass to a ReadWriteMany class to keep it"
    )


def usage_pvc(settings: StackSettings, stack: str) -> Obj | None:
    t = target(settings)
    if not kept(settings):
        return None
    spec: Obj = {
        "accessModes": ["ReadWriteMany"],  # every front-door pod, on any node, during a rolling update too
        "resources": {"requests": {"storage": USAGE_SIZE}},
        "volumeMode": "Filesystem",
    }
    storage_class = t.usageStorageClass or t.storageClass
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(USAGE_CLAIM, t.namespace, stack, "frontdoor"),
        "spec": spec,
    }


def usage_volume(settings: StackSettings) -> Obj:
    if kept(settings):
        return {"name": USAGE_VOLUME, "persistentVolumeClaim": {"claimName": USAGE_CLAIM}}
    return empty_dir(USAGE_VOLUME, "64Mi")


def usage_mount() -> Obj:
    return {"name": USAGE_VOLUME, "mountPath": USAGE_DIR}


def counted_relay_command(spec: frontdoor.GatewaySpec) -> list[str]:
    """The relay's command with accounting (record, loopback metrics listener, gateway probe), started
    through the slot taker; [] when the gateway has no relay."""
    command = relay_command(spec, usage=True)
    return [command[0], "-m", SLOT_MODULE, "--", *command] if command else []
