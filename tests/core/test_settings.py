"""Stack settings: every bad input names the key, what was given and what is allowed."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import HOST_KEY, ssh_config

from coderig.core.settings import SECRET, UserError
from coderig.core.stack_file import namespace_from_stack_file
from coderig.targets import load_stack_file, parse_settings
from coderig.targets.ssh.settings import SshTarget


def problems(config: dict[str, Any]) -> str:
    with pytest.raises(UserError) as exc:
        parse_settings(config)
    return str(exc.value)


def base() -> dict[str, Any]:
    c = ssh_config()
    c["sshPrivateKey"] = SECRET
    return c


def test_valid_ssh_stack_defaults():
    s = parse_settings(base())
    assert s.target.kind == "ssh"
    assert s.model.served_name == "deepseek-v3.2"  # the model's own name, not a product name
    assert s.model.former_name == "umans-coder-v0"  # the former default: still routed, and warned about
    assert s.model.max_model_len == 131072
    assert isinstance(s.target, SshTarget) and s.target.hosts[0].hostKey == HOST_KEY
    assert s.developers == ["alice", "bob"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["model"].update(preset="llama-9"), ["coderig:model.preset", "'llama-9'", "deepseek-v3.2"]),
        (lambda c: c["model"].update(maxModelLn=5), ["coderig:model.maxModelLn", "unknown key", "maxModelLen"]),
        (lambda c: c.update(modle={}), ["coderig:modle", "unknown key", "model"]),
        (lambda c: c["target"].update(kind="gcp"), ["coderig:target.kind", "'gcp'", "local, ssh, aws"]),
        (lambda c: c["model"].update(maxModelLen=10**7), ["coderig:model.maxModelLen", "10000000", "1..163840"]),
        (lambda c: c["model"].update(maxModelLen=0), ["coderig:model.maxModelLen", "got 0", "1..163840"]),
        (lambda c: c["target"]["gpu"].update(count=0), ["coderig:target.gpu.count", "got 0"]),
        (lambda c: c["target"]["gpu"].update(count=3), ["coderig:target.gpu.count", "got 3", "1, 2, 4 or 8"]),
        (lambda c: c["target"]["gpu"].update(model="X9000"), ["coderig:target.gpu.model", "'X9000'", "H200"]),
        (lambda c: c.update(developers=["alice", "alice"]), ["coderig:developers", "'alice'", "twice"]),
        (lambda c: c["target"]["hosts"][0].pop("hostKey"), ["coderig:target.hosts[0].hostKey", "ssh-keyscan"]),
        (lambda c: c["target"]["hosts"][0].update(adress="x"), ["coderig:target.hosts[0].adress", "address"]),
        (lambda c: c.pop("sshPrivateKey"), ["coderig:sshPrivateKey", "--secret"]),
        (lambda c: c["target"].pop("gpu"), ["coderig:target.gpu", "needs GPUs"]),
        (lambda c: c["model"].update(maxModelLen="lots"), ["coderig:model.maxModelLen", "'lots'", "integer"]),
        (lambda c: c.update(developers=["Alice Smith"]), ["coderig:developers", "'Alice Smith'"]),
        (
            lambda c: c.update(target={"kind": "aws", "instanceType": "p9.huge"}),
            ["coderig:target.instanceType", "'p9.huge'", "p5en.48xlarge"],
        ),
        (
            lambda c: c.update(target={"kind": "aws", "instanceType": "p5en.48xlarge", "allowedCidrs": ["1.2.3.4/99"]}),
            ["coderig:target.allowedCidrs", "1.2.3.4/99"],
        ),
        (
            lambda c: c["idle"].update(stopAfterMinutes=1) if "idle" in c else c.update(idle={"stopAfterMinutes": 1}),
            ["coderig:idle.stopAfterMinutes", "got 1"],
        ),
    ],
)
def test_bad_input_names_the_key(mutate, expected):
    c = base()
    mutate(c)
    message = problems(c)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_tensor_parallel_must_divide_attention_heads():
    # Qwen3-1.7B has 16 heads: fine with 8; a preset with 12 heads would not be
    c = base()
    c["model"] = {"preset": "minimax-m2.1"}  # 48 heads
    c["target"]["gpu"] = {"model": "H200", "count": 8}
    parse_settings(c)  # 48 % 8 == 0


def test_several_problems_are_all_reported():
    c = base()
    c["model"]["preset"] = "nope"
    c["bogus"] = 1
    lines = problems(c).splitlines()
    assert any(line.startswith("coderig:bogus") for line in lines)
    assert any(line.startswith("coderig:model.preset") for line in lines)


def test_stack_file_secrets_are_opaque(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(
        "config:\n"
        "  aws:region: us-east-1\n"
        "  coderig:target:\n"
        "    kind: ssh\n"
        "    gpu: {model: h200, count: 8}\n"
        f"    hosts: [{{address: 10.0.0.5, hostKey: '{HOST_KEY}'}}]\n"
        "  coderig:sshPrivateKey:\n"
        "    secure: v1:AAAABBBBCCCC\n"
        "  coderig:model: {preset: deepseek-v3.2}\n"
    )
    s = load_stack_file(path)
    assert s.sshPrivateKey is SECRET
    assert isinstance(s.target, SshTarget)
    assert s.target.gpu is not None and s.target.gpu.model == "H200"  # case-insensitive GPU names
    assert "v1:AAAABBBBCCCC" not in repr(s)


def test_namespace_ignores_provider_keys_and_rejects_unprefixed():
    ns = namespace_from_stack_file({"config": {"aws:region": "x", "coderig:developers": []}})
    assert ns == {"developers": []}
    with pytest.raises(UserError, match="need a namespace"):
        namespace_from_stack_file({"config": {"developers": []}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_stack_file(tmp_path / "Pulumi.nope.yaml")
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_stack_file(bad)


def test_unpinned_host_allowed_only_when_explicit():
    c = base()
    c["target"]["hosts"][0].pop("hostKey")
    c["target"]["insecureSkipHostKeyCheck"] = True
    target = parse_settings(c).target
    assert isinstance(target, SshTarget) and target.hosts[0].hostKey is None


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        ({"timezone": "Mars/Base"}, ["coderig:idle.officeHours.timezone", "'Mars/Base'"]),
        ({"start": "08:00", "end": "08:00"}, ["coderig:idle.officeHours.end", "empty"]),
        ({"start": "25:00"}, ["coderig:idle.officeHours.start", "'25:00'"]),
        ({"days": ["mon", "funday"]}, ["coderig:idle.officeHours.days[1]", "'funday'"]),
    ],
)
def test_office_hours_are_checked_by_the_reapers_own_rules(hours, expected):
    c = base()
    c["idle"] = {"stopAfterMinutes": 30, "officeHours": hours}
    message = problems(c)
    for part in expected:
        assert part in message, message


def test_external_front_door_over_ssh_needs_the_ssh_key():
    c = base()
    c.pop("sshPrivateKey")
    c["target"] = {
        "kind": "external",
        "endpoint": "https://kserve.internal/v1",
        "frontDoor": "ssh",
        "host": {"address": "fd.internal", "hostKey": HOST_KEY},
    }
    assert "coderig:sshPrivateKey" in problems(c)


@pytest.mark.parametrize(
    ("idle", "preset", "expected"),
    [
        (
            {"stopAfterMinutes": 30, "action": "sleep"},
            "qwen3-1.7b-cpu",
            ["coderig:idle.action", "no sleep mode", "stop"],
        ),
        (
            {"stopAfterMinutes": 5, "periodSeconds": 600},
            None,
            ["coderig:idle.stopAfterMinutes", "shorter than the reaper's period", "600 s"],
        ),
        ({"stopAfterMinutes": 30, "action": "nap"}, None, ["coderig:idle.action", "'nap'"]),
        (
            {"officeHours": {"timezone": "Europe/Atlantis"}},
            None,
            ["coderig:idle.officeHours.timezone", "'Europe/Atlantis'"],
        ),
    ],
)
def test_bad_idle_input_names_the_key_at_plan_time(idle, preset, expected):
    c = base()
    c["idle"] = idle
    if preset:
        c["model"] = {"preset": preset}
        c["target"] = {"kind": "local"}
    message = problems(c)
    for part in expected:
        assert part in message, message


def test_idle_action_is_for_ssh_and_local_and_sleep_fits_vllm():
    c = base()
    c["idle"] = {"stopAfterMinutes": 30, "action": "sleep"}
    assert parse_settings(c).idle.action == "sleep"
    c["idle"]["action"] = "stop"
    assert parse_settings(c).idle.action == "stop"
