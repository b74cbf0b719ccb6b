"""What a node runs: its compose services, configs and secret files. Pure: no Pulumi, no I/O besides
reading packaged scripts.

A node is a machine (an `ssh` host, this workstation, later an AWS instance) that runs, with Docker
Compose and host networking:

  weights  (one-shot)  downloads the model into the cache volume in the Hugging Face layout
  model                vLLM (GPUs) or llama.cpp (CPU dev preset), bound to 127.0.0.1, behind an API key
  link                 with several hosts (coderig.frontdoor.links): on a replica, mutual TLS on its
                       private address in front of the model server; on the first host, one loopback
                       listener per replica that opens TLS to it
  litellm              Anthropic/Responses <-> OpenAI translation, on 127.0.0.1   (first host only)
  gateway              nginx, TLS, per-developer keys: the only public listener   (first host only)

`coderig.targets.compose.rendered.render_node` builds the services here once per machine into its
non-secret files (what `coderig render` writes, byte for byte what a node gets); `node_secret_files`
returns the 0600 files built from secrets at deploy time. The command builders
(`coderig.targets.compose.commands`) return the exact shell strings the Pulumi components run over
SSH or locally; the SSH test runs the same strings with the `ssh` client.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import tarfile
from collections.abc import Mapping
from typing import Any

from coderig import frontdoor
from coderig.core import budgets, engine, kv_tier, versions
from coderig.core import files as render
from coderig.core.compile_caches import compile_cache_env
from coderig.core.secrets import NodeSecrets
from coderig.core.settings import StackSettings
from coderig.frontdoor import links
from coderig.frontdoor.assemble import (
    MODEL_API_KEY_ENV,
    USAGE_DIR,
    GatewayPaths,
    assemble,
    direct_targets,
    from_settings,
    model_health_url,
    relay_command,
    relay_probe,
)
from coderig.frontdoor.litellm import DEFAULT_TIMEOUT_S
from coderig.targets.compose import idle as node_idle
from coderig.targets.compose.machines import NodeSpec

PROJECT = "coderig"
REMOTE_BUNDLE_DIR = "/opt/coderig"
CACHE_MOUNT = engine.CACHE_MOUNT  # the volume inside containers
HF_HOME = engine.HF_HOME  # HF_HOME inside containers (below the volume)
HF_HOME_SUBDIR = HF_HOME.removeprefix(CACHE_MOUNT).lstrip("/")  # "hf"
SECRETS_DIR = "secrets"
UP_LOG = "up.log"
TLS_DIR = "tls"

# ---------------------------------------------------------------- the compose file


def _healthcheck(test: list[str], start_period_s: int) -> dict[str, Any]:
    return {
        "test": test,
        "interval": "15s",
        "timeout": "10s",
        "retries": 5,
        "start_period": f"{start_period_s}s",
    }


def _py_probe(url: str, python: str = "python3") -> list[str]:
    return ["CMD", python, "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"]


def weights_service(settings: StackSettings, spec: NodeSpec) -> dict[str, Any]:
    """The one-shot download, in an image that already has huggingface_hub (coderig.core.versions)."""
    env = engine.weights_env(settings.model)
    shipped = ["fetch_weights.py"] + ([versions.WEIGHTS_REQUIREMENTS] if "CODERIG_PIP_REQUIREMENTS" in env else [])
    return {
        "image": engine.weights_image(settings.model),
        "network_mode": "host",
        "restart": "no",
        "entrypoint": engine.weights_entrypoint(),
        "environment": env,
        "env_file": [f"{SECRETS_DIR}/weights.env"],
        "volumes": [
            f"{spec.cache_path}:{CACHE_MOUNT}",
            *(f"./scripts/{name}:{engine.WEIGHTS_SCRIPT_DIR}/{name}:ro" for name in shipped),
        ],
    }


def model_service(settings: StackSettings, spec: NodeSpec) -> dict[str, Any]:
    preset = settings.model.spec
    start = budgets.load_budget_seconds(preset)
    base: dict[str, Any] = {
        "network_mode": "host",
        "restart": "unless-stopped",
        "depends_on": {"weights": {"condition": "service_completed_successfully"}},
        "env_file": [f"{SECRETS_DIR}/model.env"],
        "volumes": [f"{spec.cache_path}:{CACHE_MOUNT}"],
    }
    health_url = f"http://{engine.MODEL_HOST}:{engine.MODEL_PORT}/health"
    if preset.engine == "llama.cpp":
        args = engine.llamacpp_args(settings.model, engine.gguf_path(preset, CACHE_MOUNT))
        return base | {
            "image": engine.model_image(settings.model),
            "command": args,
            "environment": {"HF_HOME": HF_HOME, "LLAMA_ARG_THREADS": "-1"},
            "healthcheck": _healthcheck(["CMD", "curl", "-fsS", health_url], start),
        }
    if spec.model_layout is None:
        raise ValueError("NodeSpec: a model server needs the plan's layout (model_layout)")
    sleep_args, sleep_env = node_idle.model_overrides(settings)
    args = engine.vllm_args(settings.model, spec.model_layout, tier=kv_tier.flags(spec.kv_tier)) + sleep_args
    return base | {
        "image": engine.model_image(settings.model),
        "entrypoint": ["vllm", "serve"],
        "command": args,
        "ipc": "host",
        "ulimits": {"memlock": -1, "stack": 67108864},
        "environment": {
            "HF_HOME": HF_HOME,
            "HF_HUB_OFFLINE": "1",  # the weights step already downloaded everything
            **compile_cache_env(CACHE_MOUNT),  # compile/autotune/JIT caches survive restarts
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            **sleep_env,
        },
        "deploy": {
            "resources": {
                "reservations": {"devices": [{"driver": "nvidia", "count": spec.gpu_count, "capabilities": ["gpu"]}]}
            }
        },
        "healthcheck": _healthcheck(_py_probe(health_url), start),
    }


LITELLM_CONFIG = "litellm/config.yaml"
GATEWAY_CONF = "gateway/nginx.conf"
GATEWAY_KEYS = f"{SECRETS_DIR}/gateway-keys.conf"


def direct_chat(spec: NodeSpec) -> bool:
    """The gateway proxies /v1/chat/completions to our own (keyed) model servers itself; an external
    endpoint's URL may be https or prefixed, so a front door for one keeps it on LiteLLM."""
    return spec.runs_front_door and not spec.fronts_external


NODE_PATHS = GatewayPaths(
    keys_include=f"/etc/nginx/{GATEWAY_KEYS}",
    # to the container's output, so Docker keeps and rotates them on the host (coderig:logs)
    access_log="/dev/stdout",
    error_log="/dev/stderr",
    tls_cert=f"/etc/nginx/{TLS_DIR}/server.crt",
    tls_key=f"/etc/nginx/{SECRETS_DIR}/server.key",
)


def front_door(settings: StackSettings, spec: NodeSpec) -> tuple[frontdoor.ModelRoute, frontdoor.GatewaySpec]:
    """This machine's LiteLLM route and gateway (first machine or a front door only)."""
    health = (
        model_health_url(spec.backends[0], spec.health_path)
        if not spec.runs_model  # a front door only: ask its first backend (an endpoint, or a link)
        else f"http://{engine.MODEL_HOST}:{engine.MODEL_PORT}/health"
    )
    inputs = from_settings(
        settings,
        spec.backends,
        listen=spec.gateway_listen,
        litellm=f"{engine.MODEL_HOST}:{engine.LITELLM_PORT}",
        health_url=health,
        # OpenAI-native chat goes from nginx straight to our model servers (bench/frontdoor_bench.py:
        # LiteLLM costs ~1.4 ms CPU per streamed chunk); they require the node's model API key.
        direct_chat=direct_targets(spec.backends) if direct_chat(spec) else (),
    )
    paths = NODE_PATHS if spec.tls else dataclasses.replace(NODE_PATHS, tls_cert=None, tls_key=None)
    return assemble(inputs, paths)


def litellm_service(spec: NodeSpec) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "image": versions.LITELLM_IMAGE,
        "network_mode": "host",
        "restart": "unless-stopped",
        "command": frontdoor.litellm_args(
            "/etc/litellm/config.yaml", engine.MODEL_HOST, engine.LITELLM_PORT, spec.litellm_workers
        ),
        "env_file": [f"{SECRETS_DIR}/litellm.env"],
        "environment": dict(frontdoor.LITELLM_ENV),
        "volumes": [f"./{LITELLM_CONFIG}:/etc/litellm/config.yaml:ro"],
        "healthcheck": _healthcheck(
            _py_probe(f"http://{engine.MODEL_HOST}:{engine.LITELLM_PORT}/health/liveliness", "python"), 60
        ),
    }
    if spec.runs_model:
        svc["depends_on"] = {"model": {"condition": "service_started"}}
    return svc


GATEWAY_HEALTH_START_S = 30


def gateway_url(spec: NodeSpec, path: str) -> str:
    """The gateway as seen from the node itself (host networking): loopback unless it listens on
    one address only."""
    host, port = frontdoor.parse_listen(spec.gateway_listen)
    return f"{'https' if spec.tls else 'http'}://{frontdoor.hostport(frontdoor.local_address(host), port)}{path}"


def gateway_probe(url: str) -> list[str]:
    """A GET run inside the gateway container: nginx:*-alpine has busybox wget (no curl, no python).
    The certificate may not name 127.0.0.1 (or be self-signed): TLS is not what is checked here."""
    return ["wget", "-q", "-O", "-", "--no-check-certificate", url]


def gateway_service(spec: NodeSpec) -> dict[str, Any]:
    return {
        "image": versions.NGINX_IMAGE,
        "network_mode": "host",
        "restart": "unless-stopped",
        "command": ["nginx", "-c", "/etc/nginx/coderig/nginx.conf"],
        "depends_on": {"litellm": {"condition": "service_started"}},
        # nginx and LiteLLM answer through it (not the model: a loading model is no unhealthy gateway);
        # the whole request path is checked once by wait-ready through /healthz
        "healthcheck": _healthcheck(
            ["CMD", *gateway_probe(gateway_url(spec, "/healthz/front"))], GATEWAY_HEALTH_START_S
        ),
        # only the gateway's own secrets (not the env files of the other services)
        "volumes": [
            f"./{GATEWAY_CONF}:/etc/nginx/coderig/nginx.conf:ro",
            f"./{GATEWAY_KEYS}:/etc/nginx/{GATEWAY_KEYS}:ro",
            *(
                [
                    f"./{SECRETS_DIR}/server.key:/etc/nginx/{SECRETS_DIR}/server.key:ro",
                    f"./{TLS_DIR}:/etc/nginx/{TLS_DIR}:ro",
                ]
                if spec.tls
                else []
            ),
        ],
    }


LINK_SERVICE = "link"
LINK_DIR = "link"  # the bundle directory of its config
LINK_CONF = f"{LINK_DIR}/nginx.conf"
LINK_CERT = f"{TLS_DIR}/link.crt"
LINK_CA = f"{TLS_DIR}/link-ca.crt"
LINK_KEY = f"{SECRETS_DIR}/link.key"
LINK_PATHS = links.LinkPaths(cert=f"/etc/nginx/{LINK_CERT}", key=f"/etc/nginx/{LINK_KEY}", ca=f"/etc/nginx/{LINK_CA}")


def link_conf(spec: NodeSpec, paths: links.LinkPaths = LINK_PATHS) -> str:
    """This machine's end of its replica links (spec.has_link must hold)."""
    if spec.is_replica:
        if not spec.link_address:
            raise ValueError("NodeSpec: a replica needs its link_address")
        model = f"{engine.MODEL_HOST}:{engine.MODEL_PORT}"
        return links.render_server_conf(spec.link_address, engine.MODEL_PORT, model, paths, DEFAULT_TIMEOUT_S)
    return links.render_client_conf(spec.replica_links, engine.MODEL_PORT, paths, DEFAULT_TIMEOUT_S)


def link_service(spec: NodeSpec) -> dict[str, Any]:
    """The link's nginx (the pinned gateway image: its stream module is built in). The first
    machine's readiness wait ends with each replica's /health fetched through its link
    (commands.wait_command), so `ready` says so when a link does not carry."""
    svc: dict[str, Any] = {
        "image": versions.NGINX_IMAGE,
        "network_mode": "host",
        "restart": "unless-stopped",
        "command": ["nginx", "-c", "/etc/nginx/coderig/link.conf"],
        "volumes": [
            f"./{LINK_CONF}:/etc/nginx/coderig/link.conf:ro",
            *(f"./{f}:/etc/nginx/{f}:ro" for f in (LINK_CERT, LINK_CA, LINK_KEY)),
        ],
    }
    return svc | ({"depends_on": {"model": {"condition": "service_started"}}} if spec.is_replica else {})


KEEPALIVE_DIR = "keepalive"  # bundle directory on PYTHONPATH in the keepalive container
KEEPALIVE_MOUNT = "/opt/coderig-keepalive"


def keepalive_service(gateway: frontdoor.GatewaySpec) -> dict[str, Any] | None:
    """The SSE keepalive relay in front of the model servers for the gateway's native routes: the
    pinned LiteLLM image (it has python3) runs the shipped stdlib module from the bundle."""
    command = relay_command(gateway, usage=True)
    if not command:
        return None
    volumes = [f"./{KEEPALIVE_DIR}:{KEEPALIVE_MOUNT}:ro", f"{USAGE_DIR}:{USAGE_DIR}"]
    return {
        **node_idle.stdlib_service(command, KEEPALIVE_MOUNT, volumes),
        # every listener accepts (the relay has no endpoint of its own; /healthz asks the model through it)
        "healthcheck": _healthcheck(["CMD", *relay_probe(gateway)], 10),
    }


def compose_dict(settings: StackSettings, spec: NodeSpec, gateway: frontdoor.GatewaySpec | None) -> dict[str, Any]:
    """The compose document of one machine; `gateway` is its front door's (None on a replica)."""
    services: dict[str, Any] = {}
    if spec.runs_model:
        services["weights"] = weights_service(settings, spec)
        services["model"] = model_service(settings, spec)
    if spec.has_link:
        services[LINK_SERVICE] = link_service(spec)
    if spec.runs_front_door:
        services["litellm"] = litellm_service(spec)
        keepalive = keepalive_service(gateway) if gateway else None
        if keepalive:
            keepalive["command"] += node_idle.relay_args(settings, spec)
            services["keepalive"] = keepalive
        services |= node_idle.services(settings, spec, KEEPALIVE_DIR, KEEPALIVE_MOUNT)
        services["gateway"] = gateway_service(spec)
    # every service's log on the host, rotated (coderig/core/log_settings.py); a copy each (no YAML anchors)
    logged = {name: {**svc, "logging": settings.logs.compose_logging()} for name, svc in services.items()}
    return {"name": PROJECT, "services": logged}


# ---------------------------------------------------------------- the bundle


def _env_file(values: Mapping[str, str]) -> str:
    for k, v in values.items():
        if "\n" in v or "\r" in v:
            raise ValueError(f"{k}: a value in an env file cannot contain a newline")
    return "".join(f"{k}={v}\n" for k, v in values.items())


def link_secret_files(spec: NodeSpec, secrets: NodeSecrets) -> render.FileSet:
    """This machine's link certificate, its key (0600) and the internal CA; {} without a link."""
    if not spec.has_link:
        return {}
    if secrets.link is None:
        raise ValueError("NodeSecrets: this machine has a replica link but no link certificate")
    return {
        LINK_CERT: render.RenderedFile(secrets.link.cert, 0o644),
        LINK_CA: render.RenderedFile(secrets.link.ca_cert, 0o644),
        LINK_KEY: render.RenderedFile(secrets.link.key, 0o600),
    }


def model_secret_files(spec: NodeSpec, secrets: NodeSecrets) -> render.FileSet:
    """The model server's 0600 files alone (HF token, model API key), and a replica's link
    certificate: all a replica holds. The model half of `RenderedNode.hashes` reads the first two."""
    if not spec.runs_model:
        return {}
    hf = {"HF_TOKEN": secrets.hf_token} if secrets.hf_token else {}
    return {
        f"{SECRETS_DIR}/weights.env": render.RenderedFile(_env_file(hf), 0o600),
        f"{SECRETS_DIR}/model.env": render.RenderedFile(
            _env_file({"VLLM_API_KEY": secrets.model_api_key, "LLAMA_API_KEY": secrets.model_api_key}), 0o600
        ),
        **(link_secret_files(spec, secrets) if spec.is_replica else {}),
    }


def node_secret_files(spec: NodeSpec, secrets: NodeSecrets) -> render.FileSet:
    """The 0600 files: env files for each service, gateway keys, the TLS key."""
    files: render.FileSet = model_secret_files(spec, secrets)
    if spec.runs_front_door:
        upstream_key = secrets.external_api_key if spec.fronts_external else secrets.model_api_key
        files[f"{SECRETS_DIR}/litellm.env"] = render.RenderedFile(
            _env_file(
                {frontdoor.MASTER_KEY_ENV: secrets.litellm_master_key, MODEL_API_KEY_ENV: upstream_key or "none"}
            ),
            0o600,
        )
        model_key = secrets.model_api_key if direct_chat(spec) else None  # the gateway's direct chat path
        files[GATEWAY_KEYS] = render.RenderedFile(
            frontdoor.render_gateway_keys(dict(secrets.developer_keys), secrets.litellm_master_key, model_key), 0o600
        )
        if spec.tls:
            files[f"{TLS_DIR}/server.crt"] = render.RenderedFile(secrets.tls_cert, 0o644)
            files[f"{SECRETS_DIR}/server.key"] = render.RenderedFile(secrets.tls_key, 0o600)
        files |= link_secret_files(spec, secrets)
    return files


def bundle_hash(files: render.FileSet) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        f = files[path]
        h.update(f"{path}\0{f.mode:o}\0{len(f.content)}\0".encode())
        h.update(f.content.encode())
    return h.hexdigest()


def bundle_archive(files: render.FileSet) -> str:
    """The bundle as a base64 tar.gz, deterministic (fixed mtimes, root owner, sorted), with modes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=9) as tar:
        dirs = sorted({str(p.rsplit("/", 1)[0]) for p in files if "/" in p})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700 if d == SECRETS_DIR else 0o755
            tar.addfile(info)
        for path in sorted(files):
            data = files[path].content.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = files[path].mode
            tar.addfile(info, io.BytesIO(data))
    # gzip header carries an mtime: zero it so the archive is byte-stable
    blob = bytearray(raw.getvalue())
    blob[4:8] = b"\0\0\0\0"
    return base64.b64encode(bytes(blob)).decode()
