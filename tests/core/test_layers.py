"""The layer rules of DESIGN.md, checked on the source: no import cycle among the project's own modules
(function-local imports included), nothing under coderig/ imports pulumi, coderig/runtime/ imports only
the standard library and itself, and each layer imports only the layers below it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from conftest import ROOT
from registry_check import registry_problems

from coderig.targets import REGISTRY

PACKAGES = ("coderig", "components", "stacks")
# each layer may import these (its own modules included); DESIGN.md "Layers"
ALLOWED = {
    "coderig.runtime": {"coderig.runtime"},
    "coderig.core": {"coderig.runtime", "coderig.core"},
    "coderig.frontdoor": {"coderig.runtime", "coderig.core", "coderig.frontdoor"},
    "coderig.targets": {"coderig.runtime", "coderig.core", "coderig.frontdoor", "coderig.targets"},
    "coderig.client": {"coderig.runtime", "coderig.core", "coderig.client"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found["__main__"] = ROOT / "__main__.py"
    return found


def imports_of(path: Path, name: str) -> set[str]:
    """Every module imported anywhere in the file (top level or inside functions), as absolute names."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {name: {m for m in imports_of(path, name) if m in mods and m != name} for name, path in mods.items()}


def find_cycle(g: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (a path that returns to its start), or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    """The search finds a cycle built from real files, one edge a function-local import, three modules
    long, with acyclic modules around it; and finds none once the edge is gone."""
    files = {
        "a": "import b\n",
        "b": "def f():\n    from c import g\n",
        "c": "import a\nimport d\n",
        "d": "",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    g = {n: {m for m in imports_of(tmp_path / f"{n}.py", n) if m in files} for n in files}
    assert find_cycle(g) == ["a", "b", "c", "a"]
    g["c"].discard("a")
    assert find_cycle(g) is None
    assert find_cycle(graph()) is None


def private_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """`_x` names this module takes from another project module: `from m import _x` or `m._x`."""
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}  # local name -> project module it stands for
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in modules and node.module != name:
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif a.name.startswith("_"):
                    found.add(f"{node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names if a.name in modules})
    for node in ast.walk(tree):
        owner = (
            aliases.get(node.value.id) if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) else None
        )
        if owner and owner != name and isinstance(node, ast.Attribute) and re.match(r"_[^_]", node.attr):
            found.add(f"{owner}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    """A helper used by two modules is public (no leading underscore) in the module that owns it."""
    mods = project_modules()
    for name, path in mods.items():
        assert not private_imports(path, name, set(mods)), f"{name} uses {private_imports(path, name, set(mods))}"


def test_the_private_name_check_finds_one(tmp_path: Path) -> None:
    mods = set(project_modules())
    a = tmp_path / "a.py"
    a.write_text("from coderig.frontdoor.nginx import _secret\n")
    b = tmp_path / "b.py"
    b.write_text("from coderig.core import planner\n\nplanner._choose\n")
    c = tmp_path / "c.py"
    c.write_text("from coderig.core import planner\n\nplanner.plan\n")
    assert private_imports(a, "coderig.x", mods) == {"coderig.frontdoor.nginx._secret"}
    assert private_imports(b, "coderig.x", mods) == {"coderig.core.planner._choose"}
    assert private_imports(c, "coderig.x", mods) == set()


def test_coderig_never_imports_pulumi() -> None:
    for name, path in project_modules().items():
        if name.startswith("coderig"):
            bad = {m for m in imports_of(path, name) if m.split(".")[0].startswith("pulumi")}
            assert not bad, f"{name} imports {bad}"


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_runtime_imports_only_the_standard_library() -> None:
    """Three exceptions, imported only inside the functions that use them, from where the code runs:
    boto3 (the Lambda runtime has it; nodes get python3-boto3), huggingface_hub (the weights image
    has it) and vllm (vllm_argcheck runs inside the model server's image). Importing any runtime module
    needs the standard library only."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name, path in project_modules().items():
        if name.startswith("coderig.runtime"):
            found = imports_of(path, name)
            outside = {m for m in found if m.split(".")[0] not in stdlib and not m.startswith("coderig.runtime")}
            lazy = {"boto3", "huggingface_hub", "vllm"}
            assert {m.split(".")[0] for m in outside} <= lazy, f"{name} imports {outside}"
            assert not lazy & top_level_imports(path), f"{name} imports {lazy} at import time"


def test_each_layer_imports_only_the_layers_below_it() -> None:
    for name, path in project_modules().items():
        layer = next((lay for lay in ALLOWED if name == lay or name.startswith(lay + ".")), None)
        if layer is None:
            continue
        for m in imports_of(path, name):
            if m.startswith("coderig.") or m == "coderig":
                if m == "coderig":
                    continue
                assert any(m == ok or m.startswith(ok + ".") for ok in ALLOWED[layer]), f"{name} imports {m}"


def test_the_registry_has_one_complete_entry_per_target_kind() -> None:
    assert registry_problems(REGISTRY) == []


def test_the_registry_check_finds_an_incomplete_entry() -> None:
    import dataclasses

    broken = dict(REGISTRY)
    broken["ssh"] = dataclasses.replace(REGISTRY["ssh"], stack_module="stacks.local", declared=frozenset({"teleport"}))
    broken["aws"] = dataclasses.replace(REGISTRY["aws"], settings=REGISTRY["ssh"].settings, instead="")

    class NoUpstream(REGISTRY["local"].settings):  # a model that serves none and forwards nowhere
        serves_model: ClassVar[bool] = False

    broken["local"] = dataclasses.replace(REGISTRY["local"], settings=NoUpstream)
    assert registry_problems(broken) == [
        "local: serves no model but names no upstream endpoint",
        "ssh: operations but no declared idle mechanism",
        "ssh: unknown feature 'teleport'",
        "ssh: over-ssh declared False but its settings model says True",
        "aws: settings model <class 'coderig.targets.ssh.settings.SshTarget'> is tagged kind ('ssh',), not ('aws',)",
        "aws: over-ssh declared False but its settings model says True",
    ]


_KINDS = "|".join(REGISTRY)
KIND_TEST = re.compile(rf"""kind\s*(==|!=)\s*["']({_KINDS})["']|kind\s+(not\s+)?in\s*[(\[{{]\s*["']({_KINDS})["']""")


def test_no_kind_comparison_outside_the_registry() -> None:
    """A target kind's differences live on its settings model and in the registry: no `kind ==` elsewhere."""
    for name, path in project_modules().items():
        if name in ("coderig.targets", "stacks") or name.startswith("stacks."):  # the registry; one module per kind
            continue
        found = KIND_TEST.search(path.read_text())
        assert found is None, f"{name} dispatches on the target kind: {found.group(0) if found else ''}"


def test_the_kind_check_sees_a_comparison() -> None:
    assert KIND_TEST.search('if t.kind == "aws":') and KIND_TEST.search("if t.kind in ('ssh', 'aws'):")
    assert not KIND_TEST.search('if obj["kind"] == "CronJob":')
    assert not KIND_TEST.search('if kind in ("Deployment", "Job"):')


FMT_DIRECTIVE = re.compile(r"[ \t]*# fmt: (skip|off|on)\b.*$", re.M)


def formatted_line_counts(sources: dict[str, str], tmp: Path) -> dict[str, int]:
    """Lines of each source after `ruff format` with its `# fmt:` directives removed, so lines packed
    by hand count as the formatter would lay them out. One ruff run over copies in `tmp`."""
    for name, text in sources.items():
        (tmp / f"{name}.py").write_text(FMT_DIRECTIVE.sub("", text))
    (tmp / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", "."], cwd=tmp, check=True)
    return {name: len((tmp / f"{name}.py").read_text().splitlines()) for name in sources}


def test_no_product_module_over_500_formatted_lines(tmp_path: Path) -> None:
    sources = {name: path.read_text() for name, path in project_modules().items()}
    counts = formatted_line_counts(sources, tmp_path)
    over = {name: n for name, n in counts.items() if n > 500}
    assert not over, f"over 500 lines once formatted: {over}"


ROLE_COMPARISON = re.compile(r"\.role\s*(==|!=|in\b|not\s+in\b)")


def test_node_roles_are_asked_through_the_nodes_properties() -> None:
    """A machine's role is compared only inside NodeSpec's own properties (runs_model, runs_front_door,
    is_replica, …): everywhere else asks those, so a new role changes one file."""
    home = "coderig.targets.compose.machines"
    found = [
        f"{name}:{i}"
        for name, path in project_modules().items()
        if name != home
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if ROLE_COMPARISON.search(line)
    ]
    assert not found, f"node roles compared as strings: {found}"
    assert ROLE_COMPARISON.search('if spec.role != "full":') and ROLE_COMPARISON.search("x.role in ROLES")


def test_product_code_is_laid_out_by_the_formatter() -> None:
    """No `# fmt:` directive in product code: what ruff lays out is what a reader sees (and packing
    lines behind one cannot hide a module's size)."""
    found = {
        name: m.group(0).strip()
        for name, path in project_modules().items()
        if (m := FMT_DIRECTIVE.search(path.read_text()))
    }
    assert not found, f"# fmt: directives in product code: {found}"


def test_the_size_check_counts_packed_lines_as_formatted(tmp_path: Path) -> None:
    """A call packed onto one line behind `# fmt: skip` counts as the lines ruff would give it."""
    args = ", ".join(f"argument_number_{i}=1" for i in range(12))
    packed = f"f({args})  # fmt: skip\n"
    assert len(packed.splitlines()) == 1
    assert formatted_line_counts({"packed": packed}, tmp_path)["packed"] == 14


def test_every_component_takes_name_args_opts_with_a_dataclass_args_type() -> None:
    """Components in the style of pulumi-eks/awsx: `(name, args, opts)`, args a dataclass type,
    `register_outputs` called in the constructor."""
    import dataclasses
    import importlib
    import inspect
    import typing

    import pulumi

    found = []
    for path in sorted((ROOT / "components").glob("*.py")):
        module = importlib.import_module(f"components.{path.stem}")
        for cls in vars(module).values():
            if not (
                inspect.isclass(cls) and issubclass(cls, pulumi.ComponentResource) and cls.__module__ == module.__name__
            ):
                continue
            found.append(cls.__name__)
            params = list(inspect.signature(cls.__init__).parameters)
            assert params == ["self", "name", "args", "opts"], (cls.__name__, params)
            args_type = typing.get_type_hints(cls.__init__)["args"]
            assert dataclasses.is_dataclass(args_type), (cls.__name__, args_type)
            assert "self.register_outputs(" in inspect.getsource(cls.__init__), cls.__name__
    assert len(found) >= 9, found
