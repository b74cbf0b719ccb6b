"""The plan's restart-to-first-token estimate (coderig.core.restart) and the weights volume's room for
the compile caches (coderig.core.budgets, coderig.core.compile_caches), as worked examples."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import ROOT, ssh_config

from coderig.cli import main
from coderig.core import budgets, compile_caches, restart
from coderig.core.catalog import GB, PRESETS, GiB
from coderig.core.errors import UserError
from coderig.core.planner import plan_stack as planner_plan
from coderig.core.report import restart_estimate, summary, text
from coderig.targets import parse_settings
from coderig.targets.aws import resources as aws_resources

GOLDEN = ROOT / "tests" / "golden" / "stacks"


def golden(stack: str) -> dict[str, Any]:
    config = yaml.safe_load((GOLDEN / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k.removeprefix("coderig:"): v for k, v in config.items()}


def kube_config(**target: Any) -> dict[str, Any]:
    return {
        "target": {"kind": "kubernetes", "gpu": {"model": "H200", "count": 8}, **target},
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072},
        "developers": ["alice"],
    }


def test_aws_gp3_worked_example_in_the_plan() -> None:
    s = parse_settings(golden("aws"))  # deepseek-v3.2, 689 GB, on p5en.48xlarge
    r = restart_estimate(s)
    assert r is not None
    # 689e9 B ÷ (2000 × 2^20 B/s) = 328.5 s → 329; warm + 60 s engine start; cold + 376 s compile/autotune
    assert (r.read_s, r.warm_s, r.cold_s) == (329, 389, 765)
    line = next(x for x in text(s, planner_plan(s), "aws", None).splitlines() if "restart" in x)
    assert "cold 12 min 45 s, warm 6 min 29 s" in line and "EBS gp3 at the 2000 MiB/s" in line
    assert summary(s, planner_plan(s), "aws", None)["restart"] == {**r.summary(), "cold_s": 765}


def test_aws_read_rate_is_what_the_volume_is_provisioned_with() -> None:
    for size in (None, 100, 16384):
        config = golden("aws")
        if size:
            config["target"] = {**config["target"], "volumeSizeGb": max(size, 890)}
        s = parse_settings(config)
        mibs = aws_resources.weights_volume(s).throughput_mibs
        assert s.target.weights_read.bytes_per_s == mibs * 1024**2 == 2000 * 1024**2


def test_ssh_local_nvme_and_the_stack_value() -> None:
    s = parse_settings(ssh_config())
    r = restart_estimate(s)
    assert r is not None and r.read.bytes_per_s == 6_500_000_000
    assert (r.read_s, r.warm_s, r.cold_s) == (106, 166, 542)  # 689e9 ÷ 6.5e9 = 106.0 s
    cfg = ssh_config()
    cfg["target"]["weightsReadMBps"] = 1500
    r = restart_estimate(parse_settings(cfg))
    assert r is not None and (r.read_s, r.warm_s) == (460, 520)  # 689e9 ÷ 1.5e9 = 459.3 s
    assert r.read.source == "coderig:target.weightsReadMBps: 1500 MB/s"


def test_kubernetes_pvc_names_its_class_and_the_key() -> None:
    r = restart_estimate(parse_settings(kube_config(storageClass="fast-nvme")))
    assert r is not None and r.read.bytes_per_s == 125 * 1024**2
    assert r.read_s == 5257  # 689e9 ÷ 131,072,000 B/s = 5256.6 s: a slow class is the long pole here
    assert "storage class fast-nvme" in r.read.source and "coderig:target.weightsReadMBps" in r.read.source
    r = restart_estimate(parse_settings(kube_config(weightsReadMBps=4000)))
    assert r is not None and r.read_s == 173  # 689e9 ÷ 4e9 = 172.25 s


def test_no_restart_line_without_a_vllm_model_here() -> None:
    cpu = parse_settings({"target": {"kind": "local"}, "model": {"preset": "qwen3-1.7b-cpu"}})
    assert restart_estimate(cpu) is None
    assert restart_estimate(parse_settings(golden("external"))) is None


def test_volume_counts_the_compile_caches() -> None:
    big = PRESETS["deepseek-v3.2"]
    assert compile_caches.cache_bytes(8) == 24 * GiB
    # 689 GB × 1.25 = 861.25 GB + 25.77 GB of caches = 887.0 GB → 890 (without the caches: 870)
    assert budgets.weights_volume_gb(big, 8) == 890
    assert budgets.weights_volume_gb(PRESETS["qwen3-1.7b-cpu"], 0) == 100  # llama.cpp compiles nothing
    s = parse_settings(golden("aws"))
    assert aws_resources.weights_volume(s).size_gb == 890


def test_a_volume_too_small_for_the_caches_fails_at_plan_time_naming_the_key() -> None:
    config = golden("aws")
    config["target"] = {**config["target"], "volumeSizeGb": 700}  # holds the 689 GB, not the caches too
    config["workload"] = {"peakActiveShare": 0.5, "contextTokens": 200_000}  # over maxModelLen
    with pytest.raises(UserError) as exc:
        parse_settings(config)
    problems = exc.value.problems
    need = (689 * GB + 24 * GiB) / GB  # 714.8 GB
    assert any(p.startswith("coderig:workload.contextTokens") for p in problems)  # reported together
    (vol,) = [p for p in problems if p.startswith("coderig:target.volumeSizeGb")]
    assert "got 700" in vol and f"{need:.0f} GB" in vol and "allowed: 715..16384" in vol
    del config["workload"]
    config["target"]["volumeSizeGb"] = 715
    assert parse_settings(config).target.volume_problems(PRESETS["deepseek-v3.2"]) == []


def test_plan_command_prints_the_restart_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", str(GOLDEN / "Pulumi.ssh.yaml")]) == 0
    out = capsys.readouterr().out
    assert "restart            to first token: cold" in out and "local NVMe" in out


def test_readme_restart_figures_are_the_plans() -> None:
    r = restart_estimate(parse_settings(golden("aws")))
    assert r is not None
    readme = " ".join((ROOT / "README.md").read_text().split())
    d = restart.duration
    assert (
        f"({d(r.read_s)}, the bound: one volume's throughput) and vLLM's engine start, "
        f"{d(restart.WARM_ENGINE_S)} with the compile caches the volume keeps, "
        f"{d(restart.COLD_COMPILE_S)} more without them (a first start): warm {d(r.warm_s)}, cold {d(r.cold_s)}"
    ) in readme
