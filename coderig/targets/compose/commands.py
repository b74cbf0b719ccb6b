"""Commands run on a node (over SSH or locally): the exact shell strings the components run; the
SSH test runs the same strings with the `ssh` client."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence

from coderig.core import engine, versions
from coderig.core import files as render
from coderig.core.settings import SshHost, StackSettings
from coderig.frontdoor import links
from coderig.runtime.scripts import script_text
from coderig.targets.compose import idle as node_idle
from coderig.targets.compose.machines import NodeSpec
from coderig.targets.compose.rendered import RenderedNode
from coderig.targets.compose.spec import (
    HF_HOME_SUBDIR,
    KEEPALIVE_DIR,
    LINK_DIR,
    LINK_SERVICE,
    PROJECT,
    REMOTE_BUNDLE_DIR,
    SECRETS_DIR,
    TLS_DIR,
    UP_LOG,
    bundle_hash,
    gateway_url,
)


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
    if spec.runs_model:
        ports.append(engine.MODEL_PORT)
    if spec.runs_front_door:
        ports += [engine.LITELLM_PORT, settings.gateway.port]
    ports += [links.link_port(i) for i, _ in spec.replica_links]
    return ports


def preflight_env(settings: StackSettings, spec: NodeSpec, cache_device: str | None = None) -> dict[str, str]:
    t = settings.target
    preset = settings.model.spec
    gpu = t.gpu_spec
    env = {
        "CODERIG_MODE": "gpu" if spec.gpu_count and spec.runs_model else "cpu",
        "CODERIG_CACHE_PATH": spec.cache_path,
        "CODERIG_HF_HOME": host_hf_home(spec.cache_path),
        "CODERIG_WEIGHTS_BYTES": str(preset.weight_bytes if spec.runs_model else 0),
        "CODERIG_REPO": preset.hf_repo,
        "CODERIG_PORTS": ",".join(str(p) for p in node_ports(settings, spec)),
        "CODERIG_PROJECT": PROJECT,
        "CODERIG_DRIVER_MIN": versions.NVIDIA_DRIVER_MIN,
        "CODERIG_TARGET": "local" if settings.target.runs_locally else "node",
    }
    if gpu is not None and env["CODERIG_MODE"] == "gpu":
        env["CODERIG_GPU_MODEL"] = gpu.model
        env["CODERIG_GPU_COUNT"] = str(spec.gpu_count)
    if cache_device:
        env["CODERIG_CACHE_DEVICE"] = cache_device
    if node_idle.action(settings) == "sleep" and spec.runs_model:
        env["CODERIG_SLEEP_RAM_BYTES"] = str(preset.weight_bytes)  # the sleeping weights wait in host RAM
    tier = spec.kv_tier if spec.runs_model else None
    if tier is not None and tier.on:  # the host must have the RAM the tier was sized from, and the /dev/shm for it
        env["CODERIG_KV_TIER_BYTES"] = str(tier.size_bytes)
        env["CODERIG_KV_HOST_BYTES"] = str(tier.host_bytes)
    return env


def preflight_command(settings: StackSettings, spec: NodeSpec, host: SshHost | None = None) -> str:
    env = preflight_env(settings, spec, host.cacheDevice if host else None)
    return script_command("preflight.sh", env, user=host.user if host else None)


def install_command(spec: NodeSpec, user: str | None = None) -> str:
    mode = "gpu" if spec.gpu_count and spec.runs_model else "cpu"
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
        f"rm -rf {d}/compose.yaml {d}/scripts {d}/litellm {d}/gateway {d}/{KEEPALIVE_DIR} {d}/{LINK_DIR} "
        f"{d}/{SECRETS_DIR} {d}/{TLS_DIR}; "
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


def with_hash_file(files: render.FileSet, guard: str | None = None) -> render.FileSet:
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


def frontdoor_reload_command(
    services: Sequence[str], bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None
) -> str:
    """Recreate only the front services (`RenderedNode.front_services`: LiteLLM, the keepalive relay, the
    replica link, the gateway: new keys, config, certificates); the model keeps running. Until the
    first `up` has created the last of them there is nothing to recreate."""
    c = _compose(bundle_dir, user)
    names = " ".join(services)
    return (
        f'if [ -n "$({c} ps -a -q {services[-1]} 2>/dev/null)" ]; then '
        f"{c} up -d --no-deps --force-recreate {names}; else echo {services[-1]} not created yet; fi"
    )


def down_command(bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None) -> str:
    """Stop and remove the containers; the cache volume (weights) is a bind mount and stays."""
    c = _compose(bundle_dir, user)
    return f"if [ -f {shlex.quote(bundle_dir)}/compose.yaml ]; then {c} down --remove-orphans; fi"


def wait_command(node: RenderedNode, bundle_dir: str = REMOTE_BUNDLE_DIR, user: str | None = None) -> str:
    """The readiness wait of one rendered machine: its own services, within its budget."""
    return script_command("wait-ready.sh", wait_env(node, bundle_dir), user=user)


def wait_env(node: RenderedNode, bundle_dir: str = REMOTE_BUNDLE_DIR) -> dict[str, str]:
    """The readiness wait's parameters for one rendered machine (wait-ready.sh reads them)."""
    spec = node.spec
    services = [s for s in ("model", LINK_SERVICE, "litellm", "gateway") if s in node.services]
    env = {
        "CODERIG_BUNDLE_DIR": bundle_dir,
        "CODERIG_PROJECT": PROJECT,
        "CODERIG_BUDGET_SECONDS": str(node.ready_budget_s),
        "CODERIG_SERVICES": " ".join(services),
        "CODERIG_WEIGHTS_SERVICE": "weights" if spec.runs_model else "",
    }
    if "gateway" in services:
        # last, one request through the gateway: /healthz answers 200 only when LiteLLM is alive and
        # the model server behind it (the external endpoint for a front door) reports healthy
        # and, with replicas, one GET of each one's /health through its TLS link: the link carries
        env["CODERIG_GATEWAY_SERVICE"] = "gateway"
        links_health = [f"http://{links.link_listen(i)}/health" for i, _ in spec.replica_links]
        env["CODERIG_GATEWAY_URL"] = " ".join([gateway_url(spec, "/healthz"), *links_health])
    return env
