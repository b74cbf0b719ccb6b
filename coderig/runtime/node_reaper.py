"""The idle reaper of the `ssh` and `local` targets, and of the `aws` front-door machine (stdlib only; a
compose service on the machine that runs the gateway).

Each period it:
  1. reads the keepalive relay's control API (GET /state): per model server the requests that went
     through the gateway to it (the relay is the one hop on every path), those in flight, and the
     state the relay holds it in (awake, sleeping, stopped, waking);
  2. reads each model server's vLLM /metrics (a replica's through its link): requests running and
     queued, requests completed;
  3. appends one `idle.Sample` per model server and asks the shared `idle.decide`;
  4. acts per `coderig:idle.action`:
       sleep  asks the relay to hold the model (refused while anything is in flight), then POST
              /sleep?level=1 (vLLM sleep mode: weights to host RAM, GPU memory freed), then tells
              the relay it is asleep; the relay wakes it on the next request;
       stop   the same, with `docker stop` of the model container (weights stay on the cache volume);
              the relay wakes it through this reaper's loopback control port (POST /wake), the one
              place that holds the docker socket.
       ec2    (the aws front door, every model server a replica on a GPU instance behind its link)
              the instances stop together, so only once every model server is idle: the relay
              holds every route first (refused while anything is in flight), then the stack's
              GPU instances stop (coderig.runtime.aws_wake); the relay starts them on the next
              request. Acting on the relay's live count, not on minutes-old CloudWatch data, is
              why the front door runs this reaper instead of the Lambda.
     Office hours wake a model that is not awake at their start.
A missing or stale signal keeps the model awake (decide() says why); dry run decides and acts on nothing.
The state file (JSON) holds each model server's history and last decision: `coderig idle STACK` reads it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from coderig.runtime import idle
from coderig.runtime.http import http_get, poll_ready
from coderig.runtime.wake import SleepWaker, WakeError, Waker

ACTIONS = ("sleep", "stop", "ec2")
HISTORY_KEEP = 400  # samples per model server kept in the state file (a week at 30 min periods)


# --- docker, over its unix socket (stop mode, first machine only) ---------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class Docker:
    """The three calls stop mode needs, on the Docker Engine API."""

    def __init__(self, socket_path: str = "/var/run/docker.sock", timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _call(self, method: str, path: str, timeout: float | None = None) -> tuple[int, bytes]:
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError as exc:
            raise WakeError(f"docker: {method} {path}: {exc}") from exc
        finally:
            conn.close()

    def state(self, container: str) -> str:
        status, body = self._call("GET", f"/containers/{container}/json")
        if status != 200:
            return "unknown"
        st = json.loads(body).get("State") or {}
        if not st.get("Running"):
            return "stopped"
        health = (st.get("Health") or {}).get("Status")
        return "waking" if health in ("starting", "unhealthy") else "awake"

    def start(self, container: str) -> None:
        status, body = self._call("POST", f"/containers/{container}/start")
        if status not in (204, 304):  # 304: already running
            raise WakeError(f"docker start {container}: HTTP {status} {body[:200].decode(errors='replace')}")

    def stop(self, container: str, grace_s: int = 60) -> None:
        # the engine answers once the container exited: after SIGTERM, or SIGKILL at the end of the grace
        status, body = self._call("POST", f"/containers/{container}/stop?t={grace_s}", timeout=grace_s + 30)
        if status not in (204, 304):
            raise WakeError(f"docker stop {container}: HTTP {status} {body[:200].decode(errors='replace')}")


class ContainerWaker:
    """The "stop" mechanism seen from the reaper itself: the model container on this machine."""

    name = "stop"

    def __init__(self, docker: Docker, container: str) -> None:
        self.docker, self.container = docker, container

    def state(self) -> str:
        return self.docker.state(self.container)

    def wake(self) -> None:
        self.docker.start(self.container)

    def sleep(self) -> None:
        self.docker.stop(self.container)


# --- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    relay: str  # http://127.0.0.1:PORT, the relay's control API
    models: tuple[str, ...]  # http://HOST:PORT of each model server, in the relay's route order
    action: str
    stop_after_minutes: float
    period_seconds: int = 60
    schedule: idle.OfficeHours | None = None
    dry_run: bool = False
    model_name: str | None = None
    container: str | None = None  # stop: the model container on this machine (route 0)
    start_budget_s: float = 600.0
    state_file: Path | None = None
    aws_region: str = "auto"  # ec2: the stack's region ("auto": instance metadata)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise idle.ReaperError(f"action {self.action!r}; allowed: {', '.join(ACTIONS)}")
        if self.action == "stop" and (not self.container or len(self.models) != 1):
            raise idle.ReaperError("action stop needs the model container's name and one model server")
        if self.stop_after_minutes * 60 < self.period_seconds:
            raise idle.ReaperError("the idle window is shorter than the reaper's period")


# --- one period ------------------------------------------------------------------------------------

Post = Callable[[str], tuple[int, dict[str, Any]]]


def http_post(url: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 - loopback control URLs
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"detail": raw.decode(errors="replace")}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 0, {"detail": str(exc)}


@dataclass
class Node:
    """What the reaper remembers of one model server between periods."""

    history: list[idle.Sample] = field(default_factory=list)
    requests_total: float | None = None
    completed_total: float | None = None
    decision: str = ""
    reason: str = ""


def _sample(node: Node, route: Mapping[str, Any] | None, metrics: str | None, now: datetime, model: str | None):
    counters = idle.read_node_counters(metrics, None, model_name=model)
    gateway = None
    inflight = None
    if route is not None:
        total = float(route.get("requests_total", 0))
        gateway = idle.counter_delta(node.requests_total, total)
        node.requests_total = total
        inflight = float(route.get("inflight", 0))
    completed = idle.counter_delta(node.completed_total, counters.completed_total)
    if counters.completed_total is not None:
        node.completed_total = counters.completed_total
    running = None if counters.running is None or inflight is None else counters.running + inflight
    if route is not None and route.get("state") in ("sleeping", "stopped"):
        running, completed = inflight, 0.0  # an idle model has nothing to publish: the relay counts
    node.history.append(idle.Sample(now, gateway_requests=gateway, completed=completed, running=running))
    del node.history[:-HISTORY_KEEP]


def tick(
    cfg: Config,
    nodes: list[Node],
    wakers: Sequence[Waker],
    now: datetime,
    *,
    get: Callable[[str], str | None] = http_get,
    post: Post = http_post,
    log: Callable[[str], None] = print,
) -> list[idle.Decision]:
    """One period: scrape, decide per model server, act (unless dry run). Returns the decisions."""
    text = get(f"{cfg.relay}/state")
    try:
        routes = json.loads(text)["routes"] if text else None
    except (ValueError, KeyError, TypeError):
        routes = None
    decisions = []
    for i, (node, base, waker) in enumerate(zip(nodes, cfg.models, wakers, strict=True)):
        route = routes[i] if routes and i < len(routes) else None
        _sample(node, route, get(f"{base}/metrics"), now, cfg.model_name)
        state = route.get("state", "unknown") if route else "unknown"
        up = None
        if route and state == "awake":
            up = datetime.fromisoformat(str(route.get("since")))
        d = idle.decide(
            node.history,
            now,
            cfg.stop_after_minutes,
            cfg.schedule,
            state={"awake": "running", "sleeping": "stopped", "stopped": "stopped"}.get(state, state),
            period_seconds=cfg.period_seconds,
            up_since=up,
        )
        if route is None:
            d = idle.Decision("keep", "the relay's state did not answer: not acting without it")
        elif d.action == "stop" and node.history[-1].running is None:  # this period's scrape, not an older one
            d = idle.Decision("keep", f"no running-requests metric from {base}/metrics now: not acting without it")
        node.decision, node.reason = d.action, d.reason
        decisions.append(d)
        if cfg.dry_run or d.action == "keep" or cfg.action == "ec2":  # ec2: the machines act together, below
            log(f"model {i} ({base}): {state}; {d.action}: {d.reason}" + (" [dry run]" if cfg.dry_run else ""))
            continue
        log(f"model {i} ({base}): {state}; {d.action}: {d.reason}")
        if d.action == "stop":
            put_down(cfg, i, waker, post, log)
        else:
            bring_up(cfg, i, base, waker, post, log)
    if cfg.action == "ec2" and not cfg.dry_run and decisions:
        if all(d.action == "stop" for d in decisions):
            put_down_machines(cfg, wakers[0], post, log)
        elif any(d.action == "start" for d in decisions):
            bring_up(cfg, 0, cfg.models[0], wakers[0], post, log)  # starts every instance of the stack
    return decisions


def put_down_machines(cfg: Config, waker: Waker, post: Post, log: Callable[[str], None]) -> bool:
    """ec2: hold every model server at the relay (each refused while a request is in flight), then stop
    the GPU instances; any refusal or failure releases every hold and leaves them running."""
    held: list[int] = []

    def release() -> None:
        for r in held:
            post(f"{cfg.relay}/settled?route={r}&state=awake")

    for route in range(len(cfg.models)):
        status, answer = post(f"{cfg.relay}/hold?route={route}&state=stopped")
        if status != 200:
            release()
            log(f"GPU instances: not stopped: the relay refused to hold model {route} ({answer.get('detail', status)})")
            return False
        held.append(route)
    try:
        waker.sleep()  # type: ignore[attr-defined]
    except WakeError as exc:
        release()
        log(f"GPU instances: {exc}; left running")
        return False
    for r in held:
        post(f"{cfg.relay}/settled?route={r}&state=stopped")
    log("GPU instances: stopped")
    return True


def put_down(cfg: Config, route: int, waker: Waker, post: Post, log: Callable[[str], None]) -> bool:
    """Hold the model at the relay (only if nothing is in flight), sleep/stop it, report the outcome."""
    target = "sleeping" if cfg.action == "sleep" else "stopped"
    status, answer = post(f"{cfg.relay}/hold?route={route}&state={target}")
    if status != 200:
        log(f"model {route}: not {target}: the relay refused to hold it ({answer.get('detail', status)})")
        return False
    try:
        waker.sleep()  # type: ignore[attr-defined]
    except WakeError as exc:
        post(f"{cfg.relay}/settled?route={route}&state=awake")
        log(f"model {route}: {exc}; left awake")
        return False
    post(f"{cfg.relay}/settled?route={route}&state={target}")
    log(f"model {route}: {target}")
    return True


def bring_up(cfg: Config, route: int, base: str, waker: Waker, post: Post, log: Callable[[str], None]) -> bool:
    try:
        waker.wake()
    except WakeError as exc:
        log(f"model {route}: office hours start failed: {exc}")
        return False
    if not poll_ready(f"{base}/health", cfg.start_budget_s, interval=2.0):
        log(f"model {route}: not ready within {cfg.start_budget_s:g} s")
        return False
    post(f"{cfg.relay}/settled?route={route}&state=awake")
    log(f"model {route}: awake (office hours)")
    return True


def save_state(path: Path, cfg: Config, nodes: Sequence[Node], now: datetime) -> None:
    data = {
        "at": now.isoformat(timespec="seconds"),
        "action": cfg.action,
        "dry_run": cfg.dry_run,
        "models": [
            {
                "model": base,
                "decision": n.decision,
                "reason": n.reason,
                "samples": [[s.at.isoformat(), s.gateway_requests, s.completed, s.running] for s in n.history[-20:]],
            }
            for base, n in zip(cfg.models, nodes, strict=True)
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# --- the control port (stop mode): the relay's one way to start the model container ----------------


def control_server(listen: tuple[str, int], waker: ContainerWaker) -> ThreadingHTTPServer:
    """GET /state -> {"state": …}; POST /wake -> docker start. Loopback only; nothing else."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/state":
                return self._send(404, {"error": "no such route"})
            try:
                return self._send(200, {"state": waker.state()})
            except WakeError as exc:
                return self._send(502, {"error": str(exc)})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/wake":
                return self._send(404, {"error": "no such route"})
            try:
                waker.wake()
            except WakeError as exc:
                return self._send(502, {"error": str(exc)})
            return self._send(200, {"state": "waking"})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            return

    if not (listen[0].startswith("127.") or listen[0] == "::1"):
        raise idle.ReaperError("the control port listens on loopback only")
    server = ThreadingHTTPServer(listen, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the process -----------------------------------------------------------------------------------


def build(cfg: Config, docker: Docker | None = None) -> list[Waker]:
    if cfg.action == "sleep":
        return [SleepWaker(base) for base in cfg.models]
    if cfg.action == "ec2":
        from coderig.runtime import aws_wake  # noqa: PLC0415 - boto3 only where the front door runs it

        return [aws_wake.waker("auto", cfg.aws_region)] * len(cfg.models)  # one: the stack's instances
    assert cfg.container is not None
    return [ContainerWaker(docker or Docker(), cfg.container)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="coderig idle reaper (ssh/local targets)")
    ap.add_argument("--relay", required=True, help="http://127.0.0.1:PORT of the relay's control API")
    ap.add_argument("--model", action="append", required=True, help="http://HOST:PORT of a model server")
    ap.add_argument("--action", choices=ACTIONS, required=True)
    ap.add_argument("--stop-after-minutes", type=float, required=True)
    ap.add_argument("--period", type=int, default=60, help="seconds between looks")
    ap.add_argument("--container", help="stop: the model container's name")
    ap.add_argument("--control", help="stop: loopback HOST:PORT the relay asks to start the model")
    ap.add_argument("--docker-socket", default="/var/run/docker.sock")
    ap.add_argument("--model-name")
    ap.add_argument("--start-budget", type=float, default=600.0)
    ap.add_argument("--state-file", type=Path)
    ap.add_argument("--aws-region", default="auto", help="ec2: the stack's region")
    ap.add_argument("--once", action="store_true", help="one period, then exit")
    args = ap.parse_args(argv)
    try:
        cfg = Config(
            relay=args.relay.rstrip("/"),
            models=tuple(m.rstrip("/") for m in args.model),
            action=args.action,
            stop_after_minutes=args.stop_after_minutes,
            period_seconds=args.period,
            schedule=idle.schedule_from_env(os.environ),
            dry_run=idle.dry_run_from_env(os.environ),
            model_name=args.model_name,
            container=args.container,
            start_budget_s=args.start_budget,
            state_file=args.state_file,
            aws_region=args.aws_region,
        )
        wakers = build(cfg, Docker(args.docker_socket))
        if args.control:
            if not isinstance(wakers[0], ContainerWaker):
                raise idle.ReaperError("--control is for action stop")
            host, _, port = args.control.rpartition(":")
            control_server((host.strip("[]"), int(port)), wakers[0])
    except (idle.ReaperError, idle.ScheduleError, ValueError) as exc:
        print(f"node_reaper: {exc}", file=sys.stderr)
        return 2
    nodes = [Node() for _ in cfg.models]
    print(f"node_reaper: ready ({cfg.action}, window {cfg.stop_after_minutes:g} min, period {cfg.period_seconds} s)")
    while True:
        now = idle.utcnow()
        tick(cfg, nodes, wakers, now, log=lambda line: print(f"node_reaper: {line}", flush=True))
        if cfg.state_file:
            save_state(cfg.state_file, cfg, nodes, now)
        if args.once:
            return 0
        time.sleep(cfg.period_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
