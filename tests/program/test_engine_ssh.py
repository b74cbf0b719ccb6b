"""The main job with the real engine: `./up.sh STACK` on an `ssh` stack of two sshd test hosts.

The Pulumi CLI, the Python language host and the command/random/tls providers are the ones
`.ci/pulumi-deps.sh` builds (no plugin is ever downloaded). The hosts are tests/sshhost.py hosts
(network namespaces, a stand-in `docker` that records its calls); each sees its own `/opt` (the
bundle in /opt/coderig) and its own 16 GiB tmpfs at /opt/cache (the weights cache).
Lifecycle: up → up again (0 changes) → add a developer (no model restart) → remove one (key
revoked on the host) → state holds no plaintext secret → bundle + onboard from the real outputs →
destroy (secrets gone, weights kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from engine import Project, project_copy
from frontdoor_fixtures import nginx_stream_module, require_tool
from sshhost import SshHost, keygen, ssh_host

from coderig.core import engine
from coderig.core.settings import ModelSettings
from coderig.frontdoor import links

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sshd test hosts need root (namespaces, mounts)"),
]

STACK = "lab"
CACHE = "/opt/cache"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SshHost]]:
    """Two sshd test hosts that accept the first host's client key (one sshPrivateKey per stack)."""
    with contextlib.ExitStack() as stack:
        made: list[SshHost] = []
        for i in (1, 2):
            work = tmp_path_factory.mktemp(f"host{i}")
            private = {"/opt": work / "opt", CACHE: work / "roomy"}
            made.append(stack.enter_context(ssh_host(work, (os.getpid() + i) % 100000, private_dirs=private)))
        pub = made[0].client_key.with_suffix(".pub").read_text()
        with (made[1].workdir / "authorized_keys").open("a") as f:
            f.write(pub)
        yield made


def bundle_dir(host: SshHost) -> Path:
    return host.workdir / "opt" / "coderig"


def write_stack(project: Project, hosts: list[SshHost], developers: list[str]) -> None:
    """Pulumi.STACK.yaml: kind ssh, both hosts pinned; keeps what `pulumi config set` added."""
    path = project.dir / f"Pulumi.{STACK}.yaml"
    doc = yaml.safe_load(path.read_text()) if path.exists() else {}
    doc.setdefault("config", {}).update(
        {
            "coderig:target": {
                "kind": "ssh",
                "cachePath": CACHE,
                "hosts": [{"address": h.address, "port": h.port, "user": "root", "hostKey": h.host_key} for h in hosts],
            },
            "coderig:model": {"preset": "qwen3-1.7b-cpu"},
            "coderig:developers": developers,
        }
    )
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def changed(project: Project) -> dict[str, str]:
    """`pulumi preview --json`: {resource name: op} for every step that is not `same`."""
    out = project.pulumi("preview", "--stack", STACK, "--json").stdout
    steps = json.loads(out).get("steps", [])
    return {s["urn"].rsplit("::", 1)[1]: s["op"] for s in steps if s["op"] != "same"}


def strings(value: object) -> Iterator[str]:
    """Every string (keys included) in a decoded JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def pem_body(pem: str) -> str:
    """The base64 lines of a PEM block, newline-joined (as they sit in any copy of the file)."""
    return "\n".join(ln for ln in pem.strip().splitlines() if not ln.startswith("-----"))


def docker_calls(host: SshHost) -> str:
    calls = host.workdir / "docker.calls"
    return calls.read_text() if calls.exists() else ""


def model_ups(host: SshHost) -> int:
    """How many times the stand-in docker started the whole stack (model server included)."""
    return len(re.findall(r"-p coderig up -d --remove-orphans", docker_calls(host)))


def test_ssh_stack_lifecycle_with_the_real_engine(hosts: list[SshHost], tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    (project.dir / ".pulumi-state").mkdir()
    write_stack(project, hosts, ["alice", "bob"])
    project.pulumi("stack", "init", STACK, "--secrets-provider", "passphrase")
    private_key = hosts[0].client_key.read_text()
    project.pulumi("config", "set", "--secret", "coderig:sshPrivateKey", "--stack", STACK, stdin=private_key)
    stack_file = (project.dir / f"Pulumi.{STACK}.yaml").read_text()
    assert "coderig:sshPrivateKey" in stack_file and "secure:" in stack_file and "PRIVATE KEY" not in stack_file
    weights = hosts[0].workdir / "roomy" / "hub" / "weights.bin"  # the cache as a download leaves it
    weights.parent.mkdir(parents=True)
    weights.write_text("kept")

    # 1. first up: everything created on both hosts, the bundle exported
    up = project.run("./up.sh", STACK, label="up (create)")
    assert "stack lab: qwen3-1.7b-cpu" in up.stdout  # the plan printed before the engine ran
    created = re.search(r"\+ (\d+) created", up.stdout)
    assert created, up.stdout[-2000:]
    print("first up created", created.group(1), "resources")
    for h in hosts:
        assert model_ups(h) == 1, docker_calls(h)
        assert (bundle_dir(h) / ".bundle-hash").exists() and (bundle_dir(h) / "secrets").is_dir()
    outputs = json.loads(project.pulumi("stack", "output", "--json", "--show-secrets", "--stack", STACK).stdout)
    tokens = outputs["developerTokens"]
    assert set(tokens) == {"alice", "bob"}
    assert outputs["clientBundle"]["endpoint"]["anthropic_base_url"].startswith(f"https://{hosts[0].address}:")
    assert outputs["nodes"] == [h.address for h in hosts]
    plain = json.loads(project.pulumi("stack", "output", "--json", "--stack", STACK).stdout)
    assert plain["developerTokens"] == "[secret]"
    keys_file = bundle_dir(hosts[0]) / "secrets" / "gateway-keys.conf"
    assert tokens["alice"] in keys_file.read_text() and tokens["bob"] in keys_file.read_text()
    link_carries_with_the_issued_certificates(hosts, tmp_path)

    # 2. second up: the engine reports no change (it would fail with --expect-no-changes)
    assert changed(project) == {}
    again = project.run("./up.sh", STACK, "--expect-no-changes", label="up (no changes)")
    assert re.search(r"\b\d+ unchanged", again.stdout) and not re.search(
        r"\b\d+ (created|updated|replaced)", again.stdout
    )
    assert [model_ups(h) for h in hosts] == [1, 1]

    # 3. a new developer: only the bundle and front-door steps (and the readiness wait) re-run
    write_stack(project, hosts, ["alice", "bob", "carol"])
    steps = changed(project)
    commands = {name for name in steps if name.startswith("node-")}
    assert commands == {"node-0-bundle", "node-0-frontdoor", "node-0-ready"}, steps
    assert steps.get("developers-carol") == "create", steps
    added = project.run("./up.sh", STACK, label="up (add developer)")
    assert "wait-ready: ready after" in added.stdout  # the readiness wait streams its progress
    assert "crk-" not in added.stdout + added.stderr  # the bundle step logs nothing (logging: none)
    assert [model_ups(h) for h in hosts] == [1, 1], "adding a developer restarted a model server"
    assert "up -d --no-deps --force-recreate litellm keepalive link gateway" in docker_calls(hosts[0])
    tokens = json.loads(project.pulumi("stack", "output", "--json", "--show-secrets", "--stack", STACK).stdout)[
        "developerTokens"
    ]
    assert tokens["carol"] in keys_file.read_text()

    # 4. remove one: their key is revoked on the host, the others still work
    write_stack(project, hosts, ["alice", "carol"])
    project.run("./up.sh", STACK, label="up (remove developer)")
    keys = keys_file.read_text()
    assert tokens["bob"] not in keys and tokens["alice"] in keys and tokens["carol"] in keys
    assert [model_ups(h) for h in hosts] == [1, 1]

    # 5. the state holds no plaintext secret: developer tokens, LiteLLM master key, model API key
    # (the env files on the host), the gateway's TLS key and the SSH private key (whole PEM bodies:
    # an EC key's PEM also carries its public half, which the state may hold in the clear)
    state = json.loads(project.pulumi("stack", "export", "--stack", STACK).stdout)
    blob = "\n".join(strings(state))
    secrets_dir = bundle_dir(hosts[0]) / "secrets"
    env = {
        k: v for f in secrets_dir.glob("*.env") for k, _, v in (ln.partition("=") for ln in f.read_text().splitlines())
    }
    assert env.get("LITELLM_MASTER_KEY") and env.get("VLLM_API_KEY"), sorted(env)
    values = {f"token {n}": v for n, v in tokens.items()} | {k: v for k, v in env.items() if len(v) >= 16}
    values |= {"ssh private key": pem_body(private_key), "tls key": pem_body((secrets_dir / "server.key").read_text())}
    values |= {
        f"link key {i}": pem_body((bundle_dir(h) / "secrets" / "link.key").read_text()) for i, h in enumerate(hosts)
    }
    assert all(len(v) >= 16 for v in values.values()), sorted(values)
    leaked = sorted(name for name, v in values.items() if v in blob)
    assert not leaked, f"plaintext secrets in `pulumi stack export`: {leaked}"
    assert "4dabf18193072939515e22adb298388d" in json.dumps(state)  # secrets are there, as ciphertext

    # 6. coderig bundle + onboard from the real outputs
    bundle_file = tmp_path / "alice.json"
    project.run("uv", "run", "coderig", "bundle", "--stack", STACK, "--developer", "alice", "--out", str(bundle_file))
    bundle = json.loads(bundle_file.read_text())
    assert oct(bundle_file.stat().st_mode & 0o777) == "0o600"
    assert tokens["alice"] in bundle_file.read_text() and bundle["endpoint"]["anthropic_base_url"].startswith(
        "https://"
    )
    home = tmp_path / "home"
    home.mkdir()
    onboard = project.run("uv", "run", "coderig", "onboard", str(bundle_file), "--home", str(home))
    assert (home / ".claude" / "settings.json").exists(), onboard.stdout + onboard.stderr
    assert tokens["alice"] in (home / ".claude" / "settings.json").read_text()

    # 7. destroy: compose down, secrets removed on both hosts, the weights cache kept
    project.pulumi("destroy", "--yes", "--stack", STACK, label="destroy")
    for h in hosts:
        assert not (bundle_dir(h) / "secrets").exists(), list(bundle_dir(h).rglob("*"))
        assert "-p coderig down" in docker_calls(h)
    assert weights.read_text() == "kept"
    assert project.plugins_downloaded() == [], "a plugin was downloaded"
    print("engine timings (s):", project.timings)


def link_carries_with_the_issued_certificates(hosts: list[SshHost], tmp_path: Path) -> None:
    """The replica link with what `up` put on the hosts: each end's rendered link config (container
    paths mapped onto the bundle) and the certificates the tls provider issued. The replica's end
    runs in its namespace in front of a model stand-in; the first machine's end runs beside them
    (the two test hosts share no network but this one). /health through the link must answer."""
    nginx = require_tool("nginx")
    module = nginx_stream_module(nginx)
    work = tmp_path / "link"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, h in enumerate(hosts):
            d = bundle_dir(h)
            assert oct((d / "secrets" / "link.key").stat().st_mode & 0o777) == "0o600"
            conf = (d / "link" / "nginx.conf").read_text().replace("/etc/nginx/", f"{d}/")
            conf = conf.replace("pid /var/run/nginx.pid;", f"pid {work}/{i}.pid;")
            conf = conf.replace("/var/log/nginx/error.log", f"{work}/{i}-error.log")
            if module:
                conf = f"load_module {module};\n{conf}"
            work.mkdir(exist_ok=True)
            (work / f"{i}.conf").write_text(conf)
        netns = ["ip", "netns", "exec", hosts[1].netns] if hosts[1].netns else []
        standin = [sys.executable, str(ROOT / "tests" / "standin.py"), "--port", str(engine.MODEL_PORT)]
        procs.append(subprocess.Popen([*netns, *standin]))
        procs.append(subprocess.Popen([*netns, nginx, "-c", str(work / "1.conf"), "-p", str(work)]))
        procs.append(subprocess.Popen([nginx, "-c", str(work / "0.conf"), "-p", str(work)]))
        url = f"http://{links.link_listen(1)}/health"
        for _ in range(100):
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200
                return
            time.sleep(0.1)
        errors = "".join(p.read_text() for p in work.glob("*-error.log"))
        raise AssertionError(f"no answer through the replica link: {errors}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def test_invalid_stack_fails_before_the_engine_creates_anything(hosts: list[SshHost], tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    write_stack(project, hosts, ["alice", "alice"])  # duplicate developer
    doc = yaml.safe_load((project.dir / f"Pulumi.{STACK}.yaml").read_text())
    doc["config"]["coderig:target"]["hosts"][1]["hostKey"] = "not-a-key"
    (project.dir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(doc))
    calls_before = [docker_calls(h) if (h.workdir / "docker.calls").exists() else "" for h in hosts]
    proc = project.run("./up.sh", STACK, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "coderig:developers" in proc.stdout + proc.stderr
    assert not (project.dir / ".pulumi-state").exists()
    assert [docker_calls(h) for h in hosts] == calls_before


def test_a_host_whose_key_is_not_the_pinned_one_is_refused(hosts: list[SshHost], tmp_path: Path) -> None:
    """command:remote:Command checks the pinned hostKey: a host presenting another key gets no command."""
    project = project_copy(tmp_path)
    (project.dir / ".pulumi-state").mkdir()
    write_stack(project, hosts, ["alice"])
    doc = yaml.safe_load((project.dir / f"Pulumi.{STACK}.yaml").read_text())
    impostor = keygen(tmp_path / "impostor")
    doc["config"]["coderig:target"]["hosts"][1]["hostKey"] = impostor
    (project.dir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(doc))
    project.pulumi("stack", "init", STACK, "--secrets-provider", "passphrase")
    private_key = hosts[0].client_key.read_text()
    project.pulumi("config", "set", "--secret", "coderig:sshPrivateKey", "--stack", STACK, stdin=private_key)
    before = docker_calls(hosts[1])
    proc = project.run("./up.sh", STACK, check=False, label="up (host key mismatch)")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "host key mismatch" in out and f"{hosts[1].address}:{hosts[1].port}" in out, out[-3000:]
    assert docker_calls(hosts[1]) == before
    assert pem_body(private_key) not in out
    assert project.timings["up (host key mismatch)"] < 60, "a host key mismatch must not be retried"
    print("refused:", next(ln.strip() for ln in out.splitlines() if "host key mismatch" in ln)[:400])
    project.pulumi("destroy", "--yes", "--stack", STACK)


# The test hosts' docker, timed: every call logged with its time; `compose up -d` also starts a model
# stand-in on the host (tests/standin.py, the bundle's model API key, listening only after LAG seconds
# like a loading model server) and `down` stops it; each service reads "starting" for LAG seconds after
# `up -d`, then as the sshd hosts' stand-in docker reports it.
ROLL_LAG_S = 4
TIMED_DOCKER = r"""#!/usr/bin/env bash
echo "$(date +%s.%N) $*" >> WORK/docker.timed
state=WORK/docker.state
stop_model() { if [ -f WORK/model.pid ]; then kill "$(cat WORK/model.pid)" 2>/dev/null; rm -f WORK/model.pid; fi; }
case "$*" in
  *" ps -a --format "*)
    if [ -f "$state" ] && [ $(( $(date +%s) - $(stat -c %Y "$state") )) -lt LAG ]; then
      for s in model link litellm gateway; do echo "$s|running|starting|0"; done
      echo 'weights|exited||0'
      exit 0
    fi ;;
  *" up -d --remove-orphans"*)
    stop_model
    key=$(sed -n 's/^VLLM_API_KEY=//p' BUNDLE/secrets/model.env)
    nohup PYTHON STANDIN --port MODEL_PORT --model "$(cat WORK/served)" --api-key "$key" --engine llama.cpp \
      --load-delay LAG --record WORK/requests.jsonl > WORK/model.log 2>&1 &
    echo $! > WORK/model.pid ;;
  *" down "*|*" down") stop_model ;;
esac
exec WORK/bin/docker-standin "$@"
"""


@contextlib.contextmanager
def timed_docker(hosts: list[SshHost], served: str) -> Iterator[None]:
    for h in hosts:
        b = h.workdir / "bin"
        (b / "docker").rename(b / "docker-standin")
        (h.workdir / "served").write_text(served)
        script = TIMED_DOCKER.replace("WORK", str(h.workdir)).replace("LAG", str(ROLL_LAG_S))
        script = script.replace("BUNDLE", "/opt/coderig").replace("PYTHON", sys.executable)
        script = script.replace("STANDIN", str(ROOT / "tests" / "standin.py"))
        (b / "docker").write_text(script.replace("MODEL_PORT", str(engine.MODEL_PORT)))
        (b / "docker").chmod(0o755)
    try:
        yield
    finally:
        for h in hosts:
            b = h.workdir / "bin"
            (b / "docker-standin").replace(b / "docker")
            pid = h.workdir / "model.pid"
            if pid.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid.read_text()), 15)


def timed(host: SshHost, pattern: str, since: float) -> list[float]:
    """When (epoch seconds) the host's docker was called with `pattern` in its arguments, after `since`."""
    path = host.workdir / "docker.timed"
    lines = path.read_text().splitlines() if path.exists() else []
    times = [float(ln.split(" ", 1)[0]) for ln in lines if pattern in ln]
    return [t for t in times if t >= since]


@contextlib.contextmanager
def request_path(hosts: list[SshHost], work: Path) -> Iterator[None]:
    """The gateway and the replica link as `up` rendered them, each in its host's namespace: the first
    host's gateway nginx and link client, the replica's link server (container paths mapped onto the
    bundle). The model servers are the timed docker's stand-ins."""
    nginx = require_tool("nginx")
    module = nginx_stream_module(nginx)
    work.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    # the hosts' namespaces reach each other through this host (it forwards): the link crosses machines
    routes = [[*in_netns(h), "ip", "route", "replace", "10.250.0.0/16", "via", h.address.rsplit(".", 1)[0] + ".1"]
              for h in hosts if h.netns]  # fmt: skip
    for route in routes:
        subprocess.run(route, check=True)
    try:
        for name, host, conf_path in (
            ("link-1", hosts[1], "link/nginx.conf"),
            ("link-0", hosts[0], "link/nginx.conf"),
            ("gateway", hosts[0], "gateway/nginx.conf"),
        ):
            d = bundle_dir(host)
            conf = (d / conf_path).read_text().replace("/etc/nginx/", f"{d}/")
            conf = conf.replace("pid /var/run/nginx.pid;", f"pid {work}/{name}.pid;")
            conf = conf.replace("/var/log/nginx/error.log", f"{work}/{name}-error.log")
            if module and name.startswith("link"):
                conf = f"load_module {module};\n{conf}"
            (work / f"{name}.conf").write_text(conf)
            log = (work / f"{name}.log").open("wb")
            procs.append(subprocess.Popen([*in_netns(host), nginx, "-c", str(work / f"{name}.conf"), "-p", str(work)],
                                          stdout=log, stderr=log))  # fmt: skip
        # the gateway's keepalive relay in front of both model servers, as the first host's compose runs it
        d = bundle_dir(hosts[0])
        relay = yaml.safe_load((d / "compose.yaml").read_text())["services"]["keepalive"]
        args = [str(work / "usage.json") if a.startswith("/var/lib/coderig/") else a for a in relay["command"]]
        env = ["env", f"PYTHONPATH={d / 'keepalive'}", "PYTHONDONTWRITEBYTECODE=1"]
        log = (work / "relay.log").open("wb")
        procs.append(subprocess.Popen([*in_netns(hosts[0]), *env, sys.executable, *relay["entrypoint"][1:], *args],
                                      stdout=log, stderr=log))  # fmt: skip
        yield
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        for route in routes:
            subprocess.run([*route[:-4], "del", "10.250.0.0/16"], capture_output=True)


def requests_seen(host: SshHost) -> int:
    """How many requests the host's model stand-ins have answered (their --record files)."""
    path = host.workdir / "requests.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def in_netns(host: SshHost) -> list[str]:
    return ["ip", "netns", "exec", host.netns] if host.netns else []


def poll_chat(url: str, token: str, model: str, stop: threading.Event, seen: list[tuple[float, object]]) -> None:
    """POST a one-token chat through the gateway every 0.2 s until `stop`: (time, status or error)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the stack's own CA; TLS is not the point
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    while not stop.is_set():
        t = time.time()
        try:
            req = urllib.request.Request(url, data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=15, context=ctx) as resp:
                seen.append((t, resp.status))
        except urllib.error.HTTPError as e:
            seen.append((t, e.code))
        except OSError as e:
            seen.append((t, repr(e)))
        stop.wait(0.2)


def test_a_model_change_restarts_the_hosts_one_at_a_time(hosts: list[SshHost], tmp_path: Path) -> None:
    """First up: both hosts start at once. A model change: the replica (node-1) goes down and up first;
    the first host's model (node-0) goes down only once the replica reports ready again; a chat request
    through the gateway every 0.2 s meanwhile is answered every time."""
    project = project_copy(tmp_path)
    (project.dir / ".pulumi-state").mkdir()
    write_stack(project, hosts, ["alice"])
    project.pulumi("stack", "init", STACK, "--secrets-provider", "passphrase")
    private_key = hosts[0].client_key.read_text()
    project.pulumi("config", "set", "--secret", "coderig:sshPrivateKey", "--stack", STACK, stdin=private_key)
    first, replica = hosts
    served = ModelSettings.model_validate({"preset": "qwen3-1.7b-cpu"}).served_name
    with timed_docker(hosts, served):
        t0 = time.time()
        project.run("./up.sh", STACK, label="up (create, timed)")
        up_first = timed(first, "-p coderig up -d --remove-orphans", t0)
        up_replica = timed(replica, "-p coderig up -d --remove-orphans", t0)
        assert len(up_first) == len(up_replica) == 1
        # create stays parallel: the first host started before the replica was ready (LAG after its start)
        assert up_first[0] < up_replica[0] + ROLL_LAG_S, (up_first, up_replica)
        outputs = json.loads(project.pulumi("stack", "output", "--json", "--show-secrets", "--stack", STACK).stdout)
        url = outputs["endpoint"] + "/v1/chat/completions"

        doc = yaml.safe_load((project.dir / f"Pulumi.{STACK}.yaml").read_text())
        doc["config"]["coderig:model"]["maxModelLen"] = 16384  # the model half: both model servers restart
        (project.dir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        seen: list[tuple[float, object]] = []
        stop = threading.Event()
        with request_path(hosts, tmp_path / "path"):
            poller = threading.Thread(target=poll_chat, args=(url, outputs["developerTokens"]["alice"], served, stop,
                                                              seen))  # fmt: skip
            poller.start()
            deadline = time.monotonic() + 60  # nginx marks an upstream that refused at start down for 30 s
            while not any(r == 200 for _, r in seen) and time.monotonic() < deadline:
                time.sleep(0.2)
            t1 = time.time()
            served_before = [requests_seen(h) for h in hosts]
            try:
                rolled = project.run("./up.sh", STACK, label="up (model change, rolling)")
                time.sleep(1)
            finally:
                stop.set()
                poller.join(timeout=30)
        down = {h.address: timed(h, "-p coderig down", t1) for h in hosts}
        up = {h.address: timed(h, "-p coderig up -d --remove-orphans", t1) for h in hosts}
        assert all(len(v) == 1 for v in [*down.values(), *up.values()]), (down, up)
        # the replica first; the first host only once the replica's model was back (LAG after its start)
        assert down[replica.address][0] < up[replica.address][0] < down[first.address][0]
        assert down[first.address][0] >= up[replica.address][0] + ROLL_LAG_S, (down, up)
        assert "the next machine restarts once this one is ready again" in rolled.stdout
        print("rolling restart (s after the up began):", {a: [round(t - t1, 1) for t in down[a] + up[a]] for a in up})
        # through the gateway, every request answered, while each host's model server was down in turn
        seen = [(t, r) for t, r in seen if t >= t1]  # from the rolling up's start
        failed = [(round(t - t1, 1), r) for t, r in seen if r != 200]
        logs = [*(tmp_path / "path").glob("*.log"), *(h.workdir / "model.log" for h in hosts)]
        tails = {str(p): p.read_text()[-1500:] for p in logs if p.exists()}
        assert seen and not failed, (failed[:10], tails)
        for h in hosts:
            window = [t for t, _ in seen if down[h.address][0] <= t <= up[h.address][0] + ROLL_LAG_S]
            assert window, f"no request while {h.address}'s model server was down"
        served_during = [requests_seen(h) - n for h, n in zip(hosts, served_before, strict=True)]
        assert all(served_during), served_during  # both model servers answered some (the replica over its link)
        print(f"{len(seen)} chat requests through the gateway during the rolling up, all answered", served_during)

        t2 = time.time()
        project.pulumi("destroy", "--yes", "--stack", STACK, label="destroy (timed)")
    for h in hosts:
        assert timed(h, "-p coderig down", t2), "destroy did not stop the stack"
