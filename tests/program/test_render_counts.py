"""Plan once, render once: one capacity plan per `coderig render` and per program run, and each
machine rendered exactly once (its compose document built once), counted by bench/render_counts.py
on every golden stack file and every target kind's mock program."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import ROOT

from coderig.core import planner

_spec = importlib.util.spec_from_file_location("render_counts", ROOT / "bench" / "render_counts.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

STACK_FILES = sorted((ROOT / "tests" / "golden" / "stacks").glob("Pulumi.*.yaml"))
KINDS = ["aws", "external", "kubernetes", "local", "ssh"]


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=lambda p: p.name)
def test_coderig_render_plans_once_and_renders_each_machine_once(stack_file: Path) -> None:
    counts, machines = bench.render_counts(stack_file)
    assert counts["plan_stack"] == 1, counts
    assert counts["render_node"] == machines and counts["compose_dict"] == machines, (counts, machines)


@pytest.mark.parametrize("kind", KINDS)
def test_a_program_run_plans_once_and_renders_each_machine_once(kind: str) -> None:
    counts, machines = bench.program_counts(kind)
    assert counts["plan_stack"] == 1, counts
    assert counts["render_node"] == machines and counts["compose_dict"] == machines, (counts, machines)
    assert machines >= (0 if kind == "kubernetes" else 1)


def test_the_counter_sees_every_call() -> None:
    """Control: a second plan of the same stack inside the window is counted."""
    from coderig.targets import load_stack_file

    settings = load_stack_file(STACK_FILES[0])
    with bench.counting() as counts:
        planner.plan_stack(settings)
        planner.plan_stack(settings)
    assert counts["plan_stack"] == 2
