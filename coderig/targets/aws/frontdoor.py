"""The `aws` target's front-door machine: what its instance role may do, its tags and its
environment. Pure; components/aws.py turns these into resources.

The front door starts this stack's stopped GPU instances when a request arrives
(coderig.runtime.aws_wake), and its reaper (coderig.runtime.node_reaper, `--action ec2`) stops them
once the relay holds every model server. So the front door's role may start and stop, never
terminate, and only the GPU instances carrying this stack's tag (not itself).
"""

from __future__ import annotations

import importlib.resources
from typing import Any

from coderig.core.frontdoor_machine import FRONT_DOOR_ROOT_GB
from coderig.runtime.aws_reaper import FRONT_DOOR_ROLE, TAG_ROLE, TAG_STACK
from coderig.runtime.aws_wake import GPU_ROLE
from coderig.targets.aws.resources import INSTALL_BOTO3, cloud_config, minify
from coderig.targets.aws.settings import AWS_FIRST_HOST, AWS_SUBNET_PREFIX

ROLE = FRONT_DOOR_ROLE  # the coderig:role tag of the front-door instance (the reaper skips it)
PRIVATE_IP = f"{AWS_SUBNET_PREFIX}{AWS_FIRST_HOST - 1}"  # below the GPU nodes' .10, .11, …
ROOT_GB = FRONT_DOOR_ROOT_GB
WAKE_DIR = "/opt/coderig-wake"  # PYTHONPATH of `python3 -m coderig.runtime.aws_wake` on the front door
WAKE_MODULES = ("__init__.py", "http.py", "idle.py", "aws_reaper.py", "wake.py", "aws_wake.py")
# Canonical's Ubuntu 24.04 (the GPU nodes' DLAMI is Ubuntu 24.04 too: one install script for both)
UBUNTU_OWNER = "099720109477"


def ami_filters() -> list[dict[str, Any]]:
    return [
        {"name": "name", "values": ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]},
        {"name": "architecture", "values": ["x86_64"]},
        {"name": "state", "values": ["available"]},
    ]


def wake_files() -> dict[str, str]:
    """The stdlib modules `python3 -m coderig.runtime.aws_wake` needs, as the package coderig.runtime."""
    pkg = importlib.resources.files("coderig.runtime")
    return {"coderig/__init__.py": "", **{f"coderig/runtime/{n}": (pkg / n).read_text() for n in WAKE_MODULES}}


def cloud_init(*, host_private_key: str, host_public_key: str, login_public_key: str) -> str:
    """The front door's `#cloud-config`: the stack-generated SSH host key (pinned from the first
    boot), the login key, the waker's modules and boto3. Holds a private key: keep it secret."""
    files = [
        {"path": f"{WAKE_DIR}/{path}", "permissions": "0644", "content": minify(text)}
        for path, text in wake_files().items()
    ]
    return cloud_config(host_private_key, host_public_key, login_public_key, files, [INSTALL_BOTO3])


def waker_policy(stack: str, *, tag_key: str = TAG_STACK) -> dict[str, Any]:
    """Least privilege for the front door's waker and reaper: list instances (Describe* has no
    resource-level permission), start and stop only instances tagged `tag_key=stack` and
    coderig:role=gpu-node. EBS volumes encrypted with the AWS managed key (coderig's default) need
    no KMS grant to start; a customer key would."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListInstances", "Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
            {
                "Sid": "StartStopThisStacksGpuNodes",
                "Effect": "Allow",
                "Action": ["ec2:StartInstances", "ec2:StopInstances"],
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {
                    "StringEquals": {f"aws:ResourceTag/{tag_key}": stack, f"aws:ResourceTag/{TAG_ROLE}": GPU_ROLE}
                },
            },
        ],
    }


__all__ = ["GPU_ROLE", "PRIVATE_IP", "ROLE", "ami_filters", "cloud_init", "waker_policy"]
