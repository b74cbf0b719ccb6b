"""Fault bench (a script, not a test): kill each part of a running front door under load, measure.

Starts two stand-in model servers (tests/standin.py, own processes: two replicas) and
`coderig frontdoor run` (plain HTTP on loopback, 2 LiteLLM workers) in front of them, keeps a
steady load of streams on every path (chat: nginx -> model; messages and responses: nginx ->
relay -> model; litellm: a claude-* name, replayed to LiteLLM), then kills with SIGKILL, in turn:
  model    the second replica's model server (restarted on its port afterwards)
  link     the replica's end of its mutual-TLS link (the replica machine unreachable; restarted)
  relay    the keepalive relay
  litellm  LiteLLM's master process (its workers are what could be orphaned)
  worker   one nginx worker
  master   the nginx master
and reports for each: streams lost (in flight at the kill and ended without their last event),
seconds until a new request succeeds on every path, and processes of the killed part's group left
behind (orphans) once it is back. The second replica sits behind a replica link as on another
machine: the link nginx processes coderig renders (links.render_client_conf / render_server_conf),
mutual TLS with certificates made as the stack makes them, the replica's end on 127.0.0.2.

    uv run python bench/faults_bench.py
    uv run python bench/faults_bench.py --streams 4 --faults relay,master
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from frontdoor_fixtures import nginx_stream_module  # noqa: E402
from link_tls import issue, make_ca  # noqa: E402

from coderig.frontdoor import links  # noqa: E402
from coderig.frontdoor.run import find_nginx  # noqa: E402
from coderig.frontdoor.supervise import group_members  # noqa: E402

KEY = "bench-0123456789abcdefABCDEF"
MODEL = "bench-model"
PROMPT = "[standin tokens=40 delay=0.05] hi"  # ~2 s streams
PATHS = {
    "chat": ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}),
    "messages": ("/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}),
    "responses": ("/v1/responses", {"model": MODEL, "input": PROMPT}),
    "litellm": ("/v1/messages", {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": PROMPT}]}),
}
HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json", "anthropic-version": "2023-06-01"}
LAST_EVENT = {"chat": b"[DONE]", "messages": b"message_stop", "responses": b"response.completed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Outcome:
    path: str
    started: float
    ended: float
    ok: bool


@dataclass
class Load:
    port: int
    streams: int
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self, name: str) -> bool:
        path, body = PATHS[name]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, json.dumps({**body, "stream": True, "max_tokens": 64}), HEADERS)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status == 200 and LAST_EVENT.get(name, b"message_stop") in data
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def loop(self, name: str) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            ok = self.one(name)
            with self.lock:
                self.outcomes.append(Outcome(name, started, time.monotonic(), ok))
            if not ok:
                time.sleep(0.1)

    def start(self) -> None:
        for name in PATHS:
            for _ in range(self.streams):
                threading.Thread(target=self.loop, args=(name,), daemon=True).start()


def children(pid: int) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].split()[1] != str(pid):
            continue
        name = "nginx" if "nginx" in cmdline else "relay" if "sse_keepalive" in cmdline else "litellm"
        found.setdefault(name, []).append(int(entry.name))
    return found


def standin(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(REPO / "tests" / "standin.py"), "--port", str(port), "--model", MODEL]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the stand-in did not start")


class Link:
    """Replica 1's link: the first machine's end on loopback (links.link_listen(1)) opening verified
    TLS to the replica's end on REPLICA_ADDRESS, which forwards to the replica's model server."""

    REPLICA_ADDRESS = "127.0.0.2"

    def __init__(self, state: Path, model_port: int) -> None:
        self.nginx = find_nginx()
        ca = make_ca(state / "link-ca", "bench-link-ca")
        self.port = free_port()
        ends = {
            "client": (issue(state / "link-ca", ca, links.link_certificate(0)), None),
            "server": (issue(state / "link-ca", ca, links.link_certificate(1, self.REPLICA_ADDRESS)), model_port),
        }
        self.dirs: dict[str, Path] = {}
        for end, (tls, model) in ends.items():
            d = state / f"link-{end}"
            d.mkdir()
            (d / "link.crt").write_text(tls.cert)
            (d / "ca.crt").write_text(tls.ca_cert)
            (d / "link.key").write_text(tls.key)
            (d / "link.key").chmod(0o600)
            paths = links.LinkPaths(
                cert=str(d / "link.crt"),
                key=str(d / "link.key"),
                ca=str(d / "ca.crt"),
                pid_path=str(d / "nginx.pid"),
                error_log=str(d / "error.log"),
                load_stream_module=nginx_stream_module(self.nginx),
            )
            conf = (
                links.render_client_conf([(1, self.REPLICA_ADDRESS)], self.port, paths, 1800)
                if model is None
                else links.render_server_conf(self.REPLICA_ADDRESS, self.port, f"127.0.0.1:{model}", paths, 1800)
            )
            (d / "link.conf").write_text(conf)
            self.dirs[end] = d
        self.procs = {end: self.start(end) for end in ("server", "client")}
        self.backend = f"http://{links.link_listen(1)}/v1"

    def start(self, end: str) -> subprocess.Popen[bytes]:
        d = self.dirs[end]
        cmd = [self.nginx, "-c", str(d / "link.conf"), "-p", str(d)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def measure(load: Load, kill_at: float, gone_pgid: int, timeout_s: float) -> dict[str, object]:
    """Streams lost, seconds until every path served a new request, orphans of the killed group."""
    deadline = kill_at + timeout_s
    recovered: dict[str, float] = {}
    while time.monotonic() < deadline and len(recovered) < len(PATHS):
        time.sleep(0.2)
        with load.lock:
            for o in load.outcomes:
                if o.ok and o.started > kill_at and o.path not in recovered:
                    recovered[o.path] = o.ended - kill_at
    time.sleep(1)
    with load.lock:
        lost = [o for o in load.outcomes if o.started < kill_at < o.ended + 0.05 and not o.ok]
        in_flight = [o for o in load.outcomes if o.started < kill_at < o.ended]
    return {
        "in_flight": len(in_flight),
        "lost": len(lost),
        "lost_by_path": {p: sum(o.path == p for o in lost) for p in PATHS if any(o.path == p for o in lost)},
        "recovered_s": round(max(recovered.values()), 2) if len(recovered) == len(PATHS) else None,
        "orphans": len(group_members(gone_pgid)) if gone_pgid else 0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=2, help="concurrent streams per path (default: 2)")
    ap.add_argument("--faults", default="model,link,relay,litellm,worker,master")
    ap.add_argument("--recover-timeout", type=float, default=300, help="seconds to wait for recovery")
    args = ap.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="coderig-faults-bench-"))
    keys = state / "keys.json"
    keys.write_text(json.dumps({"bench": KEY}))
    os.chmod(keys, 0o600)
    ports = [free_port(), free_port()]
    models = [standin(p) for p in ports]
    link = Link(state, ports[1])
    backends = (f"http://127.0.0.1:{ports[0]}/v1", link.backend)
    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "-m", "coderig.cli", "frontdoor", "run", *[a for b in backends for a in ("--backend", b)],
         "--model", MODEL, "--listen", f"127.0.0.1:{port}", "--keys-file", str(keys), "--state-dir", str(state),
         "--plain-http", "--litellm-workers", "2", "--startup-timeout", "600", "--rate-limit-per-minute", "60000",
         "--rate-burst", "1000"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert runner.stdout is not None
    for line in runner.stdout:
        if line.startswith("coderig frontdoor: ready"):
            break
    else:
        print("the front door did not start", file=sys.stderr)
        return 1
    threading.Thread(target=lambda: [None for _ in runner.stdout or ()], daemon=True).start()
    load = Load(port, args.streams)
    load.start()
    time.sleep(5)
    results: dict[str, dict[str, object]] = {}
    try:
        for fault in args.faults.split(","):
            kids = children(runner.pid)
            if fault == "model":
                victim = models[1].pid
            elif fault == "link":
                victim = link.procs["server"].pid
            elif fault == "worker":
                victim = children(kids["nginx"][0])["nginx"][0]
            else:
                victim = kids[{"relay": "relay", "litellm": "litellm", "master": "nginx"}[fault]][0]
            pgid = os.getpgid(victim)
            kill_at = time.monotonic()
            if fault == "link":  # the replica's end goes as a machine or container does: every process
                os.killpg(pgid, signal.SIGKILL)
                link.procs["server"].wait(5)
            else:
                os.kill(victim, signal.SIGKILL)
            if fault == "model":
                models[1].wait(5)
            results[fault] = measure(
                load, kill_at, pgid if fault in ("link", "relay", "litellm", "master") else 0, args.recover_timeout
            )
            if fault == "model":  # the replica comes back for the next fault
                models[1] = standin(ports[1])
            if fault == "link":
                link.procs["server"] = link.start("server")
            print(f"{fault:8} {json.dumps(results[fault])}", flush=True)
            time.sleep(5)
    finally:
        load.stop.set()
        runner.send_signal(signal.SIGTERM)
        runner.wait(60)
        for m in models:
            m.terminate()
            m.wait(10)
        link.stop()
    total = sum(o.ok for o in load.outcomes)
    print(json.dumps({"streams": args.streams, "completed_streams": total, "faults": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
