"""`coderig:model.image` checked by the image's own vLLM: the `image-check` step's command, exactly as the
component runs it (coderig.targets.compose.image_check), with vLLM's real parser and validators.

No image registry is reachable here, so the image is the pinned vLLM's CPU venv (.ci/vllm-deps.sh): a
stand-in `docker` on PATH takes `docker run … --entrypoint python3 IMAGE ARGS…` and runs that venv's
python with ARGS and the `-e` variables, nothing else. Everything after the image — the shipped script
text, the rendered `vllm serve` argv — is the real command's. One accepted command, and refused ones: an
unknown flag (argparse) and a tool parser the registry lacks (vLLM's validate step)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ssh_config
from test_vllm_commands import vllm_python

from coderig.core import planner
from coderig.runtime import vllm_argcheck
from coderig.targets import parse_settings
from coderig.targets.compose import image_check
from coderig.targets.compose.rendered import render_nodes

pytestmark = pytest.mark.integration

IMAGE = "registry.internal:5000/vllm/vllm-openai:v0.34.0-patched"
DOCKER = """#!/usr/bin/env bash
# docker run --rm --network none -e K=V --entrypoint python3 IMAGE ARGS... -> PYTHON ARGS... (with K=V)
echo "$*" > WORK/docker.call
[ "$1" = run ] || { echo "stand-in docker: only run: $*" >&2; exit 97; }
shift
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rm) shift ;;
    --network) shift 2 ;;
    -e) envs+=("$2"); shift 2 ;;
    --entrypoint) [ "$2" = python3 ] || exit 98; shift 2 ;;
    -*) echo "stand-in docker: unexpected option $1" >&2; exit 99 ;;
    *) break ;;
  esac
done
shift  # the image
cd WORK && exec env -i PATH=/usr/bin:/bin HOME=WORK "${envs[@]}" PYTHON "$@"
"""


def check_command(**model: object) -> str:
    c = ssh_config(image=IMAGE, **model)
    c["target"]["hosts"][0]["user"] = "root"
    s = parse_settings(c)
    command = image_check.image_check_command(s, render_nodes(s, planner.plan_stack(s))[0], "root")
    assert command is not None
    return command


@pytest.fixture(scope="module")
def docker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("image-check")
    (work / "docker").write_text(DOCKER.replace("WORK", str(work)).replace("PYTHON", vllm_python()))
    (work / "docker").chmod(0o755)
    return work


def run(work: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{work}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, env=env)


def test_the_rendered_deepseek_command_is_accepted(docker_dir: Path) -> None:
    done = run(docker_dir, check_command())
    assert done.returncode == vllm_argcheck.ACCEPTED, done.stdout + done.stderr[-3000:]
    assert f"coderig:model.image: {IMAGE}: vLLM 0.34.0 accepts the model server's command" in done.stdout
    call = (docker_dir / "docker.call").read_text()
    assert call.startswith(f"run --rm --network none -e VLLM_TARGET_DEVICE=cpu --entrypoint python3 {IMAGE} -c ")
    assert f" {IMAGE} serve deepseek-ai/" in call  # then the argv the model service runs


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--enable-prefix-cache-please"], "unrecognized arguments: --enable-prefix-cache-please"),
        (["--tool-call-parser", "qwen9_coder"], "invalid tool call parser: qwen9_coder"),
    ],
    ids=["unknown flag", "unknown tool parser"],
)
def test_a_command_the_image_refuses_fails_naming_the_key_and_the_flag(
    docker_dir: Path, extra: list[str], said: str
) -> None:
    done = run(docker_dir, check_command(extraArgs=extra))
    assert done.returncode == vllm_argcheck.REFUSED, done.stdout + done.stderr[-3000:]
    refusal = [ln for ln in done.stderr.splitlines() if ln.startswith("coderig:model.image:")]
    assert len(refusal) == 1, done.stderr[-3000:]
    assert f"{IMAGE} refuses the model server's command: vLLM 0.34.0" in refusal[0] and said in refusal[0]
    assert "The running model server was not touched" in refusal[0]
