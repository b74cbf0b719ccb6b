"""`coderig stop|start|idle STACK` for an aws stack: the operator commands, on the reaper's own code
(coderig.runtime.aws_reaper), so `coderig idle` says exactly what the deployed reaper would do."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from coderig.core.errors import INVALID, REFUSED, UserError
from coderig.core.settings import DEFAULT_GATEWAY_PORT, StackSettings
from coderig.runtime import idle
from coderig.runtime.aws_reaper import (
    FRONT_DOOR_ROLE,
    TAG_ROLE,
    InstanceReport,
    ReaperConfig,
    fetch_samples,
    list_stack_instances,
    reap,
)
from coderig.runtime.http import poll_ready
from coderig.targets.aws import resources as aws_resources


@dataclass(frozen=True)
class StackTarget:
    """Where a stack's nodes are and the reaper settings that apply to them."""

    region: str
    gateway_port: int
    reaper: ReaperConfig


NODE_SIGNALS = ("running", "completed")  # what nodes publish today (the gateway has no counter yet)


def resolve_target(args: argparse.Namespace, settings: StackSettings | None) -> StackTarget:
    """Read `Pulumi.<stack>.yaml` (or --config) with the same validation as `pulumi up`: region from
    `coderig:target.region`, gateway port from `coderig:gateway.port`, the idle policy from
    `coderig:idle`, exactly as the deployed reaper gets them. Flags override; with no stack file,
    --region (or AWS_REGION) is required and the defaults apply."""
    stack: str = args.stack
    overrides: dict[str, Any] = {}
    if args.tag_key:
        overrides["tag_key"] = args.tag_key
    if args.tag_value:
        overrides["tag_value"] = args.tag_value
    if getattr(args, "stop_after_minutes", None):
        overrides["stop_after_minutes"] = float(args.stop_after_minutes)
    if settings is not None:
        cfg = aws_resources.reaper_config(settings, stack)
        region = args.region or aws_resources.aws_target(settings).region
        port = args.port or settings.gateway.port
    else:
        region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise UserError(f"no Pulumi.{stack}.yaml here: pass --config FILE, or --region REGION")
        cfg = ReaperConfig(stack=stack, signals=NODE_SIGNALS)
        port = args.port or DEFAULT_GATEWAY_PORT
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
        since = f" since {r.since:%Y-%m-%d %H:%M} UTC" if r.since else ""
        print(f"{r.instance_id}  {r.state:<9}{since}  {r.action}{mark}: {r.reason}", file=out)
        if r.error:
            print(f"{r.instance_id}  error: {r.error}", file=out)


def cmd_idle(args: argparse.Namespace, settings: StackSettings | None) -> int:
    t = resolve_target(args, settings)
    ec2, cw = _clients(t.region)
    reports = reap(t.reaper, ec2=ec2, cw=cw, log=lambda _r: None, apply=False)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2, default=str))
    else:
        _print_table(reports, sys.stdout)
    return 0


def cmd_stop(args: argparse.Namespace, settings: StackSettings | None) -> int:
    """Stop every running node of the stack now; refuses a node with requests running unless --force."""
    t = resolve_target(args, settings)
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
    if ca_file:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        # Readiness probe only, nothing secret is sent: the node's self-signed CA may not be at hand.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return poll_ready(url, timeout, interval=interval, context=ctx)


def cmd_start(args: argparse.Namespace, settings: StackSettings | None) -> int:
    """Start every stopped node of the stack, then wait for each gateway's /healthz."""
    t = resolve_target(args, settings)
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
    # the gateways to wait for: the front-door machine's when the stack has one (it runs the only
    # gateway and reaches the GPU nodes through their links), else each node's own
    door = _front_door(ec2, cfg)
    described = (
        [door] if door else [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    )
    failed = 0
    for inst in described:
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


def _front_door(ec2: Any, cfg: ReaperConfig) -> dict[str, Any] | None:
    """This stack's running front-door instance (tagged coderig:role=front-door), if it has one."""
    filters = [
        {"Name": f"tag:{cfg.tag_key}", "Values": [cfg.tag_value]},
        {"Name": f"tag:{TAG_ROLE}", "Values": [FRONT_DOOR_ROLE]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    found = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
    return found[0] if found else None


Command = Callable[[argparse.Namespace, StackSettings | None], int]


def _aws_errors(command: Command) -> Command:
    """What AWS (or the SDK's setup) refuses becomes one `coderig:` line, never a traceback."""

    def run(args: argparse.Namespace, settings: StackSettings | None) -> int:
        from botocore import exceptions as aws

        try:
            return command(args, settings)
        except (aws.NoCredentialsError, aws.PartialCredentialsError, aws.ProfileNotFound) as exc:
            raise UserError(
                f"AWS credentials: {exc}; configure them (`aws configure`, AWS_PROFILE=NAME, or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) for the account that runs this stack",
                INVALID,
            ) from None
        except aws.NoRegionError:
            raise UserError("AWS region: none set; pass --region REGION or set coderig:target.region") from None
        except aws.EndpointConnectionError as exc:
            raise UserError(f"AWS unreachable: {exc}", REFUSED) from None
        except aws.ClientError as exc:
            err = exc.response.get("Error", {})
            why = f"{err.get('Code')}: {err.get('Message')}"
            raise UserError(f"AWS refused {exc.operation_name}: {why}", REFUSED) from None
        except aws.WaiterError as exc:
            raise UserError(f"AWS: {exc}", REFUSED) from None

    run.__doc__ = command.__doc__
    return run


class AwsOperations:
    """coderig.targets.operations.TargetOperations of the aws kind: the GPU instances, by tag."""

    def idle(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return _aws_errors(cmd_idle)(args, settings)

    def stop(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return _aws_errors(cmd_stop)(args, settings)

    def start(self, args: argparse.Namespace, settings: StackSettings | None) -> int:
        return _aws_errors(cmd_start)(args, settings)


OPERATIONS = AwsOperations()
