"""The `aws` target's front-door machine: what its instance role may do, its tags and its
environment. Pure; components/aws.py turns these into resources.

The front door starts this stack's stopped GPU instances when a request arrives
(coderig.runtime.aws_wake); the reaper Lambda stops them. So the front door's role may start, never
stop or terminate, and only instances carrying this stack's tag.
"""

from __future__ import annotations

from typing import Any

from coderig.runtime.aws_reaper import TAG_STACK
from coderig.runtime.aws_wake import GPU_ROLE

ROLE = "front-door"  # the coderig:role tag of the front-door instance and its resources


def waker_policy(stack: str, *, tag_key: str = TAG_STACK) -> dict[str, Any]:
    """Least privilege for the front door's waker: list instances (Describe* has no resource-level
    permission), start only instances tagged `tag_key=stack`. EBS volumes encrypted with the AWS
    managed key (coderig's default) need no KMS grant to start; a customer key would."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListInstances", "Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
            {
                "Sid": "StartThisStacksGpuNodes",
                "Effect": "Allow",
                "Action": "ec2:StartInstances",
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/{tag_key}": stack}},
            },
        ],
    }


def wake_command(stack: str, region: str) -> list[str]:
    """What the relay on the front door runs to wake the GPU instances (prints the state after)."""
    return ["/usr/bin/python3", "-m", "coderig.runtime.aws_wake", "wake", "--stack", stack, "--region", region]


__all__ = ["GPU_ROLE", "ROLE", "wake_command", "waker_policy"]
