"""The Pulumi program under mocks: the dev stack runs; bad config fails before any resource."""

from __future__ import annotations

import json

import pytest
from conftest import fake_outputs, run_program, ssh_config
from programs import TARGETS, dev_config


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
