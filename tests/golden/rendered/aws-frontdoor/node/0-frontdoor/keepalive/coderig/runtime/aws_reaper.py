"""The `aws` target's shipped code: the idle reaper (a Lambda) and the node's metric publisher.
`coderig stop|start|idle STACK` (coderig.targets.aws.ops) runs the same reaper code.

This module ships, with the rest of `coderig/runtime/`, as the reaper Lambda's zip (handler
`coderig.runtime.aws_reaper.handler`) and onto each node (the publisher,
`python3 -m coderig.runtime.aws_reaper publish`). So it needs the standard library only; boto3 is
imported inside the functions that call AWS (it is in the Lambda runtime; nodes get it from the OS
package `python3-boto3`).

Metrics (namespace `Coderig`, dimensions StackName + InstanceId, one datapoint per period per node):
- `RequestsRunning`   requests running or queued in the model server (read with Maximum)
- `RequestsCompleted` requests the model server finished during the period (read with Sum)
- `GatewayRequests`   API requests through the gateway during the period (read with Sum)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from coderig.runtime import idle
from coderig.runtime.http import http_get
from coderig.runtime.idle import ReaperError

NAMESPACE = "Coderig"
TAG_STACK = "coderig:stack"
TAG_ENVIRONMENT = "coderig:environment"
TAG_ROLE = "coderig:role"
FRONT_DOOR_ROLE = "front-door"  # the always-on machine holding the gateway: never reaped
PERIOD_SECONDS = 60
DEFAULT_STOP_AFTER_MINUTES = float(idle.DEFAULT_STOP_AFTER_MINUTES)

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
            raise ReaperError("stack name is empty")
        if not self.tag_value:
            object.__setattr__(self, "tag_value", self.stack)
        if self.stop_after_minutes <= 0:
            raise ReaperError(f"stop_after_minutes must be positive, got {self.stop_after_minutes}")
        unknown = set(self.signals) - set(idle.SIGNALS)
        if unknown:
            raise ReaperError(f"unknown signals {sorted(unknown)}; known: {', '.join(idle.SIGNALS)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReaperConfig:
        stack = env.get(ENV_STACK, "")
        if not stack:
            raise ReaperError(f"{ENV_STACK} is not set")
        try:
            schedule = idle.schedule_from_env(env)
        except idle.ScheduleError as exc:
            raise ReaperError(f"{ENV_SCHEDULE}: {exc}") from exc
        try:
            stop_after = float(env.get(ENV_STOP_AFTER, DEFAULT_STOP_AFTER_MINUTES))
        except ValueError as exc:
            raise ReaperError(f"{ENV_STOP_AFTER}: not a number: {env.get(ENV_STOP_AFTER)!r}") from exc
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
    since: datetime | None = None  # when the instance entered its state (None: EC2 does not say)


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
                tags = _tags(inst)
                # never trust a filter alone; the front-door machine is never stopped for idleness
                if tags.get(cfg.tag_key) == cfg.tag_value and tags.get(TAG_ROLE) != FRONT_DOOR_ROLE:
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


# EC2's StateTransitionReason after a stop, e.g. "User initiated (2016-05-20 22:41:57 GMT)"
_TRANSITION_AT = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


def state_since(inst: Mapping[str, Any]) -> datetime | None:
    """When the instance entered its current state: its last start (LaunchTime, which EC2 moves on
    every start) while running, the time in StateTransitionReason once stopped."""
    state = inst.get("State", {}).get("Name")
    if state in ("running", "pending"):
        launch = inst.get("LaunchTime")
        if isinstance(launch, datetime):
            return launch if launch.tzinfo else launch.replace(tzinfo=UTC)
        return None
    found = _TRANSITION_AT.search(str(inst.get("StateTransitionReason") or ""))
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if found else None


def _decide(cfg: ReaperConfig, cw: Any, inst: Mapping[str, Any], now: datetime) -> InstanceReport:
    iid = inst["InstanceId"]
    state = inst.get("State", {}).get("Name", "unknown")
    report = InstanceReport(iid, state, "keep", "", public_ip=inst.get("PublicIpAddress"), since=state_since(inst))
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
        raise ReaperError(f"instance metadata {path} unreadable at {base}: {exc}") from exc


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
        raise ReaperError(f"metrics text unreadable: {exc}") from exc
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


# --- python -m coderig.runtime.aws_reaper publish ... (on the node) --------------------------------------------


def publish_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m coderig.runtime.aws_reaper publish")
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
    except ReaperError as exc:
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
    print("usage: python3 -m coderig.runtime.aws_reaper publish --stack NAME [options]", file=sys.stderr)
    sys.exit(2)
