"""Scale-to-zero on the `kubernetes` target: the in-cluster reaper.

The reaper (`python -m coderig.runtime.kube_reaper reap`) runs from CronJob coderig-idle in a plain
python image, with `coderig/runtime/` mounted from a ConfigMap: it needs the standard library only.
It talks to the API server with urllib and the pod's service-account token, which may only
get/scale the model Deployment and read/patch its own state ConfigMap.

Each run (one period):
  1. reads the model Deployment; at zero replicas (or mid-rollout) there is nothing to measure;
  2. scrapes vLLM /metrics of every ready replica (the headless Service's DNS gives their addresses);
  3. appends one `idle.Sample` (requests running + waiting, requests completed since the last run)
     to the history kept in ConfigMap coderig-idle-state;
  4. asks `idle.decide` (the same rule as every target) and, on "stop", checks once more that nothing
     runs, then sets replicas to 0 through `deployments/scale`.
A missing or unreadable signal never stops anything: decide() keeps the model up and says why.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from coderig.runtime import idle
from coderig.runtime.http import http_get
from coderig.runtime.idle import ReaperError

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUIRED_SIGNALS = ("running", "completed")  # the gateway keeps no counter on this target
STATE_KEY = "state.json"


# --- configuration (the CronJob's environment, set by coderig.targets.kubernetes.idle.idle_env) --------


@dataclass(frozen=True)
class ReaperConfig:
    namespace: str
    deployment: str
    metrics_host: str
    metrics_port: int
    state_configmap: str
    stop_after_minutes: float
    period_seconds: int = 300
    model_name: str | None = None
    schedule: idle.OfficeHours | None = None
    dry_run: bool = False
    replicas: int = 1  # what an office-hours start scales back to when no earlier count is known

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReaperConfig:
        def need(key: str) -> str:
            value = env.get(key, "")
            if not value:
                raise ReaperError(f"{key} is not set")
            return value

        try:
            schedule = idle.schedule_from_env(env)
            stop_after = float(need("CODERIG_STOP_AFTER_MINUTES"))
            period = int(env.get("CODERIG_PERIOD_SECONDS", "300"))
            port = int(env.get("CODERIG_METRICS_PORT", "8000"))
            replicas = int(env.get("CODERIG_REPLICAS", "1"))
        except (ValueError, idle.ScheduleError) as exc:
            raise ReaperError(f"bad reaper environment: {exc}") from exc
        if stop_after <= 0:
            raise ReaperError("CODERIG_STOP_AFTER_MINUTES must be positive")
        return cls(
            namespace=need("CODERIG_NAMESPACE"),
            deployment=need("CODERIG_DEPLOYMENT"),
            metrics_host=need("CODERIG_METRICS_HOST"),
            metrics_port=port,
            state_configmap=need("CODERIG_STATE_CONFIGMAP"),
            stop_after_minutes=stop_after,
            period_seconds=period,
            model_name=env.get("CODERIG_MODEL_NAME") or None,
            schedule=schedule,
            dry_run=idle.dry_run_from_env(env),
            replicas=max(1, replicas),
        )


# --- the API server, with urllib ------------------------------------------------------------------


class KubeApi:
    """The few API calls the reaper makes. `opener` is swapped in tests."""

    def __init__(
        self,
        base: str,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        opener: Callable[[urllib.request.Request], tuple[int, bytes]] | None = None,
    ):
        self.base = base.rstrip("/")
        self.token_file = token_file
        self.ctx = ssl.create_default_context(cafile=str(ca_file)) if ca_file else ssl.create_default_context()
        self.opener = opener or self._open

    @classmethod
    def in_cluster(cls) -> KubeApi:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ReaperError("not running in a pod (KUBERNETES_SERVICE_HOST is unset)")
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", SA_DIR / "token", SA_DIR / "ca.crt")

    def _open(self, req: urllib.request.Request) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(req, timeout=20, context=self.ctx) as resp:  # noqa: S310 - https only
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ReaperError(f"{req.get_method()} {req.full_url}: {exc}") from exc

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)  # noqa: S310 - https base
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token_file is not None:
            req.add_header("Authorization", f"Bearer {self.token_file.read_text().strip()}")
        status, raw = self.opener(req)
        if status >= 300:
            text = raw.decode("utf-8", "replace")[:300]
            raise ReaperError(f"{method} {path}: HTTP {status}: {text}")
        return json.loads(raw) if raw else {}

    def deployment(self, ns: str, name: str) -> dict[str, Any]:
        return self.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")

    def scale(self, ns: str, name: str, replicas: int) -> None:
        self.call(
            "PATCH",
            f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            {"spec": {"replicas": replicas}},
            "application/merge-patch+json",
        )

    def read_state(self, ns: str, name: str) -> dict[str, Any]:
        cm = self.call("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}")
        try:
            state = json.loads((cm.get("data") or {}).get(STATE_KEY) or "{}")
        except ValueError:
            state = {}
        return state if isinstance(state, dict) else {}

    def write_state(self, ns: str, name: str, state: Mapping[str, Any]) -> None:
        body = {"data": {STATE_KEY: json.dumps(state, sort_keys=True)}}
        self.call("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{name}", body, "application/merge-patch+json")


# --- scraping -------------------------------------------------------------------------------------


def resolve(host: str, port: int) -> list[str]:
    """Every address behind a headless Service name (one per ready pod)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class Scrape:
    """One look at every replica: running (+ waiting) requests and completed counters per address.
    `complete` is False when a replica did not answer or its metrics lacked a signal."""

    running: float | None
    completed_by_addr: dict[str, float]
    complete: bool


def scrape(
    addrs: Sequence[str], port: int, model_name: str | None, get: Callable[[str], str | None] = http_get
) -> Scrape:
    running = 0.0
    completed: dict[str, float] = {}
    complete = bool(addrs)
    for addr in addrs:
        host = f"[{addr}]" if ":" in addr else addr
        text = get(f"http://{host}:{port}/metrics")
        if text is None:
            complete = False
            continue
        try:
            counters = idle.read_node_counters(text, None, model_name=model_name)
        except idle.MetricsParseError:
            complete = False
            continue
        if counters.running is None or counters.completed_total is None:
            complete = False
            continue
        running += counters.running
        completed[addr] = counters.completed_total
    return Scrape(running if complete else None, completed, complete)


# --- the reaper -----------------------------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _samples(state: Mapping[str, Any]) -> list[idle.Sample]:
    out = []
    for s in state.get("samples", []):
        at = _parse_time(s.get("at"))
        if at is not None:
            out.append(idle.Sample(at=at, running=s.get("running"), completed=s.get("completed")))
    return out


def _dump_samples(samples: Sequence[idle.Sample]) -> list[dict[str, Any]]:
    return [{"at": _iso(s.at), "running": s.running, "completed": s.completed} for s in samples]


@dataclass
class Report:
    action: str
    reason: str
    replicas: int
    ready: int
    applied: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def reap(
    cfg: ReaperConfig,
    api: KubeApi,
    *,
    now: datetime | None = None,
    addrs: Callable[[str, int], list[str]] = resolve,
    get: Callable[[str], str | None] = http_get,
) -> Report:
    now = now or idle.utcnow()
    state = api.read_state(cfg.namespace, cfg.state_configmap)
    dep = api.deployment(cfg.namespace, cfg.deployment)
    spec_replicas = int((dep.get("spec") or {}).get("replicas", 1))
    status = dep.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    settled = (
        int(status.get("observedGeneration") or 0) >= int((dep.get("metadata") or {}).get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) == spec_replicas
        and ready == spec_replicas
        and int(status.get("replicas") or 0) == spec_replicas
    )
    window = timedelta(minutes=cfg.stop_after_minutes)

    def decide(samples: Sequence[idle.Sample], state: str, up_since: datetime | None = None) -> idle.Decision:
        return idle.decide(
            samples,
            now,
            cfg.stop_after_minutes,
            cfg.schedule,
            state=state,
            period_seconds=cfg.period_seconds,
            required=REQUIRED_SIGNALS,
            up_since=up_since,
        )

    if spec_replicas == 0:
        state.update(samples=[], counters={}, up_since=None)
        d = decide([], "stopped")
        report = Report(d.action, d.reason, 0, ready)
        if d.action == "start" and not cfg.dry_run:
            target = int(state.get("replicas_before") or cfg.replicas)
            api.scale(cfg.namespace, cfg.deployment, target)
            report.applied = True
            report.extra["scaled_to"] = target
    elif not settled:
        state.update(samples=[], counters={}, up_since=None)
        d = decide([], "starting")
        report = Report(
            "keep", f"rollout in progress: {ready}/{spec_replicas} replicas ready; {d.reason}", spec_replicas, ready
        )
    else:
        up_since = _parse_time(state.get("up_since")) or now
        found = addrs(cfg.metrics_host, cfg.metrics_port)
        s = scrape(found, cfg.metrics_port, cfg.model_name, get)
        if len(found) < ready:
            s = Scrape(None, s.completed_by_addr, False)
        prev: dict[str, float] = {k: float(v) for k, v in (state.get("counters") or {}).items()}
        completed: float | None = None
        if s.complete:
            completed = sum(idle.counter_delta(prev.get(a), v) or 0.0 for a, v in s.completed_by_addr.items())
        period = timedelta(seconds=cfg.period_seconds)
        history = [x for x in _samples(state) if x.at > now - window - 3 * period]
        history.append(idle.Sample(at=now - period, running=s.running, completed=completed))
        d = decide(history, "running", up_since)
        if not s.complete:
            # older datapoints may still look fresh to decide(); this run saw only part of the replicas
            d = idle.Decision(
                "keep", f"metrics from {len(s.completed_by_addr)}/{ready} replicas: not stopping without data"
            )
        state.update(
            samples=_dump_samples(history),
            counters=s.completed_by_addr if s.complete else state.get("counters") or {},
            up_since=_iso(up_since),
        )
        report = Report(d.action, d.reason, spec_replicas, ready, extra={"running": s.running, "completed": completed})
        if d.action == "stop":
            # a request may have arrived since the scrape: look again right before scaling
            again = scrape(addrs(cfg.metrics_host, cfg.metrics_port), cfg.metrics_port, cfg.model_name, get)
            finished = again.complete and any(
                again.completed_by_addr.get(a, 0.0) != v for a, v in s.completed_by_addr.items()
            )
            if not again.complete or again.running or finished:
                report.action = "keep"
                report.reason = (
                    "metrics unreadable on the final check: not stopping without data"
                    if not again.complete
                    else f"{again.running:g} requests started while deciding"
                    if again.running
                    else "a request completed while deciding"
                )
            elif not cfg.dry_run:
                api.scale(cfg.namespace, cfg.deployment, 0)
                report.applied = True
                state.update(
                    replicas_before=spec_replicas, samples=[], counters={}, up_since=None, stopped_at=_iso(now)
                )
    state["last"] = {"at": _iso(now), "action": report.action, "reason": report.reason, "applied": report.applied}
    api.write_state(cfg.namespace, cfg.state_configmap, state)
    return report


def reap_main(env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else env
    try:
        cfg = ReaperConfig.from_env(env)
        report = reap(cfg, KubeApi.in_cluster())
    except ReaperError as exc:
        print(json.dumps({"level": "error", "error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"level": "info", "dry_run": cfg.dry_run, **report.__dict__}, default=str), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m coderig.runtime.kube_reaper")
    p.add_argument("command", choices=["reap"])
    p.parse_args(list(argv) if argv is not None else None)
    return reap_main()


if __name__ == "__main__":
    sys.exit(main())
