"""The README's main job, as written, with the real engine and a real Docker engine: `./up.sh` on the
unchanged dev stack (`Pulumi.dev.yaml`, target `local`), then `coderig bundle` → `coderig onboard`
→ the real Claude Code completes a Write tool round trip through the deployed gateway; `pulumi
destroy` keeps the weights cache.

No image registry is reachable: tests/images/build.sh builds the images the compose file names,
tagged with the pinned names (the model image is the stand-in model server speaking llama.cpp's
shapes). The weights are pre-seeded with their completion marker, as a second `up` finds them.
HOME is a temporary directory, so the weights cache (`~/.cache/coderig`) is the test's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from engine import ROOT, project_copy
from frontdoor_fixtures import NPM_PREFIX, require_tool

from coderig.core import planner
from coderig.targets import parse_settings
from coderig.targets.compose import machines
from coderig.targets.compose.rendered import render_node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the Docker engine needs root"),
]


def docker_ready() -> None:
    """Docker with the compose v2 plugin, reachable (.ci/docker-deps.sh starts it)."""
    message = ""
    if shutil.which("docker") is None:
        message = "docker is not installed (.ci/docker-deps.sh installs it)"
    elif subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        message = "the Docker engine is not running (.ci/docker-deps.sh starts it)"
    elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        message = "the docker compose v2 plugin is missing (.ci/docker-deps.sh builds it)"
    if message:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def seed_weights(home: Path) -> Path:
    """The weights step's completion marker (and the model file) where the dev stack's cache is."""
    settings = parse_settings(yaml_config(ROOT / "Pulumi.dev.yaml"))
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    env = render_node(settings, spec).compose["services"]["weights"]["environment"]
    cache = home / ".cache" / "coderig"
    marker = cache / "hf" / "coderig-markers" / f"{env['CODERIG_REPO'].replace('/', '--')}.json"
    marker.parent.mkdir(parents=True)
    patterns = sorted(p for p in env["CODERIG_ALLOW_PATTERNS"].split(",") if p)
    marker.write_text(json.dumps({"repo": env["CODERIG_REPO"], "revision": env["CODERIG_REVISION"],
                                  "allow_patterns": patterns, "commit": "0" * 40, "bytes": 1}))  # fmt: skip
    model = cache / "models" / env["CODERIG_LINK_FILE"]
    model.parent.mkdir(parents=True)
    model.write_text("stand-in weights")
    return marker


def yaml_config(path: Path) -> dict[str, object]:
    import yaml

    doc = yaml.safe_load(path.read_text())
    return {k.removeprefix("coderig:"): v for k, v in doc["config"].items()}


def test_dev_stack_up_bundle_onboard_claude_code_destroy(tmp_path: Path) -> None:
    docker_ready()
    claude = require_tool("claude")
    build = subprocess.run(["bash", "tests/images/build.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout + build.stderr
    project = project_copy(tmp_path)
    shutil.copy2(ROOT / "Pulumi.dev.yaml", project.dir / "Pulumi.dev.yaml")
    real_home = Path.home()
    home = tmp_path / "home"
    marker = seed_weights(home)
    docker_config = os.environ.get("DOCKER_CONFIG") or str(real_home / ".docker")
    project.env |= {"HOME": str(home), "DOCKER_CONFIG": docker_config,
                    "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR") or str(real_home / ".cache" / "uv")}  # fmt: skip
    # a fresh checkout: up.sh makes the backend and a passphrase; `coderig bundle` finds both
    project.env.pop("PULUMI_CONFIG_PASSPHRASE")
    project.env.pop("PULUMI_BACKEND_URL")
    try:
        up = project.run("./up.sh", label="up (dev, create)", timeout=1200)
        assert "stack dev:" in up.stdout
        ps = subprocess.run(["docker", "compose", "-p", "coderig", "ps", "--format", "{{.Service}} {{.Health}}"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert {"model healthy", "litellm healthy", "gateway healthy"} <= set(ps.splitlines()), ps

        bundle = tmp_path / "dev.json"
        project.run("uv", "run", "coderig", "bundle", "--stack", "dev", "--developer", "dev", "--out", str(bundle))
        dev_home = tmp_path / "dev-home"
        dev_home.mkdir()
        project.run("uv", "run", "coderig", "onboard", str(bundle), "--home", str(dev_home))
        work = tmp_path / "work"
        work.mkdir()
        env = {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(dev_home), "LANG": "C.UTF-8"}
        run = subprocess.run(
            [claude, "-p", "Create a file hello.txt containing hello from the dev stack",
             "--permission-mode", "acceptEdits", "--output-format", "json"],
            cwd=work, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert json.loads(run.stdout)["subtype"] == "success"
        assert (work / "hello.txt").read_text() == "hello from the dev stack\n"

        again = project.run("./up.sh", "dev", "--expect-no-changes", label="up (dev, no changes)", timeout=600)
        assert "unchanged" in again.stdout
        state = project.dir / ".pulumi-state"
        project.env |= {
            "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(state / "passphrase"),
        }
        project.pulumi("destroy", "--yes", "--stack", "dev", label="destroy (dev)", timeout=600)
        ps = subprocess.run(["docker", "compose", "-p", "coderig", "ps", "-a", "-q"], capture_output=True, text=True)
        assert ps.stdout.strip() == ""
        assert marker.exists() and (home / ".cache" / "coderig" / "models").is_dir()  # weights kept
        assert project.plugins_downloaded() == []
        print("engine timings (s):", project.timings)
    finally:
        subprocess.run(["docker", "compose", "-p", "coderig", "down", "--remove-orphans"], capture_output=True)
