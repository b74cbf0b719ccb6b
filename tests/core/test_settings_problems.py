"""Items 13 and 14: every problem at once, each echoing what was given; what used to pass silently
(an unknown AWS region, a zone of another region, a misspelt namespace) is named; what is allowed
but risky (the whole internet on the gateway, floating weights) is a warning line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore
import pytest
import yaml
from conftest import HOST_KEY, ssh_config

from coderig.cli import main
from coderig.core.settings import SECRET, UserError
from coderig.targets import load_stack_file, parse_settings
from coderig.targets.aws.settings import AWS_REGIONS

SHA = "a" * 40


def problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(UserError) as exc:
        parse_settings(config)
    return exc.value.problems


def ssh(**target: Any) -> dict[str, Any]:
    c = ssh_config()
    c["sshPrivateKey"] = SECRET
    c["target"].update(target)
    return c


def aws(**target: Any) -> dict[str, Any]:
    return {"target": {"kind": "aws", "instanceType": "p5en.48xlarge", **target}, "model": {"preset": "deepseek-v3.2"}}


# ------------------------------------------------------------------ item 13: every problem at once


def test_missing_host_key_is_reported_with_another_hosts_malformed_key():
    c = ssh(hosts=[
        {"address": "10.0.0.5", "hostKey": "ssh-ed25519 not-base64!"},
        {"address": "10.0.0.6"},
    ])  # fmt: skip
    lines = problems(c)
    assert any(line.startswith("coderig:target.hosts[0].hostKey:") for line in lines), lines
    missing = [line for line in lines if line.startswith("coderig:target.hosts[1].hostKey:")]
    assert len(missing) == 1 and "missing for 10.0.0.6" in missing[0], lines


def test_an_invalid_developer_does_not_hide_a_duplicate():
    c = ssh()
    c["developers"] = ["Alice", "alice", "bob", "alice"]
    lines = problems(c)
    assert len(lines) == 2, lines
    assert lines[0].startswith("coderig:developers[0]: got 'Alice'") and "'alice'" in lines[0]
    assert lines[1].startswith("coderig:developers[3]: got 'alice'") and "listed twice" in lines[1]


def test_duplicate_host_address_and_missing_key_and_other_sections_together():
    c = ssh(hosts=[{"address": "10.0.0.5", "hostKey": HOST_KEY}, {"address": "10.0.0.5"}])
    c["developers"] = ["bob", "bob"]
    c["gateway"] = {"port": 0}
    text = "\n".join(problems(c))
    for key in ("target.hosts[1].hostKey", "target.hosts[1].address", "developers[1]", "gateway.port"):
        assert f"coderig:{key}:" in text, text
    assert "'10.0.0.5'" in text and "got 0" in text


def test_missing_ssh_key_is_reported_with_a_bad_host():
    c = ssh(hosts=[{"address": "h1", "hostKey": "ssh-ed25519 xx"}])
    del c["sshPrivateKey"]
    c["tlsCertificate"] = SECRET
    text = "\n".join(problems(c))
    for key in ("target.hosts[0].hostKey", "sshPrivateKey", "tlsCertificate"):
        assert f"coderig:{key}:" in text, text


def test_unpinned_host_allowed_when_explicit_and_duplicate_still_caught():
    assert parse_settings(ssh(hosts=[{"address": "h1"}], insecureSkipHostKeyCheck=True))
    lines = problems(ssh(hosts=[{"address": "h1"}, {"address": "h1"}], insecureSkipHostKeyCheck=True))
    assert lines == [lines[0]] and lines[0].startswith("coderig:target.hosts[1].address: got 'h1'")


# ------------------------------------------------------------------ item 14: accepted silently before


def test_unknown_aws_region_is_refused_naming_it():
    (line,) = problems(aws(region="us-middle-7"))
    assert line.startswith("coderig:target.region: got 'us-middle-7'") and "us-east-1" in line


def test_every_cited_region_is_one_botocore_knows():
    data = json.loads((Path(botocore.__file__).parent / "data" / "endpoints.json").read_text())
    known = {r for p in data["partitions"] for r in p["regions"]}
    commercial = {r for p in data["partitions"] if p["partition"] == "aws" for r in p["regions"]}
    assert set(AWS_REGIONS) <= known
    assert commercial <= set(AWS_REGIONS)


@pytest.mark.parametrize("zone", ["us-east-1a", "us-east-1f", "us-east-1-bos-1a"])
def test_zone_of_the_region_is_accepted(zone: str):
    assert parse_settings(aws(region="us-east-1", availabilityZone=zone))


@pytest.mark.parametrize("zone", ["us-west-2a", "us-east-1", "eu-west-1b", "use1-az4"])
def test_zone_outside_the_region_is_refused(zone: str):
    (line,) = problems(aws(region="us-east-1", availabilityZone=zone))
    assert line.startswith(f"coderig:target.availabilityZone: got {zone!r}") and "us-east-1" in line


def test_unknown_region_with_a_zone_is_one_problem():
    lines = problems(aws(region="us-middle-7", availabilityZone="us-middle-7a"))
    assert [line.split(":")[1] for line in lines] == ["target.region"], lines


def stack_file(tmp_path: Path, config: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "Pulumi.t.yaml"
    body = {f"coderig:{k}": v for k, v in config.items()} | (extra or {})
    path.write_text(yaml.safe_dump({"config": body}))
    return path


def test_misspelt_namespace_is_named_with_the_fix(tmp_path: Path):
    c = aws()
    target = c.pop("target")
    path = stack_file(tmp_path, c, {"coderg:target": target, "aws:region": "us-east-1"})
    with pytest.raises(UserError) as exc:
        load_stack_file(path)
    lines = exc.value.problems
    assert "coderg:target: unknown namespace; did you mean coderig:target?" in lines, lines
    assert not any(line.startswith("aws:") for line in lines)


def test_misspelt_namespace_through_pulumi_config_keys():
    c = aws()
    target = c.pop("target")
    with pytest.raises(UserError) as exc:
        parse_settings(c, other_keys=["Coderig:target", "aws:region", "kubernetes:context"])
    assert exc.value.problems[0] == "Coderig:target: unknown namespace; did you mean coderig:target?"
    assert parse_settings(c | {"target": target}, other_keys=["aws:region", "pulumi:tags"])


def plan(tmp_path: Path, config: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["plan", "--config", str(stack_file(tmp_path, config))])
    return rc, capsys.readouterr().err


def test_open_gateway_is_a_warning_from_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    c = aws(allowedCidrs=["0.0.0.0/0", "203.0.113.0/24"])
    c["model"] |= {"revision": SHA, "servedName": "deepseek-v3.2"}
    rc, err = plan(tmp_path, c, capsys)
    assert rc == 0
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("coderig: warning: coderig:target.allowedCidrs: 0.0.0.0/0")
    rc, err = plan(
        tmp_path,
        aws(allowedCidrs=["203.0.113.0/24"])
        | {"model": {"preset": "deepseek-v3.2", "revision": SHA, "servedName": "ds"}},
        capsys,
    )
    assert rc == 0 and err == ""


def test_open_gateway_is_a_warning_from_pulumi_up(monkeypatch: pytest.MonkeyPatch):
    import pulumi

    import stacks

    seen: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: seen.append(msg))
    c = aws(allowedCidrs=["::/0"])
    monkeypatch.setattr(stacks, "read_settings", lambda: (parse_settings(c), {}))
    monkeypatch.setattr(stacks.importlib, "import_module", lambda _name: type("M", (), {"build": lambda _ctx: {}}))
    monkeypatch.setattr(pulumi, "get_stack", lambda: "t")
    monkeypatch.setattr(pulumi, "get_project", lambda: "coderig")
    stacks.build()
    assert any(w.startswith("coderig:target.allowedCidrs: ::/0") for w in seen), seen
    assert any(w.startswith("coderig:model.revision: 'main' floats") for w in seen), seen
