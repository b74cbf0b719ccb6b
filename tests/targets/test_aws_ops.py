"""coderig.targets.aws.ops against moto (in-process EC2 and CloudWatch) and loopback HTTP servers."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import ssh_config, write_stack
from moto_aws import REGION, Aws, instance_state, launch, mocked_aws
from standin import start_standin

from coderig.cli import main
from coderig.runtime import aws_reaper, idle
from coderig.runtime.aws_reaper import ReaperConfig
from coderig.runtime.idle import ReaperError
from coderig.targets import load_stack_file
from coderig.targets.aws import ops as aws_ops
from coderig.targets.aws import resources as aws_resources

STACK = "prod"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    with mocked_aws(monkeypatch) as session:
        yield session


def later(aws: Aws, iid: str, hours: float = 2) -> datetime:
    """A `now` well after the instance's launch, rounded to the minute."""
    launched = aws.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["LaunchTime"]
    return (launched + timedelta(hours=hours)).replace(second=0, microsecond=0)


def put_series(
    aws: Aws,
    iid: str,
    now: datetime,
    minutes: int,
    *,
    stack: str = STACK,
    end_ago: int = 1,
    busy_minutes_ago: tuple[int, ...] = (),
    running_minutes_ago: tuple[int, ...] = (),
    metrics: tuple[str, ...] = ("RequestsRunning", "RequestsCompleted", "GatewayRequests"),
) -> None:
    """What the node publisher would have put: one datapoint per metric per minute."""
    dims = [{"Name": "StackName", "Value": stack}, {"Name": "InstanceId", "Value": iid}]
    data = []
    for ago in range(end_ago, end_ago + minutes):
        values = {
            "RequestsRunning": 1.0 if ago in running_minutes_ago else 0.0,
            "RequestsCompleted": 2.0 if ago in busy_minutes_ago else 0.0,
            "GatewayRequests": 2.0 if ago in busy_minutes_ago else 0.0,
        }
        at = now - timedelta(minutes=ago) + timedelta(seconds=20)
        data += [
            {"MetricName": m, "Dimensions": dims, "Timestamp": at, "Value": values[m], "Unit": "Count"} for m in metrics
        ]
    for i in range(0, len(data), 500):
        aws.cw.put_metric_data(Namespace=aws_reaper.NAMESPACE, MetricData=data[i : i + 500])


def run_reaper(aws: Aws, now: datetime, **cfg: Any) -> tuple[list[aws_reaper.InstanceReport], list[dict[str, Any]]]:
    logs: list[dict[str, Any]] = []
    reports = aws_reaper.reap(ReaperConfig(stack=STACK, **cfg), ec2=aws.ec2, cw=aws.cw, now=now, log=logs.append)
    return reports, logs


# --- reaper -------------------------------------------------------------------------------------------


def test_idle_instance_is_stopped_and_the_reason_logged(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    put_series(aws, iid, now, 60)
    reports, logs = run_reaper(aws, now, stop_after_minutes=45)
    assert [(r.instance_id, r.action, r.applied) for r in reports] == [(iid, "stop", True)]
    assert instance_state(aws, iid) == "stopped"
    assert logs[0]["instance"] == iid and logs[0]["action"] == "stop" and "idle for 45 min" in logs[0]["reason"]


def test_busy_instance_is_kept(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    put_series(aws, iid, now, 60, busy_minutes_ago=(30,))
    reports, logs = run_reaper(aws, now, stop_after_minutes=45)
    assert reports[0].action == "keep" and "active in the last 45 min" in reports[0].reason
    assert instance_state(aws, iid) == "running"
    assert logs[0]["reason"] == reports[0].reason


def test_request_running_keeps(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    put_series(aws, iid, now, 60, running_minutes_ago=(1,))
    reports, _ = run_reaper(aws, now, stop_after_minutes=45)
    assert reports[0].action == "keep" and "1 requests running" in reports[0].reason
    assert instance_state(aws, iid) == "running"


def test_missing_metrics_keep_with_reason(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    reports, logs = run_reaper(aws, now, stop_after_minutes=45)
    assert reports[0].action == "keep" and "no metrics" in logs[0]["reason"]
    assert instance_state(aws, iid) == "running"


def test_one_missing_metric_keeps(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    put_series(aws, iid, now, 60, metrics=("RequestsRunning", "RequestsCompleted"))
    reports, _ = run_reaper(aws, now, stop_after_minutes=45)
    assert reports[0].action == "keep" and "no gateway requests metric" in reports[0].reason
    assert instance_state(aws, iid) == "running"
    # a deployment without a gateway counter opts out of that signal explicitly
    reports, _ = run_reaper(aws, now, stop_after_minutes=45, signals=("running", "completed"))
    assert reports[0].action == "stop" and instance_state(aws, iid) == "stopped"


def test_stale_metrics_keep_with_reason(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    put_series(aws, iid, now, 60, end_ago=15)  # publisher died 15 minutes ago
    reports, _ = run_reaper(aws, now, stop_after_minutes=45)
    assert reports[0].action == "keep" and "stale" in reports[0].reason
    assert instance_state(aws, iid) == "running"


def test_other_stacks_and_untagged_instances_are_untouched(aws: Aws) -> None:
    ours = launch(aws, {aws_reaper.TAG_STACK: STACK})
    other = launch(aws, {aws_reaper.TAG_STACK: "staging"})
    untagged = launch(aws, None)
    lookalike = launch(aws, {"Name": STACK, "coderig:stack-old": STACK})
    now = later(aws, ours)
    for iid in (ours, other, untagged, lookalike):
        put_series(aws, iid, now, 60)  # all idle, all publishing under our stack's dimension
    reports, _ = run_reaper(aws, now, stop_after_minutes=45)
    assert [r.instance_id for r in reports] == [ours]
    assert instance_state(aws, ours) == "stopped"
    assert [instance_state(aws, i) for i in (other, untagged, lookalike)] == ["running"] * 3


def test_dry_run_changes_nothing(aws: Aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    put_series(aws, iid, now, 60)
    reports, logs = run_reaper(aws, now, stop_after_minutes=45, dry_run=True)
    assert reports[0].action == "stop" and not reports[0].applied and logs[0]["dry_run"] is True
    assert instance_state(aws, iid) == "running"
    # the Lambda handler honours the environment's dry-run flag too
    monkeypatch.setenv(aws_reaper.ENV_STACK, STACK)
    monkeypatch.setenv(aws_reaper.ENV_DRY_RUN, "true")
    out = aws_reaper.handler({}, None)
    assert out["dry_run"] is True and instance_state(aws, iid) == "running"
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["instance"] == iid


def test_handler_event_can_force_dry_run(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    aws.ec2.stop_instances(InstanceIds=[iid])
    now = datetime.now(UTC)
    schedule = {"timezone": "UTC", "days": "mon-sun", "start": (now - timedelta(hours=1)).strftime("%H:%M")}
    schedule["end"] = (now + timedelta(hours=1)).strftime("%H:%M")
    monkeypatch.setenv(aws_reaper.ENV_STACK, STACK)
    monkeypatch.setenv(aws_reaper.ENV_SCHEDULE, json.dumps(schedule))
    out = aws_reaper.handler({"dryRun": True}, None)
    assert out["instances"][0]["action"] == "start" and instance_state(aws, iid) == "stopped"


def test_schedule_starts_inside_office_hours(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    aws.ec2.stop_instances(InstanceIds=[iid])
    now = later(aws, iid)
    inside = idle.OfficeHours.from_dict(
        {"timezone": "UTC", "days": "mon-sun", "start": (now - timedelta(hours=1)).strftime("%H:%M"),
         "end": (now + timedelta(hours=1)).strftime("%H:%M")}
    )  # fmt: skip
    reports, _ = run_reaper(aws, now, schedule=inside)
    assert reports[0].action == "start" and reports[0].applied
    assert instance_state(aws, iid) == "running"


def test_schedule_outside_office_hours_stops_idle_and_does_not_start(aws: Aws) -> None:
    idle_node = launch(aws, {aws_reaper.TAG_STACK: STACK})
    stopped = launch(aws, {aws_reaper.TAG_STACK: STACK})
    aws.ec2.stop_instances(InstanceIds=[stopped])
    now = later(aws, idle_node)
    outside = idle.OfficeHours.from_dict(
        {"timezone": "UTC", "days": "mon-sun", "start": (now + timedelta(hours=2)).strftime("%H:%M"),
         "end": (now + timedelta(hours=3)).strftime("%H:%M")}
    )  # fmt: skip
    put_series(aws, idle_node, now, 60)
    reports, _ = run_reaper(aws, now, stop_after_minutes=45, schedule=outside)
    by_id = {r.instance_id: r for r in reports}
    assert by_id[idle_node].action == "stop" and "outside office hours" in by_id[idle_node].reason
    assert by_id[stopped].action == "keep"
    assert instance_state(aws, idle_node) == "stopped" and instance_state(aws, stopped) == "stopped"


def test_metrics_read_failure_keeps(aws: Aws) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})

    class Broken:
        def get_metric_data(self, **_: Any) -> Any:
            raise RuntimeError("AccessDenied")

    logs: list[dict[str, Any]] = []
    reports = aws_reaper.reap(ReaperConfig(stack=STACK), ec2=aws.ec2, cw=Broken(), now=later(aws, iid), log=logs.append)
    assert reports[0].action == "keep" and "could not read metrics" in reports[0].reason
    assert instance_state(aws, iid) == "running"


def test_config_from_env_round_trip_and_errors() -> None:
    cfg = ReaperConfig(
        stack="prod",
        tag_value="coderig-prod",
        stop_after_minutes=30,
        schedule=idle.OfficeHours.from_dict({"timezone": "Europe/Paris", "start": "08:00", "end": "19:00"}),
        dry_run=True,
    )
    assert ReaperConfig.from_env(cfg.to_env()) == cfg
    assert ReaperConfig(stack="dev").tag_value == "dev"
    with pytest.raises(ReaperError, match="CODERIG_STACK"):
        ReaperConfig.from_env({})
    with pytest.raises(ReaperError, match="CODERIG_SCHEDULE"):
        ReaperConfig.from_env({aws_reaper.ENV_STACK: "x", aws_reaper.ENV_SCHEDULE: '{"timezone": "Nowhere/X"}'})
    with pytest.raises(ReaperError, match="CODERIG_STOP_AFTER_MINUTES"):
        ReaperConfig.from_env({aws_reaper.ENV_STACK: "x", aws_reaper.ENV_STOP_AFTER: "soon"})


# --- node metric publisher ----------------------------------------------------------------------------


class _Text(BaseHTTPRequestHandler):
    bodies: list[tuple[int, str]] = []

    def do_GET(self) -> None:  # noqa: N802
        status, body = self.server.bodies.pop(0) if len(self.server.bodies) > 1 else self.server.bodies[0]  # type: ignore[attr-defined]
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # noqa: N802  (IMDSv2 token)
        assert self.headers["X-aws-ec2-metadata-token-ttl-seconds"]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"tok")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def text_server() -> Iterator[Any]:
    """A loopback HTTP server answering GET with queued (status, body) pairs (the last one repeats)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Text)
    srv.bodies = [(200, "")]  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def gateway_text(n: float) -> str:
    return (
        "# HELP coderig_gateway_requests_total API requests through the gateway.\n"
        "# TYPE coderig_gateway_requests_total counter\n"
        f'coderig_gateway_requests_total{{developer="alice",route="messages"}} {n * 0.75}\n'
        f'coderig_gateway_requests_total{{developer="bob",route="responses"}} {n * 0.25}\n'
    )


def test_publisher_puts_per_period_increases_from_the_standin(aws: Aws, text_server: Any, tmp_path: Path) -> None:
    standin = start_standin(model="umans-coder-v0")
    try:
        gw_url = f"http://127.0.0.1:{text_server.server_port}/metrics"
        vllm_url = f"http://127.0.0.1:{standin.port}/metrics"
        state_file = tmp_path / "state.json"
        t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
        kw: dict[str, Any] = dict(
            cw=aws.cw, stack=STACK, instance_id="i-0abc", vllm_url=vllm_url, state_file=state_file
        )

        standin.completed, standin.running = 10, 0
        text_server.bodies = [(200, gateway_text(12))]
        first = aws_reaper.publish_node_metrics(gateway_url=gw_url, now=t0, **kw)
        assert first == {"RequestsRunning": 0.0, "RequestsCompleted": 10.0, "GatewayRequests": 12.0}

        standin.completed, standin.running = 13, 2
        text_server.bodies = [(200, gateway_text(16))]
        second = aws_reaper.publish_node_metrics(gateway_url=gw_url, now=t0 + timedelta(minutes=1), **kw)
        assert second == {"RequestsRunning": 2.0, "RequestsCompleted": 3.0, "GatewayRequests": 4.0}

        standin.completed, standin.running = 1, 0  # vLLM restarted: its counter reset
        third = aws_reaper.publish_node_metrics(gateway_url=gw_url, now=t0 + timedelta(minutes=2), **kw)
        assert third == {"RequestsRunning": 0.0, "RequestsCompleted": 1.0, "GatewayRequests": 0.0}
        assert json.loads(state_file.read_text()) == {"completed_total": 1.0, "gateway_requests_total": 16.0}
    finally:
        standin.stop()

    # read back the way the reaper does: one Sample per minute, in CloudWatch
    cfg = ReaperConfig(stack=STACK, stop_after_minutes=10)
    samples = aws_reaper.fetch_samples(aws.cw, cfg, "i-0abc", t0 + timedelta(minutes=3))
    got = [(s.at - t0, s.running, s.completed, s.gateway_requests) for s in samples]
    assert [g[1:] for g in got] == [(0.0, 10.0, 12.0), (2.0, 3.0, 4.0), (0.0, 1.0, 0.0)]
    assert [g[0] for g in got] == [timedelta(0), timedelta(minutes=1), timedelta(minutes=2)]


def test_publisher_publishes_nothing_for_a_source_that_is_down(aws: Aws, tmp_path: Path) -> None:
    got = aws_reaper.publish_node_metrics(
        cw=aws.cw,
        stack=STACK,
        instance_id="i-0def",
        vllm_url="http://127.0.0.1:9/metrics",  # nothing listens on the discard port
        gateway_url=None,
        state_file=tmp_path / "state.json",
    )
    assert got == {}
    assert aws.cw.list_metrics(Namespace=aws_reaper.NAMESPACE)["Metrics"] == []


def test_publisher_reads_nginx_stub_status_and_vllm_fixture(aws: Aws, text_server: Any, tmp_path: Path) -> None:
    fixture = (Path(__file__).parents[1] / "fixtures" / "vllm_metrics_busy.txt").read_text()
    stub = "Active connections: 1 \nserver accepts handled requests\n 7 7 40 \nReading: 0 Writing: 1 Waiting: 0 \n"
    pages = {"/vllm": fixture, "/gw": stub}
    got = aws_reaper.publish_node_metrics(
        cw=aws.cw,
        stack=STACK,
        instance_id="i-0fix",
        vllm_url="http://x/vllm",
        gateway_url="http://x/gw",
        state_file=tmp_path / "s.json",
        model_name="umans-coder-v0",
        fetch=lambda url: pages[url.removeprefix("http://x")],
    )
    assert got == {"RequestsRunning": 4.0, "RequestsCompleted": 1287.0, "GatewayRequests": 40.0}


def test_publish_main_reads_instance_identity_from_imds(aws: Aws, text_server: Any, tmp_path: Path) -> None:
    # One loopback server plays IMDS (token PUT, then instance-id and region) and then vLLM /metrics.
    metrics = (Path(__file__).parents[1] / "fixtures" / "vllm_metrics_idle.txt").read_text()
    text_server.bodies = [(200, "i-0imds"), (200, REGION), (200, metrics)]
    base = f"http://127.0.0.1:{text_server.server_port}"
    rc = aws_reaper.publish_main(
        ["--stack", STACK, "--imds-url", base, "--vllm-url", f"{base}/metrics", "--state-file", str(tmp_path / "s")]
    )
    assert rc == 0
    names = sorted(m["MetricName"] for m in aws.cw.list_metrics(Namespace=aws_reaper.NAMESPACE)["Metrics"])
    assert names == ["RequestsCompleted", "RequestsRunning"]
    dims = aws.cw.list_metrics(Namespace=aws_reaper.NAMESPACE)["Metrics"][0]["Dimensions"]
    assert {"Name": "InstanceId", "Value": "i-0imds"} in dims and {"Name": "StackName", "Value": STACK} in dims


# --- CLI ----------------------------------------------------------------------------------------------


def cli(*argv: str) -> int:
    return main(list(argv))


def stack_file(tmp_path: Path, **idle_cfg: Any) -> Path:
    config = {
        "target": {"kind": "aws", "instanceType": "p5en.48xlarge", "region": REGION},
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072},
        "idle": {"stopAfterMinutes": 30, **idle_cfg},
    }
    return write_stack(tmp_path, config, STACK)


def test_cli_idle_reports_without_changing_anything(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    assert cli("idle", STACK, "--config", str(stack_file(tmp_path)), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["instance_id"] == iid and out[0]["action"] == "keep"
    assert instance_state(aws, iid) == "running"


def test_cli_idle_shows_each_instances_state_since_when(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    cfg = str(stack_file(tmp_path))
    started = aws.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["LaunchTime"]
    assert cli("idle", STACK, "--config", cfg) == 0
    assert f"{iid}  running   since {started:%Y-%m-%d %H:%M} UTC  keep" in capsys.readouterr().out
    assert cli("stop", STACK, "--config", cfg, "--force") == 0
    capsys.readouterr()
    assert cli("idle", STACK, "--config", cfg, "--json") == 0
    since = datetime.fromisoformat(json.loads(capsys.readouterr().out)[0]["since"])
    assert abs((since - datetime.now(UTC)).total_seconds()) < 120  # EC2's "User initiated (… GMT)"


def test_cli_stop_refuses_with_requests_running_unless_forced(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    put_series(aws, iid, now, 5, running_minutes_ago=(1, 2))
    cfg = str(stack_file(tmp_path))
    assert cli("stop", STACK, "--config", cfg) == 1
    assert "requests running: not stopping" in capsys.readouterr().err
    assert instance_state(aws, iid) == "running"
    assert cli("stop", STACK, "--config", cfg, "--force") == 0
    assert instance_state(aws, iid) == "stopped"


def test_cli_stop_leaves_other_stacks(aws: Aws, tmp_path: Path) -> None:
    ours = launch(aws, {aws_reaper.TAG_STACK: STACK})
    other = launch(aws, {aws_reaper.TAG_STACK: "staging"})
    assert cli("stop", STACK, "--config", str(stack_file(tmp_path))) == 0
    assert (instance_state(aws, ours), instance_state(aws, other)) == ("stopped", "running")


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        srv: Any = self.server
        srv.hits += 1
        ready = srv.hits > srv.ready_after
        body = json.dumps({"ready": ready}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def health() -> Iterator[Any]:
    srv: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    srv.hits, srv.ready_after = 0, 2
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_cli_start_waits_for_gateway_ready(aws: Aws, tmp_path: Path, health: Any) -> None:
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    aws.ec2.stop_instances(InstanceIds=[iid])
    url = f"http://127.0.0.1:{health.server_port}/healthz"
    rc = cli("start", STACK, "--config", str(stack_file(tmp_path)), "--health-url", url, "--interval", "0.05")
    assert rc == 0
    assert instance_state(aws, iid) == "running"
    assert health.hits == 3  # two 503s, then ready


def test_cli_start_times_out_when_never_ready(
    aws: Aws, tmp_path: Path, health: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    launch(aws, {aws_reaper.TAG_STACK: STACK})
    health.ready_after = 10**6
    url = f"http://127.0.0.1:{health.server_port}/healthz"
    rc = cli("start", STACK, "--config", str(stack_file(tmp_path)), "--health-url", url, "--interval", "0.05",
             "--timeout", "0.3")  # fmt: skip
    assert rc == 1 and "not ready after" in capsys.readouterr().err


def test_cli_errors_name_the_problem(aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("stop", STACK, "--config", str(tmp_path / "missing.yaml")) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err
    ssh = write_stack(tmp_path, ssh_config(), "ssh")
    assert cli("idle", "ssh", "--config", str(ssh)) == 1  # refused: tests/cli/test_ops_kinds.py has the wording
    err = capsys.readouterr().err
    assert "coderig: stack ssh has no idle policy: set coderig:idle.stopAfterMinutes" in err
    assert cli("stop", STACK, "--config", str(stack_file(tmp_path))) == 1  # no instances
    bad = stack_file(tmp_path, officeHours={"timezone": "UTC", "start": "9", "end": "17:00"})
    assert cli("idle", STACK, "--config", str(bad)) == 2
    assert "coderig:idle.officeHours.start" in capsys.readouterr().err


def test_cli_reads_region_port_and_idle_policy_from_the_stack_file(tmp_path: Path) -> None:
    path = stack_file(tmp_path, officeHours={"timezone": "Europe/Paris", "days": ["mon", "tue"]})
    args = argparse.Namespace(
        stack=STACK, config=str(path), region=None, tag_key=None, tag_value=None, port=None,
        stop_after_minutes=None,
    )  # fmt: skip
    t = aws_ops.resolve_target(args, load_stack_file(path))
    assert (t.region, t.gateway_port) == (REGION, 8443)
    assert t.reaper.stop_after_minutes == 30 and t.reaper.tag_value == STACK
    assert t.reaper.schedule == idle.OfficeHours.from_dict(
        {"timezone": "Europe/Paris", "days": "mon,tue", "start": "08:00", "end": "19:00"}
    )
    args.region, args.port, args.tag_value, args.stop_after_minutes = "eu-west-1", 443, "blue", 10
    t = aws_ops.resolve_target(args, load_stack_file(path))
    assert (t.region, t.gateway_port, t.reaper.tag_value, t.reaper.stop_after_minutes) == ("eu-west-1", 443, "blue", 10)


# --- Lambda packaging ---------------------------------------------------------------------------------


def test_handler_modules_import_with_stdlib_only(tmp_path: Path) -> None:
    """The Lambda zip (exactly aws_resources.lambda_files()) imports with pydantic, yaml, pulumi and boto3
    blocked (boto3 is imported only when the handler runs)."""
    for rel, text in aws_resources.lambda_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    probe = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'pydantic', 'yaml', 'pulumi', 'boto3', 'botocore'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"import {aws_resources.REAPER_HANDLER.rsplit('.', 1)[0]} as m\n"
        "assert callable(m.handler)\n"
        "print('ok', m.ReaperConfig.from_env({'CODERIG_STACK': 's'}).tag_value)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok s"


def test_cli_without_a_stack_file_needs_a_region(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    assert cli("idle", STACK, "--region", REGION) == 0
    assert iid in capsys.readouterr().out
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert cli("idle", STACK) == 2
    assert "pass --config FILE, or --region REGION" in capsys.readouterr().err


def test_publisher_and_reaper_agree_end_to_end(aws: Aws, text_server: Any, tmp_path: Path) -> None:
    """What the node publishes (from vLLM-format text) is what the reaper reads: 50 quiet minutes
    published minute by minute -> stopped; one completed request 10 minutes ago -> kept."""
    iid = launch(aws, {aws_reaper.TAG_STACK: STACK})
    now = later(aws, iid)
    fixture = (Path(__file__).parents[1] / "fixtures" / "vllm_metrics_idle.txt").read_text()
    url = f"http://127.0.0.1:{text_server.server_port}/metrics"
    state_file = tmp_path / "state.json"

    def publish(minutes_ago: int, completed_total: float) -> None:
        text = fixture.replace('finished_reason="stop",model_name="umans-coder-v0"} 1270.0',
                               f'finished_reason="stop",model_name="umans-coder-v0"}} {completed_total}')  # fmt: skip
        text_server.bodies = [(200, text)]
        aws_reaper.publish_node_metrics(
            cw=aws.cw, stack=STACK, instance_id=iid, vllm_url=url, gateway_url=None, state_file=state_file,
            now=now - timedelta(minutes=minutes_ago, seconds=-15),
        )  # fmt: skip

    for ago in range(50, 0, -1):
        publish(ago, 1270.0 + (1 if ago <= 10 else 0))  # one request finished 10 minutes ago
    reports, _ = run_reaper(aws, now, stop_after_minutes=45, signals=aws_ops.NODE_SIGNALS)
    assert reports[0].action == "keep" and "1 completed" in reports[0].reason
    reports, _ = run_reaper(aws, now + timedelta(minutes=1), stop_after_minutes=5, signals=aws_ops.NODE_SIGNALS)
    assert reports[0].action == "stop" and instance_state(aws, iid) == "stopped"


def test_cli_start_waits_for_the_front_door_gateway_not_each_gpu_node(
    aws: Aws, tmp_path: Path, health: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a front-door machine the only gateway is on it: `start` starts the stopped GPU node and
    waits once, on the front door; the front door itself is neither started nor stopped by it."""
    gpu = launch(aws, {aws_reaper.TAG_STACK: STACK, aws_reaper.TAG_ROLE: "gpu-node"})
    door = launch(aws, {aws_reaper.TAG_STACK: STACK, aws_reaper.TAG_ROLE: aws_reaper.FRONT_DOOR_ROLE})
    aws.ec2.stop_instances(InstanceIds=[gpu])
    url = f"http://127.0.0.1:{health.server_port}/healthz"
    rc = cli("start", STACK, "--config", str(stack_file(tmp_path)), "--health-url", url, "--interval", "0.05")
    assert rc == 0
    assert instance_state(aws, gpu) == "running"
    out = capsys.readouterr().out
    assert f"starting {gpu}" in out and f"{door}  ready" in out and f"{gpu}  ready" not in out
    assert health.hits == 3
