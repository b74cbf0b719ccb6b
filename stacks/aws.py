"""`aws` target: GPU instances with a persistent weights volume, the node runtime over SSH, and the
idle reaper.

Per node: an instance from the Deep Learning Base GPU AMI (Ubuntu; looked up by filter unless
`ami` is set), an Elastic IP (the endpoint survives stop/start and the TLS certificate names it),
a gp3 weights volume kept on replacement and on destroy unless `retainWeights: false`, and an
SSH host key generated here and installed by cloud-init, so the node runtime's SSH connection is
pinned from the first boot. The first node runs LiteLLM and the gateway; others are replicas on
fixed private addresses. With `frontDoor` set, a small always-on instance (components.aws_frontdoor)
runs LiteLLM and the gateway instead and every GPU node is a replica behind its link. The
planner has already refused a type whose GPUs cannot hold the preset
(stacks.build) before anything here is registered.
"""

from __future__ import annotations

from typing import Any, cast

import pulumi
import pulumi_aws as aws
import pulumi_command as command
import pulumi_tls as tls

from coderig.core import engine
from coderig.core.settings import NODE_CACHE_PATH, SshHost
from coderig.targets.aws import frontdoor as aws_frontdoor
from coderig.targets.aws import resources as aws_resources
from coderig.targets.compose.rendered import render_nodes
from components.aws import GpuNodes, IdleReaper, Network, NetworkArgs, NodeArgs, ReaperArgs
from components.aws_frontdoor import FrontDoorArgs, FrontDoorNode
from components.node import Connection, NodeStack, NodeStackArgs, Rolling, front_door_access, replicas_first
from stacks import StackContext
from stacks.outputs import client_outputs

CACHE_PATH = NODE_CACHE_PATH


def _login_key(ctx: StackContext) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """(private, public) login key: `coderig:sshPrivateKey` when set, else one the stack generates."""
    supplied = ctx.secrets.get("sshPrivateKey")
    if supplied is not None:
        public = tls.get_public_key_output(private_key_openssh=supplied).public_key_openssh
        return pulumi.Output.secret(supplied), public
    key = tls.PrivateKey("login-key", algorithm="ED25519")
    return pulumi.Output.secret(key.private_key_openssh), key.public_key_openssh


def _placement(ctx: StackContext, provider: aws.Provider) -> tuple[Any, Any, Any, list[str | None], list[Any]]:
    """(vpc_id, subnet_id, availability_zone, private_ips, resources the nodes must wait for)."""
    t = aws_resources.aws_target(ctx.settings)
    invoke = pulumi.InvokeOutputOptions(provider=provider)
    if t.subnetId:
        subnet = aws.ec2.get_subnet_output(id=t.subnetId, opts=invoke)
        return t.vpcId, t.subnetId, subnet.availability_zone, aws_resources.private_ips(ctx.settings), []
    az: Any = t.availabilityZone
    if az is None:
        offers = aws.ec2.get_instance_type_offerings_output(
            location_type="availability-zone",
            filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[t.instanceType])],
            opts=invoke,
        )
        az = offers.locations.apply(lambda locs: _first_zone(locs, t.instanceType, t.region))
    tags = aws_resources.tags(ctx.stack, aws_resources.environment(ctx.settings, ctx.stack), "network")
    net = Network("network", NetworkArgs(az, tags), opts=pulumi.ResourceOptions(provider=provider))
    ips = aws_resources.private_ips(ctx.settings)
    # the Elastic IP association needs the internet gateway attached: wait for the whole network
    return net.vpc_id, net.subnet_id, az, ips, [net]


def _front_door(
    ctx: StackContext, provider: aws.Provider, gpu: GpuNodes, subnet_id: Any, login_public: Any, network: list[Any]
) -> FrontDoorNode | None:
    """The always-on front-door instance when `coderig:target.frontDoor` is set (else None)."""
    t = aws_resources.aws_target(ctx.settings)
    if t.frontDoor is None:
        return None
    filters = [aws.ec2.GetAmiFilterArgs(name=f["name"], values=f["values"]) for f in aws_frontdoor.ami_filters()]
    ami = aws.ec2.get_ami_output(
        most_recent=True,
        owners=[aws_frontdoor.UBUNTU_OWNER],
        filters=filters,
        opts=pulumi.InvokeOutputOptions(provider=provider),
    ).id
    return FrontDoorNode(
        "front-door",
        FrontDoorArgs(
            stack=ctx.stack,
            environment=aws_resources.environment(ctx.settings, ctx.stack),
            instance_type=t.frontDoor.instanceType,
            ami=ami,
            subnet_id=subnet_id,
            security_group_id=gpu.security_group.id,
            login_public_key=login_public,
            eip_waits_for=tuple(network),
        ),
        opts=pulumi.ResourceOptions(provider=provider),
    )


def _first_zone(locations: list[str], instance_type: str, region: str) -> str:
    if not locations:
        raise ValueError(f"coderig:target.instanceType: {instance_type} is not offered in any zone of {region}")
    return sorted(locations)[0]


def build(ctx: StackContext) -> dict[str, object]:
    s = ctx.settings
    t = aws_resources.aws_target(s)
    env = aws_resources.environment(s, ctx.stack)
    if not t.allowedCidrs:
        pulumi.log.warn("coderig:target.allowedCidrs is empty: nobody can reach the gateway")
    if not t.adminCidr:
        pulumi.log.warn(
            "coderig:target.adminCidr is unset: SSH is closed, so `pulumi up` cannot run the node steps "
            "until it is set to a range that includes this machine"
        )
    provider = aws.Provider("aws", region=t.region)
    filters = [aws.ec2.GetAmiFilterArgs(name=f["name"], values=f["values"]) for f in aws_resources.ami_filters()]
    ami: Any = (
        t.ami
        or aws.ec2.get_ami_output(
            most_recent=True,
            owners=["amazon"],
            filters=filters,
            opts=pulumi.InvokeOutputOptions(provider=provider),
        ).id
    )
    vpc_id, subnet_id, az, private_ips, network = _placement(ctx, provider)
    login_private, login_public = _login_key(ctx)
    gpu = GpuNodes(
        "gpu",
        NodeArgs(
            stack=ctx.stack,
            environment=env,
            region=t.region,
            target=t,
            ami=ami,
            vpc_id=vpc_id,
            subnet_id=subnet_id,
            availability_zone=az,
            private_ips=private_ips,
            rules=aws_resources.ingress_rules(s),
            replica_port=engine.MODEL_PORT if t.count > 1 or t.frontDoor else None,
            volume=aws_resources.weights_volume(s),
            login_public_key=login_public,
            eip_waits_for=network,
        ),
        opts=pulumi.ResourceOptions(provider=provider),
    )
    door = _front_door(ctx, provider, gpu, subnet_id, login_public, network)
    first_ip = door.public_ip if door else gpu.nodes[0].eip.public_ip
    names = cast(list[str], [first_ip, *s.gateway.hostnames])
    access = front_door_access(s, names, ctx.secrets)
    nodes = render_nodes(ctx.settings, ctx.plan, CACHE_PATH)
    assert len(nodes) == len(gpu.nodes) + (1 if door else 0)

    def connection(ip: pulumi.Output[str], host_key: pulumi.Output[str]) -> Connection:
        return Connection(
            command.remote.ConnectionArgs(
                host=ip,
                user=aws_resources.LOGIN_USER,
                private_key=login_private,
                host_key=host_key.apply(lambda k: " ".join(k.split()[:2])),
                dial_error_limit=60,
                per_dial_timeout=30,
            ),
            aws_resources.LOGIN_USER,
        )

    def node_stack(i: int, after: list[NodeStack], rolling: Rolling) -> NodeStack:
        if door and i == 0:
            return NodeStack(
                "node-0",
                NodeStackArgs(
                    s,
                    nodes[0],
                    connection(door.public_ip, door.host_key),
                    access.secrets,
                    host=SshHost(address="aws-front-door"),
                    machine=[door.instance_id],
                    after=after,
                    model_secrets=access.model_secrets,
                    link=access.link(0),
                    rolling=rolling,
                ),
                opts=pulumi.ResourceOptions(depends_on=[door.eip_association]),
            )
        n = gpu.nodes[i - 1 if door else i]
        conn = connection(n.eip.public_ip, n.host_key.public_key_openssh)
        return NodeStack(
            f"node-{i}",
            NodeStackArgs(
                s,
                nodes[i],
                conn,
                access.secrets,
                host=SshHost(address=f"aws-node-{i}", cacheDevice=aws_resources.WEIGHTS_DEVICE),
                # the Elastic IP and host key survive a replaced instance: its id makes every step re-run
                machine=[n.instance.id, n.attachment.id],
                after=after,
                model_secrets=access.model_secrets,
                link=access.link(i),
                rolling=rolling,
            ),
            opts=pulumi.ResourceOptions(depends_on=[n.attachment, n.eip_association]),
        )

    runtimes = replicas_first([n.spec.runs_model for n in nodes], node_stack)
    # No login private key among the outputs: `coderig bundle` reads every output with
    # --show-secrets into files handed to developers. Ops get the key from the stack state:
    #   supplied:  pulumi config get coderig:sshPrivateKey   (prints a secret value decrypted)
    #   generated: pulumi stack export --show-secrets | jq -r '.deployment.resources[]
    #              | select(.type == "tls:index/privateKey:PrivateKey" and (.urn | endswith("::login-key")))
    #              | .outputs.privateKeyOpenssh'
    # (or, with no SSH at all, `aws ssm start-session --target <instance id>`: the role allows SSM).
    outputs: dict[str, object] = {
        **client_outputs(ctx, host=first_ip, port=s.gateway.port, ca_pem=access.ca_pem, tokens=access.developer_keys),
        "endpoint": pulumi.Output.concat("https://", first_ip, f":{s.gateway.port}"),
        "nodes": gpu.public_ips,
        "instanceIds": gpu.instance_ids,
        "hostKeys": gpu.host_keys,
        "region": t.region,
        "ready": runtimes[0].ready,
        "nodesReady": [r.ready for r in runtimes],  # every node's readiness wait, first node first
    }
    if door:
        outputs["frontDoor"] = door.public_ip
    if aws_resources.reaper_enabled(s):
        reaper = IdleReaper(
            "idle-reaper",
            ReaperArgs(stack=ctx.stack, environment=env, config=aws_resources.reaper_config(s, ctx.stack)),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        outputs["idleReaper"] = reaper.function_name
    return outputs
