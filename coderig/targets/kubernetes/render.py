"""Every object of a kubernetes stack, in apply order, and `coderig render`'s manifests."""

from __future__ import annotations

import yaml

from coderig.core import planner
from coderig.core.files import FileSet, RenderedFile
from coderig.core.secrets import placeholder_secrets
from coderig.core.settings import StackSettings
from coderig.targets.kubernetes.frontdoor import (
    frontdoor_configmaps,
    frontdoor_deployment,
    frontdoor_pdb,
    gateway_ingress,
    gateway_service,
    secret_checksums,
    secret_objects,
    with_secret_checksums,
)
from coderig.targets.kubernetes.idle import (
    idle_code_configmap,
    idle_cronjob,
    idle_rbac,
    idle_sources,
    idle_state_configmap,
)
from coderig.targets.kubernetes.manifests import (
    Obj,
    idle_enabled,
    model_deployment,
    model_network_policy,
    model_services,
    namespace,
    target,
    weights_job,
    weights_pvc,
    weights_script_configmap,
)
from coderig.targets.kubernetes.usage import usage_pvc
from coderig.targets.kubernetes.wake import wake_rbac

# --- everything -----------------------------------------------------------------------------------


def objects(settings: StackSettings, stack: str, plan: planner.Plan) -> list[Obj]:
    """Every non-secret object, in apply order. Secret checksums are left empty (see
    `with_secret_checksums`)."""
    target(settings)  # refuses what this target cannot run, naming the key
    out: list[Obj] = [
        namespace(settings, stack),
        weights_pvc(settings, stack),
        weights_script_configmap(settings, stack),
        weights_job(settings, stack),
        *model_services(settings, stack),
        model_deployment(settings, stack, plan),
        model_network_policy(settings, stack),
        *wake_rbac(settings, stack),  # the front-door pod's account (with an idle policy): before its pods
        *[c for c in [usage_pvc(settings, stack)] if c],  # the usage record's claim (ReadWriteMany)
        *frontdoor_configmaps(settings, stack),
        frontdoor_deployment(settings, stack, plan),
        gateway_service(settings, stack),
        frontdoor_pdb(settings, stack),
    ]
    ingress = gateway_ingress(settings, stack)
    if ingress:
        out.append(ingress)
    if idle_enabled(settings):
        out += [
            idle_code_configmap(settings, stack, idle_sources()),
            idle_state_configmap(settings, stack),
            *idle_rbac(settings, stack),
            idle_cronjob(settings, stack),
        ]
    return out


def object_key(obj: Obj) -> str:
    """A short unique handle: `deployment-coderig-model`."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}"


_SECRETS_NOTE = """\
# Secrets are not rendered: Pulumi creates them from secret config and random resources.
# {names}
"""


def render_manifests(settings: StackSettings, stack: str, plan: planner.Plan) -> FileSet:
    """`coderig render` contributor: kubernetes/NN-kind-name.yaml, one object per file, apply order.
    Secret objects are omitted (their values exist only as Pulumi secrets); the pods' secret checksum
    annotations are those of placeholders."""
    placeholders = secret_objects(settings, stack, placeholder_secrets(settings.developers))
    objs = with_secret_checksums(objects(settings, stack, plan), secret_checksums(placeholders))
    secret_list = ", ".join(f"{o['metadata']['name']} ({', '.join(sorted(o['stringData']))})" for o in placeholders)
    files: FileSet = {}
    for i, obj in enumerate(objs):
        head = f"# Rendered by coderig for stack {stack}.\n"
        if i == 0:
            head += _SECRETS_NOTE.format(names=secret_list)
        files[f"kubernetes/{i:02d}-{object_key(obj)}.yaml"] = RenderedFile(head + yaml.safe_dump(obj, sort_keys=False))
    return files
