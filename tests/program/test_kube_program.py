"""The kubernetes target's Pulumi graph under mocks: names, ordering, secrets, and the weights PVC kept."""

from __future__ import annotations

import json
import os
from typing import Any

import pulumi
import pytest
from conftest import run_program
from kube_helpers import (
    SECRET_SIG,
    all_objects,
    by_key,
    glm_config,
    k8s_config,
    objects_of,
    settings_of,
)

from coderig.core.errors import UserError
from coderig.targets import parse_settings
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import render as kube_render
from coderig.targets.kubernetes import usage as kube_usage

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
    # every manifest of coderig.targets.kubernetes became a resource, and nothing else
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
    objs = objects_of(settings_of(config), "prod")
    (pvc,) = [o for o in objs if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == kube.WEIGHTS]
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
    # the usage record's claim is kept the same way (immutable spec ignored, never deleted)
    usage = opts[f"k8s-persistentvolumeclaim-{kube_usage.USAGE_CLAIM}"]
    assert usage.retain_on_delete is True and set(usage.ignore_changes or []) == set(pvc.ignore_changes or [])
    # nothing else is kept behind by `pulumi destroy`
    assert set(opts) == {
        "k8s-namespace-coderig-prod",
        f"k8s-persistentvolumeclaim-{kube.WEIGHTS}",
        f"k8s-persistentvolumeclaim-{kube_usage.USAGE_CLAIM}",
    }


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
    objs = by_key(objects_of(settings_of(cfg), "prod"))
    assert f"persistentvolumeclaim-{kube.WEIGHTS}" not in objs
    assert objs["persistentvolumeclaim-coderig-weights-rwx"]["metadata"]["name"] == "coderig-weights-rwx"
    for key in (f"job-{kube.WEIGHTS}", f"deployment-{kube.MODEL}"):
        pod = kube_fd.pod_spec(objs[key])
        assert pod is not None
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == ["coderig-weights-rwx"], key
    opts = creation_opts(cfg, monkeypatch)
    assert opts["k8s-persistentvolumeclaim-coderig-weights-rwx"].retain_on_delete is True
    with pytest.raises(UserError) as err:
        parse_settings({**k8s_config(weightsVolumeName="Weights_2"), "hfToken": "x"})
    assert err.value.problems[0].startswith("coderig:target.weightsVolumeName: got 'Weights_2'")


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
