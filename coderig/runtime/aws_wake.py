"""Start a stopped GPU instance when a request arrives: the `aws` target's Waker (see wake.py).

Runs on the always-on front-door machine, next to the gateway and the relay. The relay holds the
request, calls `wake()` once for all the requests it holds, then polls the model server's `/health`
through the replica link until it answers or the start budget passes.

Standard library only, like aws_reaper.py: boto3 is imported inside the function that makes a
client (the front door gets it from the OS package `python3-boto3`). The instance role allows
`ec2:StartInstances` only on instances tagged with this stack (coderig.targets.aws.frontdoor
.waker_policy); the waker also checks the tag itself and never starts an instance it did not find
by the stack's tag.

    python3 -m coderig.runtime.aws_wake state --stack prod [--region auto]
    python3 -m coderig.runtime.aws_wake wake  --stack prod [--region auto]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coderig.runtime.aws_reaper import IMDS_URL, TAG_ROLE, TAG_STACK, imds_get
from coderig.runtime.idle import ReaperError
from coderig.runtime.wake import WakeError

STOP_WAIT_S = 300.0  # an instance still stopping is waited for this long before it can be started
# DescribeInstances is eventually consistent: just after StartInstances it may still say "stopped"
# (docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html); that long, stopped reads waking
START_SETTLE_S = 60.0
GPU_ROLE = "gpu-node"  # the coderig:role tag of the instances a front door may start (aws_plan.tags)

# EC2 instance state -> Waker state. "stopping" reads as stopped: wake() waits for it, then starts it.
_STATES = {
    "running": "awake",
    "pending": "waking",
    "stopping": "stopped",
    "stopped": "stopped",
}

# What the client is told for the AWS errors an operator can act on (the code is kept in the line).
_ADVICE = {
    "InsufficientInstanceCapacity": "AWS has no free capacity for this instance type in its zone right now; "
    "retry in a few minutes, or give coderig:target.capacityReservationId",
    "UnauthorizedOperation": "the front door's role may not start this instance; it must carry the tag "
    f"{TAG_STACK} of this stack",
    "AccessDenied": "the front door's role may not start this instance; it must carry the tag "
    f"{TAG_STACK} of this stack",
    "IncorrectInstanceState": "the instance is changing state; retry",
    "InstanceLimitExceeded": "the account's vCPU quota for this instance family is used up; ask AWS for more",
    "VcpuLimitExceeded": "the account's vCPU quota for this instance family is used up; ask AWS for more",
}


def _error_line(exc: Exception, what: str) -> str:
    err = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    code = err.get("Code") or type(exc).__name__
    message = (err.get("Message") or str(exc)).splitlines()[0][:200]
    advice = _ADVICE.get(code)
    return f"{what}: {code}: {message}" + (f" ({advice})" if advice else "")


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


class Ec2Waker:
    """Starts this stack's stopped GPU instances (found by tag) and reports their state. One waker
    serves every route of the relay: its wakes run one at a time, so N held requests for M replicas
    start each stopped instance once. `stack` "auto": the coderig:stack tag of the machine it runs on
    (the front door), read when first needed, so the relay starts even while EC2 does not answer."""

    name = "ec2"

    def __init__(
        self,
        stack: str,
        *,
        ec2: Any,
        tag_key: str = TAG_STACK,
        role: str = GPU_ROLE,
        stop_wait_seconds: float = STOP_WAIT_S,
        poll_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not stack:
            raise ValueError("stack name is empty")
        self.stack, self.ec2, self.tag_key, self.role = stack, ec2, tag_key, role
        self.stop_wait_seconds, self.poll_seconds = stop_wait_seconds, poll_seconds
        self._sleep, self._clock = sleep, clock
        self._one_wake = threading.Lock()
        self._started = float("-inf")  # when this waker last started instances (clock)
        self.own_stack: Callable[[], str] | None = None  # stack "auto": how to read the front door's tag

    def _stack(self) -> str:
        if self.stack == "auto":
            if self.own_stack is None:
                raise WakeError("stack 'auto' needs the front door's instance metadata")
            self.stack = self.own_stack()
        return self.stack

    def instances(self) -> list[dict[str, Any]]:
        """This stack's GPU instances (not terminated), found by tag and checked again client-side."""
        stack = self._stack()
        filters = [
            {"Name": f"tag:{self.tag_key}", "Values": [stack]},
            {"Name": f"tag:{TAG_ROLE}", "Values": [self.role]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
        found: list[dict[str, Any]] = []
        try:
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page.get("Reservations", []):
                    for inst in reservation.get("Instances", []):
                        tags = _tags(inst)
                        if tags.get(self.tag_key) == stack and tags.get(TAG_ROLE) == self.role:
                            found.append(inst)
        except Exception as exc:  # one line for the client, never a traceback
            raise WakeError(_error_line(exc, "cannot list the GPU instances")) from exc
        return sorted(found, key=lambda i: i["InstanceId"])

    def state(self) -> str:
        """awake: every GPU instance runs; waking: one is pending; stopped: one is stopped or stopping;
        unknown: none found or EC2 did not answer."""
        try:
            states = [_STATES.get(i["State"]["Name"], "unknown") for i in self.instances()]
        except WakeError:
            return "unknown"
        if not states or "unknown" in states:
            return "unknown"
        if "stopped" in states and self._clock() - self._started < START_SETTLE_S:
            return "waking"  # a start we just made, not yet visible
        for s in ("stopped", "waking"):
            if s in states:
                return s
        return "awake"

    def wake(self) -> None:
        """Start every stopped instance of the stack (idempotent: running or pending ones are left
        alone). An instance still stopping is waited for, up to `stop_wait_seconds`, then started."""
        with self._one_wake:
            self._wake()

    def _wake(self) -> None:
        deadline = self._clock() + self.stop_wait_seconds
        while True:
            instances = self.instances()
            if not instances:
                raise WakeError(
                    f"no GPU instance tagged {self.tag_key}={self.stack}, {TAG_ROLE}={self.role}: "
                    "was the stack destroyed? run `pulumi up`"
                )
            by_state: dict[str, list[str]] = {}
            for inst in instances:
                by_state.setdefault(inst["State"]["Name"], []).append(inst["InstanceId"])
            if by_state.get("stopped"):
                self._start(by_state["stopped"])
            if not by_state.get("stopping"):
                return
            if self._clock() >= deadline:
                raise WakeError(
                    f"{', '.join(by_state['stopping'])} still stopping after {self.stop_wait_seconds:g} s; "
                    "it cannot be started before it has stopped"
                )
            self._sleep(self.poll_seconds)

    def sleep(self) -> None:
        """Stop the stack's running GPU instances (the front door's reaper, once the relay holds every
        model server: nothing in flight, every new request held). Their EBS weights stay; the next
        request's wake starts them again."""
        with self._one_wake:
            up = [i["InstanceId"] for i in self.instances() if i["State"]["Name"] in ("pending", "running")]
            if not up:
                return
            try:
                self.ec2.stop_instances(InstanceIds=up)
            except Exception as exc:
                raise WakeError(_error_line(exc, f"could not stop {', '.join(up)}")) from exc

    def _start(self, instance_ids: Sequence[str]) -> None:
        try:
            self.ec2.start_instances(InstanceIds=list(instance_ids))
        except Exception as exc:
            raise WakeError(_error_line(exc, f"could not start {', '.join(instance_ids)}")) from exc
        self._started = self._clock()


def ec2_client(region: str) -> Any:
    import boto3

    return boto3.client("ec2", region_name=region)


def front_door_stack(ec2: Any, imds_url: str = IMDS_URL, tag_key: str = TAG_STACK) -> str:
    """The coderig:stack tag of the instance this runs on (the front door carries its stack's tags)."""
    try:
        iid = imds_get("instance-id", imds_url)
        found = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
    except ReaperError as exc:
        raise WakeError(str(exc)) from exc
    except Exception as exc:
        raise WakeError(_error_line(exc, "cannot read the front door's own tags")) from exc
    tags = _tags(found[0]["Instances"][0]) if found and found[0].get("Instances") else {}
    if not tags.get(tag_key):
        raise WakeError(f"the front door {iid} has no {tag_key} tag: run `pulumi up`, or give the stack name")
    return tags[tag_key]


def waker(stack: str, region: str = "auto", imds_url: str = IMDS_URL) -> Ec2Waker:
    """The front door's waker for this stack, as the relay builds it (`--wake ec2`): the region from
    instance metadata unless given, the stack ("auto") from the front door's own tag when first
    needed. Raises ReaperError when the region's metadata cannot be read."""
    ec2 = ec2_client(region if region != "auto" else imds_get("placement/region", imds_url))
    w = Ec2Waker(stack, ec2=ec2)
    w.own_stack = lambda: front_door_stack(ec2, imds_url)
    return w


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m coderig.runtime.aws_wake")
    p.add_argument("command", choices=("state", "wake"))
    p.add_argument("--stack", required=True)
    p.add_argument("--region", default="auto", help="'auto' reads it from instance metadata")
    p.add_argument("--imds-url", default=IMDS_URL)
    args = p.parse_args(list(argv) if argv is not None else None)
    try:
        w = waker(args.stack, args.region, args.imds_url)
        if args.command == "wake":
            w.wake()
        print(w.state(), flush=True)
    except (WakeError, ReaperError) as exc:
        print(f"aws_wake: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
