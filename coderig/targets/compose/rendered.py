"""Each machine of a compose-based stack rendered ONCE: its compose services, its non-secret files
and, given its secret files, the two hashes that decide what restarts. The component
(components/node.py), the deploy commands (`commands`) and the readiness wait all read this one
object; nothing renders a node a second time to learn its service names.

    plan (coderig.core.planner, once per stack)
      -> node_specs (machines: what each machine runs)
      -> render_node (here: services, files, budget)  -> component, commands, `coderig render`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from coderig import frontdoor
from coderig.core import engine, versions
from coderig.core import files as render
from coderig.core.planner import Plan
from coderig.core.settings import StackSettings
from coderig.frontdoor.assemble import RELAY_FILES, USAGE_FILES
from coderig.runtime.scripts import SCRIPT_NAMES, script_text
from coderig.targets.compose.idle import REAPER_SERVICE, runtime_files
from coderig.targets.compose.machines import NodeSpec, node_specs, ready_budget_seconds
from coderig.targets.compose.spec import (
    GATEWAY_CONF,
    GATEWAY_KEYS,
    KEEPALIVE_DIR,
    LINK_CONF,
    LINK_DIR,
    LINK_KEY,
    LINK_SERVICE,
    LITELLM_CONFIG,
    SECRETS_DIR,
    TLS_DIR,
    bundle_hash,
    compose_dict,
    front_door,
    link_conf,
)

FRONT_SERVICES = ("litellm", "keepalive", REAPER_SERVICE, LINK_SERVICE, "gateway")  # all but the model's
COMPOSE_HEADER = "# Rendered by coderig: the node stack. Secrets live in ./secrets (0600), not here.\n"


@dataclass(frozen=True)
class RenderedNode:
    """One machine, rendered once from the stack's settings and its NodeSpec."""

    spec: NodeSpec
    compose: dict[str, Any]  # the compose document (compose.yaml)
    files: render.FileSet  # every non-secret file, relative to the bundle directory
    ready_budget_s: int  # how long its readiness wait may take

    @property
    def services(self) -> list[str]:
        """Its compose services, in creation order."""
        return list(self.compose["services"])

    @property
    def front_services(self) -> list[str]:
        """The services the `frontdoor` step recreates (all but the model's), in creation order."""
        return [s for s in FRONT_SERVICES if s in self.compose["services"]]

    def hashes(self, secret_files: render.FileSet) -> dict[str, str]:
        """Two hashes: `model` (weights + model server definitions and their env) and `frontdoor`
        (LiteLLM + gateway definitions, configs, keys, TLS). A new developer key changes only
        `frontdoor`, so it restarts the gateway, never the model server. The replica links are in the
        `frontdoor` half on every machine: a renewed link certificate restarts a link, not a model."""
        compose = self.compose["services"]
        files = self.files | secret_files

        def h(services: tuple[str, ...], prefixes: tuple[str, ...]) -> str:
            picked = {s: compose[s] for s in services if s in compose}
            parts: render.FileSet = {
                f"compose:{s}": render.RenderedFile(json.dumps(d, sort_keys=True)) for s, d in picked.items()
            }
            parts |= {p: f for p, f in files.items() if p.startswith(prefixes)}
            return bundle_hash(parts)

        front_files = (
            "litellm/",
            f"{KEEPALIVE_DIR}/",
            "gateway/",
            f"{SECRETS_DIR}/litellm.env",
            GATEWAY_KEYS,
            TLS_DIR,
            f"{SECRETS_DIR}/server",
            f"{LINK_DIR}/",
            LINK_KEY,
        )
        model_files = ("scripts/", f"{SECRETS_DIR}/weights.env", f"{SECRETS_DIR}/model.env")
        return {"model": h(("weights", "model"), model_files), "frontdoor": h(FRONT_SERVICES, front_files)}


def render_node(settings: StackSettings, spec: NodeSpec) -> RenderedNode:
    """Render one machine: its front door (if it has one) once, its compose document once, its files."""
    front = front_door(settings, spec) if spec.runs_front_door else None
    compose = compose_dict(settings, spec, front[1] if front else None)
    files: render.FileSet = {
        "compose.yaml": render.RenderedFile(COMPOSE_HEADER + yaml.safe_dump(compose, sort_keys=False))
    }
    # every script ships too: fetch_weights.py is mounted into the weights container; the others
    # run inside the deploy commands and are here so an operator can re-run them by hand
    pip_allowed = "CODERIG_PIP_REQUIREMENTS" in engine.weights_env(settings.model)
    for name in SCRIPT_NAMES:
        if name == versions.WEIGHTS_REQUIREMENTS and not pip_allowed:
            continue  # only the image without huggingface_hub (llama.cpp preset) installs it, from this file
        files[f"scripts/{name}"] = render.RenderedFile(script_text(name), 0o755 if name.endswith(".sh") else 0o644)
    if front is not None:
        route, gateway = front
        files[LITELLM_CONFIG] = render.RenderedFile(frontdoor.render_litellm_config(route))
        files[GATEWAY_CONF] = render.RenderedFile(frontdoor.render_gateway_conf(gateway))
        if gateway.native_relays:
            for shipped in (*RELAY_FILES, *USAGE_FILES):  # the relay and its usage accounting
                files[f"{KEEPALIVE_DIR}/{shipped}"] = render.RenderedFile(script_text(shipped.rsplit("/", 1)[1]))
        files |= runtime_files(settings, KEEPALIVE_DIR)  # the relay's hold/wake path, the idle reaper
    if spec.has_link:
        files[LINK_CONF] = render.RenderedFile(link_conf(spec))
    return RenderedNode(spec, compose, files, ready_budget_seconds(settings, spec))


def render_nodes(settings: StackSettings, plan: Plan, cache_path: str | None = None) -> list[RenderedNode]:
    """Every machine of a compose-based stack, first machine first, each rendered once."""
    return [render_node(settings, spec) for spec in node_specs(settings, plan, cache_path)]


def render_node_files(settings: StackSettings, stack: str, plan: Plan) -> render.FileSet:
    """Contributor for `coderig render`: node/<n>/… for each machine of a local/ssh/aws/external stack."""
    out: render.FileSet = {}
    nodes = render_nodes(settings, plan)
    for i, node in enumerate(nodes):
        prefix = f"node/{i}-{node.spec.role}" if len(nodes) > 1 else "node"
        for path, f in node.files.items():
            out[f"{prefix}/{path}"] = f
    return out
