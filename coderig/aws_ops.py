"""AWS operations on a coderig stack's GPU nodes: the idle reaper, the node's metric publisher, and the
`coderig stop|start|idle STACK` commands. All three use the same code.

This module ships, with `coderig/idle.py`, as the reaper Lambda's zip (handler
`coderig.aws_ops.handler`) and onto each node (the publisher, `python3 -m coderig.aws_ops publish`).
So at import time it needs the standard library only; boto3 is imported inside the functions that
call AWS (it is in the Lambda runtime; nodes get it from the OS package `python3-boto3`), and the
CLI's settings lookup imports yaml/pydantic only when a command runs.

Metrics (namespace `Coderig`, dimensions StackName + InstanceId, one datapoint per period per node):
- `RequestsRunning`   requests running or queued in the model server (read with Maximum)
- `RequestsCompleted` requests the model server finished during the period (read with Sum)
- `GatewayRequests`   API requests through the gateway during the period (read with Sum)
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from coderig import idle

NAMESPACE = "Coderig"
TAG_STACK = "coderig:stack"
TAG_ENVIRONMENT = "coderig:environment"
TAG_ROLE = "coderig:role"
PERIOD_SECONDS = 60
DEFAULT_STOP_AFTER_MINUTES = 45.0

# CloudWatch metric name -> (statistic read by the reaper, idle.Sample field)
METRICS: dict[str, tuple[str, str]] = {
    "RequestsRunning": ("Maximum", "running"),
    "RequestsCompleted": ("Sum", "completed"),
    "GatewayRequests": ("Sum", "gateway_requests"),
}

# Environment of the reaper Lambda (set by components/aws.py).
ENV_STACK = "CODERIG_STACK"
ENV_TAG_KEY = "CODERIG_TAG_KEY"
ENV_TAG_VALUE = "CODERIG_TAG_VALUE"
ENV_STOP_AFTER = "CODERIG_STOP_AFTER_MINUTES"
ENV_SCHEDULE = idle.ENV_SCHEDULE
ENV_DRY_RUN = idle.ENV_DRY_RUN
ENV_NAMESPACE = "CODERIG_NAMESPACE"
ENV_SIGNALS = "CODERIG_SIGNALS"  # comma-separated idle.SIGNALS the reaper requires

Log = Callable[[dict[str, Any]], None]


class OpsError(RuntimeError):
    """A failure to report to the user in one line."""


# --- Reaper --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaperConfig:
    stack: str
    tag_key: str = TAG_STACK
    tag_value: str = ""
    stop_after_minutes: float = DEFAULT_STOP_AFTER_MINUTES
    schedule: idle.OfficeHours | None = None
    dry_run: bool = False
    namespace: str = NAMESPACE
    period_seconds: int = PERIOD_SECONDS
    signals: tuple[str, ...] = idle.SIGNALS

    def __post_init__(self) -> None:
        if not self.stack:
            raise OpsError("stack name is empty")
        if not self.tag_value:
            object.__setattr__(self, "tag_value", self.stack)
        if self.stop_after_minutes <= 0:
            raise OpsError(f"stop_after_minutes must be positive, got {self.stop_after_minutes}")
        unknown = set(self.signals) - set(idle.SIGNALS)
        if unknown:
            raise OpsError(f"unknown signals {sorted(unknown)}; known: {', '.join(idle.SIGNALS)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReaperConfig:
        stack = env.get(ENV_STACK, "")
        if not stack:
            raise OpsError(f"{ENV_STACK} is not set")
        try:
            schedule = idle.schedule_from_env(env)
        except idle.ScheduleError as exc:
            raise OpsError(f"{ENV_SCHEDULE}: {exc}") from exc
        try:
            stop_after = float(env.get(ENV_STOP_AFTER, DEFAULT_STOP_AFTER_MINUTES))
        except ValueError as exc:
            raise OpsError(f"{ENV_STOP_AFTER}: not a number: {env.get(ENV_STOP_AFTER)!r}") from exc
        signals = tuple(s.strip() for s in env.get(ENV_SIGNALS, ",".join(idle.SIGNALS)).split(",") if s.strip())
        return cls(
            stack=stack,
            tag_key=env.get(ENV_TAG_KEY) or TAG_STACK,
            tag_value=env.get(ENV_TAG_VALUE) or stack,
            stop_after_minutes=stop_after,
            schedule=schedule,
            dry_run=idle.dry_run_from_env(env),
            namespace=env.get(ENV_NAMESPACE) or NAMESPACE,
            signals=signals,
        )

    def to_env(self) -> dict[str, str]:
        """The Lambda environment that reproduces this config (inverse of from_env)."""
        return {
            ENV_STACK: self.stack,
            ENV_TAG_KEY: self.tag_key,
            ENV_TAG_VALUE: self.tag_value,
            ENV_STOP_AFTER: f"{self.stop_after_minutes:g}",
            **idle.policy_env(self.schedule, self.dry_run),
            ENV_NAMESPACE: self.namespace,
            ENV_SIGNALS: ",".join(self.signals),
        }


@dataclass
class InstanceReport:
    instance_id: str
    state: str
    action: str
    reason: str
    applied: bool = False
    error: str | None = None
    public_ip: str | None = None
    samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def list_stack_instances(ec2: Any, cfg: ReaperConfig) -> list[dict[str, Any]]:
    """This stack's instances (any state but terminated), found by tag and checked again client-side."""
    found: list[dict[str, Any]] = []
    paginator = ec2.get_paginator("describe_instances")
    filters = [
        {"Name": f"tag:{cfg.tag_key}", "Values": [cfg.tag_value]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ]
    for page in paginator.paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                if _tags(inst).get(cfg.tag_key) == cfg.tag_value:  # never trust a filter alone
                    found.append(inst)
    return sorted(found, key=lambda i: i["InstanceId"])


def fetch_samples(cw: Any, cfg: ReaperConfig, instance_id: str, now: datetime) -> list[idle.Sample]:
    """The node's published metrics over the idle window (plus slack), one Sample per period."""
    start = now - timedelta(minutes=cfg.stop_after_minutes) - timedelta(seconds=3 * cfg.period_seconds)
    dims = [{"Name": "StackName", "Value": cfg.stack}, {"Name": "InstanceId", "Value": instance_id}]
    queries = [
        {
            "Id": attr,
            "MetricStat": {
                "Metric": {"Namespace": cfg.namespace, "MetricName": name, "Dimensions": dims},
                "Period": cfg.period_seconds,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for name, (stat, attr) in METRICS.items()
    ]
    by_time: dict[datetime, dict[str, float]] = {}
    kwargs: dict[str, Any] = {
        "MetricDataQueries": queries,
        "StartTime": start,
        "EndTime": now,
        "ScanBy": "TimestampAscending",
    }
    while True:
        resp = cw.get_metric_data(**kwargs)
        for result in resp.get("MetricDataResults", []):
            for ts, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                at = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
                by_time.setdefault(at, {})[result["Id"]] = float(value)
        token = resp.get("NextToken")
        if not token:
            break
        kwargs["NextToken"] = token
    return [idle.Sample(at=at, **values) for at, values in sorted(by_time.items())]


def _print_log(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


def _decide(cfg: ReaperConfig, cw: Any, inst: Mapping[str, Any], now: datetime) -> InstanceReport:
    iid = inst["InstanceId"]
    state = inst.get("State", {}).get("Name", "unknown")
    report = InstanceReport(iid, state, "keep", "", public_ip=inst.get("PublicIpAddress"))
    samples: list[idle.Sample] = []
    if state == "running":
        try:
            samples = fetch_samples(cw, cfg, iid, now)
        except Exception as exc:  # a metrics outage must never stop a node
            report.reason = f"could not read metrics ({type(exc).__name__}: {exc}): not stopping"
            return report
    launch = inst.get("LaunchTime")
    if isinstance(launch, datetime) and launch.tzinfo is None:
        launch = launch.replace(tzinfo=UTC)
    decision = idle.decide(
        samples,
        now,
        cfg.stop_after_minutes,
        cfg.schedule,
        state=state,
        period_seconds=cfg.period_seconds,
        required=cfg.signals,
        up_since=launch if isinstance(launch, datetime) else None,
    )
    report.action, report.reason, report.samples = decision.action, decision.reason, len(samples)
    return report


def reap(
    cfg: ReaperConfig,
    *,
    ec2: Any,
    cw: Any,
    now: datetime | None = None,
    log: Log = _print_log,
    apply: bool = True,
) -> list[InstanceReport]:
    """Decide for every instance of the stack, then stop/start the ones that need it (unless dry-run).

    `apply=False` only reports (the `coderig idle` command)."""
    now = now or idle.utcnow()
    reports: list[InstanceReport] = []
    for inst in list_stack_instances(ec2, cfg):
        report = _decide(cfg, cw, inst, now)
        if report.action in ("stop", "start") and apply and not cfg.dry_run:
            try:
                if report.action == "stop":
                    ec2.stop_instances(InstanceIds=[report.instance_id])
                else:
                    ec2.start_instances(InstanceIds=[report.instance_id])
                report.applied = True
            except Exception as exc:
                report.error = f"{type(exc).__name__}: {exc}"
        log(
            {
                "stack": cfg.stack,
                "instance": report.instance_id,
                "state": report.state,
                "action": report.action,
                "applied": report.applied,
                "dry_run": cfg.dry_run or not apply,
                "reason": report.reason,
                **({"error": report.error} if report.error else {}),
            }
        )
        reports.append(report)
    return reports


def handler(event: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """Lambda entry point (EventBridge schedule). `{"dryRun": true}` in the event forces a dry run."""
    import boto3

    cfg = ReaperConfig.from_env(os.environ)
    if event and event.get("dryRun"):
        cfg = ReaperConfig(**{**asdict(cfg), "schedule": cfg.schedule, "dry_run": True})
    reports = reap(cfg, ec2=boto3.client("ec2"), cw=boto3.client("cloudwatch"))
    errors = [r for r in reports if r.error]
    return {
        "stack": cfg.stack,
        "dry_run": cfg.dry_run,
        "instances": [
            {"id": r.instance_id, "action": r.action, "applied": r.applied, "reason": r.reason} for r in reports
        ],
        "errors": len(errors),
    }


# --- Node metric publisher --------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> str | None:
    """GET a loopback metrics endpoint; None when it does not answer 200 (the signal is then missing)."""
    if not url.startswith(("http://", "https://")):
        raise OpsError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
            if resp.status != 200:
                return None
            return resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None


IMDS_URL = "http://169.254.169.254"


def imds_get(path: str, base: str = IMDS_URL, timeout: float = 2.0) -> str:
    """Read instance metadata with IMDSv2 (token first)."""
    token_req = urllib.request.Request(  # noqa: S310 (fixed http scheme)
        f"{base}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
    )
    try:
        with urllib.request.urlopen(token_req, timeout=timeout) as resp:  # noqa: S310
            token = resp.read().decode()
        req = urllib.request.Request(  # noqa: S310
            f"{base}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.read().decode().strip()
    except (urllib.error.URLError, OSError) as exc:
        raise OpsError(f"instance metadata {path} unreadable at {base}: {exc}") from exc


def _load_state(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def _save_state(path: Path, state: Mapping[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(dict(state), sort_keys=True))
    tmp.replace(path)


def publish_node_metrics(
    *,
    cw: Any,
    stack: str,
    instance_id: str,
    vllm_url: str,
    gateway_url: str | None,
    state_file: Path,
    namespace: str = NAMESPACE,
    model_name: str | None = None,
    gateway_metric: str = idle.GATEWAY_REQUESTS_TOTAL,
    now: datetime | None = None,
    fetch: Callable[[str], str | None] = http_get,
) -> dict[str, float]:
    """Scrape the model server and gateway on loopback once and put this period's datapoints.

    Counters become per-period increases using the previous scrape kept in `state_file`. A source that
    does not answer publishes nothing for its metrics (the reaper then sees missing data and keeps the
    node). Returns what was published."""
    now = now or idle.utcnow()
    vllm_text = fetch(vllm_url)
    gateway_text = fetch(gateway_url) if gateway_url else None
    try:
        counters = idle.read_node_counters(
            vllm_text, gateway_text, model_name=model_name, gateway_metric=gateway_metric
        )
    except idle.MetricsParseError as exc:
        raise OpsError(f"metrics text unreadable: {exc}") from exc
    previous = _load_state(state_file)
    values: dict[str, float] = {}
    if counters.running is not None:
        values["RequestsRunning"] = counters.running
    delta = idle.counter_delta(previous.get("completed_total"), counters.completed_total)
    if delta is not None:
        values["RequestsCompleted"] = delta
    delta = idle.counter_delta(previous.get("gateway_requests_total"), counters.gateway_requests_total)
    if delta is not None:
        values["GatewayRequests"] = delta
    if values:
        dims = [{"Name": "StackName", "Value": stack}, {"Name": "InstanceId", "Value": instance_id}]
        cw.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": name, "Dimensions": dims, "Timestamp": now, "Value": value, "Unit": "Count"}
                for name, value in values.items()
            ],
        )
    state = dict(previous)
    for key in ("completed_total", "gateway_requests_total"):
        value = getattr(counters, key)
        if value is not None:
            state[key] = value
    _save_state(state_file, state)
    return values


# --- CLI: coderig stop | start | idle STACK --------------------------------------------------------


@dataclass(frozen=True)
class StackTarget:
    """Where a stack's nodes are and the reaper settings that apply to them."""

    region: str
    gateway_port: int
    reaper: ReaperConfig


NODE_SIGNALS = ("running", "completed")  # what nodes publish today (the gateway has no counter yet)


def resolve_target(args: argparse.Namespace) -> StackTarget:
    """Read `Pulumi.<stack>.yaml` (or --config) with the same validation as `pulumi up`: region from
    `coderig:target.region`, gateway port from `coderig:gateway.port`, the idle policy from
    `coderig:idle`, exactly as the deployed reaper gets them. Flags override; with no stack file,
    --region (or AWS_REGION) is required and the defaults apply."""
    stack: str = args.stack
    path = Path(args.config) if args.config else Path(f"Pulumi.{stack}.yaml")
    overrides: dict[str, Any] = {}
    if args.tag_key:
        overrides["tag_key"] = args.tag_key
    if args.tag_value:
        overrides["tag_value"] = args.tag_value
    if getattr(args, "stop_after_minutes", None):
        overrides["stop_after_minutes"] = float(args.stop_after_minutes)
    if path.exists():
        from coderig import aws_plan
        from coderig.settings import SettingsError, load_stack_file

        try:
            settings = load_stack_file(path)
        except SettingsError as exc:
            raise OpsError(f"{path}: invalid stack file:\n  " + "\n  ".join(exc.problems)) from None
        if settings.target.kind != "aws":
            raise OpsError(f"{path}: coderig:target.kind is {settings.target.kind!r}; these commands need 'aws'")
        cfg = aws_plan.reaper_config(settings, stack)
        region = args.region or settings.target.region
        port = args.port or settings.gateway.port
    elif args.config:
        raise OpsError(f"{path}: no such stack file")
    else:
        region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise OpsError(f"no {path} here: pass --config FILE, or --region REGION")
        cfg = ReaperConfig(stack=stack, signals=NODE_SIGNALS)
        port = args.port or 8443
    if overrides:
        cfg = ReaperConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, **overrides})
    return StackTarget(region=str(region), gateway_port=int(port), reaper=cfg)


def _clients(region: str) -> tuple[Any, Any]:
    import boto3

    return boto3.client("ec2", region_name=region), boto3.client("cloudwatch", region_name=region)


def _print_table(reports: Sequence[InstanceReport], out: Any) -> None:
    if not reports:
        print("no instances carry this stack's tag", file=out)
        return
    for r in reports:
        mark = " (done)" if r.applied else ""
        print(f"{r.instance_id}  {r.state:<9} {r.action}{mark}: {r.reason}", file=out)
        if r.error:
            print(f"{r.instance_id}  error: {r.error}", file=out)


def cmd_idle(args: argparse.Namespace) -> int:
    t = resolve_target(args)
    ec2, cw = _clients(t.region)
    reports = reap(t.reaper, ec2=ec2, cw=cw, log=lambda _r: None, apply=False)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2, default=str))
    else:
        _print_table(reports, sys.stdout)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop every running node of the stack now; refuses a node with requests running unless --force."""
    t = resolve_target(args)
    ec2, cw = _clients(t.region)
    cfg = t.reaper
    now = idle.utcnow()
    instances = list_stack_instances(ec2, cfg)
    if not instances:
        print(f"no instances tagged {cfg.tag_key}={cfg.tag_value} in {t.region}", file=sys.stderr)
        return 1
    failed = 0
    for inst in instances:
        iid, state = inst["InstanceId"], inst["State"]["Name"]
        if state not in ("running", "pending"):
            print(f"{iid}  {state}: nothing to stop")
            continue
        running = _latest_running(cw, cfg, iid, now)
        if running and not args.force:
            print(f"{iid}  {running:g} requests running: not stopping (use --force)", file=sys.stderr)
            failed += 1
            continue
        if args.dry_run:
            print(f"{iid}  would stop (dry run)")
            continue
        ec2.stop_instances(InstanceIds=[iid])
        print(f"{iid}  stopping (weights volume kept)")
    return 1 if failed else 0


def _latest_running(cw: Any, cfg: ReaperConfig, instance_id: str, now: datetime) -> float:
    samples = fetch_samples(cw, cfg, instance_id, now)
    fresh = [s for s in samples if s.running is not None and now - s.at <= timedelta(seconds=5 * cfg.period_seconds)]
    return fresh[-1].running or 0.0 if fresh else 0.0


def wait_ready(url: str, timeout: float, *, interval: float = 5.0, ca_file: str | None = None) -> bool:
    """Poll the gateway's /healthz until it answers 200 (and not `"ready": false`) or time runs out."""
    if not url.startswith(("http://", "https://")):
        raise OpsError(f"not an http(s) URL: {url}")
    if ca_file:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        # Readiness probe only, nothing secret is sent: the node's self-signed CA may not be at hand.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(10.0, max(1.0, interval)), context=ctx) as resp:  # noqa: S310
                body = resp.read(65536).decode("utf-8", "replace")
                if resp.status == 200 and not _says_not_ready(body):
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() + interval > deadline:
            return False
        time.sleep(interval)


def _says_not_ready(body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and (data.get("ready") is False or data.get("status") in ("starting", "loading"))


def cmd_start(args: argparse.Namespace) -> int:
    """Start every stopped node of the stack, then wait for each gateway's /healthz."""
    t = resolve_target(args)
    ec2, _cw = _clients(t.region)
    cfg = t.reaper
    instances = list_stack_instances(ec2, cfg)
    if not instances:
        print(f"no instances tagged {cfg.tag_key}={cfg.tag_value} in {t.region}", file=sys.stderr)
        return 1
    ids = [i["InstanceId"] for i in instances]
    to_start = [i["InstanceId"] for i in instances if i["State"]["Name"] in ("stopped", "stopping")]
    if args.dry_run:
        for iid in to_start:
            print(f"{iid}  would start (dry run)")
        return 0
    deadline = time.monotonic() + args.timeout
    if to_start:
        waiter_stopped = ec2.get_waiter("instance_stopped")
        stopping = [i["InstanceId"] for i in instances if i["State"]["Name"] == "stopping"]
        if stopping:
            waiter_stopped.wait(InstanceIds=stopping, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        ec2.start_instances(InstanceIds=to_start)
        print(f"starting {', '.join(to_start)}")
    ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    if args.no_wait:
        return 0
    described = ec2.describe_instances(InstanceIds=ids)
    failed = 0
    for res in described["Reservations"]:
        for inst in res["Instances"]:
            iid = inst["InstanceId"]
            host = inst.get("PublicIpAddress") or inst.get("PrivateIpAddress")
            url = args.health_url or f"https://{host}:{t.gateway_port}/healthz"
            print(f"{iid}  waiting for {url}")
            left = max(0.0, deadline - time.monotonic())
            if wait_ready(url, left, interval=args.interval, ca_file=args.ca_file):
                print(f"{iid}  ready")
            else:
                print(f"{iid}  not ready after {args.timeout:g}s ({url})", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from coderig import kube_ops  # a kubernetes stack scales its model Deployment instead

        if kube_ops.target_kind(args) == "kubernetes":
            return kube_ops.dispatch(args.command, args)
        try:
            return func(args)
        except OpsError as exc:
            print(f"coderig {args.command}: {exc}", file=sys.stderr)
            return 2

    return run


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("stack", help="stack name (reads Pulumi.<stack>.yaml in the current directory)")
    p.add_argument("--config", help="stack file (default Pulumi.<stack>.yaml)")
    p.add_argument("--region", help="AWS region (default coderig:target.region in the stack file)")
    p.add_argument("--tag-key", help=f"instance tag that names the stack (default {TAG_STACK})")
    p.add_argument("--tag-value", help="its value (default the stack name)")
    p.add_argument("--port", type=int, help="gateway port (default coderig:gateway.port, 8443)")


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("idle", help="show, per node or replica, what the idle policy would do")
    _common(p)
    p.add_argument("--stop-after-minutes", type=float, help="override coderig:idle.stopAfterMinutes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_idle))

    p = subparsers.add_parser("stop", help="stop a stack's GPU nodes or scale its model to zero now (weights kept)")
    _common(p)
    p.add_argument("--force", action="store_true", help="stop even with requests running")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=_guard(cmd_stop))

    p = subparsers.add_parser("start", help="start a stack's GPU nodes (or scale its model back) and wait until ready")
    _common(p)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for readiness (default 1800)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between /healthz polls")
    p.add_argument("--health-url", help="readiness URL (default https://<public ip>:<port>/healthz)")
    p.add_argument("--ca-file", help="CA bundle to verify the gateway's certificate")
    p.add_argument("--no-wait", action="store_true", help="return once the instances run")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=_guard(cmd_start))


# --- python -m coderig.aws_ops publish ... (on the node) --------------------------------------------


def publish_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m coderig.aws_ops publish")
    p.add_argument("--stack", required=True)
    p.add_argument("--instance-id", default="auto", help="'auto' reads it from instance metadata")
    p.add_argument("--region", default="auto", help="'auto' reads it from instance metadata")
    p.add_argument("--vllm-url", default="http://127.0.0.1:8000/metrics")
    p.add_argument("--gateway-url", default="", help="gateway counter (Prometheus text or nginx stub_status)")
    p.add_argument("--gateway-metric", default=idle.GATEWAY_REQUESTS_TOTAL)
    p.add_argument("--model-name", default=None, help="only count this vLLM model_name label")
    p.add_argument("--namespace", default=NAMESPACE)
    p.add_argument("--state-file", default="/var/lib/coderig/metrics-state.json")
    p.add_argument("--imds-url", default=IMDS_URL)
    p.add_argument("--loop", type=float, default=0, help="publish every N seconds until killed (0: once)")
    p.add_argument("--count", type=int, default=0, help="with --loop, stop after N publishes (0: forever)")
    args = p.parse_args(list(argv) if argv is not None else None)
    import boto3

    try:
        instance_id = args.instance_id if args.instance_id != "auto" else imds_get("instance-id", args.imds_url)
        region = args.region if args.region != "auto" else imds_get("placement/region", args.imds_url)
    except OpsError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 2
    cw = boto3.client("cloudwatch", region_name=region)
    done = 0
    while True:
        try:
            values = publish_node_metrics(
                cw=cw,
                stack=args.stack,
                instance_id=instance_id,
                vllm_url=args.vllm_url,
                gateway_url=args.gateway_url or None,
                state_file=Path(args.state_file),
                namespace=args.namespace,
                model_name=args.model_name,
                gateway_metric=args.gateway_metric,
            )
            print(json.dumps({"instance": instance_id, "published": values}), flush=True)
        except Exception as exc:  # keep publishing next period; the reaper sees the gap as missing data
            print(f"publish failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if not args.loop:
                return 1
        done += 1
        if not args.loop or (args.count and done >= args.count):
            return 0
        time.sleep(args.loop)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        sys.exit(publish_main(sys.argv[2:]))
    print("usage: python3 -m coderig.aws_ops publish --stack NAME [options]", file=sys.stderr)
    sys.exit(2)
