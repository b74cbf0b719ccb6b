"""coderig:logs on compose nodes: every service's log stays on the host, rotated (Docker json-file with
max-size/max-file), and the gateway's access and error logs go there too (its stdout/stderr)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import ssh_config

from coderig.core import planner, versions
from coderig.core.errors import UserError
from coderig.core.log_settings import LogSettings
from coderig.targets import parse_settings, render_stack


def rendered(config: dict) -> dict[str, str]:
    s = parse_settings(config)
    return {name: f.content for name, f in render_stack(s, "prod", planner.plan_stack(s)).items()}


def test_every_service_logs_on_the_host_with_rotation() -> None:
    files = rendered(ssh_config() | {"logs": {"maxSizeMb": 20, "maxFiles": 3}})
    compose = yaml.safe_load(files["node/compose.yaml"])
    assert set(compose["services"]) >= {"model", "litellm", "gateway", "weights"}
    for name, svc in compose["services"].items():
        assert svc["logging"] == {"driver": "json-file", "options": {"max-size": "20m", "max-file": "3"}}, name
    conf = files["node/gateway/nginx.conf"]
    assert "access_log /dev/stdout coderig_json;" in conf and "error_log /dev/stderr warn;" in conf
    default = yaml.safe_load(rendered(ssh_config())["node/compose.yaml"])
    assert default["services"]["gateway"]["logging"]["options"] == {"max-size": "100m", "max-file": "5"}


def test_bad_log_settings_name_the_key() -> None:
    with pytest.raises(UserError) as err:
        parse_settings(ssh_config() | {"logs": {"maxSizeMb": 0, "keep": 3}})
    text = "\n".join(err.value.problems)
    assert "coderig:logs.maxSizeMb" in text and "coderig:logs.keep" in text


@pytest.mark.integration
def test_docker_rotates_a_service_log_with_these_options(tmp_path: Path) -> None:
    """The `logging:` block as rendered, under the real Docker engine and compose: a service that writes
    3 MB keeps at most maxFiles files of about maxSizeMb each."""
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker with the compose plugin (.ci/docker-deps.sh)")
    if subprocess.run([docker, "image", "inspect", versions.NGINX_IMAGE], capture_output=True).returncode != 0:
        pytest.skip(f"{versions.NGINX_IMAGE} is not built here (tests/images/build.sh)")
    logs = LogSettings(maxSizeMb=1, maxFiles=2)
    doc = {"services": {"talk": {
        "image": versions.NGINX_IMAGE, "network_mode": "none", "entrypoint": ["sh", "-c"],
        "command": ["yes coderig-log-line-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -n 30000"],
        "logging": logs.compose_logging(),
    }}}  # fmt: skip
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(doc))
    project = f"coderig-logtest-{os.getpid()}"
    base = [docker, "compose", "-p", project, "-f", str(tmp_path / "compose.yaml")]
    try:
        subprocess.run([*base, "up", "-d"], check=True, capture_output=True, timeout=120)
        cid = subprocess.run(
            [*base, "ps", "-a", "-q", "talk"], check=True, capture_output=True, text=True
        ).stdout.strip()
        deadline = time.monotonic() + 120
        while json.loads(subprocess.run([docker, "inspect", cid], capture_output=True, text=True).stdout)[0]["State"][
            "Running"
        ]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        log_path = Path(json.loads(subprocess.run([docker, "inspect", cid], capture_output=True, text=True).stdout)[0][
            "LogPath"
        ])  # fmt: skip
        kept = sorted(p for p in log_path.parent.iterdir() if p.name.startswith(log_path.name))
        assert len(kept) == 2, kept  # rotated (3 MB written), and no more than maxFiles kept
        assert all(p.stat().st_size <= 1.1 * 1024 * 1024 for p in kept)
        tail = subprocess.run([*base, "logs", "--tail", "1", "talk"], capture_output=True, text=True).stdout
        assert "coderig-log-line-" in tail  # `docker compose logs` reads them
    finally:
        subprocess.run([*base, "down", "-t", "0"], capture_output=True, timeout=120)
