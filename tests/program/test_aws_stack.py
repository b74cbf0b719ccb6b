"""The `aws` target's Pulumi program under mocks: the resource graph, IAM as JSON, tags, retention."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile
from typing import Any

import pulumi
import pytest
import yaml
from conftest import ProgramRun, Registered
from programs import AMI_FROM_LOOKUP, aws_config, aws_outputs, is_secret, run_stack, unsecret

from coderig.core.errors import UserError
from coderig.runtime import aws_reaper, idle
from coderig.targets import parse_settings
from coderig.targets.aws import resources as aws_resources

STACK = "prod"
TAGGABLE_PREFIXES = (
    "aws:ec2/vpc:",
    "aws:ec2/internetGateway:",
    "aws:ec2/subnet:",
    "aws:ec2/routeTable:",
    "aws:ec2/securityGroup:",
    "aws:ec2/instance:",
    "aws:ec2/eip:",
    "aws:ebs/volume:",
    "aws:iam/role:",
    "aws:iam/instanceProfile:",
    "aws:lambda/function:",
    "aws:cloudwatch/logGroup:",
    "aws:cloudwatch/eventRule:",
)


@pytest.fixture(scope="module")
def default_run() -> ProgramRun:
    run = run_stack(aws_config())
    assert run.error is None, run.error
    return run


def test_instance_type_ami_lookup_and_placement(default_run: ProgramRun) -> None:
    (inst,) = default_run.of_prefix("aws:ec2/instance:")
    assert inst.inputs["instanceType"] == "p5en.48xlarge"
    assert inst.inputs["ami"] == AMI_FROM_LOOKUP
    ami_calls = [a for t, a in default_run.calls if t == "aws:ec2/getAmi:getAmi"]
    assert len(ami_calls) == 1
    assert ami_calls[0]["owners"] == ["amazon"] and ami_calls[0]["mostRecent"] is True
    names = {f["name"]: f["values"] for f in ami_calls[0]["filters"]}
    assert names["name"] == ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *"]
    assert names["architecture"] == ["x86_64"]
    assert inst.inputs["metadataOptions"]["httpTokens"] == "required"
    assert inst.inputs["privateIp"] == "10.77.0.10"
    (subnet,) = default_run.of_prefix("aws:ec2/subnet:")
    assert subnet.inputs["availabilityZone"] == "us-east-1a"
    (vol,) = default_run.of_prefix("aws:ebs/volume:")
    assert vol.inputs["availabilityZone"] == "us-east-1a"
    assert "instanceMarketOptions" not in inst.inputs and "capacityReservationSpecification" not in inst.inputs


def test_ami_override_skips_the_lookup() -> None:
    run = run_stack(aws_config(ami="ami-0pinned000000000"))
    assert run.error is None, run.error
    assert run.of_prefix("aws:ec2/instance:")[0].inputs["ami"] == "ami-0pinned000000000"
    assert not [t for t, _ in run.calls if t == "aws:ec2/getAmi:getAmi"]


def test_elastic_ip_is_the_endpoint_and_in_the_certificate(default_run: ProgramRun) -> None:
    (eip,) = default_run.of_prefix("aws:ec2/eip:Eip")
    assert eip.inputs["domain"] == "vpc"
    (assoc,) = default_run.of_prefix("aws:ec2/eipAssociation:")
    assert assoc.inputs["instanceId"] == "gpu-0-id"
    assert default_run.outputs["endpoint"] == "https://198.51.100.10:8443"
    (csr,) = default_run.of_prefix("tls:index/certRequest:")
    assert "198.51.100.10" in csr.inputs["ipAddresses"]


def test_weights_volume_is_gp3_at_max_and_retained(default_run: ProgramRun) -> None:
    (vol,) = default_run.of_prefix("aws:ebs/volume:")
    assert vol.inputs["type"] == "gp3"
    assert vol.inputs["throughput"] == aws_resources.GP3_MAX_THROUGHPUT_MIBS == 2000
    assert vol.inputs["iops"] == aws_resources.GP3_MAX_IOPS
    assert vol.inputs["size"] >= 690 * 1.2  # DeepSeek V3.2 weights plus headroom
    assert vol.inputs["encrypted"] is True
    (attach,) = default_run.of_prefix("aws:ec2/volumeAttachment:")
    assert attach.inputs["volumeId"] == "vol-0123456789abcdef0" and attach.inputs["stopInstanceBeforeDetaching"]


def weights_volume(config: dict[str, Any]) -> Registered:
    """The weights volume as registered (with its options: retainOnDelete, ignoreChanges)."""
    run = run_stack(config)
    assert run.error is None, run.error
    (vol,) = run.of_prefix("aws:ebs/volume:")
    return vol


def test_volume_retention_follows_retain_weights() -> None:
    kept = weights_volume(aws_config())
    assert kept.retain_on_delete is True
    assert set(kept.ignore_changes or []) >= {"availabilityZone", "snapshotId", "encrypted", "kmsKeyId"}
    dropped = weights_volume(aws_config(retainWeights=False))
    assert not dropped.retain_on_delete
    # even then, no config change can replace (and so delete) the weights volume
    assert "availabilityZone" in (dropped.ignore_changes or [])


def test_security_group_rules_exactly_as_configured(default_run: ProgramRun) -> None:
    (sg,) = default_run.of_prefix("aws:ec2/securityGroup:")
    rules = sorted(
        (
            r["fromPort"],
            r["toPort"],
            r["protocol"],
            tuple(r.get("cidrBlocks") or ()),
            tuple(r.get("ipv6CidrBlocks") or ()),
        )
        for r in sg.inputs["ingress"]
    )
    assert rules == [
        (22, 22, "tcp", ("198.51.100.7/32",), ()),
        (8443, 8443, "tcp", (), ("2001:db8::/48",)),
        (8443, 8443, "tcp", ("203.0.113.0/24",), ()),
    ]


def test_no_admin_cidr_means_no_ssh_rule() -> None:
    run = run_stack(aws_config(adminCidr=None, allowedCidrs=["192.0.2.0/24"]))
    assert run.error is None, run.error
    (sg,) = run.of_prefix("aws:ec2/securityGroup:")
    assert [(int(r["fromPort"]), r["cidrBlocks"]) for r in sg.inputs["ingress"]] == [(8443, ["192.0.2.0/24"])]


def test_node_iam_is_ssm_and_namespaced_metrics_only(default_run: ProgramRun) -> None:
    roles = {r.name: r for r in default_run.of_prefix("aws:iam/role:")}
    trust = json.loads(roles["gpu-role"].inputs["assumeRolePolicy"])
    assert trust["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    (ssm,) = default_run.of_prefix("aws:iam/rolePolicyAttachment:")
    assert ssm.inputs["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    policy = json.loads(default_run.named("gpu-metrics").inputs["policy"])
    assert policy["Statement"] == [
        {
            "Sid": "PutCoderigMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "Coderig"}},
        }
    ]
    (profile,) = default_run.of_prefix("aws:iam/instanceProfile:")
    assert default_run.of_prefix("aws:ec2/instance:")[0].inputs["iamInstanceProfile"] == "gpu-profile"
    assert profile.inputs["role"] == "gpu-role"


def test_reaper_iam_is_least_privilege(default_run: ProgramRun) -> None:
    policy = json.loads(default_run.named("idle-reaper-policy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert set(by_sid) == {"ListInstances", "StopStartThisStack", "ReadMetrics", "WriteOwnLog"}
    assert by_sid["ListInstances"]["Action"] == "ec2:DescribeInstances"
    stop = by_sid["StopStartThisStack"]
    assert sorted(stop["Action"]) == ["ec2:StartInstances", "ec2:StopInstances"]
    assert stop["Condition"] == {"StringEquals": {"aws:ResourceTag/coderig:stack": STACK}}
    assert stop["Resource"] == "arn:aws:ec2:*:*:instance/*"
    assert by_sid["ReadMetrics"]["Action"] == "cloudwatch:GetMetricData"
    assert by_sid["WriteOwnLog"]["Resource"].endswith(":log-group:/aws/lambda/coderig-prod-idle-reaper:*")
    actions = [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not any("*" in a for a in actions)
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])


def test_reaper_lambda_package_env_and_schedule(default_run: ProgramRun) -> None:
    (fn,) = default_run.of_prefix("aws:lambda/function:")
    assert fn.inputs["handler"] == "coderig.runtime.aws_reaper.handler"
    assert fn.inputs["runtime"] == "python3.12"
    env = fn.inputs["environment"]["variables"]
    cfg = aws_reaper.ReaperConfig.from_env(env)
    assert cfg.stack == STACK and cfg.tag_key == "coderig:stack" and cfg.tag_value == STACK
    assert cfg.stop_after_minutes == 45 and not cfg.dry_run
    assert cfg.schedule == idle.OfficeHours.from_dict(
        {"timezone": "Europe/Paris", "days": "mon-fri", "start": "08:00", "end": "19:00"}
    )
    assert "gateway_requests" not in cfg.signals  # the gateway has no counter yet: not required
    (rule,) = default_run.of_prefix("aws:cloudwatch/eventRule:")
    assert rule.inputs["scheduleExpression"] == "rate(5 minutes)"
    (target,) = default_run.of_prefix("aws:cloudwatch/eventTarget:")
    assert target.inputs["arn"] == "arn:aws:mock:::idle-reaper-fn"
    (perm,) = default_run.of_prefix("aws:lambda/permission:")
    assert perm.inputs["principal"] == "events.amazonaws.com"


def test_lambda_zip_holds_only_the_handler_modules() -> None:
    files = aws_resources.lambda_files()
    assert sorted(files) == [
        "coderig/__init__.py",
        "coderig/runtime/__init__.py",
        "coderig/runtime/aws_reaper.py",
        "coderig/runtime/http.py",
        "coderig/runtime/idle.py",
    ]
    assert files["coderig/__init__.py"] == ""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    assert buf.tell() < 200_000


def test_no_reaper_without_an_idle_policy() -> None:
    config = aws_config()
    config["idle"] = {}
    run = run_stack(config)
    assert run.error is None, run.error
    assert not run.of_prefix("aws:lambda/") and "idleReaper" not in run.outputs


def test_tags_on_everything(default_run: ProgramRun) -> None:
    taggable = [r for r in default_run.resources if r.typ.startswith(TAGGABLE_PREFIXES)]
    assert len(taggable) >= 13
    for r in taggable:
        tags = r.inputs.get("tags") or {}
        assert tags.get("coderig:stack") == STACK, r.name
        assert tags.get("coderig:environment") == STACK, r.name
        assert tags.get("coderig:role"), r.name
    (inst,) = default_run.of_prefix("aws:ec2/instance:")
    assert inst.inputs["tags"]["coderig:role"] == "gpu-node"
    assert inst.inputs["rootBlockDevice"]["tags"]["coderig:stack"] == STACK
    assert default_run.of_prefix("aws:ebs/volume:")[0].inputs["tags"]["coderig:role"] == "weights"


def test_host_key_is_pinned_from_user_data(default_run: ProgramRun) -> None:
    (inst,) = default_run.of_prefix("aws:ec2/instance:")
    assert is_secret(inst.inputs["userDataBase64"])  # it carries the host's private key
    cloud = gzip.decompress(base64.b64decode(unsecret(inst.inputs["userDataBase64"]))).decode()
    assert cloud.startswith("#cloud-config\n")
    doc = yaml.safe_load(cloud)
    host_key_b64 = base64.b64encode(b"gpu-0-host-key").decode()
    assert doc["ssh_keys"]["ed25519_public"].split()[1] == host_key_b64
    assert "OPENSSH PRIVATE KEY" in doc["ssh_keys"]["ed25519_private"]
    assert doc["ssh_genkeytypes"] == [] and doc["ssh_deletekeys"] is True
    login_b64 = base64.b64encode(b"login-key").decode()
    assert doc["ssh_authorized_keys"] == [f"ssh-ed25519 {login_b64}\n"]
    udev = next(f for f in doc["write_files"] if f["path"].endswith("90-coderig-weights.rules"))
    assert 'ENV{ID_SERIAL_SHORT}=="vol0123456789abcdef0*", SYMLINK+="coderig-weights"' in udev["content"]
    unit = next(f for f in doc["write_files"] if f["path"].endswith("coderig-metrics.service"))
    assert "--stack prod --region us-east-1" in unit["content"]
    # the node runtime's SSH connection pins exactly that key, from the first connection
    preflight = default_run.named("node-0-preflight")
    conn = unsecret(preflight.inputs["connection"])  # secret: it holds the login key
    assert conn["hostKey"] == f"ssh-ed25519 {host_key_b64}"
    assert conn["host"] == "198.51.100.10" and conn["user"] == "ubuntu"
    assert "/dev/coderig-weights" in default_run.named("node-0-volume").inputs["create"]


def test_secrets_stay_secret(default_run: ProgramRun) -> None:
    assert "developerTokens" in default_run.secret_outputs
    # `coderig bundle` reads every output with --show-secrets: no private key among them at all
    assert "sshPrivateKey" not in default_run.outputs
    assert "PRIVATE KEY" not in json.dumps(default_run.outputs)
    assert default_run.outputs["clientBundle"]["endpoint"]["anthropic_base_url"].startswith(
        "https://198.51.100.10:8443"
    )
    assert "endpoint" not in default_run.secret_outputs
    public = json.dumps({k: v for k, v in default_run.outputs.items() if k not in default_run.secret_outputs})
    assert "PRIVATE KEY" not in public
    for token in default_run.outputs["developerTokens"].values():
        assert token not in public


def test_user_data_fits_ec2_limit() -> None:
    cloud = aws_resources.cloud_init(
        host_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 600 + "\n-----END OPENSSH PRIVATE KEY-----\n",
        host_public_key="ssh-ed25519 " + "A" * 68,
        login_public_key="ssh-ed25519 " + "B" * 68,
        weights_volume_id="vol-0123456789abcdef0",
        stack="a-long-stack-name-for-production",
        region="ap-southeast-2",
    )
    raw = gzip.compress(cloud.encode(), mtime=0)
    assert len(raw) < aws_resources.USER_DATA_LIMIT - 2048  # keep headroom for the code to grow
    # the minified publisher still runs: compile every shipped module
    doc = yaml.safe_load(cloud)
    for f in doc["write_files"]:
        if f["path"].endswith(".py"):
            compile(f["content"], f["path"], "exec")


def test_count_two_gets_replicas_on_fixed_addresses() -> None:
    run = run_stack(aws_config(count=2))
    assert run.error is None, run.error
    insts = sorted(run.of_prefix("aws:ec2/instance:"), key=lambda r: r.name)
    assert [i.inputs["privateIp"] for i in insts] == ["10.77.0.10", "10.77.0.11"]
    assert len(run.of_prefix("aws:ebs/volume:")) == 2 and len(run.of_type("aws:ec2/eip:Eip")) == 2
    (sg,) = run.of_prefix("aws:ec2/securityGroup:")
    internal = [r for r in sg.inputs["ingress"] if r.get("self")]
    assert [(int(r["fromPort"]), int(r["toPort"])) for r in internal] == [(8000, 8000)]
    assert len({(r.typ, r.name) for r in run.resources}) == len(run.resources)


def test_existing_subnet_and_zone_lookup() -> None:
    run = run_stack(aws_config(vpcId="vpc-0abc", subnetId="subnet-0abc", availabilityZone=None))
    assert run.error is None, run.error
    assert not run.of_prefix("aws:ec2/vpc:")
    (inst,) = run.of_prefix("aws:ec2/instance:")
    assert inst.inputs["subnetId"] == "subnet-0abc" and "privateIp" not in inst.inputs
    assert run.of_prefix("aws:ebs/volume:")[0].inputs["availabilityZone"] == "us-east-1f"
    # no zone, no subnet: the first zone offering the instance type
    run = run_stack(aws_config(availabilityZone=None))
    assert run.error is None, run.error
    assert run.of_prefix("aws:ebs/volume:")[0].inputs["availabilityZone"] == "us-east-1b"


def test_spot_and_capacity_block_options() -> None:
    run = run_stack(aws_config(spot=True))
    assert run.error is None, run.error
    market = run.of_prefix("aws:ec2/instance:")[0].inputs["instanceMarketOptions"]
    assert market["marketType"] == "spot"
    assert market["spotOptions"] == {"instanceInterruptionBehavior": "stop", "spotInstanceType": "persistent"}
    run = run_stack(aws_config(capacityReservationId="cr-0123456789abcdef0", capacityBlock=True))
    assert run.error is None, run.error
    inst = run.of_prefix("aws:ec2/instance:")[0].inputs
    assert inst["instanceMarketOptions"] == {"marketType": "capacity-block"}
    assert inst["capacityReservationSpecification"]["capacityReservationTarget"] == {
        "capacityReservationId": "cr-0123456789abcdef0"
    }


def test_supplied_login_key_is_used_and_not_exported() -> None:
    config = aws_config()
    config["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nsupplied\n-----END OPENSSH PRIVATE KEY-----\n"
    run = run_stack(config)
    assert run.error is None, run.error
    assert "sshPrivateKey" not in run.outputs
    assert not [r for r in run.resources if r.name == "login-key"]
    assert [t for t, _ in run.calls if t == "tls:index/getPublicKey:getPublicKey"]


@pytest.mark.parametrize("instance_type", ["p5.48xlarge", "g6e.12xlarge"])
def test_planner_refuses_a_type_too_small_before_any_resource(instance_type: str) -> None:
    run = run_stack(aws_config(instanceType=instance_type))
    assert run.error is not None and "do not fit" in str(run.error)
    assert run.resources == [] and run.calls == []


@pytest.mark.parametrize(
    ("target", "key"),
    [
        ({"spot": True, "capacityReservationId": "cr-0123456789abcdef0"}, "coderig:target.spot"),
        ({"capacityBlock": True}, "coderig:target.capacityBlock"),
        ({"capacityReservationId": "reservation-1"}, "coderig:target.capacityReservationId"),
        ({"count": 2, "vpcId": "vpc-1", "subnetId": "subnet-1"}, "coderig:target.count"),
        ({"vpcId": "vpc-1"}, "coderig:target.subnetId"),
        ({"allowedCidrs": ["everyone"]}, "coderig:target.allowedCidrs"),
    ],
)
def test_aws_settings_errors_name_the_key(target: dict[str, Any], key: str) -> None:
    config = aws_config(**target)
    with pytest.raises(UserError) as err:
        parse_settings(config)
    assert key in str(err.value)


NODE_STEPS = ("preflight", "install", "volume", "bundle", "up", "frontdoor", "ready")


def _triggers(run: ProgramRun, name: str) -> list[Any]:
    return [unsecret(t) for t in unsecret(run.named(name).inputs.get("triggers") or [])]


def test_a_replaced_instance_reruns_every_node_step(default_run: ProgramRun) -> None:
    """The connection (Elastic IP, stack host key) survives `pulumi up --replace` of an instance:
    only the instance and attachment ids in every step's triggers make the new instance configured."""
    (inst,) = default_run.of_prefix("aws:ec2/instance:")
    (attach,) = default_run.of_prefix("aws:ec2/volumeAttachment:")
    for step in NODE_STEPS:
        triggers = _triggers(default_run, f"node-0-{step}")
        assert inst.id in triggers and attach.id in triggers, step

    def replaced(args: pulumi.runtime.MockResourceArgs, run: ProgramRun) -> tuple[str | None, dict[str, Any]] | None:
        if args.typ == "aws:ec2/instance:Instance":
            return "i-0replacement000000", {}
        return aws_outputs(args, run)

    again = run_stack(aws_config(), resources=replaced)
    assert again.error is None, again.error
    for step in NODE_STEPS:
        before, after = _triggers(default_run, f"node-0-{step}"), _triggers(again, f"node-0-{step}")
        assert before != after, step
        assert "i-0replacement000000" in after and inst.id not in after, step
    # same content, same connection: only the machine changed
    assert unsecret(default_run.named("node-0-bundle").inputs["stdin"]) != unsecret(
        again.named("node-0-bundle").inputs["stdin"]
    )  # .bundle-hash names the machine ...
    old_delete = unsecret(default_run.named("node-0-bundle").inputs["delete"])
    new_delete = unsecret(again.named("node-0-bundle").inputs["delete"])
    assert old_delete != new_delete  # ... so the old bundle's delete leaves the new instance's secrets alone
    assert unsecret(default_run.named("node-0-preflight").inputs["connection"]) == unsecret(
        again.named("node-0-preflight").inputs["connection"]
    )


def test_first_node_is_ready_only_after_every_replica() -> None:
    run = run_stack(aws_config(count=2))
    assert run.error is None, run.error
    assert {"node-1-ready", "node-0-up", "node-0-frontdoor"} <= run.deps("node-0-ready")
    assert "node-0-ready" not in run.deps("node-1-ready")
    assert len(run.outputs["nodesReady"]) == 2
    # each node's steps re-run when its own instance is replaced
    for i in (0, 1):
        assert f"gpu-{i}-id" in _triggers(run, f"node-{i}-ready")


def test_instance_replacement_can_happen(default_run: ProgramRun) -> None:
    """`pulumi up --replace` of an instance: the weights volume attaches to one instance at a time and
    a fixed private address to one interface, so both go delete-before-replace."""
    (attach,) = default_run.of_prefix("aws:ec2/volumeAttachment:")
    assert attach.delete_before_replace is True
    (inst,) = default_run.of_prefix("aws:ec2/instance:")
    assert inst.inputs["privateIp"] == "10.77.0.10" and inst.delete_before_replace is True
    run = run_stack(aws_config(vpcId="vpc-0abc", subnetId="subnet-0abc", availabilityZone=None))
    assert run.error is None, run.error
    (inst,) = run.of_prefix("aws:ec2/instance:")
    assert "privateIp" not in inst.inputs and inst.delete_before_replace is False  # create the new one first
    assert run.of_prefix("aws:ec2/volumeAttachment:")[0].delete_before_replace is True
