"""The planner answers for the hardware in the stack file: the same GPU first (how many per host), then
other GPUs and AWS types; a GPU count is per host, and hosts are replicas."""

from __future__ import annotations

import re

import pytest
from conftest import ssh_config

from coderig.core import planner
from coderig.core.catalog import PRESETS
from coderig.core.errors import UserError
from coderig.targets import parse_settings

CTX = 131072


def test_too_few_of_your_gpu_answers_how_many_per_host_first() -> None:
    p = planner.plan(PRESETS["deepseek-v3.2"], gpu="H200", gpu_count=4, max_model_len=CTX)
    assert not p.fits and p.suggestion
    assert p.suggestion.startswith("with your GPU: 8× H200 per host")
    first, other, aws = p.suggestion.split("; ")
    assert other.startswith("other GPUs: smallest that fits:") and aws.startswith("on AWS:")
    assert planner.plan(PRESETS["deepseek-v3.2"], gpu="H200", gpu_count=8, max_model_len=CTX).fits
    assert not planner.plan(PRESETS["deepseek-v3.2"], gpu="H200", gpu_count=4, max_model_len=CTX, suggest=False).fits
    named = re.search(r"(\d)× (\w+) \(", other)
    assert named and named.group(2) != "H200"
    n, gpu = int(named.group(1)), named.group(2)
    assert planner.plan(PRESETS["deepseek-v3.2"], gpu=gpu, gpu_count=n, max_model_len=CTX, suggest=False).fits


def test_when_no_count_of_your_gpu_holds_it_hosts_are_explained_as_replicas() -> None:
    p = planner.plan(PRESETS["deepseek-v3.2"], gpu="H100", gpu_count=8, max_model_len=CTX)
    assert p.suggestion and p.suggestion.startswith("no count of H100 per host holds it")
    assert "each host is a replica holding a whole copy" in p.suggestion
    assert "other GPUs: smallest that fits" in p.suggestion


@pytest.mark.parametrize(("count", "hosts"), [(16, "list 2 hosts of 8"), (3, None)])
def test_a_count_that_is_not_per_host_says_what_it_is(count: int, hosts: str | None) -> None:
    c = ssh_config()
    c["target"]["gpu"]["count"] = count
    with pytest.raises(UserError) as err:
        parse_settings(c)
    text = "\n".join(err.value.problems)
    assert "coderig:target.gpu.count" in text and f"got {count}" in text
    assert "GPUs per host (per model replica)" in text and "use 1, 2, 4 or 8" in text
    assert (hosts in text) if hosts else "hosts of 8" not in text
