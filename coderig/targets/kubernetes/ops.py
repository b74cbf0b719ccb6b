"""`coderig start|stop|idle STACK` for a kubernetes stack, on an operator's machine with `kubectl` and the
stack's kubeconfig/context (`kubectl` handles every auth plugin: EKS, OIDC, client certificates)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from coderig.core import budgets
from coderig.core.errors import REFUSED, UserError
from coderig.core.settings import StackSettings
from coderig.runtime.kube_reaper import STATE_KEY
from coderig.targets.kubernetes import manifests as kube
from coderig.targets.kubernetes.idle import idle_env
from coderig.targets.kubernetes.wake import RELAY_CONTROL


@dataclass(frozen=True)
class KubeStack:
    stack: str
    namespace: str
    kubeconfig: str | None
    context: str | None
    replicas: int
    budget_s: int
    deployment: str = "coderig-model"
    frontdoor: str = "coderig-frontdoor"
    metrics_host: str = ""
    state_configmap: str = "coderig-idle-state"
    served_name: str = ""


def load_kube_stack(args: argparse.Namespace, settings: StackSettings | None) -> KubeStack:
    stack: str = args.stack
    if settings is None:
        raise UserError(f"no Pulumi.{stack}.yaml here: pass --config FILE (a kubernetes stack's settings are needed)")
    t = kube.target(settings)
    budget = kube.startup_budget_seconds(settings) + budgets.IMAGE_PULL_S
    return KubeStack(
        stack=stack,
        namespace=t.namespace,
        kubeconfig=t.kubeconfig,
        context=t.context,
        replicas=max(1, t.replicas),
        budget_s=budget,
        deployment=kube.MODEL,
        frontdoor=kube.FRONTDOOR,
        metrics_host=idle_env(settings, stack)["CODERIG_METRICS_HOST"],
        state_configmap=kube.IDLE_STATE,
        served_name=settings.model.served_name,
    )


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def kubectl(k: KubeStack, *args: str) -> list[str]:
    cmd = ["kubectl"]
    if k.kubeconfig:
        cmd += ["--kubeconfig", os.path.expanduser(k.kubeconfig)]
    if k.context:
        cmd += ["--context", k.context]
    return [*cmd, "--namespace", k.namespace, *args]


_RUNNING_PROBE = """
import socket, sys, urllib.request
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
total = 0.0
addrs = sorted({i[4][0] for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
for a in addrs:
    for line in urllib.request.urlopen(f"http://{a}:{port}/metrics", timeout=5).read().decode().splitlines():
        if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")) and name in line:
            total += float(line.rsplit(" ", 1)[1])
print(f"{len(addrs)} {total:g}")
"""


def running_requests(k: KubeStack, model_name: str, run: Runner = _run) -> float | None:
    """Requests running or queued over every replica, read from inside the front-door pod (the only
    pods the NetworkPolicy lets reach the model server). None when it cannot be read."""
    cmd = kubectl(
        k,
        "exec",
        f"deployment/{k.frontdoor}",
        "-c",
        "litellm",
        "--",
        "python",
        "-c",
        _RUNNING_PROBE,
        k.metrics_host,
        "8000",
        model_name,
    )
    res = run(cmd)
    if res.returncode != 0:
        return None
    try:
        _count, total = res.stdout.split()
        return float(total)
    except ValueError:
        return None


def relay_state(k: KubeStack, run: Runner = _run) -> dict[str, object] | None:
    """What one front-door pod's relay holds for the model (awake, stopped, waking, since when, its
    counters: GET /state on its loopback control port); None when it cannot be read."""
    url = f"http://{RELAY_CONTROL}/state"
    probe = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    res = run(kubectl(k, "exec", f"deployment/{k.frontdoor}", "-c", "keepalive", "--", "python3", "-c", probe))
    try:
        routes = json.loads(res.stdout)["routes"] if res.returncode == 0 else []
    except (ValueError, KeyError, TypeError):
        return None
    return routes[0] if routes and isinstance(routes[0], dict) else None


def cmd_start(args: argparse.Namespace, settings: StackSettings | None, run: Runner = _run) -> int:
    """Scale the model server back to the stack's replicas and wait until every replica is ready."""
    k = load_kube_stack(args, settings)
    replicas = int(getattr(args, "replicas", None) or k.replicas)
    if getattr(args, "dry_run", False):
        print(f"would scale deployment/{k.deployment} in {k.namespace} to {replicas}")
        return 0
    res = run(kubectl(k, "scale", f"deployment/{k.deployment}", f"--replicas={replicas}"))
    if res.returncode != 0:
        print(f"coderig start: {res.stderr.strip() or res.stdout.strip()}", file=sys.stderr)
        return 1
    print(f"scaled deployment/{k.deployment} to {replicas}; loading the model (budget {k.budget_s}s)")
    if getattr(args, "no_wait", False):
        return 0
    # never shorter than the model's load budget (a 700 GB model takes half an hour); --no-wait skips it
    timeout = max(int(getattr(args, "timeout", None) or 0), k.budget_s)
    start = time.monotonic()
    res = run(kubectl(k, "rollout", "status", f"deployment/{k.deployment}", f"--timeout={timeout}s"))
    took = time.monotonic() - start
    if res.returncode != 0:
        print(f"coderig start: not ready after {took:.0f}s: {res.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"ready: {replicas} model replica(s) after {took:.0f}s")
    return 0


def cmd_stop(args: argparse.Namespace, settings: StackSettings | None, run: Runner = _run) -> int:
    """Scale the model server to zero now (weights stay on the PVC); refuses while requests run."""
    k = load_kube_stack(args, settings)
    if not getattr(args, "force", False):
        running = running_requests(k, k.served_name, run)
        if running is None:
            print("coderig stop: cannot read the model's running requests: not stopping (use --force)", file=sys.stderr)
            return 1
        if running:
            print(f"coderig stop: {running:g} requests running: not stopping (use --force)", file=sys.stderr)
            return 1
    if getattr(args, "dry_run", False):
        print(f"would scale deployment/{k.deployment} in {k.namespace} to 0")
        return 0
    res = run(kubectl(k, "scale", f"deployment/{k.deployment}", "--replicas=0"))
    if res.returncode != 0:
        print(f"coderig stop: {res.stderr.strip() or res.stdout.strip()}", file=sys.stderr)
        return 1
    then = (
        "the next request scales it back (the front door holds it meanwhile)"
        if settings is not None and settings.idle.enabled
        else f"the gateway answers 503 until `coderig start {k.stack}`"
    )
    print(f"scaled deployment/{k.deployment} to 0 (weights kept on the PVC); {then}")
    return 0


def cmd_idle(args: argparse.Namespace, settings: StackSettings | None, run: Runner = _run) -> int:
    """Print the in-cluster reaper's last decision and history length."""
    k = load_kube_stack(args, settings)
    if settings is not None and not settings.idle.enabled:
        raise UserError(
            f"stack {k.stack} has no idle policy, so no reaper runs to report on: set coderig:idle.stopAfterMinutes "
            "(or officeHours) and `pulumi up`; `coderig stop`/`start` work without one",
            REFUSED,
        )
    res = run(kubectl(k, "get", "configmap", k.state_configmap, "-o", "json"))
    if res.returncode != 0:
        err = res.stderr.strip() or res.stdout.strip()
        if "(NotFound)" in err:
            err = f"no {k.state_configmap} in {k.namespace} yet: the idle CronJob has not run since `pulumi up`"
        print(f"coderig idle: {err}", file=sys.stderr)
        return 1
    state = json.loads((json.loads(res.stdout).get("data") or {}).get(STATE_KEY) or "{}")
    last = state.get("last") or {}
    relay = relay_state(k, run)
    if getattr(args, "json", False):
        print(json.dumps({**state, "front_door": relay}, indent=2))
        return 0
    print(f"{k.deployment}  {last.get('action', '?')} at {last.get('at', '?')}: {last.get('reason', 'no run yet')}")
    print(f"  samples in window: {len(state.get('samples') or [])}")
    if relay is None:
        print("  front door: its relay's state cannot be read (kubectl exec into the keepalive container)")
        return 0
    line = f"  front door: model {relay.get('state')} since {relay.get('since')}; {relay.get('inflight')} in flight, "
    print(line + f"{relay.get('requests_total')} requests, {relay.get('wakes_total')} wakes")
    if relay.get("last_error"):
        print(f"  last wake failed: {relay['last_error']}")
    return 0


class KubernetesOperations:
    """coderig.targets.operations.TargetOperations of the kubernetes kind: kubectl on the model
    Deployment; `run` runs each kubectl command (tests give a fake)."""

    def __init__(self, run: Runner = _run) -> None:
        self.run = run

    def idle(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return cmd_idle(args, settings, self.run)

    def stop(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return cmd_stop(args, settings, self.run)

    def start(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return cmd_start(args, settings, self.run)


OPERATIONS = KubernetesOperations()
