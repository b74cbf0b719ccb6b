"""Item 11: the weights step installs nothing at run time (it runs in an image that has
huggingface_hub), installs only from hash-pinned requirements where explicitly allowed (without
HF_TOKEN in pip's environment), and downloads the revision coderig:model.revision names."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, ssh_config
from kube_helpers import all_objects, k8s_config

from coderig.cli import main
from coderig.core import engine, planner, versions
from coderig.core.settings import SECRET
from coderig.runtime.scripts import SCRIPT_NAMES
from coderig.targets import parse_settings
from coderig.targets.compose import machines
from coderig.targets.compose.rendered import render_node

FETCHER = ROOT / "coderig" / "runtime" / "fetch_weights.py"
REQUIREMENTS = ROOT / "coderig" / "runtime" / "weights-requirements.txt"
SHA = "0123456789abcdef0123456789abcdef01234567"


def load_fetcher() -> Any:
    spec = importlib.util.spec_from_file_location("fetch_weights_sc", FETCHER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class PipRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, cmd: list[str], *args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(cmd), dict(kwargs.get("env") or {})))
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> PipRecorder:
    """An image without huggingface_hub: importing it fails; any subprocess is recorded, not run."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # type: ignore[arg-type]
    recorder = PipRecorder()
    monkeypatch.setattr(subprocess, "run", recorder)
    return recorder


def test_weights_step_never_pip_installs_by_default(tmp_path: Path, no_hub: PipRecorder, capsys) -> None:
    fw = load_fetcher()
    env = {"HF_HOME": str(tmp_path), "CODERIG_REPO": "org/m", "HF_TOKEN": "hf_secret"}
    rc = fw.main(env, interval=0.05)
    assert no_hub.calls == []  # no pip, no network install
    assert rc == 2
    out = capsys.readouterr().out
    assert "FAIL huggingface_hub is not in this image" in out and "hf_secret" not in out


def test_hash_pinned_install_only_when_allowed_and_without_the_token(
    tmp_path: Path, no_hub: PipRecorder, capsys
) -> None:
    fw = load_fetcher()
    env = {
        "HF_HOME": str(tmp_path), "CODERIG_REPO": "org/m", "HF_TOKEN": "hf_secret",
        "HUGGING_FACE_HUB_TOKEN": "hf_secret", "CODERIG_PIP_REQUIREMENTS": str(REQUIREMENTS), "PATH": "/usr/bin",
    }  # fmt: skip
    fw.main(env, interval=0.05)
    assert len(no_hub.calls) == 1
    cmd, pip_env = no_hub.calls[0]
    assert cmd[1:4] == ["-m", "pip", "install"]
    assert "--require-hashes" in cmd and cmd[cmd.index("--only-binary") + 1] == ":all:"
    assert cmd[cmd.index("-r") + 1] == str(REQUIREMENTS)
    assert pip_env and "hf_secret" not in pip_env.values() and pip_env["PATH"] == "/usr/bin"
    assert "hf_secret" not in capsys.readouterr().out


def test_requirements_pin_every_distribution_by_hash() -> None:
    text = REQUIREMENTS.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()
    entries = re.split(r"\n(?=[A-Za-z])", body)  # one requirement and its --hash lines each
    names = {}
    for entry in entries:
        head = entry.split()[0]
        assert "==" in head, entry
        assert "--hash=sha256:" in entry, f"{head} is not pinned by hash"
        names[head.split("==")[0].lower()] = head.split("==")[1]
    assert names["huggingface-hub"] == versions.HF_HUB_VERSION
    assert "hf-xet" in names  # the Xet transfer backend most large repos now use
    assert versions.WEIGHTS_REQUIREMENTS in SCRIPT_NAMES  # shipped with fetch_weights.py


def stacks() -> dict[str, Any]:
    ssh = ssh_config()
    ssh["sshPrivateKey"] = SECRET
    return {
        "ssh": parse_settings(ssh),
        "aws": parse_settings({"target": {"kind": "aws", "instanceType": "p5en.48xlarge", "count": 2},
                               "model": {"preset": "deepseek-v3.2", "revision": SHA}}),
        "local-cpu": parse_settings({"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu"}}),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["ssh", "aws", "local-cpu"])
def test_compose_weights_service_uses_a_pinned_image_that_has_the_downloader(name: str) -> None:
    settings = stacks()[name]
    for spec in machines.node_specs(settings, planner.plan_stack(settings)):
        services = render_node(settings, spec).compose["services"]
        if "weights" not in services:
            continue
        w = services["weights"]
        env = w["environment"]
        assert "CODERIG_HF_HUB_VERSION" not in env
        assert env["CODERIG_REVISION"] == settings.model.revision
        assert w["entrypoint"] == ["python3", "/coderig/fetch_weights.py"] and "command" not in w
        if settings.model.spec.engine == "vllm":
            assert w["image"] == versions.VLLM_IMAGE == services["model"]["image"]  # no extra image, no install
            assert "CODERIG_PIP_REQUIREMENTS" not in env
        else:
            assert w["image"] == versions.WEIGHTS_IMAGE_CPU and re.search(r":\d+\.\d+\.\d+-", w["image"])
            assert env["CODERIG_PIP_REQUIREMENTS"] == "/coderig/weights-requirements.txt"
            assert "./scripts/weights-requirements.txt:/coderig/weights-requirements.txt:ro" in w["volumes"]


def test_kubernetes_weights_job_uses_the_vllm_image_and_installs_nothing() -> None:
    config = k8s_config()
    config["model"]["revision"] = SHA
    jobs = [o for o in all_objects(config) if o["kind"] == "Job" and "weights" in o["metadata"]["name"]]
    assert len(jobs) == 1
    pod = jobs[0]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == versions.VLLM_IMAGE and c["command"] == ["python3", "/coderig/fetch_weights.py"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CODERIG_REVISION"] == SHA
    assert not [k for k in env if k.startswith("PIP_") or k in ("PYTHONPATH", "CODERIG_HF_HUB_VERSION")]
    assert "/deps" not in {m["mountPath"] for m in c["volumeMounts"]}


def test_a_pinned_revision_reaches_the_download_and_the_model_server() -> None:
    settings = stacks()["aws"]
    assert engine.weights_env(settings.model)["CODERIG_REVISION"] == SHA
    args = engine.vllm_args(settings.model, planner.plan_stack(settings).layout)
    assert args[args.index("--revision") + 1] == SHA and args[args.index("--tokenizer-revision") + 1] == SHA
    default = stacks()["ssh"]
    default_args = engine.vllm_args(default.model, planner.plan_stack(default).layout)
    assert default.model.revision == "main" and "--revision" not in default_args


@pytest.mark.parametrize("revision", ["v1..2", "-rf", "a b", ""])
def test_a_bad_revision_is_refused(revision: str) -> None:
    from coderig.core.errors import UserError

    c = ssh_config()
    c["sshPrivateKey"] = SECRET
    c["model"]["revision"] = revision
    with pytest.raises(UserError) as exc:
        parse_settings(c)
    assert exc.value.problems[0].startswith(f"coderig:model.revision: got {revision!r}")


def test_plan_warns_while_the_revision_floats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    for revision, floats in (("main", True), ("release-2", True), (SHA, False)):
        path = tmp_path / "Pulumi.w.yaml"
        path.write_text(yaml.safe_dump({"config": {
            "coderig:target": {"kind": "aws", "instanceType": "p5en.48xlarge"},
            "coderig:model": {"preset": "deepseek-v3.2", "revision": revision},
        }}))  # fmt: skip
        assert main(["plan", "--config", str(path)]) == 0
        err = capsys.readouterr().err.splitlines()
        warned = [line for line in err if "coderig:model.revision" in line]
        assert len(warned) == (1 if floats else 0), err
        if floats:
            assert warned[0].startswith(f"coderig: warning: coderig:model.revision: {revision!r} floats")
