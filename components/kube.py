"""The `kubernetes` target as Pulumi resources. Thin: every manifest comes from `coderig.targets.kubernetes`.

One typed pulumi-kubernetes resource per manifest (clean per-object diffs, per-object options, and
mocks that see every object), all through one explicit Provider built from `coderig:target.kubeconfig`
and `.context`. Children are named f"{name}-{kind}-{object name}".

Ordering (the manifests name each other by plain strings, so dependencies are explicit):
  Namespace → everything in it
  PVC + script + HF token → weights Job (awaited to completion, budget from the weights)
  Job + model Secret + model Services → model Deployment (awaited to ready, budget from the weights)
  ConfigMaps + Secrets + model Service (nginx resolves it at start) → front door Deployment
  front door → gateway Service (its await needs ready endpoints; then the LB address is known)

Kept on delete (`keep_options`): the Namespace and the weights PVC; the PVC's immutable fields are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from coderig.core import planner
from coderig.core.secrets import NodeSecrets, placeholder_secrets
from coderig.core.settings import StackSettings
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes import render as kube_render
from coderig.targets.kubernetes import usage as kube_usage
from coderig.targets.kubernetes import wake as kube_wake
from coderig.targets.kubernetes.settings import KubernetesTarget

# (apiVersion, kind) -> typed resource class
KINDS: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("batch/v1", "CronJob"): k8s.batch.v1.CronJob,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
}
# top-level manifest fields -> Python argument names
FIELDS = {
    "metadata": "metadata",
    "spec": "spec",
    "data": "data",
    "stringData": "string_data",
    "type": "type",
    "rules": "rules",
    "roleRef": "role_ref",
    "subjects": "subjects",
    "automountServiceAccountToken": "automount_service_account_token",
}
SKIP_AWAIT = "pulumi.com/skipAwait"
GATEWAY_PORT = kube.GATEWAY_SERVICE_PORT  # developers reach the gateway on 443 (Service, Ingress)


def keep_options(settings: StackSettings) -> dict[str, dict[str, Any]]:
    """ResourceOptions for the objects that hold the weights, by object key. DESIGN: never delete
    cached weights. `pulumi destroy`, a renamed namespace or PVC leave them in the cluster (deleting a
    Namespace deletes its PVCs, so it is kept too); a change to an immutable PVC field is ignored instead
    of replacing (deleting) the claim."""
    t = kube.target(settings)
    return {
        f"namespace-{t.namespace}": {"retain_on_delete": True},
        f"persistentvolumeclaim-{t.weightsVolumeName}": {
            "retain_on_delete": True,
            "ignore_changes": list(kube.WEIGHTS_PVC_FIXED_FIELDS),
        },
    }


def provider(name: str, t: KubernetesTarget, parent: pulumi.Resource) -> k8s.Provider:
    kubeconfig = os.path.expanduser(t.kubeconfig) if t.kubeconfig else None
    return k8s.Provider(
        f"{name}-provider",
        kubeconfig=kubeconfig,  # a path or the file's contents; unset: $KUBECONFIG / ~/.kube/config
        context=t.context,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def _no_await(obj: dict[str, Any]) -> dict[str, Any]:
    """Objects with nothing to wait for (a PVC with a WaitForFirstConsumer class stays Pending until the
    Job mounts it; the model Services have no Ready endpoints during a download or at zero; an Ingress
    controller may never publish a status)."""
    obj["metadata"].setdefault("annotations", {})[SKIP_AWAIT] = "true"
    return obj


def resource(
    name: str, obj: Mapping[str, Any], opts: pulumi.ResourceOptions, **overrides: Any
) -> pulumi.CustomResource:
    cls = KINDS[(obj["apiVersion"], obj["kind"])]
    args = {FIELDS[k]: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    args.update(overrides)
    return cls(f"{name}-{kube_render.object_key(dict(obj))}", opts=opts, **args)


def secret_resources(
    name: str,
    settings: StackSettings,
    stack: str,
    secrets: pulumi.Output[NodeSecrets],
    opts: pulumi.ResourceOptions,
) -> tuple[dict[str, pulumi.CustomResource], pulumi.Output[dict[str, str]]]:
    """The Secrets: shapes from placeholders (static names), values from the secret Output.
    Returns them by object name, and their checksums (not secret: hashes of random keys)."""
    shapes = kube_fd.secret_objects(settings, stack, placeholder_secrets(settings.developers))
    real = pulumi.Output.secret(secrets.apply(lambda s: kube_fd.secret_objects(settings, stack, s)))
    out: dict[str, pulumi.CustomResource] = {}
    for i, shape in enumerate(shapes):
        data = pulumi.Output.secret(real.apply(lambda objs, i=i: objs[i]["stringData"]))
        out[shape["metadata"]["name"]] = resource(name, shape, opts, string_data=data)
    sums = pulumi.Output.unsecret(real.apply(kube_fd.secret_checksums))
    return out, sums


def _with_checksum(obj: dict[str, Any], sums: pulumi.Output[dict[str, str]]) -> dict[str, Any]:
    ann = obj["spec"]["template"]["metadata"]["annotations"]
    names = kube_fd.pod_secret_names(obj)
    ann[kube.SECRET_CHECKSUM] = sums.apply(lambda s: kube_fd.combined_checksum(names, s))
    return obj


def gateway_host(t: KubernetesTarget, svc: pulumi.CustomResource) -> pulumi.Output[str]:
    """Where developers reach the gateway (port 443): the Ingress host, else the load balancer's
    address once the Service has one, else the in-cluster name."""
    if t.ingressHost:
        return pulumi.Output.from_input(t.ingressHost)
    in_cluster = kube_fd.gateway_dns_names(t.namespace)[-1]
    if t.serviceType != "LoadBalancer":
        return pulumi.Output.from_input(in_cluster)

    status: pulumi.Output[Any] = svc.status  # type: ignore[attr-defined]
    return status.apply(lambda s: lb_host(_plain(s), in_cluster))


def lb_host(status: Any, fallback: str) -> str:
    """The load balancer's hostname or IP from a Service status (either key spelling), else `fallback`."""
    lb = (status or {}).get("load_balancer") or (status or {}).get("loadBalancer") or {}
    ingress = lb.get("ingress") or []
    if not ingress:
        return fallback
    first = ingress[0]
    return str(first.get("hostname") or first.get("ip") or fallback)


def _plain(value: Any) -> Any:
    """An output type object (or dict) as nested dicts."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return {k: _plain(v) for k, v in vars(value).items() if not k.startswith("_")}


@dataclass(frozen=True)
class KubernetesStackArgs:
    settings: StackSettings
    stack: str
    plan: planner.Plan
    secrets: pulumi.Output[NodeSecrets]


class KubernetesStack(pulumi.ComponentResource):
    """Every object of a `kubernetes` stack."""

    host: pulumi.Output[str]
    resources: dict[str, pulumi.CustomResource]

    def __init__(self, name: str, args: KubernetesStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:kubernetes:Stack", name, None, opts)
        t = kube.target(args.settings)
        self.provider = provider(name, t, self)
        self.resources = build_resources(name, args.settings, args.stack, args.plan, args.secrets, self, self.provider)
        self.host = gateway_host(t, self.resources[f"service-{kube.GATEWAY}"])
        self.register_outputs({"host": self.host})


def build_resources(
    name: str,
    settings: StackSettings,
    stack: str,
    plan: planner.Plan,
    secrets: pulumi.Output[NodeSecrets],
    parent: pulumi.Resource,
    k8s_provider: k8s.Provider,
) -> dict[str, pulumi.CustomResource]:
    """Register every object; returns them by `kube.object_key` (`deployment-coderig-model`)."""
    base = pulumi.ResourceOptions(parent=parent, provider=k8s_provider)
    objs = {kube_render.object_key(o): o for o in kube_render.objects(settings, stack, plan)}
    made: dict[str, pulumi.CustomResource] = {}

    def on(*keys: str) -> list[pulumi.Resource]:
        return [made[k] for k in keys if k in made]

    keep = keep_options(settings)

    def add(key: str, deps: Sequence[pulumi.Resource] = (), **extra: Any) -> None:
        obj = objs.pop(key)
        extra = {**keep.get(key, {}), **extra}
        made[key] = resource(
            name, obj, pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=list(deps), **extra))
        )

    ns_key = f"namespace-{kube.target(settings).namespace}"
    add(ns_key)
    ns = [made[ns_key]]
    in_ns = pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=ns))
    secret_objs, sums = secret_resources(name, settings, stack, secrets, in_ns)
    made.update({f"secret-{n}": r for n, r in secret_objs.items()})

    pvc_key = f"persistentvolumeclaim-{kube.weights_claim(settings)}"
    _no_await(objs[pvc_key])
    add(pvc_key, ns)
    add(f"configmap-{kube.WEIGHTS_SCRIPT}", ns)
    add(f"job-{kube.WEIGHTS}", [*ns, *on(pvc_key, f"configmap-{kube.WEIGHTS_SCRIPT}", f"secret-{kube.SECRET_HF}")])
    for svc in (kube.MODEL, kube.MODEL_PODS):
        _no_await(objs[f"service-{svc}"])
        add(f"service-{svc}", ns)
    add(f"networkpolicy-{kube.MODEL}", ns)
    _with_checksum(objs[f"deployment-{kube.MODEL}"], sums)
    add(
        f"deployment-{kube.MODEL}",
        [
            *ns,
            *on(
                f"job-{kube.WEIGHTS}",
                f"secret-{kube.SECRET_MODEL}",
                f"service-{kube.MODEL}",
                f"networkpolicy-{kube.MODEL}",
            ),
        ],
    )

    if f"rolebinding-{kube_wake.WAKE}" in objs:  # the relay scales the model back (idle policy)
        add(f"serviceaccount-{kube_wake.WAKE}", ns)
        add(f"role-{kube_wake.WAKE}", ns)
        add(f"rolebinding-{kube_wake.WAKE}", [*ns, *on(f"role-{kube_wake.WAKE}", f"serviceaccount-{kube_wake.WAKE}")])
    usage_key = f"persistentvolumeclaim-{kube_usage.USAGE_CLAIM}"
    if usage_key in objs:  # the usage record: bound when the first front-door pod mounts it; never deleted
        _no_await(objs[usage_key])
        add(usage_key, ns, retain_on_delete=True, ignore_changes=list(kube.WEIGHTS_PVC_FIXED_FIELDS))
    add(f"configmap-{kube.LITELLM_CONFIG}", ns)
    add(f"configmap-{kube.GATEWAY_CONFIG}", ns)
    _with_checksum(objs[f"deployment-{kube.FRONTDOOR}"], sums)
    add(
        f"deployment-{kube.FRONTDOOR}",
        [
            *ns,
            *on(
                f"configmap-{kube.LITELLM_CONFIG}",
                f"configmap-{kube.GATEWAY_CONFIG}",
                f"secret-{kube.SECRET_FRONTDOOR}",
                f"secret-{kube.SECRET_TLS}",
                f"service-{kube.MODEL}",
                f"rolebinding-{kube_wake.WAKE}",
                usage_key,
            ),
        ],
    )
    add(f"service-{kube.GATEWAY}", [*ns, *on(f"deployment-{kube.FRONTDOOR}")])
    add(f"poddisruptionbudget-{kube.FRONTDOOR}", ns)
    if f"ingress-{kube.GATEWAY}" in objs:
        _no_await(objs[f"ingress-{kube.GATEWAY}"])
        add(f"ingress-{kube.GATEWAY}", [*ns, *on(f"service-{kube.GATEWAY}", f"secret-{kube.SECRET_TLS}")])

    if f"cronjob-{kube.IDLE}" in objs:
        add(f"configmap-{kube.IDLE_CODE}", ns)
        # the reaper writes its counters here: Pulumi creates it and then leaves its data alone
        add(f"configmap-{kube.IDLE_STATE}", ns, ignore_changes=["data"])
        add(f"serviceaccount-{kube.IDLE}", ns)
        add(f"role-{kube.IDLE}", ns)
        add(f"rolebinding-{kube.IDLE}", [*ns, *on(f"role-{kube.IDLE}", f"serviceaccount-{kube.IDLE}")])
        add(
            f"cronjob-{kube.IDLE}",
            [
                *ns,
                *on(
                    f"rolebinding-{kube.IDLE}",
                    f"configmap-{kube.IDLE_CODE}",
                    f"configmap-{kube.IDLE_STATE}",
                    f"deployment-{kube.MODEL}",
                ),
            ],
        )
    if objs:
        raise RuntimeError(f"components.kube: no resource registered for {sorted(objs)}")
    return made
