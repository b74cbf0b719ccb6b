"""What each machine of a compose-based stack (local, ssh, aws, external) runs: its role, its model
server's size and layout (from the stack's one plan), its backends and its replica links. Pure;
`rendered.render_node` turns a NodeSpec into services and files, once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coderig import frontdoor
from coderig.core import budgets, engine, planner
from coderig.core.kv_tier import Tier
from coderig.core.layout import Layout
from coderig.core.settings import DEFAULT_GATEWAY_PORT, StackSettings
from coderig.frontdoor import links

# Time budgets (throughputs, image pull, warm-up) live in coderig.core.budgets, shared with kube.


NodeRole = Literal["full", "replica", "frontdoor"]


def ready_budget_seconds(settings: StackSettings, spec: NodeSpec) -> int:
    """The readiness wait of one machine: the budget for its preset (coderig.core.budgets; none for a front door)."""
    return budgets.ready_budget_seconds(settings.model.spec if spec.runs_model else None)


@dataclass(frozen=True)
class NodeSpec:
    """What one machine runs. Built from settings by `node_specs`; everything below is derived."""

    role: NodeRole
    cache_path: str  # host path of the cache volume, mounted at /cache
    gpu_count: int = 0  # 0: CPU (llama.cpp)
    gateway_listen: str = f"0.0.0.0:{DEFAULT_GATEWAY_PORT}"
    # OpenAI base URLs of every model replica (LiteLLM balances across them); full/frontdoor only
    backends: tuple[str, ...] = ()
    # full: (index, private address) of each replica, reached through its TLS link (coderig.frontdoor.links)
    replica_links: tuple[tuple[int, str], ...] = ()
    link_address: str | None = None  # replica: its private address, where its link terminates TLS
    tls: bool = True
    litellm_workers: int = 1  # full/frontdoor: sized from the concurrency the plan allows
    health_path: str = "/health"  # what the gateway's /healthz asks backends[0] (vLLM's own: /health)
    model_layout: Layout | None = None  # the plan's parallel layout for its model server; None: no model
    kv_tier: Tier | None = None  # the plan's host KV tier of its model server (coderig.core.kv_tier)

    @property
    def runs_model(self) -> bool:
        """It runs the weights download and a model server (the first machine or a replica)."""
        return self.role in ("full", "replica")

    @property
    def runs_front_door(self) -> bool:
        """It runs LiteLLM and the gateway (the first machine, or a front door for an external endpoint)."""
        return self.role in ("full", "frontdoor")

    @property
    def is_replica(self) -> bool:
        """A model replica behind the first machine: model server and its link end only."""
        return self.role == "replica"

    @property
    def fronts_external(self) -> bool:
        """Only a front door: its model is an external endpoint (backends[0]), not served here (a
        front-door machine before our own replicas reaches them through links, with our model key)."""
        return self.role == "frontdoor" and not self.replica_links

    @property
    def has_link(self) -> bool:
        """A replica, or the first machine of several: model traffic between them goes over the link."""
        return self.is_replica or bool(self.replica_links)


def _backend_url(host: str, port: int = engine.MODEL_PORT) -> str:
    return f"http://{host}:{port}/v1"


EXTERNAL_LITELLM_WORKERS = 4  # the endpoint's capacity is unknown: room for ~48 streams


def node_specs(settings: StackSettings, plan: planner.Plan, cache_path: str | None = None) -> list[NodeSpec]:
    """One NodeSpec per machine of a compose-based stack (local, ssh, aws, external), first first.

    With several machines the first runs the model, LiteLLM and the gateway and balances over the
    others, which run the model only; each replica's model server is reached through its mutual-TLS
    link on its private address (`target.replica_addresses`), never in clear.
    A target that serves no model (external) gets one front door for its endpoint.
    `plan` is the stack's one plan, handed down by stacks/ and `coderig render`.
    """
    t = settings.target
    listen = f"0.0.0.0:{settings.gateway.port}"
    path = cache_path or t.node_cache_path
    if not t.serves_model:
        if t.upstream is None:
            raise ValueError(f"the {t.kind} target serves no model and names no upstream endpoint")
        endpoint, health_path = t.upstream
        front = NodeSpec(
            role="frontdoor",
            cache_path=path,
            gateway_listen=listen,
            backends=(endpoint,),
            litellm_workers=EXTERNAL_LITELLM_WORKERS,
            health_path=health_path,
        )
        return [front]
    replicas = tuple(enumerate(t.replica_addresses, start=1))
    door = t.front_door_machine is not None  # a separate front door: every GPU machine is a replica
    first = NodeSpec(
        role="frontdoor" if door else "full",
        cache_path=path,
        gpu_count=0 if door else plan.gpu_count,
        gateway_listen=listen,
        backends=(
            *(() if door else (_backend_url(engine.MODEL_HOST),)),
            *(f"http://{links.link_listen(i)}/v1" for i, _ in replicas),
        ),
        replica_links=replicas,
        litellm_workers=frontdoor.litellm_workers(plan.max_concurrent_requests),
        model_layout=plan.layout,
        kv_tier=plan.kv_tier,
    )
    others = [
        NodeSpec(
            role="replica",
            cache_path=path,
            gpu_count=plan.gpu_count,
            link_address=a,
            model_layout=plan.layout,
            kv_tier=plan.kv_tier,
        )
        for _, a in replicas
    ]
    return [first, *others]
