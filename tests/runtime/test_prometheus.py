"""The shipped Prometheus rules (deploy/prometheus/) pass `promtool test rules`, and a real Prometheus
(Debian's package) scrapes a running front door's metrics listener: the usage counters it reads
equal the usage record, each replica's model metrics come along, and the recording rules evaluate."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.frontdoor_fixtures import free_port, require_tool, running_frontdoor, standin_server

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus"
MODEL = "m"
KEYS = {"alice": "crk-alice0123456789abcdefABCDEFprom00", "bob": "crk-bob0123456789abcdefABCDEFprom0000"}


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_and_a_broken_threshold_is_caught(tmp_path: Path) -> None:
    checked = promtool("check", "rules", "coderig-rules.yml")
    assert checked.returncode == 0 and "SUCCESS: 12 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "coderig-rules.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    # control: the same tests against rules whose error-rate threshold is wrong must fail
    shutil.copy(RULES / "coderig-rules.test.yml", tmp_path)
    text = (RULES / "coderig-rules.yml").read_text()
    assert "ratio_rate5m > 0.05" in text
    (tmp_path / "coderig-rules.yml").write_text(text.replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.5"))
    broken = promtool("test", "rules", "coderig-rules.test.yml", cwd=tmp_path)
    assert broken.returncode != 0 and "CoderigHighErrorRate" in broken.stdout + broken.stderr


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES / "coderig-rules.yml")],
                "scrape_configs": [{"job_name": "coderig", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                require_tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())["data"]["result"]


def wait_for(base: str, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            found = query(base, expr)
            if found:
                return found
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {expr!r}")


@pytest.mark.integration
def test_real_prometheus_scrapes_a_running_front_door(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    msgs = [{"role": "user", "content": "count me"}]
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(model.url, MODEL, tmp_path / "fd", KEYS, "--metrics-listen", metrics, tls=False) as door,
        prometheus(tmp_path, metrics) as prom,
    ):
        # the listener is not reachable through the gateway, whatever the key
        for path in ("/metrics", "/usage"):
            assert door.request("GET", path, key=KEYS["alice"]).status == 404
        assert wait_for(prom, 'up{job="coderig"} == 1') and wait_for(prom, "coderig_gateway_up == 1")
        # while Prometheus scrapes, a few scrapes apart: its rates see the second request of each
        message = {"model": MODEL, "max_tokens": 30, "messages": msgs}
        for dev, key in KEYS.items():
            assert door.post("/v1/messages", message, key=key).status == 200
            wait_for(prom, f'coderig_requests_total{{developer="{dev}"}}')
            time.sleep(2.5)
            assert door.post("/v1/chat/completions", {"model": MODEL, "messages": msgs}, key=key).status == 200, dev
        expected: dict[str, str] = {}
        for dev in KEYS:
            expected[dev] = str(sum(r["output"] for r in model.reported if r["developer"] == dev))
        deadline = time.monotonic() + 30
        got: dict[str, str] = {}
        while time.monotonic() < deadline and got != expected:
            got = {s["metric"]["developer"]: s["value"][1] for s in query(prom, 'coderig_tokens_total{kind="output"}')}
            time.sleep(0.5)
        assert got == expected, (got, expected)
        requests = wait_for(prom, 'sum by (developer) (coderig_requests_total{code="200"})')
        assert {s["metric"]["developer"]: s["value"][1] for s in requests} == {"alice": "2", "bob": "2"}
        assert wait_for(prom, "coderig_node_awake == 1")
        running = wait_for(prom, "vllm:num_requests_running")
        assert running[0]["metric"]["replica"] == model.url.split("//")[1].removesuffix("/v1")
        # the recording rules run over the scraped series
        assert wait_for(prom, "coderig:nodes_awake:sum == 1")
        p50 = wait_for(prom, "coderig:ttft_seconds:p50_5m >= 0", timeout=30)
        assert 0 <= float(p50[0]["value"][1]) < 0.25  # the stand-in answers at once
