"""The node bundle and the node commands. Pure: no Pulumi, no I/O besides reading packaged scripts.

A node is a machine (an `ssh` host, this workstation, later an AWS instance) that runs, with Docker
Compose and host networking:

  weights  (one-shot)  downloads the model into the cache volume in the Hugging Face layout
  model                vLLM (GPUs) or llama.cpp (CPU dev preset), bound to 127.0.0.1
                       (or to the host's private address on extra replicas, behind an API key)
  litellm              Anthropic/Responses <-> OpenAI translation, on 127.0.0.1   (first host only)
  gateway              nginx, TLS, per-developer keys: the only public listener   (first host only)

`node_files` returns the non-secret files (what `coderig render` writes, byte for byte what a node
gets); `node_secret_files` returns the 0600 files built from secrets at deploy time. The command
builders return the exact shell strings the Pulumi components run over SSH or locally; the SSH test
runs the same strings with the `ssh` client.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import io
import json
import os
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from coderig import aws_plan, engine, frontdoor, planner, render, versions
from coderig.settings import SshHost, StackSettings

PROJECT = "coderig"
REMOTE_BUNDLE_DIR = "/opt/coderig"
CACHE_MOUNT = engine.CACHE_MOUNT  # the volume inside containers
HF_HOME = engine.HF_HOME  # HF_HOME inside containers (below the volume)
HF_HOME_SUBDIR = HF_HOME.removeprefix(CACHE_MOUNT).lstrip("/")  # "hf"
SECRETS_DIR = "secrets"
UP_LOG = "up.log"
TLS_DIR = "tls"

# Time budgets (throughputs, image pull, warm-up) live in coderig.planner, shared with kube.


NodeRole = Literal["full", "replica", "frontdoor"]
SCRIPT_NAMES = ("preflight.sh", "install.sh", "volume.sh", "wait-ready.sh", "fetch_weights.py")


def script_text(name: str) -> str:
    """A script shipped under coderig/scripts (package data)."""
    return (importlib.resources.files("coderig") / "scripts" / name).read_text()


def ready_budget_seconds(settings: StackSettings, spec: NodeSpec) -> int:
    """The readiness wait of one machine: planner's budget for its preset (none for a front door)."""
    if spec.role == "frontdoor":
        return planner.ready_budget_seconds(None)
    return planner.ready_budget_seconds(settings.model.spec)


# ---------------------------------------------------------------- the node's shape


@dataclass(frozen=True)
class NodeSpec:
    """What one machine runs. Built from settings by `node_spec`; everything below is derived."""

    role: NodeRole
    cache_path: str  # host path of the cache volume, mounted at /cache
    model_bind: str = engine.MODEL_HOST  # address the model server binds
    gpu_count: int = 0  # 0: CPU (llama.cpp)
    gateway_listen: str = "0.0.0.0:8443"
    # OpenAI base URLs of every model replica (LiteLLM balances across them); full/frontdoor only
    backends: tuple[str, ...] = ()
    tls: bool = True
    litellm_workers: int = 1  # full/frontdoor: sized from the concurrency the plan allows


def _backend_url(host: str, port: int = engine.MODEL_PORT) -> str:
    return f"http://{host}:{port}/v1"


AWS_CACHE_PATH = "/var/lib/coderig"
EXTERNAL_LITELLM_WORKERS = 4  # the endpoint's capacity is unknown: room for ~48 streams


def node_specs(settings: StackSettings, cache_path: str | None = None) -> list[NodeSpec]:
    """One NodeSpec per machine of a `local`, `ssh`, `aws` or `external` stack, first host first.

    With several machines the first runs the model, LiteLLM and the gateway and balances over the
    others, which run the model only, bound to their private address.
    """
    t = settings.target
    port = settings.gateway.port
    p = planner.plan_stack(settings)
    if t.kind in ("ssh", "aws"):
        if t.kind == "ssh":
            path, replicas = cache_path or t.cachePath, [h.address for h in t.hosts[1:]]
        else:
            path, replicas = cache_path or AWS_CACHE_PATH, [a for a in aws_plan.private_ips(settings)[1:] if a]
        first = NodeSpec(
            role="full",
            cache_path=path,
            gpu_count=p.gpu_count,
            gateway_listen=f"0.0.0.0:{port}",
            backends=(_backend_url(engine.MODEL_HOST), *(_backend_url(a) for a in replicas)),
            litellm_workers=frontdoor.litellm_workers(p.max_concurrent_requests * p.replicas),
        )
        return [first, *(NodeSpec(role="replica", cache_path=path, model_bind=a, gpu_count=p.gpu_count)
                         for a in replicas)]  # fmt: skip
    if t.kind == "local":
        return [
            NodeSpec(
                role="full",
                cache_path=cache_path or os.path.expanduser(t.cachePath),
                gpu_count=p.gpu_count if t.gpu else 0,
                gateway_listen=f"0.0.0.0:{port}",
                backends=(_backend_url(engine.MODEL_HOST),),
            )
        ]
    if t.kind == "external":
        return [
            NodeSpec(
                role="frontdoor",
                cache_path=cache_path or "/var/lib/coderig",
                gateway_listen=f"0.0.0.0:{port}",
                backends=(t.endpoint,),
                litellm_workers=EXTERNAL_LITELLM_WORKERS,
            )
        ]
    raise ValueError(f"coderig:target.kind: {t.kind} nodes are not rendered by the node bundle")


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
    preset = settings.model.spec
    env: dict[str, str] = {
        "HF_HOME": HF_HOME,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "CODERIG_REPO": preset.hf_repo,
        "CODERIG_REVISION": "main",
        "CODERIG_WEIGHTS_BYTES": str(preset.weight_bytes),
        "CODERIG_HF_HUB_VERSION": versions.HF_HUB_VERSION,
        "PYTHONUNBUFFERED": "1",
    }
    if preset.engine == "llama.cpp" and preset.gguf_file:
        env["CODERIG_ALLOW_PATTERNS"] = preset.gguf_file
        env["CODERIG_LINK_FILE"] = preset.gguf_file
        env["CODERIG_LINK_TO"] = engine.gguf_path(preset, CACHE_MOUNT)
    return {
        "image": versions.HF_DOWNLOADER_IMAGE,
        "network_mode": "host",
        "restart": "no",
        "command": ["python", "/coderig/fetch_weights.py"],
        "environment": env,
        "env_file": [f"{SECRETS_DIR}/weights.env"],
        "volumes": [
            f"{spec.cache_path}:{CACHE_MOUNT}",
            "./scripts/fetch_weights.py:/coderig/fetch_weights.py:ro",
        ],
    }


def model_service(settings: StackSettings, spec: NodeSpec) -> dict[str, Any]:
    preset = settings.model.spec
    start = planner.load_budget_seconds(preset)
    base: dict[str, Any] = {
        "network_mode": "host",
        "restart": "unless-stopped",
        "depends_on": {"weights": {"condition": "service_completed_successfully"}},
        "env_file": [f"{SECRETS_DIR}/model.env"],
        "volumes": [f"{spec.cache_path}:{CACHE_MOUNT}"],
    }
    health_url = f"http://{spec.model_bind}:{engine.MODEL_PORT}/health"
    if preset.engine == "llama.cpp":
        args = engine.llamacpp_args(settings.model, engine.gguf_path(preset, CACHE_MOUNT), host=spec.model_bind)
        return base | {
            "image": versions.LLAMACPP_IMAGE,
            "command": args,
            "environment": {"HF_HOME": HF_HOME, "LLAMA_ARG_THREADS": "-1"},
            "healthcheck": _healthcheck(["CMD", "curl", "-fsS", health_url], start),
        }
    args = engine.vllm_args(settings.model, spec.gpu_count, host=spec.model_bind)
    return base | {
        "image": versions.VLLM_IMAGE,
        "entrypoint": ["vllm", "serve"],
        "command": args,
        "ipc": "host",
        "ulimits": {"memlock": -1, "stack": 67108864},
        "environment": {
            "HF_HOME": HF_HOME,
            "HF_HUB_OFFLINE": "1",  # the weights step already downloaded everything
            "VLLM_CACHE_ROOT": f"{CACHE_MOUNT}/vllm",  # torch.compile cache survives restarts
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
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
MODEL_API_KEY_ENV = "CODERIG_MODEL_API_KEY"


def model_route(settings: StackSettings, spec: NodeSpec) -> frontdoor.ModelRoute:
    m = settings.model
    p = m.spec
    return frontdoor.ModelRoute(
        served_name=m.served_name,
        backends=spec.backends,
        max_tokens=m.max_output_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        chat_template_kwargs=p.chat_template_kwargs,
        # every model server (ours) requires the node's model API key; an external endpoint takes
        # its own key (`coderig:externalApiKey`) through the same variable
        api_key=f"os.environ/{MODEL_API_KEY_ENV}",
    )


def litellm_config_text(settings: StackSettings, spec: NodeSpec) -> str:
    return frontdoor.render_litellm_config(model_route(settings, spec))


def direct_chat(spec: NodeSpec) -> bool:
    """The gateway proxies /v1/chat/completions to our own (keyed) model servers itself; an external
    endpoint's URL may be https or prefixed, so a front door for one keeps it on LiteLLM."""
    return spec.role == "full"


def gateway_spec(settings: StackSettings, spec: NodeSpec) -> frontdoor.GatewaySpec:
    health = (
        f"{spec.backends[0].removesuffix('/v1')}/health"
        if spec.role == "frontdoor"
        else f"http://{engine.MODEL_HOST}:{engine.MODEL_PORT}/health"
    )
    return frontdoor.GatewaySpec(
        listen=spec.gateway_listen,
        litellm=f"{engine.MODEL_HOST}:{engine.LITELLM_PORT}",
        model_health_url=health,
        keys_include=f"/etc/nginx/{GATEWAY_KEYS}",
        tls_cert=f"/etc/nginx/{TLS_DIR}/server.crt" if spec.tls else None,
        tls_key=f"/etc/nginx/{SECRETS_DIR}/server.key" if spec.tls else None,
        rate_per_second=settings.gateway.rate_per_second,
        # OpenAI-native chat goes from nginx straight to our model servers (bench/frontdoor_bench.py:
        # LiteLLM costs ~1.4 ms CPU per streamed chunk); they require the node's model API key.
        direct_chat_backends=tuple(map(frontdoor.upstream_hostport, spec.backends)) if direct_chat(spec) else (),
        direct_chat_authorization=direct_chat(spec),
    )


def litellm_service(spec: NodeSpec) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "image": versions.LITELLM_IMAGE,
        "network_mode": "host",
        "restart": "unless-stopped",
        "command": frontdoor.litellm_args(
            "/etc/litellm/config.yaml", engine.MODEL_HOST, engine.LITELLM_PORT, spec.litellm_workers
        ),
        "env_file": [f"{SECRETS_DIR}/litellm.env"],
        "environment": {"LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"},
        "volumes": [f"./{LITELLM_CONFIG}:/etc/litellm/config.yaml:ro"],
        "healthcheck": _healthcheck(
            _py_probe(f"http://{engine.MODEL_HOST}:{engine.LITELLM_PORT}/health/liveliness", "python"), 60
        ),
    }
    if spec.role == "full":
        svc["depends_on"] = {"model": {"condition": "service_started"}}
    return svc


GATEWAY_HEALTH_START_S = 30


def gateway_url(spec: NodeSpec, path: str) -> str:
    """The gateway as seen from the node itself (host networking): loopback unless it listens on
    one address only."""
    host, _, port = spec.gateway_listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "*", "[::]") else host  # noqa: S104 - a wildcard listen, not a bind
    return f"{'https' if spec.tls else 'http'}://{host}:{port}{path}"


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
        # listening with its certificate and keys loaded (answered by nginx itself, never forwarded);
        # the whole request path is checked once by wait-ready through /healthz
        "healthcheck": _healthcheck(["CMD", *gateway_probe(gateway_url(spec, "/api/hello"))], GATEWAY_HEALTH_START_S),
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


def compose_dict(settings: StackSettings, spec: NodeSpec) -> dict[str, Any]:
    services: dict[str, Any] = {}
    if spec.role in ("full", "replica"):
        services["weights"] = weights_service(settings, spec)
        services["model"] = model_service(settings, spec)
    if spec.role in ("full", "frontdoor"):
        services["litellm"] = litellm_service(spec)
        services["gateway"] = gateway_service(spec)
    return {"name": PROJECT, "services": services}


def compose_text(settings: StackSettings, spec: NodeSpec) -> str:
    return "# Rendered by coderig: the node stack. Secrets live in ./secrets (0600), not here.\n" + yaml.safe_dump(
        compose_dict(settings, spec), sort_keys=False
    )


# ---------------------------------------------------------------- the bundle


def node_files(settings: StackSettings, spec: NodeSpec) -> render.Bundle:
    """Every non-secret file of one node, relative to the bundle directory."""
    files: render.Bundle = {"compose.yaml": render.RenderedFile(compose_text(settings, spec))}
    # every script ships too: fetch_weights.py is mounted into the weights container; the others
    # run inside the deploy commands and are here so an operator can re-run them by hand
    for name in SCRIPT_NAMES:
        files[f"scripts/{name}"] = render.RenderedFile(script_text(name), 0o755 if name.endswith(".sh") else 0o644)
    if spec.role in ("full", "frontdoor"):
        files[LITELLM_CONFIG] = render.RenderedFile(litellm_config_text(settings, spec))
        files[GATEWAY_CONF] = render.RenderedFile(frontdoor.render_gateway_conf(gateway_spec(settings, spec)))
    return files


@dataclass(frozen=True)
class NodeSecrets:
    """Secret values a node needs; plain strings here, Pulumi secrets in the components."""

    model_api_key: str
    litellm_master_key: str = ""
    developer_keys: Mapping[str, str] = field(default_factory=dict)
    hf_token: str = ""
    tls_cert: str = ""  # public, but shipped with the key
    tls_key: str = ""
    external_api_key: str = ""


def _env_file(values: Mapping[str, str]) -> str:
    for k, v in values.items():
        if "\n" in v or "\r" in v:
            raise ValueError(f"{k}: a value in an env file cannot contain a newline")
    return "".join(f"{k}={v}\n" for k, v in values.items())


def node_secret_files(spec: NodeSpec, secrets: NodeSecrets) -> render.Bundle:
    """The 0600 files: env files for each service, gateway keys, the TLS key."""
    hf = {"HF_TOKEN": secrets.hf_token} if secrets.hf_token else {}
    files: render.Bundle = {}
    if spec.role in ("full", "replica"):
        files[f"{SECRETS_DIR}/weights.env"] = render.RenderedFile(_env_file(hf), 0o600)
        files[f"{SECRETS_DIR}/model.env"] = render.RenderedFile(
            _env_file({"VLLM_API_KEY": secrets.model_api_key, "LLAMA_API_KEY": secrets.model_api_key}), 0o600
        )
    if spec.role in ("full", "frontdoor"):
        upstream_key = secrets.external_api_key if spec.role == "frontdoor" else secrets.model_api_key
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
    return files


def bundle_hash(files: render.Bundle) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        f = files[path]
        h.update(f"{path}\0{f.mode:o}\0{len(f.content)}\0".encode())
        h.update(f.content.encode())
    return h.hexdigest()


def service_hashes(settings: StackSettings, spec: NodeSpec, secret_files: render.Bundle) -> dict[str, str]:
    """Two hashes: `model` (weights + model server definitions and their env) and `frontdoor`
    (LiteLLM + gateway definitions, configs, keys, TLS). A new developer key changes only
    `frontdoor`, so it restarts the gateway, never the model server."""
    compose = compose_dict(settings, spec)["services"]
    files = node_files(settings, spec) | secret_files

    def h(services: tuple[str, ...], prefixes: tuple[str, ...]) -> str:
        picked = {s: compose[s] for s in services if s in compose}
        parts: render.Bundle = {
            f"compose:{s}": render.RenderedFile(json.dumps(d, sort_keys=True)) for s, d in picked.items()
        }
        parts |= {p: f for p, f in files.items() if p.startswith(prefixes)}
        return bundle_hash(parts)

    return {
        "model": h(("weights", "model"), ("scripts/", f"{SECRETS_DIR}/weights.env", f"{SECRETS_DIR}/model.env")),
        "frontdoor": h(
            ("litellm", "gateway"),
            ("litellm/", "gateway/", f"{SECRETS_DIR}/litellm.env", GATEWAY_KEYS, TLS_DIR, f"{SECRETS_DIR}/server"),
        ),
    }


def bundle_archive(files: render.Bundle) -> str:
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


# ---------------------------------------------------------------- commands run on a node


def _sudo(user: str | None) -> str:
    return "" if user in (None, "root") else "sudo -n "


def script_command(name: str, env: Mapping[str, str], *, user: str | None = None) -> str:
    """Run a packaged script on the node: the script text travels inside the command string,
    so nothing must be copied first; parameters are environment assignments."""
    assigns = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(env.items()))
    label = name.removesuffix(".sh")
    return f"{_sudo(user)}env {assigns}bash -c {shlex.quote(script_text(name))} {label}"


def host_hf_home(cache_path: str) -> str:
    return f"{cache_path.rstrip('/')}/{HF_HOME_SUBDIR}"


def node_ports(settings: StackSettings, spec: NodeSpec) -> list[int]:
    ports = []
    if spec.role in ("full", "replica"):
        ports.append(engine.MODEL_PORT)
    if spec.role in ("full", "frontdoor"):
        ports += [engine.LITELLM_PORT, settings.gateway.port]
    return ports


def runs_locally(settings: StackSettings) -> bool:
    t = settings.target
    return t.kind == "local" or (t.kind == "external" and t.frontDoor == "local")


def preflight_env(settings: StackSettings, spec: NodeSpec, cache_device: str | None = None) -> dict[str, str]:
    t = settings.target
    preset = settings.model.spec
    gpu = getattr(t, "gpu", None)
    env = {
        "CODERIG_MODE": "gpu" if spec.gpu_count and spec.role != "frontdoor" else "cpu",
        "CODERIG_CACHE_PATH": spec.cache_path,
        "CODERIG_HF_HOME": host_hf_home(spec.cache_path),
        "CODERIG_WEIGHTS_BYTES": str(preset.weight_bytes if spec.role != "frontdoor" else 0),
        "CODERIG_REPO": preset.hf_repo,
        "CODERIG_PORTS": ",".join(str(p) for p in node_ports(settings, spec)),
        "CODERIG_PROJECT": PROJECT,
        "CODERIG_DRIVER_MIN": versions.NVIDIA_DRIVER_MIN,
        "CODERIG_TARGET": "local" if runs_locally(settings) else "node",
    }
    if gpu is not None and env["CODERIG_MODE"] == "gpu":
        env["CODERIG_GPU_MODEL"] = gpu.model
        env["CODERIG_GPU_COUNT"] = str(spec.gpu_count)
    if cache_device:
        env["CODERIG_CACHE_DEVICE"] = cache_device
    return env


def preflight_command(settings: StackSettings, spec: NodeSpec, host: SshHost | None = None) -> str:
    env = preflight_env(settings, spec, host.cacheDevice if host else None)
    return script_command("preflight.sh", env, user=host.user if host else None)


def install_command(spec: NodeSpec, user: str | None = None) -> str:
    mode = "gpu" if spec.gpu_count and spec.role != "frontdoor" else "cpu"
    return script_command("install.sh", {"CODERIG_MODE": mode}, user=user)


def volume_command(spec: NodeSpec, cache_device: str | None = None, user: str | None = None) -> str:
    env = {"CODERIG_CACHE_PATH": spec.cache_path}
    if cache_device:
        env["CODERIG_CACHE_DEVICE"] = cache_device
    return script_command("volume.sh", env, user=user)


def copy_command(bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None) -> str:
    """Unpack the base64 tar.gz given on stdin into the bundle directory (modes kept: 0600 secrets).
    Files of an earlier bundle are replaced; up.log is kept. Runs under bash whatever the login shell."""
    d = shlex.quote(bundle_dir)
    script = (
        "set -euo pipefail; umask 077; "
        f"mkdir -p {d}; tmp=$(mktemp -d {d}/.incoming.XXXXXX); "
        'base64 -d | tar -xzpf - --no-same-owner -C "$tmp"; '
        f"rm -rf {d}/compose.yaml {d}/scripts {d}/litellm {d}/gateway {d}/{SECRETS_DIR} {d}/{TLS_DIR}; "
        f'cp -a "$tmp"/. {d}/; rm -rf "$tmp"; chmod 0755 {d}; '
        f"echo bundle unpacked in {bundle_dir}"
    )
    return f"{_sudo(user)}bash -c {shlex.quote(script)}"


BUNDLE_HASH_FILE = ".bundle-hash"


def bundle_guard(content_hash: str, deployment: Sequence[str] = ()) -> str:
    """What `.bundle-hash` holds: the content hash, or (on a machine that can be replaced, e.g. an
    AWS instance) a hash of it and the machine's identity. A replaced machine gets the same content
    again; the old bundle's delete must then find another value on disk and keep the new secrets."""
    if not deployment:
        return content_hash
    return hashlib.sha256("\0".join((content_hash, *deployment)).encode()).hexdigest()


def with_hash_file(files: render.Bundle, guard: str | None = None) -> render.Bundle:
    """The files plus `.bundle-hash` (default: the content hash), which tells whose bundle is on disk."""
    return files | {BUNDLE_HASH_FILE: render.RenderedFile((guard or bundle_hash(files)) + "\n")}


def remove_secrets_command(bundle_hash_hex: str, bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None) -> str:
    """On delete: the node keeps no key material (weights and non-secret files stay). Guarded by the
    bundle hash: when a new bundle replaced this one (created first), the old delete finds another
    hash on disk and leaves the new secrets alone."""
    d = shlex.quote(bundle_dir)
    script = (
        f'if [ "$(cat {d}/{BUNDLE_HASH_FILE} 2>/dev/null)" = {shlex.quote(bundle_hash_hex)} ]; then '
        f"rm -rf {d}/{SECRETS_DIR} && echo removed secrets; else echo a newer bundle is in place; fi"
    )
    return f"{_sudo(user)}bash -c {shlex.quote(script)}"


def _compose(bundle_dir: str, user: str | None) -> str:
    return f"{_sudo(user)}docker compose --project-directory {shlex.quote(bundle_dir)} -p {PROJECT}"


def up_command(bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None) -> str:
    """Start the stack in the background (pulls and downloads take long); wait-ready follows it."""
    log = shlex.quote(f"{bundle_dir}/{UP_LOG}")
    inner = f"{_compose(bundle_dir, None)} up -d --remove-orphans; echo compose-up-exit=$?"
    # setsid (Linux) detaches from the command's session; nohup alone where it is missing (macOS)
    script = f"rm -f {log}; ($(command -v setsid || true) nohup bash -c {shlex.quote(inner)} > {log} 2>&1 &)"
    return (
        f"{_sudo(user)}bash -c {shlex.quote(script)}"
        f" && echo started docker compose up in the background, log {bundle_dir}/{UP_LOG}"
    )


def frontdoor_reload_command(bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None) -> str:
    """Recreate only LiteLLM and the gateway (new keys, config, certificate); the model keeps running.
    Until the first `up` has created them there is nothing to recreate."""
    c = _compose(bundle_dir, user)
    return (
        f'if [ -n "$({c} ps -a -q gateway 2>/dev/null)" ]; then '
        f"{c} up -d --no-deps --force-recreate litellm gateway; else echo gateway not created yet; fi"
    )


def down_command(bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None) -> str:
    """Stop and remove the containers; the cache volume (weights) is a bind mount and stays."""
    c = _compose(bundle_dir, user)
    return f"if [ -f {shlex.quote(bundle_dir)}/compose.yaml ]; then {c} down --remove-orphans; fi"


def wait_command(
    settings: StackSettings, spec: NodeSpec, bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None
) -> str:
    services = [s for s in ("model", "litellm", "gateway") if s in compose_dict(settings, spec)["services"]]
    env = {
        "CODERIG_BUNDLE_DIR": bundle_dir,
        "CODERIG_PROJECT": PROJECT,
        "CODERIG_BUDGET_SECONDS": str(ready_budget_seconds(settings, spec)),
        "CODERIG_SERVICES": " ".join(services),
        "CODERIG_WEIGHTS_SERVICE": "weights" if spec.role != "frontdoor" else "",
    }
    if "gateway" in services:
        # last, one request through the gateway: /healthz answers 200 only when LiteLLM is alive and
        # the model server behind it (the external endpoint for a front door) reports healthy
        env["CODERIG_GATEWAY_SERVICE"] = "gateway"
        env["CODERIG_GATEWAY_URL"] = gateway_url(spec, "/healthz")
    return script_command("wait-ready.sh", env, user=user)


# ---------------------------------------------------------------- SSH helpers


def parse_host_key(host_key: str) -> tuple[str, str]:
    """'ssh-ed25519 AAAA… [comment]' -> ('ssh-ed25519', 'AAAA…'); the form pulumi-command's
    `connection.hostKey` and OpenSSH's known_hosts take."""
    parts = host_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError(f"host key {host_key[:40]!r}: expected 'ssh-ed25519 AAAA…' (ssh-keyscan output)")
    try:
        base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ValueError(f"host key {host_key[:40]!r}: the key is not base64") from None
    return parts[0], parts[1]


def known_hosts_line(address: str, port: int, host_key: str) -> str:
    kind, key = parse_host_key(host_key)
    name = address if port == 22 else f"[{address}]:{port}"
    return f"{name} {kind} {key}\n"


def pinned_host_key(host: SshHost, insecure_skip: bool, where: str) -> str | None:
    """The host key to pin, or None when the stack knowingly skips the check. Raises when missing."""
    if host.hostKey:
        kind, key = parse_host_key(host.hostKey)
        return f"{kind} {key}"
    if insecure_skip:
        return None
    raise ValueError(
        f"{where}.hostKey is missing for {host.address}: refusing to connect to an unpinned host. "
        f"Pin it with the output of `ssh-keyscan -t ed25519 -p {host.port} {host.address}`, "
        "or set insecureSkipHostKeyCheck: true knowingly"
    )


# ---------------------------------------------------------------- `coderig render`


def render_node_files(settings: StackSettings, stack: str) -> render.Bundle:
    """Contributor for `coderig render`: node/<n>/… for each machine of a local/ssh/aws/external stack."""
    if settings.target.kind not in ("local", "ssh", "aws", "external"):
        return {}
    out: render.Bundle = {}
    specs = node_specs(settings)
    for i, spec in enumerate(specs):
        prefix = f"node/{i}-{spec.role}" if len(specs) > 1 else "node"
        for path, f in node_files(settings, spec).items():
            out[f"{prefix}/{path}"] = f
    return out
