"""AWS resources for the `aws` target: a minimal network, GPU nodes with a persistent weights volume,
and the idle reaper Lambda.

Thin ComponentResources: each constructor delegates to a plain function; every policy document,
rule, size, filter and cloud-init text comes from `coderig.targets.aws.resources`. Children are named
f"{name}-…" and parented to their component, and every AWS resource carries the stack,
environment and role tags.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from coderig.runtime import aws_reaper
from coderig.targets.aws import resources as aws_resources
from coderig.targets.aws.resources import Rule, VolumeSpec
from coderig.targets.aws.settings import AwsTarget

# --- network -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkArgs:
    availability_zone: pulumi.Input[str]
    tags: dict[str, str]


class Network(pulumi.ComponentResource):
    """A VPC with one public subnet in the nodes' availability zone (used when no vpcId is given)."""

    vpc_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:aws:Network", name, None, opts)
        self.vpc_id, self.subnet_id = _network(self, name, args.availability_zone, args.tags)
        self.register_outputs({"vpc_id": self.vpc_id, "subnet_id": self.subnet_id})


def _network(
    parent: pulumi.Resource, name: str, az: pulumi.Input[str], tags: dict[str, str]
) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    child = pulumi.ResourceOptions(parent=parent)
    vpc = aws.ec2.Vpc(
        f"{name}-vpc",
        cidr_block=aws_resources.VPC_CIDR,
        enable_dns_hostnames=True,
        enable_dns_support=True,
        tags={**tags, "Name": f"{name}-vpc"},
        opts=child,
    )
    igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
    subnet = aws.ec2.Subnet(
        f"{name}-subnet",
        vpc_id=vpc.id,
        cidr_block=aws_resources.SUBNET_CIDR,
        availability_zone=az,
        map_public_ip_on_launch=False,
        tags={**tags, "Name": f"{name}-subnet"},
        opts=child,
    )
    routes = aws.ec2.RouteTable(
        f"{name}-routes",
        vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
        tags=tags,
        opts=child,
    )
    aws.ec2.RouteTableAssociation(f"{name}-routes-assoc", subnet_id=subnet.id, route_table_id=routes.id, opts=child)
    return vpc.id, subnet.id


# --- GPU nodes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeArgs:
    """Everything the GPU nodes need, already decided (by stacks.aws from settings + aws_resources)."""

    stack: str
    environment: str
    region: str
    target: AwsTarget
    ami: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]
    private_ips: Sequence[str | None]  # one per node; None: the subnet assigns one
    rules: Sequence[Rule]
    replica_port: int | None  # model port opened between the nodes (count > 1), else None
    volume: VolumeSpec
    login_public_key: pulumi.Input[str]
    gateway_metrics_url: str | None = None
    # the Elastic IP association needs the VPC's internet gateway attached (a coderig-made Network)
    eip_waits_for: Sequence[pulumi.Resource] = ()


@dataclass
class Node:
    instance: aws.ec2.Instance
    host_key: tls.PrivateKey
    volume: aws.ebs.Volume
    attachment: aws.ec2.VolumeAttachment
    eip: aws.ec2.Eip
    eip_association: aws.ec2.EipAssociation


class GpuNodes(pulumi.ComponentResource):
    """`count` GPU instances, each with an Elastic IP, a gp3 weights volume and a stack-generated SSH
    host key installed by cloud-init; one security group and one instance profile for all."""

    public_ips: pulumi.Output[list[str]]
    instance_ids: pulumi.Output[list[str]]
    host_keys: pulumi.Output[list[str]]

    def __init__(self, name: str, args: NodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:aws:GpuNodes", name, None, opts)
        self.security_group = _security_group(self, name, args)
        self.profile = instance_profile(
            self,
            name,
            purpose=f"coderig {args.stack} GPU node: SSM and this stack's metrics only",
            tags=_tags(args, "gpu-node"),
            policy=("metrics", aws_resources.node_policy()),
        )
        self.nodes = [_node(self, f"{name}-{i}", args, i) for i in range(args.target.count)]
        self.public_ips = pulumi.Output.all(*[n.eip.public_ip for n in self.nodes])  # type: ignore[assignment]
        self.instance_ids = pulumi.Output.all(*[n.instance.id for n in self.nodes])  # type: ignore[assignment]
        self.host_keys = pulumi.Output.all(*[n.host_key.public_key_openssh for n in self.nodes])  # type: ignore[assignment]
        self.register_outputs(
            {"public_ips": self.public_ips, "instance_ids": self.instance_ids, "host_keys": self.host_keys}
        )


def _tags(args: NodeArgs, role: str, **extra: str) -> dict[str, str]:
    return aws_resources.tags(args.stack, args.environment, role, **extra)


def _security_group(parent: pulumi.Resource, name: str, args: NodeArgs) -> aws.ec2.SecurityGroup:
    ingress = [
        aws.ec2.SecurityGroupIngressArgs(
            description=r.description,
            protocol="tcp",
            from_port=r.port,
            to_port=r.port,
            cidr_blocks=None if r.ipv6 else [r.cidr],
            ipv6_cidr_blocks=[r.cidr] if r.ipv6 else None,
        )
        for r in args.rules
    ]
    if args.replica_port is not None:
        ingress.append(
            aws.ec2.SecurityGroupIngressArgs(
                description="model server between this stack's nodes",
                protocol="tcp",
                from_port=args.replica_port,
                to_port=args.replica_port,
                self=True,
            )
        )
    return aws.ec2.SecurityGroup(
        f"{name}-sg",
        description=f"coderig {args.stack}: gateway from allowedCidrs, ssh from adminCidr",
        vpc_id=args.vpc_id,
        ingress=ingress,
        egress=[
            aws.ec2.SecurityGroupEgressArgs(
                description="weights, images, AWS APIs",
                protocol="-1",
                from_port=0,
                to_port=0,
                cidr_blocks=["0.0.0.0/0"],
                ipv6_cidr_blocks=["::/0"],
            )
        ],
        tags=_tags(args, "gpu-node"),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def instance_profile(
    parent: pulumi.Resource, name: str, *, purpose: str, tags: dict[str, str], policy: tuple[str, dict[str, object]]
) -> aws.iam.InstanceProfile:
    """An EC2 role with SSM and one inline policy (`policy`: its name suffix and document), and its
    instance profile: the GPU nodes' and the front door's."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=json.dumps(aws_resources.assume_role_policy("ec2.amazonaws.com")),
        description=purpose,
        tags=tags,
        opts=child,
    )
    aws.iam.RolePolicyAttachment(f"{name}-ssm", role=role.name, policy_arn=aws_resources.SSM_CORE_POLICY, opts=child)
    aws.iam.RolePolicy(f"{name}-{policy[0]}", role=role.id, policy=json.dumps(policy[1]), opts=child)
    return aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags, opts=child)


def hardened_instance(root_gb: int, root_tags: dict[str, str] | None = None) -> dict[str, object]:
    """What every instance coderig launches sets: IMDSv2 only (one hop), an encrypted gp3 root deleted
    with it."""
    return {
        "metadata_options": aws.ec2.InstanceMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
        ),
        "root_block_device": aws.ec2.InstanceRootBlockDeviceArgs(
            volume_type="gp3", volume_size=root_gb, encrypted=True, delete_on_termination=True, tags=root_tags
        ),
    }


# cloud-init acts on first boot only: a newer AMI or edited user data must not replace or stop/start a
# running instance (`pulumi up --replace` takes a new AMI on purpose); the user data holds the host key
FIRST_BOOT_ONLY = {
    "ignore_changes": ["ami", "userData", "userDataBase64"],
    "additional_secret_outputs": ["userData", "userDataBase64"],
}


def _market_options(t: AwsTarget) -> dict[str, object]:
    """Spot (stopped, never terminated, on interruption) or a Capacity Block / reservation."""
    out: dict[str, object] = {}
    if t.spot:
        out["instance_market_options"] = aws.ec2.InstanceInstanceMarketOptionsArgs(
            market_type="spot",
            spot_options=aws.ec2.InstanceInstanceMarketOptionsSpotOptionsArgs(
                instance_interruption_behavior="stop", spot_instance_type="persistent"
            ),
        )
    if t.capacityBlock:
        out["instance_market_options"] = aws.ec2.InstanceInstanceMarketOptionsArgs(market_type="capacity-block")
    if t.capacityReservationId:
        out["capacity_reservation_specification"] = aws.ec2.InstanceCapacityReservationSpecificationArgs(
            capacity_reservation_target=aws.ec2.InstanceCapacityReservationSpecificationCapacityReservationTargetArgs(
                capacity_reservation_id=t.capacityReservationId
            )
        )
    return out


def _node(gpu: GpuNodes, name: str, args: NodeArgs, index: int) -> Node:
    child = pulumi.ResourceOptions(parent=gpu)
    host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
    spec = args.volume
    volume = aws.ebs.Volume(
        f"{name}-weights",
        availability_zone=args.availability_zone,
        type="gp3",
        size=spec.size_gb,
        iops=spec.iops,
        throughput=spec.throughput_mibs,
        encrypted=True,
        tags=_tags(args, "weights", Name=f"{name}-weights"),
        opts=pulumi.ResourceOptions(
            parent=gpu,
            retain_on_delete=spec.retain,
            # No config change may replace (and so delete) the weights: fields that force a new
            # volume are ignored; size, IOPS and throughput change in place.
            ignore_changes=["availabilityZone", "encrypted", "kmsKeyId", "snapshotId"],
        ),
    )
    user_data = pulumi.Output.secret(
        pulumi.Output.all(
            host_key.private_key_openssh, host_key.public_key_openssh, args.login_public_key, volume.id
        ).apply(
            lambda v: aws_resources.user_data_base64(
                aws_resources.cloud_init(
                    host_private_key=v[0],
                    host_public_key=v[1],
                    login_public_key=v[2],
                    weights_volume_id=v[3],
                    stack=args.stack,
                    region=args.region,
                    gateway_metrics_url=args.gateway_metrics_url,
                )
            )
        )
    )
    tags = _tags(args, "gpu-node", Name=name)
    instance = aws.ec2.Instance(
        name,
        ami=args.ami,
        instance_type=args.target.instanceType,
        subnet_id=args.subnet_id,
        private_ip=args.private_ips[index],
        vpc_security_group_ids=[gpu.security_group.id],
        iam_instance_profile=gpu.profile.name,
        user_data_base64=user_data,
        **hardened_instance(aws_resources.ROOT_VOLUME_GB, _tags(args, "root-volume", Name=f"{name}-root")),  # type: ignore[arg-type]
        tags=tags,
        **_market_options(args.target),  # type: ignore[arg-type]
        opts=pulumi.ResourceOptions(
            parent=gpu,
            **FIRST_BOOT_ONLY,  # type: ignore[arg-type]
            # a fixed private address (LiteLLM on node 0 reaches replicas by it) cannot be held by
            # two instances: a replacement terminates the old one first
            delete_before_replace=args.private_ips[index] is not None,
        ),
    )
    attachment = aws.ec2.VolumeAttachment(
        f"{name}-weights-attach",
        device_name="/dev/sdf",
        volume_id=volume.id,
        instance_id=instance.id,
        stop_instance_before_detaching=True,
        # a gp3 volume attaches to one instance at a time: detach from the old instance first
        opts=pulumi.ResourceOptions(parent=gpu, delete_before_replace=True),
    )
    eip = aws.ec2.Eip(f"{name}-eip", domain="vpc", tags=_tags(args, "gpu-node", Name=f"{name}-eip"), opts=child)
    association = aws.ec2.EipAssociation(
        f"{name}-eip-assoc",
        allocation_id=eip.allocation_id,
        instance_id=instance.id,
        opts=pulumi.ResourceOptions(parent=gpu, depends_on=list(args.eip_waits_for)),
    )
    return Node(instance, host_key, volume, attachment, eip, association)


# --- idle reaper ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaperArgs:
    stack: str
    environment: str
    config: aws_reaper.ReaperConfig


class IdleReaper(pulumi.ComponentResource):
    """The boto3 reaper (coderig/aws_reaper.py + coderig/idle.py) as a Lambda run every 5 minutes."""

    function_name: pulumi.Output[str]

    def __init__(self, name: str, args: ReaperArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:aws:IdleReaper", name, None, opts)
        self.function = _reaper(self, name, args)
        self.function_name = self.function.name
        self.register_outputs({"function_name": self.function_name})


def _reaper(parent: pulumi.Resource, name: str, args: ReaperArgs) -> aws.lambda_.Function:
    child = pulumi.ResourceOptions(parent=parent)
    tags = aws_resources.tags(args.stack, args.environment, "idle-reaper")
    fn_name = aws_resources.reaper_function_name(args.stack)
    logs = aws.cloudwatch.LogGroup(
        f"{name}-logs",
        name=f"/aws/lambda/{fn_name}",
        retention_in_days=aws_resources.LOG_RETENTION_DAYS,
        tags=tags,
        opts=child,
    )
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=json.dumps(aws_resources.assume_role_policy("lambda.amazonaws.com")),
        description=f"coderig {args.stack} idle reaper: stop/start this stack's instances only",
        tags=tags,
        opts=child,
    )
    policy = aws.iam.RolePolicy(
        f"{name}-policy",
        role=role.id,
        policy=logs.arn.apply(
            lambda arn: json.dumps(
                aws_resources.reaper_policy(
                    tag_key=args.config.tag_key, tag_value=args.config.tag_value, log_group_arn=arn
                )
            )
        ),
        opts=child,
    )
    code = pulumi.AssetArchive({path: pulumi.StringAsset(text) for path, text in aws_resources.lambda_files().items()})
    function = aws.lambda_.Function(
        f"{name}-fn",
        name=fn_name,
        runtime=aws_resources.REAPER_RUNTIME,
        handler=aws_resources.REAPER_HANDLER,
        code=code,
        role=role.arn,
        timeout=120,
        memory_size=256,
        environment=aws.lambda_.FunctionEnvironmentArgs(variables=args.config.to_env()),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[logs, policy]),
    )
    rule = aws.cloudwatch.EventRule(
        f"{name}-schedule",
        schedule_expression=aws_resources.REAPER_SCHEDULE,
        description=f"coderig {args.stack}: run the idle reaper",
        tags=tags,
        opts=child,
    )
    aws.cloudwatch.EventTarget(f"{name}-target", rule=rule.name, arn=function.arn, opts=child)
    aws.lambda_.Permission(
        f"{name}-invoke",
        action="lambda:InvokeFunction",
        function=function.name,
        principal="events.amazonaws.com",
        source_arn=rule.arn,
        opts=child,
    )
    return function
