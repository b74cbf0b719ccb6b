"""Stack configs and provider mocks the program tests share: one builder per target, the AWS
mocks, and TARGETS (every target kind's mock program)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pulumi
import yaml
from conftest import HOST_KEY, ROOT, ProgramRun, ResourceHook, run_program, ssh_config

from coderig.core.stack_file import namespace_from_stack_file

STACK = "prod"
AMI_FROM_LOOKUP = "ami-0dlami24040000000"


def aws_outputs(args: pulumi.runtime.MockResourceArgs, run: ProgramRun) -> tuple[str | None, dict[str, Any]] | None:
    """What AWS and TLS would compute for the resources this target creates."""
    if args.typ == "tls:index/privateKey:PrivateKey":
        key = base64.b64encode(args.name.encode()).decode()
        pem = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{key}\n-----END OPENSSH PRIVATE KEY-----\n"
        return None, {
            "private_key_openssh": pem,
            "public_key_openssh": f"ssh-ed25519 {key}\n",
            "private_key_pem": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
        }
    if args.typ == "aws:ec2/eip:Eip":
        # this EIP is already recorded: the first one gets .10
        return None, {
            "public_ip": "198.51.100." + str(9 + len(run.of_type("aws:ec2/eip:Eip"))),
            "allocation_id": "eipalloc-1",
        }
    if args.typ == "aws:ebs/volume:Volume":
        return "vol-0123456789abcdef0", {"arn": "arn:aws:ec2:vol"}
    if args.typ == "aws:cloudwatch/logGroup:LogGroup":
        return None, {"arn": f"arn:aws:logs:us-east-1:123456789012:log-group:{args.inputs.get('name')}"}
    if args.typ in ("aws:iam/instanceProfile:InstanceProfile", "aws:iam/role:Role"):
        return None, {"name": args.name, "arn": f"arn:aws:mock:::{args.name}"}
    if args.typ in ("aws:lambda/function:Function", "aws:cloudwatch/eventRule:EventRule"):
        return None, {"arn": f"arn:aws:mock:::{args.name}"}
    return None


def aws_calls(token: str, args: dict[str, Any]) -> dict[str, Any]:
    if token == "aws:ec2/getAmi:getAmi":
        return {"id": AMI_FROM_LOOKUP, "name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)"}
    if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
        return {"id": "us-east-1", "locations": ["us-east-1d", "us-east-1b"], "instanceTypes": []}
    if token == "aws:ec2/getSubnet:getSubnet":
        return {"id": args["id"], "availabilityZone": "us-east-1f"}
    if token == "tls:index/getPublicKey:getPublicKey":
        return {"id": "k", "publicKeyOpenssh": "ssh-ed25519 AAAAsupplied\n"}
    return {}


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how mocks see a secret input


def is_secret(value: Any) -> bool:
    return (
        isinstance(value, dict) and SECRET_SIG in value and value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270"
    )


def unsecret(value: Any) -> Any:
    return value["value"] if is_secret(value) else value


def run_stack(config: dict[str, Any], resources: ResourceHook = aws_outputs) -> ProgramRun:
    """stacks.build() under the shared mocks (conftest.run_program) with AWS's computed outputs."""
    return run_program(config, stack=STACK, calls=aws_calls, resources=resources)


def aws_config(**target: Any) -> dict[str, Any]:
    return {
        "target": {
            "kind": "aws",
            "instanceType": "p5en.48xlarge",
            "region": "us-east-1",
            "availabilityZone": "us-east-1a",
            "allowedCidrs": ["203.0.113.0/24", "2001:db8::/48"],
            "adminCidr": "198.51.100.7/32",
            **target,
        },
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072},
        "developers": ["alice", "bob"],
        "idle": {"stopAfterMinutes": 45, "officeHours": {"timezone": "Europe/Paris", "start": "08:00", "end": "19:00"}},
    }


def dev_config():
    return namespace_from_stack_file(yaml.safe_load(Path(ROOT / "Pulumi.dev.yaml").read_text()))


def kube_config() -> dict:
    return {
        "target": {"kind": "kubernetes", "gpu": {"model": "H200", "count": 8}, "replicas": 1},
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072},
        "developers": ["alice", "bob"],
        "idle": {"stopAfterMinutes": 30},
    }


def external_config() -> dict:
    return {
        "target": {"kind": "external", "endpoint": "https://kserve.internal/v1"},
        "model": {"preset": "glm-4.7", "servedName": "glm"},
        "developers": ["alice", "bob"],
        "externalApiKey": "upstream-key-0123456789",
    }


def ssh_two_hosts() -> dict:
    c = ssh_config()
    c["target"]["hosts"].append({"address": "gpu2.internal", "user": "ubuntu", "hostKey": HOST_KEY})
    c["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----"
    return c


TARGETS = {
    "local": lambda: run_program(dev_config(), stack="dev"),
    "ssh": lambda: run_program(ssh_two_hosts()),
    "aws": lambda: run_stack(aws_config(count=2)),
    "kubernetes": lambda: run_program(kube_config()),
    "external": lambda: run_program(external_config()),
}
