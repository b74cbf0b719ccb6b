"""Wake on request on the `aws` front door, for real: nginx (the rendered gateway) -> the keepalive relay
with `--wake ec2` (a subprocess, boto3 inside it) -> a model server that only exists once its GPU
instance runs. The EC2 API is moto in server mode on loopback; the instance metadata service the
relay reads its own stack tag from is a stand-in on loopback too."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from frontdoor_fixtures import free_port
from moto.core.authorization import enable_iam_authentication
from moto_aws import MotoServer, moto_server
from wake_rig import MODEL, Rig, start_model_process, wake_rig

from coderig.runtime import idle, node_reaper
from coderig.runtime.aws_reaper import TAG_ROLE, TAG_STACK
from coderig.runtime.aws_wake import GPU_ROLE, Ec2Waker
from coderig.targets.aws import frontdoor

pytestmark = pytest.mark.integration

STACK = "prod-wake"
MSG = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@contextlib.contextmanager
def imds(instance_id: str) -> Iterator[str]:
    """IMDSv2 as an EC2 instance sees it: a token first, then metadata only with that token."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: str) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_PUT(self) -> None:  # noqa: N802
            ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            self._send(200, "tok-1") if ok else self._send(400, "")

        def do_GET(self) -> None:  # noqa: N802
            if self.headers.get("X-aws-ec2-metadata-token") != "tok-1":
                return self._send(401, "")
            if self.path == "/latest/meta-data/instance-id":
                return self._send(200, instance_id)
            return self._send(404, "")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def launch(moto: MotoServer, role: str, instance_type: str = "p5en.48xlarge") -> str:
    tags = [{"Key": TAG_STACK, "Value": STACK}, {"Key": TAG_ROLE, "Value": role}]
    return moto.client().run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType=instance_type,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]  # fmt: skip


def state(moto: MotoServer, iid: str) -> str:
    found = moto.client().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return found["State"]["Name"]


@contextlib.contextmanager
def front_door(
    tmp_path: Path,
    *,
    budget_s: float = 30,
    model_port: int = 0,
    stopped: bool = True,
    role_policy: dict[str, Any] | None = None,
) -> Iterator[tuple[MotoServer, str, int, Rig]]:
    """A (stopped) GPU instance of the stack, the front door's own instance, and the gateway + relay as
    the front door runs them (`--wake ec2 --aws-region …`, the stack read from the front door's tag).
    `role_policy`: the relay holds the keys of an IAM user with only that policy, and moto checks it."""
    with moto_server() as moto:
        door = launch(moto, frontdoor.ROLE, "t3.medium")
        gpu = launch(moto, GPU_ROLE)
        if stopped:
            moto.client().stop_instances(InstanceIds=[gpu])
            assert state(moto, gpu) == "stopped"
        model_port = model_port or free_port()
        with imds(door) as metadata:
            wake = ["--wake", "ec2", "--aws-region", "us-east-1", "--aws-imds-url", metadata]
            env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **moto.env()}
            iam = contextlib.nullcontext()
            if role_policy is not None:
                env |= user_keys(moto, role_policy)
                iam = enable_iam_authentication()
            with iam, wake_rig(tmp_path, model_port, budget_s=budget_s, wake=wake, env=env) as rig:
                yield moto, gpu, model_port, rig


def user_keys(moto: MotoServer, policy: dict[str, Any]) -> dict[str, str]:
    iam = moto.client("iam")
    iam.create_user(UserName="front-door")
    iam.put_user_policy(UserName="front-door", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="front-door")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def boot_when_started(moto: MotoServer, iid: str, port: int, procs: list[Any], delay_s: float) -> threading.Thread:
    """The GPU machine: once EC2 says the instance runs, the model server comes up `delay_s` later."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and state(moto, iid) != "running":
            time.sleep(0.1)
        time.sleep(delay_s)
        procs.append(start_model_process(port))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_requests_for_a_stopped_gpu_instance_are_held_and_one_start_serves_them_all(tmp_path: Path) -> None:
    with front_door(tmp_path) as (moto, gpu, model_port, rig):
        assert rig.relay_state()["state"] == "stopped"  # learned from EC2 at the relay's start
        assert "StartInstances" not in moto.actions
        procs: list[Any] = []
        booting = boot_when_started(moto, gpu, model_port, procs, delay_s=2.0)
        kinds = [
            ("/v1/messages", {**MSG, "stream": True}),
            ("/v1/messages", MSG),
            ("/v1/chat/completions", {**MSG, "stream": True}),
            ("/v1/chat/completions", MSG),
        ]
        results: list[tuple[int, bytes]] = [(0, b"")] * 8
        lines: list[tuple[float, str]] = []

        def one(i: int) -> None:
            results[i] = rig.post(*kinds[i % len(kinds)])

        def streamed() -> None:
            status, got = rig.stream_raw("/v1/messages", {**MSG, "stream": True})
            lines.extend(got)
            assert status == 200

        try:
            threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
            threads.append(threading.Thread(target=streamed))
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            booting.join(10)
            assert [s for s, _ in results] == [200] * 8, [b[:300] for s, b in results if s != 200]
            assert moto.actions.count("StartInstances") == 1, moto.actions  # one start for nine requests
            assert state(moto, gpu) == "running"
            # the held stream heard keepalives while the instance booted, then the model's own events
            assert any(line == ": keepalive" for _, line in lines)
            events = [line.removeprefix("event: ") for _, line in lines if line.startswith("event:")]
            assert events[0] == "message_start" and events[-1] == "message_stop"
            route = rig.relay_state()
            assert route["state"] == "awake" and route["wakes_total"] == 1 and route["mechanism"] == "ec2"
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


def test_a_start_that_fails_ends_every_held_request_with_the_reason_in_its_shape(tmp_path: Path) -> None:
    with front_door(tmp_path) as (moto, gpu, _, rig):
        assert rig.relay_state()["state"] == "stopped"
        moto.client().terminate_instances(InstanceIds=[gpu])  # the stack's GPU instance is gone
        results: dict[str, tuple[int, bytes]] = {}
        lines: list[tuple[float, str]] = []

        def plain(path: str) -> None:
            results[path] = rig.post(path, MSG)

        def streamed() -> None:
            lines.extend(rig.stream_raw("/v1/messages", {**MSG, "stream": True})[1])

        threads = [threading.Thread(target=plain, args=(p,)) for p in ("/v1/messages", "/v1/chat/completions")]
        threads.append(threading.Thread(target=streamed))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        why = f"could not wake the model: no GPU instance tagged {TAG_STACK}={STACK}, {TAG_ROLE}={GPU_ROLE}"
        status, body = results["/v1/messages"]
        err = json.loads(body)
        assert status == 529 and err["type"] == "error" and err["error"]["type"] == "overloaded_error"
        assert err["error"]["message"].startswith(why) and "pulumi up" in err["error"]["message"]
        status, body = results["/v1/chat/completions"]
        assert status == 503 and json.loads(body)["error"]["message"].startswith(why)
        data = [line.removeprefix("data: ") for _, line in lines if line.startswith("data: ")]
        assert any(json.loads(d)["error"]["message"].startswith(why) for d in data), lines
        assert "StartInstances" not in moto.actions
        route = rig.relay_state()
        assert route["state"] == "stopped" and route["last_error"].startswith("no GPU instance tagged")


def test_the_front_doors_reaper_stops_the_gpu_instance_only_through_the_relays_hold(tmp_path: Path) -> None:
    """The live recheck: the reaper on the front door asks the relay to hold every model server right
    before it stops the instances; a request in flight refuses it (the Lambda, reading CloudWatch minutes
    late, could not know). Once idle, the instance stops, and the next request starts it again."""
    port = free_port()
    model = start_model_process(port)
    try:
        with front_door(tmp_path, model_port=port, stopped=False) as (moto, gpu, _, rig):
            assert rig.relay_state()["state"] == "awake"
            cfg = node_reaper.Config(
                relay=f"http://127.0.0.1:{rig.control}", models=(f"http://127.0.0.1:{port}",), action="ec2",
                stop_after_minutes=30, model_name=MODEL,
            )  # fmt: skip
            waker = Ec2Waker(STACK, ec2=moto.client())
            log: list[str] = []
            slow = {**MSG, "stream": True, "max_tokens": 64,
                    "messages": [{"role": "user", "content": "[standin tokens=40 delay=0.05] go"}]}  # fmt: skip
            busy = threading.Thread(target=rig.stream_raw, args=("/v1/messages", slow))
            busy.start()
            deadline = time.monotonic() + 10
            while rig.relay_state()["inflight"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not node_reaper.put_down_machines(cfg, waker, node_reaper.http_post, log.append)
            assert "the relay refused to hold model 0 (busy: 1 requests in flight)" in log[-1]
            busy.join(30)
            assert state(moto, gpu) == "running" and "StopInstances" not in moto.actions
            # idle for the whole window (the clock moved on): one period stops it, through the hold
            now = idle.utcnow() + timedelta(hours=2)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # noqa: S310
            node = node_reaper.Node(
                history=[idle.Sample(now - timedelta(minutes=m), 0, 0, 0) for m in range(40, 0, -1)],
                requests_total=float(rig.relay_state()["requests_total"]),
                completed_total=idle.read_node_counters(metrics, None, model_name=MODEL).completed_total,
            )
            (d,) = node_reaper.tick(cfg, [node], [waker], now, log=log.append)
            assert d.action == "stop", d.reason
            assert log[-1] == "GPU instances: stopped" and state(moto, gpu) == "stopped"
            assert moto.actions.count("StopInstances") == 1
            assert rig.relay_state()["state"] == "stopped"  # settled by the reaper: the next request is held
            assert rig.post("/v1/chat/completions", MSG)[0] == 200
            assert moto.actions.count("StartInstances") == 1 and state(moto, gpu) == "running"
            assert rig.relay_state()["wakes_total"] == 1
    finally:
        model.terminate()
        model.wait(10)


def test_a_start_the_role_may_not_make_ends_the_held_request_with_the_fix(tmp_path: Path) -> None:
    """IAM refuses ec2:StartInstances (moto checks the action; the tag condition it cannot): the held
    request hears AWS's code and what to fix, and the instance stays stopped."""
    describe_only = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"}],
    }
    with front_door(tmp_path, role_policy=describe_only) as (moto, gpu, _, rig):
        assert rig.relay_state()["state"] == "stopped"  # DescribeInstances is allowed
        status, body = rig.post("/v1/messages", MSG)
        message = json.loads(body)["error"]["message"]
        assert status == 529 and message.startswith(f"could not wake the model: could not start {gpu}: "), message
        assert "must carry the tag coderig:stack of this stack" in message
        assert "StartInstances" in moto.actions  # asked, and refused
        env = rig.relay_env or {}
        ec2 = moto.client(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]
        )
        found = ec2.describe_instances(InstanceIds=[gpu])["Reservations"][0]["Instances"][0]
        assert found["State"]["Name"] == "stopped"
        assert rig.relay_state()["state"] == "stopped"


def test_a_relay_that_cannot_build_its_ec2_waker_says_why_at_start(tmp_path: Path) -> None:
    """No region given and no instance metadata (not on EC2): one line and exit 2, not a traceback on
    the first request."""
    dead = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.runtime.sse_keepalive", "--route", f"127.0.0.1:{free_port()}=127.0.0.1:1",
         "--wake", "ec2", "--control", f"127.0.0.1:{free_port()}", "--aws-imds-url", dead],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("sse_keepalive: --wake ec2: instance metadata placement/region unreadable")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
