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


@dataclass
class MotoServer:
    """moto in server mode on loopback, for code in another process (the relay). `actions` lists the
    Action of every EC2 query request it served, in order."""

    endpoint: str
    actions: list[str]

    def client(self, service: str = "ec2", **creds: str) -> Any:
        keys = creds or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint, **keys)

    def env(self) -> dict[str, str]:
        """What a child process needs to reach it (fake credentials, never a real profile)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    """moto's own WSGI app (what ThreadedMotoServer runs) behind a recorder of EC2 actions, on a free
    loopback port; moto's state is reset before and after."""
    import io
    import threading
    import urllib.parse

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    actions: list[str] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
        if action:
            actions.append(action)
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, recording, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    moto = MotoServer(f"http://127.0.0.1:{server.server_address[1]}", actions)
    import requests

    requests.post(f"{moto.endpoint}/moto-api/reset", timeout=10)
    try:
        yield moto
    finally:
        requests.post(f"{moto.endpoint}/moto-api/reset", timeout=10)
        server.shutdown()
        thread.join(10)
