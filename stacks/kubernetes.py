"""`kubernetes` target: the same request path on an existing cluster's GPU nodes (pulumi-kubernetes).

The model server is a Deployment of `replicas` vLLM pods sharing one weights PVC; the front door
(nginx gateway + LiteLLM in one pod) scales independently; an optional CronJob scales the model
server to zero when idle. Manifests: `coderig.targets.kubernetes`; resources: `components.kube`.
"""

from __future__ import annotations

import pulumi

from coderig.core import planner
from coderig.core.settings import StackSettings
from coderig.targets.kubernetes import frontdoor as kube_fd
from coderig.targets.kubernetes import manifests, preflight
from components.kube import GATEWAY_PORT, KubernetesStack, KubernetesStackArgs
from components.node import front_door_access
from stacks import ConfigError, StackContext
from stacks.outputs import client_outputs


def build(ctx: StackContext) -> dict[str, object]:
    s = ctx.settings
    t = manifests.target(s)
    check_cluster(s, ctx.stack, ctx.plan)
    access = front_door_access(s, kube_fd.certificate_names(s), ctx.secrets)
    cluster = KubernetesStack("k8s", KubernetesStackArgs(s, ctx.stack, ctx.plan, access.secrets))
    return {
        **client_outputs(ctx, host=cluster.host, port=GATEWAY_PORT, ca_pem=access.ca_pem, tokens=access.developer_keys),
        "namespace": t.namespace,
    }


def check_cluster(settings: StackSettings, stack: str, plan: planner.Plan) -> None:
    """The preflight (coderig.targets.kubernetes.preflight) before any resource is registered: every
    problem at once, naming the key. A cluster that cannot be read is left to pulumi-kubernetes."""
    try:
        facts = preflight.gather(settings, stack)
    except preflight.Unreachable as exc:
        pulumi.log.warn(f"coderig: cluster preflight skipped, cannot read the cluster: {exc}")
        return
    found = preflight.problems(settings, stack, facts, plan)
    if found:
        raise ConfigError("the cluster cannot run this stack:\n  " + "\n  ".join(found))
