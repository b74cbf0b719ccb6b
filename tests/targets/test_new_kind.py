"""Adding a target kind is one folder plus one registry entry: a throwaway kind `bench` (a GPU box on
this workstation that keeps its weights under a named bench directory) is written into a temporary
folder that becomes the package `bench` under coderig/targets, its Pulumi builder (the one piece the
layering keeps out of coderig/) into one that becomes `stacks.bench`, and one entry is added to
REGISTRY. Nothing else is touched, and validation (every problem at once, naming the key, core's
problems with the kind's), `coderig plan` / `coderig render`, `coderig stop`, the registry's own check
and a Pulumi-mock program run all know the kind."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_program, write_stack
from registry_check import registry_problems

import coderig.targets
import stacks
from coderig.cli import main
from coderig.core.errors import UserError
from coderig.targets import REGISTRY, TargetKind, parse_settings
from coderig.targets.compose.rendered import render_node_files

SETTINGS = '''
    """The `coderig:target` settings of kind `bench`."""

    from __future__ import annotations

    import os
    from typing import Any, ClassVar, Literal

    from pydantic import Field, field_validator

    from coderig.core.settings_base import Loc
    from coderig.core.target_base import GpuSpec, TargetSettings


    def _not_in_tmp(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
        if str(given.get("benchDir", "")).startswith("/tmp/"):
            return [(("benchDir",), "is under /tmp, which is wiped on reboot: use a lasting directory", None)]
        return []


    class BenchTarget(TargetSettings):
        kind: Literal["bench"]
        idle_actions: ClassVar[tuple[str, ...]] = ("stop",)
        bench: str = Field(description="the bench's name")
        benchDir: str = "~/bench"
        gpu: GpuSpec | None = None

        @field_validator("bench")
        @classmethod
        def _short(cls, v: str) -> str:
            if not v.isalnum():
                raise ValueError(f"got {v!r}; a bench name is letters and digits")
            return v

        @property
        def runs_locally(self) -> bool:
            return True

        @property
        def node_cache_path(self) -> str:
            return os.path.expanduser(self.benchDir)

        given_checks = (_not_in_tmp,)
'''

STACK = '''
    """`bench` target: the node bundle on this workstation."""

    from __future__ import annotations

    from coderig.targets.bench.settings import BenchTarget
    from coderig.targets.compose.rendered import render_nodes
    from components.node import NodeStack, NodeStackArgs, front_door_access, local_connection
    from stacks import StackContext
    from stacks.outputs import client_outputs


    def build(ctx: StackContext) -> dict[str, object]:
        s = ctx.settings
        assert isinstance(s.target, BenchTarget)
        (node,) = render_nodes(s, ctx.plan)
        access = front_door_access(s, ["localhost"], ctx.secrets)
        args = NodeStackArgs(s, node, local_connection(), access.secrets, bundle_dir=ctx.stack + "-bundle")
        NodeStack("node-bench", args)
        keys = access.developer_keys
        outputs = client_outputs(ctx, host="localhost", port=s.gateway.port, ca_pem=access.ca_pem, tokens=keys)
        return {**outputs, "bench": s.target.bench}
'''


@pytest.fixture
def bench_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """The kind's folder and its builder in temporary folders, and its one registry entry."""
    folder = tmp_path / "kinds" / "bench"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (tmp_path / "builders").mkdir()
    (tmp_path / "builders" / "bench.py").write_text(textwrap.dedent(STACK))
    monkeypatch.setattr(coderig.targets, "__path__", [*coderig.targets.__path__, str(tmp_path / "kinds")])
    monkeypatch.setattr(stacks, "__path__", [*stacks.__path__, str(tmp_path / "builders")])
    from coderig.targets.bench.settings import BenchTarget  # pyright: ignore[reportMissingImports]

    monkeypatch.setitem(
        REGISTRY, "bench", TargetKind(BenchTarget, render_node_files, "stacks.bench", None, instead="unplug it")
    )
    yield BenchTarget
    for name in ("coderig.targets.bench", "coderig.targets.bench.settings", "stacks.bench"):
        sys.modules.pop(name, None)
    for package in (coderig.targets, stacks):
        if hasattr(package, "bench"):
            delattr(package, "bench")


MODEL = {"preset": "qwen3-1.7b-cpu"}


def test_the_registry_check_passes_with_the_new_entry(bench_kind: type) -> None:
    assert registry_problems(REGISTRY) == []


def test_validation_knows_the_kind_and_reports_every_problem_at_once(bench_kind: type) -> None:
    s = parse_settings({"target": {"kind": "bench", "bench": "b1"}, "model": MODEL, "developers": ["dev"]})
    assert isinstance(s.target, bench_kind) and s.target.node_cache_path.endswith("/bench")
    with pytest.raises(UserError) as exc:
        parse_settings(
            {
                "target": {"kind": "bench", "bench": "b 1", "benchDir": "/tmp/b", "color": "red"},
                "model": MODEL,
                "developers": ["Dev Ops"],
            }
        )
    problems = exc.value.problems
    assert sorted(problems) == sorted(
        [
            "coderig:target.bench: got 'b 1'; a bench name is letters and digits",
            "coderig:target.color: unknown key; allowed here: bench, benchDir, gpu, kind",
            "coderig:target.benchDir: is under /tmp, which is wiped on reboot: use a lasting directory",
            "coderig:developers[0]: got 'Dev Ops': not a valid name; use lowercase letters, digits, '.', '_', '-' "
            "(max 63)",
        ]
    ), problems
    with pytest.raises(UserError) as exc:
        parse_settings({"target": {"kind": "gcp"}, "model": MODEL})
    assert exc.value.problems == [
        "coderig:target.kind: got 'gcp'; allowed: local, ssh, aws, kubernetes, external, bench"
    ]


def test_plan_render_and_stop_know_the_kind(
    bench_kind: type, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = {"target": {"kind": "bench", "bench": "b1"}, "model": MODEL, "developers": ["dev"]}
    path = write_stack(tmp_path, stack, "lab")
    assert main(["plan", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is True
    out = tmp_path / "out"
    assert main(["render", "--config", str(path), "--out", str(out)]) == 0
    rendered = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    local = tmp_path / "local"
    local_path = write_stack(tmp_path, {**stack, "target": {"kind": "local"}}, "lab2")
    assert main(["render", "--config", str(local_path), "--out", str(local)]) == 0
    # the compose machinery renders the new kind's machine as it does a local one's
    assert rendered == {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert "compose.yaml" in {Path(p).name for p in rendered}
    capsys.readouterr()
    assert main(["stop", "lab", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "coderig:target.kind is bench" in err and "unplug it" in err and "Traceback" not in err


def test_a_program_run_builds_the_kind_through_its_entry(bench_kind: type) -> None:
    run = run_program({"target": {"kind": "bench", "bench": "b1"}, "model": MODEL, "developers": ["dev"]})
    assert run.error is None, repr(run.error)
    assert run.outputs["bench"] == "b1"
    assert len(run.of_type("coderig:node:NodeStack")) == 1
