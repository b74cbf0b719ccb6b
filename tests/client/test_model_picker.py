"""Claude Code's /model picker: each bundle registers its served model as a labelled option naming its
stack, and two stacks onboarded side by side (a cluster and a laptop) switch with one `source` each."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from coderig.cli import main
from coderig.client import bundle as clients

PICKER = ("ANTHROPIC_CUSTOM_MODEL_OPTION", "ANTHROPIC_CUSTOM_MODEL_OPTION_NAME",
          "ANTHROPIC_CUSTOM_MODEL_OPTION_DESCRIPTION")  # fmt: skip
SHOWN = ("ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL", "ANTHROPIC_AUTH_TOKEN", *PICKER)


def write_bundle(tmp_path: Path, name: str, url: str, model: str, token: str) -> Path:
    data = clients.frontdoor_bundles(
        name=name, base_url=url, served_name=model, aliases=(), max_model_len=131072, max_output_tokens=8192,
        ca_cert_pem=None, tokens={"alice": token}, backends=("http://127.0.0.1:8000/v1",),
    )["alice"]  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def sourced_env(home: Path, alias: str) -> dict[str, str]:
    script = home / ".config" / "coderig" / f"use-{alias}.sh"
    show = "; ".join(f'printf "%s=%s\\n" {v} "${{{v}-}}"' for v in SHOWN)
    proc = subprocess.run(["bash", "-c", f'. "{script}" && {show}'], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def test_bundle_registers_a_labelled_picker_option() -> None:
    public = clients.stack_outputs(
        project="coderig", stack="prod", host="gpu1.internal", port=8443, served_name="umans-coder-v0",
        max_model_len=131072, max_output_tokens=8192, developers=["alice"], plan={}, idle={}, usd_per_hour=None,
    )  # fmt: skip
    env = public["client_env"]
    assert env["ANTHROPIC_CUSTOM_MODEL_OPTION"] == "umans-coder-v0" == env["ANTHROPIC_MODEL"]
    assert env["ANTHROPIC_CUSTOM_MODEL_OPTION_NAME"] == "umans-coder-v0 (coderig prod)"
    assert "prod" in env["ANTHROPIC_CUSTOM_MODEL_OPTION_DESCRIPTION"]
    assert "https://gpu1.internal:8443" in env["ANTHROPIC_CUSTOM_MODEL_OPTION_DESCRIPTION"]


def test_two_stacks_side_by_side_switch_with_one_source_each(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cluster = write_bundle(tmp_path, "cluster", "https://llm.example.com:8443", "glm-5", "crk-cluster-0123456789abcdef")
    laptop = write_bundle(tmp_path, "laptop", "http://127.0.0.1:8443", "qwen-laptop", "crk-laptop-0123456789abcdef")
    for bundle in (cluster, laptop):
        assert main(["onboard", str(bundle), "--home", str(home)]) == 0
    on_cluster, on_laptop = sourced_env(home, "cluster"), sourced_env(home, "laptop")
    assert on_cluster["ANTHROPIC_BASE_URL"] == "https://llm.example.com:8443"
    assert on_laptop["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8443"
    assert on_cluster["ANTHROPIC_AUTH_TOKEN"] == "crk-cluster-0123456789abcdef"
    assert on_laptop["ANTHROPIC_AUTH_TOKEN"] == "crk-laptop-0123456789abcdef"
    assert (on_cluster["ANTHROPIC_MODEL"], on_cluster["ANTHROPIC_CUSTOM_MODEL_OPTION"]) == ("glm-5", "glm-5")
    assert on_cluster["ANTHROPIC_CUSTOM_MODEL_OPTION_NAME"] == "glm-5 (coderig cluster)"
    assert on_laptop["ANTHROPIC_CUSTOM_MODEL_OPTION_NAME"] == "qwen-laptop (coderig laptop)"
    described = "ANTHROPIC_CUSTOM_MODEL_OPTION_DESCRIPTION"
    assert "cluster" in on_cluster[described] and "laptop" in on_laptop[described]
