"""The Pulumi program under mocks: the dev stack runs; bad config fails before any resource."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import HOST_KEY, ROOT, fake_outputs, run_program, ssh_config
from test_aws_stack import aws_config, run_stack

from coderig.core.settings import namespace_from_stack_file


def dev_config():
    return namespace_from_stack_file(yaml.safe_load(Path(ROOT / "Pulumi.dev.yaml").read_text()))


def test_dev_stack_program_runs():
    run = run_program(dev_config(), stack="dev")
    assert run.error is None, run.error
    assert run.outputs["plan"]["fits"] is True


def test_invalid_config_fails_before_any_resource():
    c = ssh_config()
    c["target"]["kind"] = "gcp"
    c["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----"
    run = run_program(c)
    assert run.error is not None and "coderig:target.kind" in str(run.error)
    assert run.resources == []


def test_model_that_does_not_fit_fails_before_any_resource():
    c = ssh_config()
    c["target"]["gpu"]["model"] = "H100"
    c["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----"
    run = run_program(c)
    assert run.error is not None and "do not fit" in str(run.error)
    assert run.resources == []


def kube_config() -> dict:
    return {
        "target": {"kind": "kubernetes", "gpu": {"model": "H200", "count": 8}, "replicas": 1},
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072},
        "developers": ["alice", "bob"],
        "idle": {"stopAfterMinutes": 30},
    }


def external_config() -> dict:
    return {
        "target": {"kind": "external", "endpoint": "https://kserve.internal/v1"},
        "model": {"preset": "glm-4.7", "servedName": "glm"},
        "developers": ["alice", "bob"],
        "externalApiKey": "upstream-key-0123456789",
    }


def ssh_two_hosts() -> dict:
    c = ssh_config()
    c["target"]["hosts"].append({"address": "gpu2.internal", "user": "ubuntu", "hostKey": HOST_KEY})
    c["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----"
    return c


TARGETS = {
    "local": lambda: run_program(dev_config(), stack="dev"),
    "ssh": lambda: run_program(ssh_two_hosts()),
    "aws": lambda: run_stack(aws_config(count=2)),
    "kubernetes": lambda: run_program(kube_config()),
    "external": lambda: run_program(external_config()),
}


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_every_target_builds_with_unique_parented_names_and_secret_tokens(kind):
    run = TARGETS[kind]()
    assert run.error is None, repr(run.error)
    assert run.resources, "a target that registers nothing deploys nothing"
    names = [(r.typ, r.name) for r in run.resources]
    assert len(names) == len(set(names))
    # components name their children from their own name and parent them to themselves
    by_key = {(r.typ, r.name): r for r in run.resources}
    children = 0
    for r in run.resources:
        parent = by_key.get(r.parent_key) if r.parent_key else None
        if parent is not None and not parent.custom:
            children += 1
            assert r.name.startswith(f"{parent.name}-"), f"{r.name} is a child of {parent.name}"
    assert children >= 5, "resources are built inside components"
    # tokens: one secret map; no token value in any other output
    assert "developerTokens" in run.secret_outputs
    tokens = run.outputs["developerTokens"]
    assert set(tokens) == set(run.outputs["clientBundle"]["developers"])
    public = json.dumps({k: v for k, v in run.outputs.items() if k not in run.secret_outputs}, default=str)
    for token in tokens.values():
        assert token not in public
    # no generated secret (developer keys, LiteLLM master key, model API key) in a public output
    passwords = run.of_type("random:index/randomPassword:RandomPassword")
    assert len(passwords) >= len(tokens) + 1
    for r in passwords:
        assert fake_outputs(r.typ, r.name)["result"] not in public, r.name
    assert "PRIVATE KEY" not in public
