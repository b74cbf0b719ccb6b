"""The EC2 Waker (coderig.runtime.aws_wake) against moto, and the front door's IAM policy.

moto enforces IAM actions (enable_iam_authentication) but not conditions; the tag condition is
asserted on the document, and the waker's own tag check is exercised against moto's tag filters."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core.authorization import enable_iam_authentication
from moto_aws import REGION, Aws, instance_state, launch, mocked_aws

from coderig.runtime import aws_wake
from coderig.runtime.aws_reaper import TAG_ROLE, TAG_STACK
from coderig.runtime.aws_wake import Ec2Waker
from coderig.runtime.idle import ReaperError
from coderig.runtime.wake import WakeError, Waker
from coderig.targets.aws import frontdoor
from coderig.targets.aws import resources as aws_plan

STACK = "prod"
GPU = {TAG_STACK: STACK, TAG_ROLE: aws_wake.GPU_ROLE}


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    with mocked_aws(monkeypatch) as a:
        yield a


def stopped(a: Aws, tags: dict[str, str]) -> str:
    iid = launch(a, tags)
    a.ec2.stop_instances(InstanceIds=[iid])
    assert instance_state(a, iid) == "stopped"
    return iid


def test_wake_starts_the_stacks_stopped_gpu_instances_and_state_follows(moto: Aws) -> None:
    ids = [stopped(moto, GPU), stopped(moto, GPU)]
    waker: Waker = Ec2Waker(STACK, ec2=moto.ec2)
    assert waker.name == "ec2"
    assert waker.state() == "stopped"
    waker.wake()
    assert [instance_state(moto, i) for i in ids] == ["running", "running"]
    assert waker.state() == "awake"
    waker.wake()  # idempotent: nothing to start, no error
    assert [instance_state(moto, i) for i in ids] == ["running", "running"]


def test_wake_never_touches_other_stacks_untagged_or_the_front_door(moto: Aws) -> None:
    ours = stopped(moto, GPU)
    others = [
        stopped(moto, {TAG_STACK: "staging", TAG_ROLE: aws_wake.GPU_ROLE}),
        stopped(moto, {}),
        stopped(moto, {TAG_STACK: STACK, TAG_ROLE: frontdoor.ROLE}),
        stopped(moto, {TAG_STACK: STACK}),
    ]
    Ec2Waker(STACK, ec2=moto.ec2).wake()
    assert instance_state(moto, ours) == "running"
    assert [instance_state(moto, i) for i in others] == ["stopped"] * 4


def test_one_stopped_among_running_reads_stopped_and_wake_starts_only_it(moto: Aws) -> None:
    running = launch(moto, GPU)
    off = stopped(moto, GPU)
    waker = Ec2Waker(STACK, ec2=moto.ec2)
    assert waker.state() == "stopped"
    waker.wake()
    assert (instance_state(moto, running), instance_state(moto, off)) == ("running", "running")


def test_no_instance_is_a_clear_wake_error_and_unknown_state(moto: Aws) -> None:
    waker = Ec2Waker(STACK, ec2=moto.ec2)
    assert waker.state() == "unknown"
    with pytest.raises(WakeError, match=r"no GPU instance tagged coderig:stack=prod, coderig:role=gpu-node.*pulumi up"):
        waker.wake()


class _Stopping:
    """moto's client, except that the first `stopping_reads` DescribeInstances answers show every
    instance still stopping (moto stops at once; EC2 takes a minute or more)."""

    def __init__(self, ec2: Any, stopping_reads: int) -> None:
        self.ec2, self.left = ec2, stopping_reads

    def get_paginator(self, name: str) -> Any:
        real = self.ec2.get_paginator(name)
        outer = self

        class Pages:
            def paginate(self, **kw: Any) -> Iterator[dict[str, Any]]:
                for page in real.paginate(**kw):
                    if outer.left > 0:
                        for r in page["Reservations"]:
                            for i in r["Instances"]:
                                i["State"] = {"Code": 64, "Name": "stopping"}
                    yield page
                outer.left -= 1

        return Pages()

    def start_instances(self, **kw: Any) -> Any:
        return self.ec2.start_instances(**kw)


def test_an_instance_still_stopping_is_waited_for_then_started(moto: Aws) -> None:
    iid = stopped(moto, GPU)
    slept: list[float] = []
    waker = Ec2Waker(STACK, ec2=_Stopping(moto.ec2, 3), poll_seconds=5, sleep=slept.append)
    assert waker.state() == "stopped"  # stopping reads as stopped: a wake is needed
    waker.wake()
    assert slept == [5, 5]  # two more stopping reads, then stopped -> started
    assert instance_state(moto, iid) == "running"


def test_stopping_past_the_budget_is_a_wake_error(moto: Aws) -> None:
    iid = stopped(moto, GPU)
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    waker = Ec2Waker(
        STACK, ec2=_Stopping(moto.ec2, 1000), stop_wait_seconds=60, poll_seconds=10, sleep=sleep, clock=lambda: now[0]
    )
    with pytest.raises(WakeError, match=rf"{iid} still stopping after 60 s"):
        waker.wake()
    assert instance_state(moto, iid) == "stopped"


# --- IAM: the front door's role ----------------------------------------------------------------------------


def _user_with(policy: dict[str, Any], name: str) -> dict[str, str]:
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def test_the_waker_policy_lets_the_front_door_list_and_never_terminate(moto: Aws) -> None:
    """moto checks actions, and resources only as "*": it cannot grant the instance-ARN statement, so
    the start and stop themselves are proven by the tests above with moto's default credentials."""
    policy = frontdoor.waker_policy(STACK)
    # a document IAM accepts (moto runs AWS's policy grammar checks on create_policy)
    boto3.client("iam", region_name=REGION).create_policy(PolicyName="waker", PolicyDocument=json.dumps(policy))
    creds = _user_with(policy, "front-door")
    iid = launch(moto, GPU)
    with enable_iam_authentication():
        ec2 = boto3.client("ec2", region_name=REGION, aws_session_token=None, **creds)
        assert Ec2Waker(STACK, ec2=ec2).state() == "awake"  # DescribeInstances is allowed
        with pytest.raises(Exception, match="not authorized"):
            ec2.terminate_instances(InstanceIds=[iid])
    assert instance_state(moto, iid) == "running"


def test_the_waker_policy_starts_and_stops_only_the_stacks_gpu_instances() -> None:
    """moto does not evaluate conditions: the scoping is asserted on the document itself. The front
    door carries the stack tag too: the role tag keeps it from stopping itself."""
    policy = frontdoor.waker_policy("prod")
    start = [s for s in policy["Statement"] if "ec2:StartInstances" in json.dumps(s["Action"])]
    assert start == [
        {
            "Sid": "StartStopThisStacksGpuNodes",
            "Effect": "Allow",
            "Action": ["ec2:StartInstances", "ec2:StopInstances"],
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": {
                "StringEquals": {"aws:ResourceTag/coderig:stack": "prod", "aws:ResourceTag/coderig:role": "gpu-node"}
            },
        }
    ]
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"ec2:DescribeInstances", "ec2:StartInstances", "ec2:StopInstances"}
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    # the tag the policy names is the tag every GPU node carries
    gpu_tags = aws_plan.tags("prod", "production", aws_wake.GPU_ROLE)
    assert (gpu_tags[TAG_STACK], gpu_tags[TAG_ROLE]) == ("prod", "gpu-node")
    assert aws_plan.tags("prod", "production", frontdoor.ROLE)[TAG_ROLE] != "gpu-node"


def test_a_refused_start_is_one_line_with_the_fix(moto: Aws) -> None:
    creds = _user_with(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"}],
        },
        "describe-only",
    )
    iid = stopped(moto, GPU)
    with enable_iam_authentication():
        ec2 = boto3.client("ec2", region_name=REGION, aws_session_token=None, **creds)
        with pytest.raises(WakeError) as err:
            Ec2Waker(STACK, ec2=ec2).wake()
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"could not start {iid}: ")
    assert "must carry the tag coderig:stack" in line
    assert instance_state(moto, iid) == "stopped"


def test_cli_wake_prints_the_state_and_exit_code(moto: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    stopped(moto, GPU)
    assert aws_wake.main(["state", "--stack", STACK, "--region", REGION]) == 0
    assert capsys.readouterr().out.strip() == "stopped"
    assert aws_wake.main(["wake", "--stack", STACK, "--region", REGION]) == 0
    assert capsys.readouterr().out.strip() == "awake"
    assert aws_wake.main(["wake", "--stack", "gone", "--region", REGION]) == 1
    assert "no GPU instance tagged coderig:stack=gone" in capsys.readouterr().err


def test_the_shipped_waker_runs_from_the_front_doors_cloud_init_files(tmp_path: Path) -> None:
    """The modules cloud-init writes on the front door (minified, stdlib only, boto3 from the OS)
    run as `python3 -m coderig.runtime.aws_wake` from that directory alone; an EC2 API that does not
    answer is one line on stderr and exit 1, never a traceback."""
    text = frontdoor.cloud_init(host_private_key="PRIV", host_public_key="PUB", login_public_key="LOGIN")
    config = json.loads(text.removeprefix("#cloud-config\n"))
    wake_dir = tmp_path / "opt-coderig-wake"
    for f in config["write_files"]:
        path = wake_dir / Path(f["path"]).relative_to(frontdoor.WAKE_DIR)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f["content"])
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(wake_dir),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_MAX_ATTEMPTS": "1",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import coderig.runtime.aws_wake as m; print(m.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(wake_dir)), where
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.runtime.aws_wake", "wake", "--stack", STACK, "--region", REGION],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("aws_wake: cannot list the GPU instances: EndpointConnectionError")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_relays_factory_reads_the_region_or_says_why_it_cannot(moto: Aws) -> None:
    stopped(moto, GPU)
    assert aws_wake.waker(STACK, REGION).state() == "stopped"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ReaperError, match="instance metadata placement/region unreadable"):
        aws_wake.waker(STACK, "auto", imds_url=dead)


def test_sleep_stops_the_stacks_running_gpu_instances_and_nothing_else(moto: Aws) -> None:
    """What the front door's reaper calls once the relay holds every route (idle.action on aws: stop)."""
    ours = [launch(moto, GPU), launch(moto, GPU)]
    others = [
        launch(moto, {TAG_STACK: STACK, TAG_ROLE: frontdoor.ROLE}),  # the front door itself
        launch(moto, {TAG_STACK: "staging", TAG_ROLE: aws_wake.GPU_ROLE}),
    ]
    waker = Ec2Waker(STACK, ec2=moto.ec2)
    waker.sleep()
    assert [instance_state(moto, i) for i in ours] == ["stopped", "stopped"]
    assert [instance_state(moto, i) for i in others] == ["running", "running"]
    assert waker.state() == "stopped"
    waker.sleep()  # nothing running: nothing to do


def test_a_start_not_yet_visible_reads_waking_for_a_minute_not_stopped(moto: Aws) -> None:
    """DescribeInstances may lag a StartInstances: the relay must not fail the wake as "stopped while
    waking" on that read; past START_SETTLE_S a stopped instance reads stopped again."""
    stopped(moto, GPU)
    now = [0.0]
    waker = Ec2Waker(STACK, ec2=_Stopping(moto.ec2, 0), clock=lambda: now[0])
    waker.wake()
    lagging = Ec2Waker(STACK, ec2=moto.ec2)  # a second look at the same instances, stopped again meanwhile
    moto.ec2.stop_instances(InstanceIds=[i["InstanceId"] for i in lagging.instances()])
    assert waker.state() == "waking"
    now[0] = aws_wake.START_SETTLE_S + 1
    assert waker.state() == "stopped"
    assert lagging.state() == "stopped"  # a waker that started nothing reads it as it is
