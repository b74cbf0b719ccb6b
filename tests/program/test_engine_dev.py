"""The README's main job with the real engine, a real Docker engine and a real model: `./up.sh` on the dev
stack (`Pulumi.dev.yaml`, target `local`) serving Qwen2.5-Coder-1.5B-Instruct (Qwen's GGUF, sha256-verified,
tests/realmodel.py) from a locally built llama.cpp server image, then `coderig bundle` → `coderig onboard`
→ the real Claude Code, Codex and opencode each create a file through a tool call and a second one in
the same session, through the deployed gateway (tests/real_agents.py); `pulumi destroy` keeps the
weights cache.

The stack file is the dev stack's own with `coderig:model` set to the real model: the
qwen2.5-coder-1.5b-cpu preset (its fenced tool-call chat template), `image:` the real llama.cpp server
tests/images/build.sh builds (no registry is reachable, so the pinned image cannot be pulled) and
`extraArgs: [--temp, "0"]`. The 1.5B, not the 0.5B: on Claude Code's task the 0.5B wrote the first file,
then called Write again until the step cap, and on the second turn overwrote hello.txt instead of
creating second.txt. The weights are pre-seeded as a second `up` finds them: the completion marker and
the verified GGUF in the cache the weights step fills (no download). HOME is a temporary directory, so
that cache (`~/.cache/coderig`) is the test's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import real_agents
import realmodel
from engine import ROOT, project_copy
from frontdoor_fixtures import require_tool

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


MODEL = realmodel.QWEN_15B
STACK_MODEL = {"preset": "qwen2.5-coder-1.5b-cpu", "image": realmodel.REAL_LLAMACPP_IMAGE, "extraArgs": ["--temp", "0"]}


def real_model_stack(dest: Path) -> dict[str, object]:
    """The dev stack file with `coderig:model` set to the real model; returns its config (no prefix)."""
    import yaml

    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["coderig:model"] = STACK_MODEL
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return yaml_config(dest)


def seed_weights(home: Path, config: dict[str, object]) -> Path:
    """The weights step's completion marker and the verified model file where the stack's cache is."""
    settings = parse_settings(config)
    spec = machines.node_specs(settings, planner.plan_stack(settings))[0]
    env = render_node(settings, spec).compose["services"]["weights"]["environment"]
    cache = home / ".cache" / "coderig"
    marker = cache / "hf" / "coderig-markers" / f"{env['CODERIG_REPO'].replace('/', '--')}.json"
    marker.parent.mkdir(parents=True)
    patterns = sorted(p for p in env["CODERIG_ALLOW_PATTERNS"].split(",") if p)
    marker.write_text(json.dumps({"repo": env["CODERIG_REPO"], "revision": env["CODERIG_REVISION"],
                                  "allow_patterns": patterns, "commit": "0" * 40, "bytes": MODEL.size}))  # fmt: skip
    assert env["CODERIG_LINK_FILE"] == MODEL.file
    verified = realmodel.verify(MODEL, realmodel.CACHE / MODEL.file)  # Qwen's bytes or no test
    model = cache / "models" / MODEL.file
    model.parent.mkdir(parents=True)
    try:
        os.link(verified, model)  # read-only to the model server; a copy where the link cannot be made
    except OSError:
        shutil.copy2(verified, model)
    return marker


def access_log() -> list[dict[str, str]]:
    """The deployed gateway's JSON access log (nginx writes it to the container's stdout)."""
    out = subprocess.run(["docker", "compose", "-p", "coderig", "logs", "--no-log-prefix", "gateway"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"time"')]


def requests_by_path(log: list[dict[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in log:
        if e["developer"] == "dev" and e["status"] == "200":
            out[e["path"]] = out.get(e["path"], 0) + 1
    return out


def yaml_config(path: Path) -> dict[str, object]:
    import yaml

    doc = yaml.safe_load(path.read_text())
    return {k.removeprefix("coderig:"): v for k, v in doc["config"].items()}


def test_dev_stack_real_model_three_agents_two_turns_destroy(tmp_path: Path) -> None:
    docker_ready()
    claude = require_tool("claude")
    require_tool("codex")
    require_tool("opencode")
    if not (realmodel.CACHE / MODEL.file).exists():
        realmodel.require("the Qwen GGUF files")
    build = subprocess.run(["bash", "tests/images/build.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout + build.stderr
    project = project_copy(tmp_path)
    config = real_model_stack(project.dir / "Pulumi.dev.yaml")
    real_home = Path.home()
    home = tmp_path / "home"
    marker = seed_weights(home, config)
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
        agents = {  # the agent, and the route its requests take through the gateway
            "claude": (lambda work: real_agents.claude_code(claude, dev_home, work), "/v1/messages"),
            "codex": (lambda work: real_agents.codex(dev_home, work, "dev", tmp_path), "/v1/responses"),
            "opencode": (lambda work: real_agents.opencode(dev_home, work, "dev"), "/v1/chat/completions"),
        }
        runs: list[real_agents.Run] = []
        for agent, (drive, path) in agents.items():
            work = tmp_path / f"work-{agent}"
            work.mkdir()
            before = requests_by_path(access_log())
            runs.append(drive(work))
            after = requests_by_path(access_log())
            # two turns, each at least the tool call and the answer to its result, reached the model
            assert after.get(path, 0) - before.get(path, 0) >= 4, (agent, before, after)
        claude_session = [e for e in access_log() if e["session"] == runs[0].session and e["status"] == "200"]
        assert len(claude_session) >= 4, claude_session  # both Claude Code turns: one session at the gateway
        print("agent turns (s):", {r.agent: r.seconds for r in runs})

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
