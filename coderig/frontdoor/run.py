"""`coderig frontdoor run`: the front door (nginx gateway + LiteLLM) as local child processes.

Puts the same gateway and LiteLLM configs a GPU node runs in front of any OpenAI-compatible
endpoint, with no containers, until SIGINT/SIGTERM. SIGHUP re-reads --keys-file (add or revoke
a developer without a restart). The integration tests use it too.

- nginx: the distribution's binary, run as ``nginx -p <temp prefix> -c <conf>`` in the foreground
  (not the system service). Override the binary with ``CODERIG_NGINX``.
- LiteLLM: kept out of the project's virtualenv (its pins fight Pulumi's grpcio/protobuf). It
  lives in a dedicated venv under ``$XDG_CACHE_HOME/coderig/litellm-<version>`` created on first
  use with ``uv`` (or ``python -m venv`` + pip when uv is missing). Override the executable
  with ``CODERIG_LITELLM``.
- TLS unless ``--plain-http`` (loopback listen addresses only): a CA kept in the state dir
  (reused across runs, so clients trust it once) signs a fresh server certificate per run.
- It heals itself: a child that exits (the relay, LiteLLM, nginx) is stopped with its whole process
  group (workers included) and started again on the same address, with a backoff
  (coderig.frontdoor.supervise); /healthz answers 503 meanwhile.
- Nothing outlives it: nginx and LiteLLM get SIGTERM when it dies, however it dies (Linux:
  PR_SET_PDEATHSIG), and the keys include (every developer key and LiteLLM's master key) is a
  nameless file nginx reads through /proc, gone with the process. Prefixes left by a run that
  was killed are removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from coderig import frontdoor
from coderig.core.errors import UserError
from coderig.core.files import read_json_file
from coderig.core.versions import LITELLM_VERSION
from coderig.frontdoor.assemble import (
    FrontDoorInputs,
    GatewayPaths,
    assemble,
    direct_targets,
    model_health_url,
    relay_command,
)
from coderig.frontdoor.lifecycle import PREFIX_NAME, RUNNER_PID, KeysInclude, clean_stale_prefixes, usage_flags
from coderig.frontdoor.local_tls import ensure_tls
from coderig.frontdoor.nginx import hostport, local_address
from coderig.frontdoor.nginx_hardening import worker_connections
from coderig.frontdoor.supervise import Child, Supervisor

READY_LINE = "coderig frontdoor: ready"
LITELLM_EXTRA_REQUIREMENTS = ("opentelemetry-sdk==1.45.2",)


# ---------------------------------------------------------------- pure helpers


def listen_error(listen: str, plain_http: bool) -> str | None:
    """Why this listen address cannot be used (None when it can)."""
    try:
        host, _port = frontdoor.parse_listen(listen)
    except ValueError as exc:
        return str(exc)
    if plain_http and not frontdoor.is_loopback(host):
        return (
            f"--plain-http is only allowed on a loopback address (127.0.0.1, ::1, localhost); "
            f"{host!r} would send developer keys and source code unencrypted. Drop --plain-http to "
            "serve TLS with a generated CA."
        )
    return None


def parse_keys(text: str, source: str) -> dict[str, str]:
    """The --keys-file JSON: {"developer": "token"}; errors name the file."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not JSON ({exc})") from None
    return keys_of(data, source)


def keys_of(data: Any, source: str) -> dict[str, str]:
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f'{source}: must be a JSON object {{"developer": "token", ...}}')
    frontdoor.validate_keys(data)
    return dict(data)


def read_keys(path: Path) -> dict[str, str]:
    """--keys-file: refused when others can read it (it holds every developer's key)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"{path}: mode {mode:04o} lets other users read every developer's key; run: chmod 600 {path}")
    return keys_of(read_json_file(path), str(path))


def litellm_env(master_key: str, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(frontdoor.LITELLM_ENV)
    env[frontdoor.MASTER_KEY_ENV] = master_key
    env["LITELLM_LOG"] = base.get("LITELLM_LOG", frontdoor.LITELLM_ENV["LITELLM_LOG"])
    return env


def litellm_command(executable: str, config: Path, port: int, workers: int) -> list[str]:
    return [executable, *frontdoor.litellm_args(str(config), "127.0.0.1", port, workers)]


def litellm_requirements(version: str) -> list[str]:
    """What the LiteLLM venv holds. opentelemetry-sdk: without it LiteLLM retries a failing
    import of its OTel plumbing on every request (~3 ms CPU each, ~12% of a busy worker)."""
    return [f"litellm[proxy]=={version}", *LITELLM_EXTRA_REQUIREMENTS]


# ---------------------------------------------------------------- side effects


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coderig"


def ensure_litellm(version: str = LITELLM_VERSION) -> str:
    """Path of the pinned LiteLLM proxy executable, installing it in its own venv if needed."""
    override = os.environ.get("CODERIG_LITELLM")
    if override:
        return override
    venv = cache_dir() / f"litellm-{version}"
    exe, done = venv / "bin" / "litellm", venv / ".coderig-complete"
    requirements = litellm_requirements(version)
    if exe.exists() and done.exists() and done.read_text().split() == requirements:
        return str(exe)
    print(f"coderig frontdoor: installing {' '.join(requirements)} into {venv} (once)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", "3.11", str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "-p", str(venv / "bin" / "python"), *requirements], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *requirements], check=True)
    done.write_text("\n".join(requirements) + "\n")
    return str(exe)


def find_nginx() -> str:
    found = (
        os.environ.get("CODERIG_NGINX")
        or shutil.which("nginx")
        or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    )
    if not found:
        raise RuntimeError("nginx not found: install it (Debian/Ubuntu: apt-get install nginx) or set CODERIG_NGINX")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports (the relay listens on port, port+1, …)."""
    for _ in range(50):
        first = free_port()
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def accepts(host: str, port: int) -> bool:
    """Something accepts connections on host:port (a wildcard address is tried on loopback)."""
    with contextlib.suppress(OSError), socket.create_connection((local_address(host), port), timeout=1):
        return True
    return False


def http_ok(url: str) -> bool:
    """One GET of a loopback URL we built answers 200."""
    with (
        contextlib.suppress(urllib.error.URLError, OSError),
        urllib.request.urlopen(url, timeout=2) as resp,  # noqa: S310 - a loopback URL we built
    ):
        return bool(resp.status == 200)
    return False


def reload_keys(keys_file: Path, keys_conf: KeysInclude, master_key: str, nginx: Child) -> dict[str, str] | None:
    """SIGHUP: re-read --keys-file and reload nginx, so adding or revoking a developer needs no
    restart. A bad file keeps the keys in force and says why."""
    try:
        keys = read_keys(keys_file)
    except (OSError, ValueError, UserError) as exc:
        print(f"coderig frontdoor: keys NOT reloaded: {exc}", file=sys.stderr, flush=True)
        return None
    keys_conf.replace(frontdoor.render_gateway_keys(keys, master_key))
    if nginx.proc is not None and nginx.proc.poll() is None:  # a restarting nginx reads the new keys anyway
        os.kill(nginx.proc.pid, signal.SIGHUP)
    print(f"coderig frontdoor: keys reloaded ({len(keys)} developer key(s))", flush=True)
    return keys


@dataclass
class RunOptions:
    backends: list[str]
    model: str
    listen: str
    keys_file: Path
    plain_http: bool
    state_dir: Path
    aliases: list[str]
    max_tokens: int
    timeout_s: int
    litellm_timeout_s: int
    litellm_workers: int
    litellm_port: int
    rate_per_second: int
    rate_burst: int
    tls_names: list[str]
    health_path: str
    direct_chat: bool
    startup_timeout_s: float
    # called once ready and after each key reload with (base URL, CA PEM or None, {developer: key});
    # `coderig frontdoor run --bundles-dir` writes the developer bundles with it
    on_keys: Callable[[str, str | None, dict[str, str]], None] | None = None
    # routes (frontdoor.native) the backends serve natively: vLLM's by default; () keeps them on LiteLLM
    native_routes: tuple[str, ...] = ("messages", "count_tokens", "responses")
    keepalive_s: float = 15.0
    metrics_listen: str = ""  # the relay's /metrics and /usage (loopback); "" -> a free loopback port
    daily_tokens: tuple[tuple[str, int], ...] = ()  # (developer, tokens a UTC day): frontdoor.budget


def direct_chat(opts: RunOptions) -> tuple[str, ...]:
    """Where nginx sends /v1/chat/completions itself; () keeps it on LiteLLM (and says why)."""
    if not opts.direct_chat:
        return ()
    direct = direct_targets(opts.backends)
    if not direct:
        print(
            "coderig frontdoor: /v1/chat/completions goes through LiteLLM: a backend is https or has a path "
            "prefix, which only LiteLLM proxies",
            file=sys.stderr,
        )
    return direct


def inputs_of(opts: RunOptions, litellm_port: int, relay_port: int, metrics: str = "") -> FrontDoorInputs:
    """What `assemble` builds this front door from: the same function every stack's front door uses."""
    direct = direct_chat(opts)
    if opts.daily_tokens and not direct:
        raise ValueError("--daily-tokens needs the relay (a plain http backend), which keeps the usage record")
    return FrontDoorInputs(
        served_name=opts.model,
        backends=tuple(opts.backends),
        max_tokens=opts.max_tokens,
        listen=opts.listen,
        litellm=f"127.0.0.1:{litellm_port}",
        health_url=model_health_url(opts.backends[0], opts.health_path),
        rate_per_second=opts.rate_per_second,
        rate_burst=opts.rate_burst,
        aliases=tuple(opts.aliases),
        direct_chat=direct,
        native_routes=opts.native_routes if direct else (),
        relay_host="127.0.0.1",
        relay_port=relay_port,
        timeout_s=opts.timeout_s,
        litellm_timeout_s=opts.litellm_timeout_s,
        daily_tokens=opts.daily_tokens,
        budget_check=metrics,
    )


def run(opts: RunOptions) -> int:
    err = listen_error(opts.listen, opts.plain_http)
    if err:
        print(f"coderig frontdoor: {err}", file=sys.stderr)
        return 2
    try:
        keys = read_keys(opts.keys_file)
        litellm_port = opts.litellm_port or free_port()
        metrics = opts.metrics_listen or f"127.0.0.1:{free_port()}"  # the relay's usage listener
        inputs = inputs_of(opts, litellm_port, free_ports(len(opts.backends)), metrics)
        frontdoor.validate_route(assemble(inputs, GatewayPaths(keys_include=""))[0])
        nginx = find_nginx()
    except (OSError, ValueError, RuntimeError, UserError) as exc:
        print(f"coderig frontdoor: {exc}", file=sys.stderr)
        return 2

    host, port = frontdoor.parse_listen(opts.listen)
    # absolute: nginx resolves relative paths against its own (temporary) prefix, not our cwd
    state_dir = opts.state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.gettempdir())
    for stale in clean_stale_prefixes(tmp):
        print(f"coderig frontdoor: removed {stale} (left by a run that was killed)", file=sys.stderr)
    prefix = Path(tempfile.mkdtemp(prefix=PREFIX_NAME, dir=tmp))
    (prefix / RUNNER_PID).write_text(f"{os.getpid()}\n")
    supervisor = Supervisor([])
    keys_conf: KeysInclude | None = None
    stop = {"signal": 0, "reload": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop["signal"] = signum

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        stop["reload"] += 1

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    try:
        ca = cert = key = None
        if not opts.plain_http:
            ca, cert, key = ensure_tls(state_dir / "tls", host, opts.tls_names)
        master_key = "sk-" + secrets.token_urlsafe(32)  # LiteLLM expects master keys to start sk-
        keys_conf = KeysInclude(prefix, frontdoor.render_gateway_keys(keys, master_key))
        os.chmod(prefix, 0o711)  # noqa: S103 - nginx workers (not root) must reach their temp dirs
        paths = GatewayPaths(
            keys_include=keys_conf.path,
            tls_cert=str(cert) if cert else None,
            tls_key=str(key) if key else None,
            pid_path=str(prefix / "nginx.pid"),
            error_log=str(state_dir / "gateway-error.log"),
            access_log=str(state_dir / "gateway-access.log"),
            temp_dir=str(prefix / "tmp"),
        )
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        slots = worker_connections(nofile if nofile != resource.RLIM_INFINITY else 1 << 20)
        route, spec = assemble(inputs, paths, worker_processes="2", worker_connections=slots)
        litellm_cfg = prefix / "litellm.yaml"
        litellm_cfg.write_text(frontdoor.render_litellm_config(route))
        nginx_conf = prefix / "nginx.conf"
        nginx_conf.write_text(frontdoor.render_gateway_conf(spec))
        (prefix / "tmp").mkdir()
        nginx_cmd = [nginx, "-p", str(prefix), "-c", str(nginx_conf), "-e", spec.error_log]
        check = subprocess.run([*nginx_cmd, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            print(f"coderig frontdoor: nginx rejected the config:\n{check.stderr}", file=sys.stderr)
            return 1

        relay = relay_command(spec, sys.executable, opts.keepalive_s)
        gateway = hostport(local_address(host), frontdoor.parse_listen(opts.listen)[1])  # what the relay probes
        usage = usage_flags(state_dir, metrics, gateway)  # the relay counts every request
        relay += usage if relay else []
        if relay:  # the SSE keepalive relay in front of each backend (native streaming routes)
            last = frontdoor.parse_listen(spec.native_relays[-1])
            child = Child("keepalive relay", relay, lambda: accepts(*last), state_dir / "keepalive.log", startup_s=30)
            supervisor.children.append(child)
            if not supervisor.start(child):
                print(f"coderig frontdoor: the keepalive relay did not start; see {child.log}", file=sys.stderr)
                return 1
        live = f"http://127.0.0.1:{litellm_port}/health/liveliness"
        litellm = Child(
            "LiteLLM",
            litellm_command(ensure_litellm(), litellm_cfg, litellm_port, opts.litellm_workers),
            lambda: http_ok(live),
            state_dir / "litellm.log",
            env=litellm_env(master_key, dict(os.environ)),
            cwd=prefix,
            startup_s=opts.startup_timeout_s,
        )
        supervisor.children.append(litellm)
        started = time.monotonic()
        if not supervisor.start(litellm):
            print(f"coderig frontdoor: LiteLLM did not start; see {litellm.log}", file=sys.stderr)
            return 1
        litellm_s = time.monotonic() - started
        gateway = Child("nginx", nginx_cmd, lambda: accepts(host, port), startup_s=30)
        supervisor.children.append(gateway)
        if not supervisor.start(gateway):
            print(f"coderig frontdoor: nginx exited or does not listen; see {spec.error_log}", file=sys.stderr)
            return 1
        scheme = "http" if opts.plain_http else "https"
        base = f"{scheme}://{hostport(host, port)}"
        ca_pem = ca.read_text() if ca else None
        if opts.on_keys:  # before the ready line: whoever waits for it finds the bundles written
            opts.on_keys(base, ca_pem, keys)
        print(
            f"{READY_LINE} {base} (LiteLLM {LITELLM_VERSION} up in {litellm_s:.1f}s, {len(keys)} developer key(s))",
            flush=True,
        )
        if relay:
            print(f"coderig frontdoor: usage metrics http://{usage[3]}/metrics, record {usage[1]}", flush=True)
        if ca:
            print(f"coderig frontdoor: CA certificate: {ca}  (clients: NODE_EXTRA_CA_CERTS={ca})", flush=True)
        while not stop["signal"]:
            if stop["reload"]:
                stop["reload"] = 0
                reloaded = reload_keys(opts.keys_file, keys_conf, master_key, gateway)
                if reloaded is not None and opts.on_keys:
                    opts.on_keys(base, ca_pem, reloaded)
            supervisor.poll()
            time.sleep(0.2)
        return 0
    finally:
        supervisor.close()
        if keys_conf is not None:
            keys_conf.close()
        shutil.rmtree(prefix, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
