"""The `aws` target's front-door machine: a small always-on instance that holds the gateway, the
developer keys, the waker and the idle reaper, in front of the GPU instances it stops.

Thin: every decision (type, address, AMI filter, IAM policy, cloud-init) comes from
coderig.targets.aws.frontdoor. Children are named f"{name}-…" and parented to the component.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from coderig.targets.aws import frontdoor
from coderig.targets.aws import resources as aws_plan
from components.aws import FIRST_BOOT_ONLY, hardened_instance, instance_profile


@dataclass(frozen=True)
class FrontDoorArgs:
    stack: str
    environment: str
    instance_type: str
    ami: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]  # the stack's: gateway from allowedCidrs, SSH, the links
    login_public_key: pulumi.Input[str]
    eip_waits_for: tuple[pulumi.Resource, ...] = ()


class FrontDoorNode(pulumi.ComponentResource):
    """One always-on instance at a fixed private address, its Elastic IP, its SSH host key, and a
    role that may start and stop (never terminate) this stack's tagged GPU instances."""

    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    host_key: pulumi.Output[str]

    def __init__(self, name: str, args: FrontDoorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:aws:FrontDoorNode", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = aws_plan.tags(args.stack, args.environment, frontdoor.ROLE)
        profile = instance_profile(
            self,
            name,
            purpose=f"coderig {args.stack} front door: start and stop this stack's GPU instances, SSM",
            tags=tags,
            policy=("wake", frontdoor.waker_policy(args.stack)),
        )
        self.key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        user_data = pulumi.Output.secret(
            pulumi.Output.all(self.key.private_key_openssh, self.key.public_key_openssh, args.login_public_key).apply(
                lambda v: aws_plan.user_data_base64(
                    frontdoor.cloud_init(host_private_key=v[0], host_public_key=v[1], login_public_key=v[2])
                )
            )
        )
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=args.ami,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            private_ip=frontdoor.PRIVATE_IP,
            vpc_security_group_ids=[args.security_group_id],
            iam_instance_profile=profile.name,
            user_data_base64=user_data,
            **hardened_instance(frontdoor.ROOT_GB),  # type: ignore[arg-type]
            tags={**tags, "Name": f"{name}-instance"},
            opts=pulumi.ResourceOptions(
                parent=self,
                **FIRST_BOOT_ONLY,  # type: ignore[arg-type]
                delete_before_replace=True,  # its fixed private address cannot be held twice
            ),
        )
        self.eip = aws.ec2.Eip(f"{name}-eip", domain="vpc", tags={**tags, "Name": f"{name}-eip"}, opts=child)
        self.eip_association = aws.ec2.EipAssociation(
            f"{name}-eip-assoc",
            allocation_id=self.eip.allocation_id,
            instance_id=self.instance.id,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.eip_waits_for)),
        )
        self.public_ip = self.eip.public_ip
        self.instance_id = self.instance.id
        self.host_key = self.key.public_key_openssh
        self.register_outputs({"public_ip": self.public_ip, "instance_id": self.instance_id, "host_key": self.host_key})
