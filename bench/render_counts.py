"""How many times one stack is planned and its nodes rendered: per `coderig render` of each golden
stack file, and per Pulumi-mock program run of each target kind (tests/programs.py TARGETS).

    uv run python bench/render_counts.py

Counts calls of `planner.plan_stack` (the stack's capacity plan), `spec.compose_dict` (one node's
compose services) and, where it exists, `rendered.render_node` (one node rendered once into files,
services and hashes), wherever a module holds them. tests/program/test_render_counts.py asserts the
same figures.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

COUNTED = {
    "plan_stack": ("coderig.core.planner", "plan_stack"),
    "compose_dict": ("coderig.targets.compose.spec", "compose_dict"),
    "render_node": ("coderig.targets.compose.rendered", "render_node"),
}


@contextlib.contextmanager
def counting() -> Iterator[Counter[str]]:
    """Every module attribute bound to a counted function calls a counting wrapper meanwhile."""
    counts: Counter[str] = Counter()
    undo: list[tuple[Any, str, Any]] = []
    for label, (module, attr) in COUNTED.items():
        try:
            original = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue

        def wrapper(*a: Any, _f: Callable[..., Any] = original, _l: str = label, **k: Any) -> Any:
            counts[_l] += 1
            return _f(*a, **k)

        for mod in list(sys.modules.values()):
            name = getattr(mod, "__name__", "")
            if name.split(".")[0] in ("coderig", "components", "stacks") and getattr(mod, attr, None) is original:
                setattr(mod, attr, wrapper)
                undo.append((mod, attr, original))
    try:
        yield counts
    finally:
        for mod, attr, original in undo:
            setattr(mod, attr, original)


def render_counts(stack_file: Path) -> tuple[Counter[str], int]:
    """(calls, machines rendered) for `coderig render` of one stack file."""
    from coderig.cli import main

    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        with counting() as counts:
            assert main(["render", "--config", str(stack_file), "--out", out]) == 0
        machines = sum(1 for _ in Path(out).rglob("compose.yaml"))
    return counts, machines


def program_counts(kind: str) -> tuple[Counter[str], int]:
    """(calls, NodeStack components) for the mock program of one target kind."""
    import programs  # pyright: ignore[reportMissingImports] - tests/programs.py, on sys.path above

    run_target = programs.TARGETS[kind]
    with counting() as counts:
        run = run_target()
    assert run.error is None, repr(run.error)
    return counts, len(run.of_type("coderig:node:NodeStack"))


def main() -> None:
    import programs  # pyright: ignore[reportMissingImports] - tests/programs.py, on sys.path above

    for module in ("stacks.local", "stacks.ssh", "stacks.aws", "stacks.kubernetes", "stacks.external"):
        importlib.import_module(module)  # loaded before the counters go in

    for f in sorted((ROOT / "tests" / "golden" / "stacks").glob("Pulumi.*.yaml")):
        counts, machines = render_counts(f)
        print(f"coderig render {f.name:24} machines {machines}  {dict(sorted(counts.items()))}")
    for kind in sorted(programs.TARGETS):
        counts, machines = program_counts(kind)
        print(f"mock program   {kind:24} machines {machines}  {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
