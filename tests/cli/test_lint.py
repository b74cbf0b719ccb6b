"""The tree stays ruff- and pyright-clean (part of the test command, so CI enforces it)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_clean():
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout[-4000:]


def test_pyright_clean():
    result = run("pyright")
    assert result.returncode == 0, result.stdout[-4000:]
