"""The `aws` target, decided in pure code: IAM policy documents, tags, volume sizing, the AMI filter,
security-group rules, the reaper's Lambda package and environment, and the instance's cloud-init.

`components/aws.py` turns these into resources; tests assert them as plain JSON. No pulumi, no boto3.
"""

from __future__ import annotations

import ast
import base64
import gzip
import importlib.resources
import json
from dataclasses import dataclass
from typing import Any

from coderig.core import budgets, engine
from coderig.core.settings import StackSettings
from coderig.runtime import aws_reaper, idle
from coderig.targets.aws.settings import AWS_SUBNET_PREFIX, AwsTarget

SSM_CORE_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# gp3 limits (raised in 2025 from 1,000 MiB/s and 16,000 IOPS): at most 500 IOPS per GiB.
GP3_MAX_THROUGHPUT_MIBS = 2000
GP3_MAX_IOPS = 80_000
GP3_IOPS_PER_GIB = 500
ROOT_VOLUME_GB = 200  # OS, Docker images (vLLM ~ 20 GB), logs; the weights are on their own volume
DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *"
LOGIN_USER = "ubuntu"
WEIGHTS_DEVICE = "/dev/coderig-weights"  # udev symlink to the weights volume, made by cloud-init
PUBLISHER_DIR = "/opt/coderig-metrics"
STATE_DIRECTORY = "coderig-metrics"  # /var/lib/coderig-metrics (systemd StateDirectory)
REAPER_SCHEDULE = "rate(5 minutes)"
REAPER_HANDLER = "coderig.runtime.aws_reaper.handler"
REAPER_RUNTIME = "python3.12"
LOG_RETENTION_DAYS = 30
VPC_CIDR = "10.77.0.0/16"
SUBNET_CIDR = f"{AWS_SUBNET_PREFIX}0/24"  # nodes at fixed addresses in it: AwsTarget.private_ips


def private_ips(settings: StackSettings) -> list[str | None]:
    """One per node: fixed addresses in the subnet coderig creates; None where the subnet assigns one."""
    return aws_target(settings).private_ips


def tags(stack: str, environment: str, role: str, **extra: str) -> dict[str, str]:
    return {
        aws_reaper.TAG_STACK: stack,
        aws_reaper.TAG_ENVIRONMENT: environment,
        aws_reaper.TAG_ROLE: role,
        **extra,
    }


def environment(settings: StackSettings, stack: str) -> str:
    return settings.environment or stack


def aws_target(settings: StackSettings) -> AwsTarget:
    t = settings.target
    if not isinstance(t, AwsTarget):
        raise ValueError(f"coderig:target.kind: expected aws, got {t.kind}")
    return t


# --- the weights volume --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeSpec:
    size_gb: int
    iops: int
    throughput_mibs: int
    retain: bool


def weights_volume(settings: StackSettings) -> VolumeSpec:
    """Size from the plan (weights + headroom) unless `volumeSizeGb` says otherwise; gp3 at its maximum
    throughput, and the most IOPS the size allows, so a restart reads the weights as fast as EBS can."""
    t = aws_target(settings)
    size = t.volumeSizeGb or budgets.weights_volume_gb(settings.model.spec, t.gpus[1])
    problems = t.volume_problems(settings.model.spec)  # reported at validation; this guards other callers
    if problems:
        raise ValueError(problems[0])
    iops = min(GP3_MAX_IOPS, GP3_IOPS_PER_GIB * size)
    throughput = min(GP3_MAX_THROUGHPUT_MIBS, iops // 4)  # gp3 allows 0.25 MiB/s per provisioned IOPS
    return VolumeSpec(size_gb=size, iops=iops, throughput_mibs=throughput, retain=t.retainWeights)


# --- the AMI -------------------------------------------------------------------------------------------


def ami_filters() -> list[dict[str, Any]]:
    """Filters for `aws.ec2.get_ami(most_recent=True, owners=["amazon"])`: the DLAMI Base GPU (Ubuntu)."""
    return [
        {"name": "name", "values": [DLAMI_NAME]},
        {"name": "architecture", "values": ["x86_64"]},
        {"name": "state", "values": ["available"]},
        {"name": "root-device-type", "values": ["ebs"]},
    ]


# --- the security group --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    description: str
    port: int
    cidr: str

    @property
    def ipv6(self) -> bool:
        return ":" in self.cidr


def ingress_rules(settings: StackSettings) -> list[Rule]:
    """Gateway port from each of `allowedCidrs` only; SSH from `adminCidr` only (none when unset).

    With no adminCidr, nothing can reach SSH from outside: `pulumi up` then cannot run the node steps,
    so stacks.aws requires adminCidr (the machine running `pulumi up` must be inside it)."""
    t = aws_target(settings)
    rules = [Rule(f"gateway from {c}", settings.gateway.port, c) for c in t.allowedCidrs]
    if t.adminCidr:
        rules.append(Rule(f"ssh from admin {t.adminCidr}", 22, t.adminCidr))
    return rules


# --- IAM -----------------------------------------------------------------------------------------------


def assume_role_policy(service: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def node_policy(namespace: str = aws_reaper.NAMESPACE) -> dict[str, Any]:
    """The node may put metrics into this stack's namespace and nothing else (plus SSM core, attached
    as the AWS managed policy). PutMetricData has no resource-level permissions: the namespace
    condition is what limits it."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PutCoderigMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
            }
        ],
    }


def reaper_policy(*, tag_key: str, tag_value: str, log_group_arn: str) -> dict[str, Any]:
    """Least privilege for the reaper: list instances (no resource-level permission exists for
    Describe*), stop/start only instances carrying this stack's tag, read metrics, write its own log."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListInstances", "Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
            {
                "Sid": "StopStartThisStack",
                "Effect": "Allow",
                "Action": ["ec2:StartInstances", "ec2:StopInstances"],
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/{tag_key}": tag_value}},
            },
            {"Sid": "ReadMetrics", "Effect": "Allow", "Action": "cloudwatch:GetMetricData", "Resource": "*"},
            {
                "Sid": "WriteOwnLog",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{log_group_arn}:*",
            },
        ],
    }


# --- the reaper ----------------------------------------------------------------------------------------


def reaper_enabled(settings: StackSettings) -> bool:
    """The reaper Lambda is deployed when the stack has an idle policy, unless a front-door machine runs
    the reaper instead: there it acts on the relay's live count and holds requests before a stop
    (coderig.runtime.node_reaper, action ec2), where the Lambda reads minutes-old CloudWatch data."""
    return settings.idle.enabled and settings.target.front_door_machine is None


def reaper_config(settings: StackSettings, stack: str, *, gateway_signal: bool = False) -> aws_reaper.ReaperConfig:
    policy = settings.idle
    schedule = policy.schedule()
    signals = idle.SIGNALS if gateway_signal else tuple(s for s in idle.SIGNALS if s != "gateway_requests")
    return aws_reaper.ReaperConfig(
        stack=stack,
        stop_after_minutes=float(policy.stop_after_minutes),
        schedule=schedule,
        dry_run=policy.dryRun,
        signals=signals,
    )


def reaper_function_name(stack: str) -> str:
    """Deterministic (the log group is named after it), at most 64 characters."""
    return f"coderig-{stack}-idle-reaper"[:64]


LAMBDA_MODULES = ("__init__.py", "http.py", "idle.py", "aws_reaper.py")


def lambda_files() -> dict[str, str]:
    """The reaper's zip: the stdlib-only modules of `coderig/runtime/` it imports, as the package
    `coderig.runtime` (`coderig/__init__.py` empty). The Lambda runtime has boto3 and the standard
    library, not pydantic."""
    pkg = importlib.resources.files("coderig.runtime")
    return {"coderig/__init__.py": "", **{f"coderig/runtime/{n}": (pkg / n).read_text() for n in LAMBDA_MODULES}}


# --- cloud-init ------------------------------------------------------------------------------------------


def publisher_command(stack: str, region: str, gateway_metrics_url: str | None = None) -> list[str]:
    cmd = [
        "/usr/bin/python3",
        "-m",
        "coderig.runtime.aws_reaper",
        "publish",
        "--stack",
        stack,
        "--region",
        region,
        "--instance-id",
        "auto",
        "--vllm-url",
        f"http://{engine.MODEL_HOST}:{engine.MODEL_PORT}/metrics",
        "--loop",
        "60",
        "--state-file",
        f"/var/lib/{STATE_DIRECTORY}/state.json",
    ]
    if gateway_metrics_url:
        cmd += ["--gateway-url", gateway_metrics_url]
    return cmd


def _unit(stack: str, region: str, gateway_metrics_url: str | None) -> str:
    return "\n".join(
        [
            "[Unit]",
            "Description=coderig: publish request metrics to CloudWatch for the idle reaper",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            f"Environment=PYTHONPATH={PUBLISHER_DIR}",
            "ExecStart=" + " ".join(publisher_command(stack, region, gateway_metrics_url)),
            "Restart=always",
            "RestartSec=30",
            "DynamicUser=yes",
            f"StateDirectory={STATE_DIRECTORY}",
            "ProtectSystem=strict",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def cloud_init(
    *,
    host_private_key: str,
    host_public_key: str,
    login_public_key: str,
    weights_volume_id: str,
    stack: str,
    region: str,
    gateway_metrics_url: str | None = None,
) -> str:
    """The instance's `#cloud-config`: the stack-generated SSH host key (so `pulumi up` pins it from
    the first boot), the login key, a udev link to the weights volume, and the metrics publisher.

    Holds a private key: the caller must keep the result secret."""
    # EBS NVMe serial is the volume id without its dash (vol0123…); systemd's 60-persistent-storage
    # rules set ID_SERIAL_SHORT from it before this 90- rule runs. `*`: tolerate serial padding.
    serial = weights_volume_id.replace("-", "")
    udev = (
        'ACTION=="add|change", SUBSYSTEM=="block", KERNEL=="nvme*n1", '
        f'ENV{{ID_SERIAL_SHORT}}=="{serial}*", SYMLINK+="{WEIGHTS_DEVICE.removeprefix("/dev/")}"\n'
    )
    files = [
        {"path": "/etc/udev/rules.d/90-coderig-weights.rules", "permissions": "0644", "content": udev},
        {
            "path": "/etc/systemd/system/coderig-metrics.service",
            "permissions": "0644",
            "content": _unit(stack, region, gateway_metrics_url),
        },
    ] + [
        {"path": f"{PUBLISHER_DIR}/{path}", "permissions": "0644", "content": minify(text)}
        for path, text in lambda_files().items()
    ]
    runcmd = [
        ["udevadm", "control", "--reload-rules"],
        ["udevadm", "trigger", "--subsystem-match=block"],
        INSTALL_BOTO3,
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "coderig-metrics.service"],
    ]
    return cloud_config(host_private_key, host_public_key, login_public_key, files, runcmd)


# the shipped stdlib modules import boto3 inside their functions; Ubuntu's package brings it
INSTALL_BOTO3 = [
    "sh",
    "-c",
    "python3 -c 'import boto3' 2>/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y python3-boto3",
]


def cloud_config(
    host_private_key: str, host_public_key: str, login_public_key: str, files: list[dict[str, str]], runcmd: list
) -> str:
    """A `#cloud-config` for a coderig instance: the stack-generated SSH host key (pinned from the first
    boot, no other key generated), the login key, `files` and `runcmd`. Holds a private key: keep it secret."""
    config = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private_key, "ed25519_public": host_public_key},
        "ssh_authorized_keys": [login_public_key],
        "write_files": files,
        "runcmd": runcmd,
    }
    return "#cloud-config\n" + json.dumps(config, indent=1, sort_keys=True) + "\n"


def minify(source: str) -> str:
    """The same module without docstrings or comments (user data is small: 16 KiB)."""
    if not source.strip():
        return source
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass() if len(body) == 1 else body[0]
            if len(body) > 1:
                del body[0]
    return ast.unparse(tree) + "\n"


USER_DATA_LIMIT = 16 * 1024


def user_data_base64(cloud_config: str) -> str:
    """gzip (cloud-init reads it as is; deterministic: mtime 0) then base64, within EC2's 16 KiB."""
    raw = gzip.compress(cloud_config.encode(), mtime=0)
    if len(raw) > USER_DATA_LIMIT:
        raise ValueError(f"user data is {len(raw)} bytes gzipped; EC2 allows {USER_DATA_LIMIT}")
    return base64.b64encode(raw).decode()
