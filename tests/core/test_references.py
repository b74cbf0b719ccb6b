"""Every `coderig.<module>` a docstring, a comment or a document cites resolves to a module (or a
name in one) that exists, so a reader following a reference lands somewhere. Values that merely look
like module paths (a bundle's `kind`, a file name such as ~/.ssh/coderig.pub) are data, not references."""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize

from conftest import ROOT

from coderig.client.bundle import DEVELOPER_KIND, STACK_KIND

CITE = re.compile(r"""(?<!["'\w./-])coderig(?:\.[A-Za-z_]\w*)+""")
DATA = {STACK_KIND, DEVELOPER_KIND}  # bundle kinds: values, not modules
PACKAGES = ("coderig", "components", "stacks", "tests", "bench")


def prose(text: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python source."""
    out = [
        (t.start[0], t.string)
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append((node.body[0].lineno, doc))
    return out


def resolves(dotted: str) -> bool:
    """The longest importable prefix, then attributes for the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def unresolved(texts: list[tuple[str, int, str]]) -> list[str]:
    return [
        f"{where}:{line}: {m.group(0)}"
        for where, line, text in texts
        for m in CITE.finditer(text)
        if m.group(0) not in DATA and not resolves(m.group(0))
    ]


def cited_texts() -> list[tuple[str, int, str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "golden" not in p.parts]
    texts = [
        (str(p.relative_to(ROOT)), line, t) for p in [*files, ROOT / "__main__.py"] for line, t in prose(p.read_text())
    ]
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return texts + [(str(d.relative_to(ROOT)), 0, d.read_text()) for d in docs if d.exists()]


def test_every_cited_coderig_module_exists() -> None:
    assert unresolved(cited_texts()) == []


def test_the_reference_check_finds_a_stale_one() -> None:
    source = (
        '"""Uses coderig.kube_ops and coderig.core.planner.plan_stack."""\n'
        "# see coderig.core.planner.gone, not ~/.ssh/coderig.pub\n"
        'KIND = "coderig.other"\n'
    )
    texts = [("x.py", line, t) for line, t in prose(source)]
    assert sorted(unresolved(texts)) == ["x.py:1: coderig.kube_ops", "x.py:2: coderig.core.planner.gone"]


def kinds_table(text: str) -> dict[str, list[str]]:
    """The rows of the development guide's target-kind table: kind -> its cells, backticks removed."""
    section = text[text.index("Target kinds as the registry declares them") :]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {
        cells[0]: cells[1:] for cells in ([c.strip().replace("`", "") for c in r.strip("|").split("|")] for r in rows)
    }


def registry_rows() -> dict[str, list[str]]:
    from coderig.targets import REGISTRY

    return {
        kind: [
            e.settings.__name__,
            e.stack_module,
            "idle · stop · start" if e.operations else "none",
            ", ".join(sorted(e.features)),
        ]
        for kind, e in REGISTRY.items()
    }


def test_the_development_guide_lists_each_kind_as_the_registry_declares_it() -> None:
    assert kinds_table((ROOT / "docs" / "development.md").read_text()) == registry_rows()


def test_the_kinds_table_check_sees_a_stale_row() -> None:
    text = (ROOT / "docs" / "development.md").read_text().replace("`idle:scale-to-zero`, ", "")
    assert kinds_table(text) != registry_rows()
