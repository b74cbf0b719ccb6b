"""The Pulumi program under mocks: the dev stack runs; bad config fails before any resource."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import ROOT, run_program, ssh_config

from coderig.settings import namespace_from_stack_file


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


def test_names_are_unique_and_parented_in_every_program_run():
    run = run_program(dev_config(), stack="dev")
    names = [(r.typ, r.name) for r in run.resources]
    assert len(names) == len(set(names))
