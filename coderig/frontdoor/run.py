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
- Nothing outlives it: nginx and LiteLLM get SIGTERM when it dies, however it dies (Linux:
  PR_SET_PDEATHSIG), and the keys include (every developer key and LiteLLM's master key) is a
  nameless file nginx reads through /proc, gone with the process. Prefixes left by a run that
  was killed are removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import json
import os
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

from coderig import frontdoor
from coderig.core import access
from coderig.core.versions import LITELLM_VERSION
from coderig.frontdoor.assemble import relayed_route
from coderig.frontdoor.lifecycle import (
    PREFIX_NAME,
    RUNNER_PID,
    KeysInclude,
    clean_stale_prefixes,
    die_with_parent,
    start_relay,
    usage_flags,
    wait_listening,
)

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


def health_url(backend: str, health_path: str) -> str:
    """'http://127.0.0.1:8000/v1' -> 'http://127.0.0.1:8000/health'."""
    base = backend.rstrip("/")
    base = base[: -len("/v1")] if base.endswith("/v1") else base
    return base + "/" + health_path.lstrip("/")


def direct_backends(backends: list[str], enabled: bool) -> tuple[str, ...]:
    """Where nginx sends /v1/chat/completions itself; () keeps it on LiteLLM (and says why)."""
    if not enabled:
        return ()
    direct = [frontdoor.direct_chat_backend(b) for b in backends]
    if None in direct:
        print("coderig frontdoor: /v1/chat/completions goes through LiteLLM: a backend is https or has a path "
              "prefix, which only LiteLLM proxies", file=sys.stderr)  # fmt: skip
        return ()
    return tuple(d for d in direct if d)


def parse_keys(text: str, source: str) -> dict[str, str]:
    """The --keys-file JSON: {"developer": "token"}; errors name the file."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f'{source}: must be a JSON object {{"developer": "token", ...}}')
    frontdoor.validate_keys(data)
    return dict(data)


def tls_names(host: str, extra: list[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the server certificate; a wildcard listen address is named by
    this machine's host name."""
    wildcard = ("0.0.0.0", "::")  # noqa: S104 - naming the wildcard, not binding it
    named = [socket.gethostname() if name in wildcard else name for name in [host, *extra]]
    return access.certificate_sans([*named, "::1"])


def litellm_env(master_key: str, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(
        {
            frontdoor.MASTER_KEY_ENV: master_key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map from the internet
            "LITELLM_TELEMETRY": "False",
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
            "NO_REDOC": "True",
            "LITELLM_LOG": env.get("LITELLM_LOG", "ERROR"),
        }
    )
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


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ensure_tls(tls_dir: Path, host: str, extra_names: list[str]) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): the CA is reused, the server certificate is new."""
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    cert, key = tls_dir / "server.pem", tls_dir / "server.key"
    old_umask = os.umask(0o077)
    try:
        if not (ca.exists() and ca_key.exists()):
            _openssl(
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(ca_key),
                "-out",
                str(ca),
                "-days",
                "3650",
                "-subj",
                "/CN=coderig front door CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            )
        dns, ips = tls_names(host, extra_names)
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        ext = tls_dir / "server.ext"
        ext.write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        csr = tls_dir / "server.csr"
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=coderig front door",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "397",
            "-extfile",
            str(ext),
        )
    finally:
        os.umask(old_umask)
    os.chmod(ca, 0o644)
    return ca, cert, key


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(  # noqa: S310
                url,
                timeout=2,  # a loopback URL we built
            ) as resp,
        ):
            if resp.status == 200:
                return True
        time.sleep(0.2)
    return False


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace_s: float = 10) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def reload_keys(
    keys_file: Path, keys_conf: KeysInclude, master_key: str, nginx: subprocess.Popen[bytes]
) -> dict[str, str] | None:
    """SIGHUP: re-read --keys-file and reload nginx, so adding or revoking a developer needs no
    restart. A bad file keeps the keys in force and says why."""
    try:
        keys = parse_keys(keys_file.read_text(), str(keys_file))
    except (OSError, ValueError) as exc:
        print(f"coderig frontdoor: keys NOT reloaded: {exc}", file=sys.stderr, flush=True)
        return None
    keys_conf.replace(frontdoor.render_gateway_keys(keys, master_key))
    os.kill(nginx.pid, signal.SIGHUP)
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


def run(opts: RunOptions) -> int:
    err = listen_error(opts.listen, opts.plain_http)
    if err:
        print(f"coderig frontdoor: {err}", file=sys.stderr)
        return 2
    try:
        keys = parse_keys(opts.keys_file.read_text(), str(opts.keys_file))
        route = frontdoor.ModelRoute(
            served_name=opts.model,
            backends=tuple(opts.backends),
            max_tokens=opts.max_tokens,
            aliases=tuple(opts.aliases),
            timeout_s=opts.litellm_timeout_s,
        )
        frontdoor.validate_route(route)
        nginx = find_nginx()
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"coderig frontdoor: {exc}", file=sys.stderr)
        return 2

    host, _ = frontdoor.parse_listen(opts.listen)
    # absolute: nginx resolves relative paths against its own (temporary) prefix, not our cwd
    state_dir = opts.state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.gettempdir())
    for stale in clean_stale_prefixes(tmp):
        print(f"coderig frontdoor: removed {stale} (left by a run that was killed)", file=sys.stderr)
    prefix = Path(tempfile.mkdtemp(prefix=PREFIX_NAME, dir=tmp))
    (prefix / RUNNER_PID).write_text(f"{os.getpid()}\n")
    procs: list[subprocess.Popen[bytes]] = []
    names: list[str] = []
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
        litellm_port = opts.litellm_port or free_port()
        litellm_cfg = prefix / "litellm.yaml"
        keys_conf = KeysInclude(prefix, frontdoor.render_gateway_keys(keys, master_key))
        os.chmod(prefix, 0o711)  # noqa: S103 - nginx workers (not root) must reach their temp dirs
        direct = direct_backends(opts.backends, opts.direct_chat)
        native_routes = opts.native_routes if direct else ()
        relays = [f"127.0.0.1:{free_port()}" for _ in direct]  # the relay: every hop to a model server
        litellm_cfg.write_text(frontdoor.render_litellm_config(relayed_route(route, tuple(relays))))
        spec = frontdoor.GatewaySpec(
            listen=opts.listen,
            litellm=f"127.0.0.1:{litellm_port}",
            model_health_url=health_url(opts.backends[0], opts.health_path),
            keys_include=keys_conf.path,
            tls_cert=str(cert) if cert else None,
            tls_key=str(key) if key else None,
            pid_path=str(prefix / "nginx.pid"),
            error_log=str(state_dir / "gateway-error.log"),
            access_log=str(state_dir / "gateway-access.log"),
            temp_dir=str(prefix / "tmp"),
            worker_processes="2",
            timeout_s=opts.timeout_s,
            rate_per_second=opts.rate_per_second,
            rate_burst=opts.rate_burst,
            direct_chat_backends=direct,
            native_routes=tuple(native_routes),
            native_relays=tuple(relays),
        )
        nginx_conf = prefix / "nginx.conf"
        nginx_conf.write_text(frontdoor.render_gateway_conf(spec))
        (prefix / "tmp").mkdir()
        nginx_cmd = [nginx, "-p", str(prefix), "-c", str(nginx_conf), "-e", spec.error_log]
        check = subprocess.run([*nginx_cmd, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            print(f"coderig frontdoor: nginx rejected the config:\n{check.stderr}", file=sys.stderr)
            return 1

        usage = usage_flags(state_dir, opts.metrics_listen, opts.listen)  # the relay counts every request
        if relays:  # the SSE keepalive relay in front of each direct backend (every model path)
            relay_log = state_dir / "keepalive.log"
            procs.append(start_relay(relays, direct, opts.keepalive_s, relay_log, usage))
            names.append("keepalive relay")
            if procs[-1].poll() is not None:
                print(f"coderig frontdoor: the keepalive relay did not start; see {relay_log}", file=sys.stderr)
                return 1
        litellm_exe = ensure_litellm()
        log = open(state_dir / "litellm.log", "ab")  # noqa: SIM115 - lives as long as the child
        started = time.monotonic()
        procs.append(
            subprocess.Popen(
                litellm_command(litellm_exe, litellm_cfg, litellm_port, opts.litellm_workers),
                env=litellm_env(master_key, dict(os.environ)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # no threads of ours run yet
                cwd=prefix,
            )
        )
        names.append("LiteLLM")
        live = f"http://127.0.0.1:{litellm_port}/health/liveliness"
        if not wait_http_ok(live, opts.startup_timeout_s, procs[-1]):
            print(f"coderig frontdoor: LiteLLM did not start; see {state_dir / 'litellm.log'}", file=sys.stderr)
            return 1
        litellm_s = time.monotonic() - started
        procs.append(
            subprocess.Popen(nginx_cmd, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent())
        )
        names.append("nginx")
        scheme = "http" if opts.plain_http else "https"
        url_host = f"[{host}]" if ":" in host else host
        base = f"{scheme}://{url_host}:{frontdoor.parse_listen(opts.listen)[1]}"
        if not wait_listening(host, frontdoor.parse_listen(opts.listen)[1], 30, procs[-1]):
            print(f"coderig frontdoor: nginx exited or does not listen; see {spec.error_log}", file=sys.stderr)
            return 1
        ca_pem = ca.read_text() if ca else None
        if opts.on_keys:  # before the ready line: whoever waits for it finds the bundles written
            opts.on_keys(base, ca_pem, keys)
        print(
            f"{READY_LINE} {base} (LiteLLM {LITELLM_VERSION} up in {litellm_s:.1f}s, {len(keys)} developer key(s))",
            flush=True,
        )
        if relays:
            print(f"coderig frontdoor: usage metrics http://{usage[3]}/metrics, record {usage[1]}", flush=True)
        if ca:
            print(f"coderig frontdoor: CA certificate: {ca}  (clients: NODE_EXTRA_CA_CERTS={ca})", flush=True)
        while not stop["signal"]:
            if stop["reload"]:
                stop["reload"] = 0
                reloaded = reload_keys(opts.keys_file, keys_conf, master_key, procs[-1])
                if reloaded is not None and opts.on_keys:
                    opts.on_keys(base, ca_pem, reloaded)
            for name, proc in zip(names, procs, strict=True):
                if proc.poll() is not None:
                    print(f"coderig frontdoor: {name} exited ({proc.returncode}); stopping", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        if keys_conf is not None:
            keys_conf.close()
        shutil.rmtree(prefix, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
