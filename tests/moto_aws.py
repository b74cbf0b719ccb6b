"""moto (in-process EC2, CloudWatch, IAM) for the `aws` target's tests: one session helper."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

REGION = "us-east-1"
AMI = "ami-12c6146b"  # one of the AMIs moto serves


@dataclass
class Aws:
    ec2: Any
    cw: Any
    ami: str


@contextmanager
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Fake credentials in the environment (never a real profile), then moto for the block."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    with mock_aws():
        yield Aws(boto3.client("ec2", region_name=REGION), boto3.client("cloudwatch", region_name=REGION), AMI)


def launch(aws: Aws, tags: dict[str, str] | None, instance_type: str = "p5en.48xlarge") -> str:
    kwargs: dict[str, Any] = {"ImageId": aws.ami, "MinCount": 1, "MaxCount": 1, "InstanceType": instance_type}
    if tags:
        kwargs["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    return aws.ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"]


def instance_state(aws: Aws, iid: str) -> str:
    return aws.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
