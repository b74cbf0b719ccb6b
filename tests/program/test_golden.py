"""Golden files: `coderig render` of six stack files and the URN set of every target's mock program.

A change to what a stack deploys must show up here as a deliberate diff. Regenerate with
`CODERIG_UPDATE_GOLDEN=1 uv run pytest tests/test_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from coderig.cli import main

GOLDEN = ROOT / "tests" / "golden"
STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (GOLDEN / "stacks").glob("Pulumi.*.yaml"))
UPDATE = os.environ.get("CODERIG_UPDATE_GOLDEN") == "1"


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_six_golden_stacks():
    assert len(STACKS) >= 6, STACKS


@pytest.mark.parametrize("stack", STACKS)
def test_render_is_byte_identical_to_golden(stack, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["render", "--config", str(GOLDEN / "stacks" / f"Pulumi.{stack}.yaml"), "--out", str(out)]) == 0
    capsys.readouterr()
    expected_dir = GOLDEN / "rendered" / stack
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        shutil.copytree(out, expected_dir)
    got, want = _tree(out), _tree(expected_dir)
    assert sorted(got) == sorted(want), "rendered file set changed"
    for path in sorted(want):
        assert got[path][0] == want[path][0], f"{stack}: {path} differs from the golden file"
        assert got[path][1] == want[path][1], f"{stack}: {path} mode differs"


def test_every_target_registers_the_golden_urns():
    from programs import TARGETS

    got = {}
    for kind, run_target in sorted(TARGETS.items()):
        run = run_target()
        assert run.error is None, repr(run.error)
        got[kind] = sorted(f"{r.typ}::{r.name}" for r in run.resources)
    path = GOLDEN / "urns.json"
    if UPDATE:
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(path.read_text())
