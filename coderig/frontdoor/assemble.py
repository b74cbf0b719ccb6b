"""The one assembly of a front door (LiteLLM route + nginx gateway spec) for every target: compose
nodes, the Kubernetes front-door pod and `coderig frontdoor run` all call `assemble`; what differs
between them is only where the gateway's files live (`GatewayPaths`) and the inputs they pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coderig.core import engine, naming
from coderig.core.settings import StackSettings
from coderig.frontdoor.litellm import DEFAULT_TIMEOUT_S, ModelRoute
from coderig.frontdoor.nginx import GatewaySpec, direct_chat_backend, hostport, local_address, parse_listen

# every model server coderig runs requires its API key; LiteLLM reads it from this variable (an
# external endpoint's own key, `coderig:externalApiKey`, travels the same way)
MODEL_API_KEY_ENV = "CODERIG_MODEL_API_KEY"


@dataclass(frozen=True)
class GatewayPaths:
    """Where the gateway's files are, in its own file system (a container, a pod, a temporary prefix)."""

    keys_include: str
    tls_cert: str | None = None  # both None: plain HTTP (loopback only; callers enforce)
    tls_key: str | None = None
    pid_path: str = "/var/run/nginx.pid"
    error_log: str = "/var/log/nginx/error.log"
    access_log: str = "/var/log/nginx/access.log"
    temp_dir: str | None = None


@dataclass(frozen=True)
class FrontDoorInputs:
    """What a front door serves and where it listens, whatever runs it."""

    served_name: str
    backends: tuple[str, ...]  # OpenAI base URLs (…/v1) of the model replicas
    max_tokens: int
    listen: str
    litellm: str  # host:port LiteLLM listens on
    health_url: str  # the model server's health endpoint the gateway's /healthz asks
    rate_per_second: int
    rate_burst: int = 100
    aliases: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    api_key: str = "none"  # what LiteLLM sends upstream ("os.environ/VAR" for a key)
    # /v1/chat/completions straight from nginx to these model servers (host:port); () -> via LiteLLM
    direct_chat: tuple[str, ...] = ()
    keyed_direct_chat: bool = False  # the direct path sends the model API key (vllm --api-key)
    # routes (frontdoor.native) the model servers in `direct_chat` serve themselves; () -> LiteLLM
    native_routes: tuple[str, ...] = ()
    relay_host: str = engine.MODEL_HOST  # the SSE keepalive relay's listeners: relay_port, +1, …
    relay_port: int = engine.KEEPALIVE_PORT
    timeout_s: int = DEFAULT_TIMEOUT_S
    litellm_timeout_s: int = DEFAULT_TIMEOUT_S
    gate_retry_after_s: int | None = None  # 503 + Retry-After while the model is at zero or loading
    allowed_cidrs: tuple[str, ...] = ()  # coderig:gateway.allowedCidrs; () -> every address
    daily_tokens: tuple[tuple[str, int], ...] = ()  # coderig:developers[].dailyTokens (frontdoor.budget)
    budget_check: str = ""  # host:port of the relay's usage listener, which keeps the day's counts


def from_settings(
    settings: StackSettings,
    backends: Sequence[str],
    *,
    listen: str,
    litellm: str,
    health_url: str,
    direct_chat: Sequence[str] = (),
    gate_retry_after_s: int | None = None,
) -> FrontDoorInputs:
    """A deployed stack's front door: the served model, its preset's defaults, the gateway rate."""
    m = settings.model
    p = m.spec
    return FrontDoorInputs(
        served_name=m.served_name,
        aliases=naming.aliases(m.former_name),
        backends=tuple(backends),
        max_tokens=m.max_output_tokens,
        listen=listen,
        litellm=litellm,
        health_url=health_url,
        rate_per_second=settings.gateway.rate_per_second,
        allowed_cidrs=tuple(settings.gateway.allowedCidrs),
        temperature=p.temperature,
        top_p=p.top_p,
        chat_template_kwargs=p.chat_template_kwargs,
        api_key=f"os.environ/{MODEL_API_KEY_ENV}",
        direct_chat=tuple(direct_chat),
        keyed_direct_chat=bool(direct_chat),
        # our own model servers (direct_chat) serve their engine's APIs natively; an external
        # endpoint's are unknown, so it keeps everything on LiteLLM
        native_routes=engine.NATIVE_APIS.get(p.engine, ()) if direct_chat else (),
        gate_retry_after_s=gate_retry_after_s,
        daily_tokens=tuple(sorted(settings.developers.budgets.items())),
        budget_check=METRICS_LISTEN,
    )


def model_health_url(backend: str, health_path: str) -> str:
    """What the gateway's /healthz asks: `health_path` on the backend's URL without its trailing /v1
    ('https://llm.internal/v1', '/v1/models' -> 'https://llm.internal/v1/models')."""
    base = backend.rstrip("/").removesuffix("/v1")
    return base + "/" + health_path.lstrip("/")


def direct_targets(backends: Sequence[str]) -> tuple[str, ...]:
    """The host:port of each backend nginx can proxy /v1/chat/completions to as is; () when any cannot
    (https or a path prefix: LiteLLM handles those)."""
    direct = [direct_chat_backend(b) for b in backends]
    return () if None in direct else tuple(d for d in direct if d)


def relays(inputs: FrontDoorInputs) -> tuple[str, ...]:
    """host:port of the keepalive relay listener in front of each direct model server: the one hop to
    our own model servers on every path (chat, native routes, LiteLLM's), so holding a request while
    the model wakes, and counting it, happen in one place."""
    if not inputs.direct_chat:
        return ()
    return tuple(f"{inputs.relay_host}:{inputs.relay_port + i}" for i in range(len(inputs.direct_chat)))


def gateway_health_url(inputs: FrontDoorInputs) -> str:
    """What /healthz asks: the model server's health through its keepalive relay when the model
    server has one (so a dead relay reports unready like a dead model), else the model server."""
    via = dict(zip(inputs.direct_chat, relays(inputs), strict=False))
    scheme, sep, rest = inputs.health_url.partition("://")
    target, slash, path = rest.partition("/")
    if scheme != "http" or target not in via:
        return inputs.health_url
    return f"{scheme}{sep}{via[target]}{slash}{path}"


RELAY_MODULE = "coderig.runtime.sse_keepalive"
RELAY_FILE = "coderig/runtime/sse_keepalive.py"  # below the directory on PYTHONPATH (namespace packages)
# what the relay imports and so ships with it wherever it runs (its HTTP framing)
RELAY_FILES = (RELAY_FILE, "coderig/runtime/http_framing.py")
RELAY_INTERVAL_S = 15
# the relay's usage accounting (coderig.runtime.usage*): shipped next to it, the record on a host
# directory (survives the container and a reboot), the metrics listener on the machine's loopback
USAGE_FILES = tuple(
    f"coderig/runtime/{m}.py" for m in ("usage", "usage_args", "usage_budget", "usage_record", "usage_server")
)
USAGE_DIR = "/var/lib/coderig/usage"
USAGE_RECORD = f"{USAGE_DIR}/usage.json"
METRICS_LISTEN = "127.0.0.1:9300"


def relayed_route(route: ModelRoute, relay_listens: tuple[str, ...]) -> ModelRoute:
    """LiteLLM reaching our model servers through the relay (its api_base is each relay listener),
    with the gateway's developer header forwarded so the relay counts the claude-* fallback too;
    `route` as is when there is no relay (an external endpoint)."""
    if not relay_listens:
        return route
    return dataclasses.replace(route, backends=tuple(f"http://{r}/v1" for r in relay_listens), forward_developer=True)


def relay_command(
    spec: GatewaySpec, python: str = "python3", interval: float = RELAY_INTERVAL_S, usage: bool = False
) -> list[str]:
    """The SSE keepalive relay's command line for this gateway ([] when it proxies to no model server
    of its own); `usage`: with the usage record, the metrics listener and the gateway probe."""
    if not spec.native_relays:
        return []
    routes: list[str] = []
    for listen, target in zip(spec.native_relays, spec.direct_chat_backends, strict=True):
        routes += ["--route", f"{listen}={target}"]
    host, port = parse_listen(spec.listen)
    gateway = hostport(local_address(host), port)
    accounting = ["--usage-file", USAGE_RECORD, "--metrics", METRICS_LISTEN, "--gateway", gateway] if usage else []
    # the silence bound is the gateway's read timeout: keepalives must not keep a wedged model open
    silence = ["--silence", str(spec.timeout_s)]
    return [python, "-m", RELAY_MODULE, *routes, "--interval", str(interval), *silence, *accounting]


def relay_probe(spec: GatewaySpec, python: str = "python3") -> list[str]:
    """A health probe of the relay: every listener accepts a connection (the relay has no endpoint of
    its own; the gateway's /healthz asks the model server through it)."""
    pairs = [(host, int(port)) for host, _, port in (listen.rpartition(":") for listen in spec.native_relays)]
    return [python, "-c", f"import socket\nfor a in {pairs!r}: socket.create_connection(a, timeout=5).close()"]


def assemble(inputs: FrontDoorInputs, paths: GatewayPaths, **gateway: Any) -> tuple[ModelRoute, GatewaySpec]:
    """The LiteLLM route and the gateway spec of one front door; `gateway` sets GatewaySpec's process
    knobs (worker_processes, daemon, …)."""
    relayed = relays(inputs)
    if inputs.daily_tokens and not relayed:
        raise ValueError("daily token budgets need the relay (its usage record): this front door has none")
    route = ModelRoute(
        served_name=inputs.served_name,
        backends=inputs.backends,
        max_tokens=inputs.max_tokens,
        temperature=inputs.temperature,
        top_p=inputs.top_p,
        chat_template_kwargs=inputs.chat_template_kwargs,
        aliases=inputs.aliases,
        api_key=inputs.api_key,
        timeout_s=inputs.litellm_timeout_s,
    )
    route = relayed_route(route, relayed)
    spec = GatewaySpec(
        listen=inputs.listen,
        litellm=inputs.litellm,
        model_health_url=gateway_health_url(inputs),
        keys_include=paths.keys_include,
        tls_cert=paths.tls_cert,
        tls_key=paths.tls_key,
        pid_path=paths.pid_path,
        error_log=paths.error_log,
        access_log=paths.access_log,
        temp_dir=paths.temp_dir,
        timeout_s=inputs.timeout_s,
        rate_per_second=inputs.rate_per_second,
        rate_burst=inputs.rate_burst,
        direct_chat_backends=inputs.direct_chat,
        direct_chat_authorization=inputs.keyed_direct_chat,
        native_routes=inputs.native_routes,
        native_relays=relayed,
        model_gate_retry_after_s=inputs.gate_retry_after_s,
        allowed_cidrs=inputs.allowed_cidrs,
        daily_tokens=inputs.daily_tokens,
        budget_check=inputs.budget_check,
        **gateway,
    )
    return route, spec
