"""The real Pulumi engine for tests: the CLI, language host and providers `.ci/pulumi-deps.sh`
builds (on PATH after `source .ci/pulumi-deps.sh`), a copy of the project in a temporary directory
(its own `.pulumi-state`), and an environment in which no plugin can be downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PULUMI_VERSION = "v3.274.0"  # .ci/pulumi-deps.sh cli_version
PLUGINS = ("pulumi-language-python", "pulumi-resource-command", "pulumi-resource-random", "pulumi-resource-tls")
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "up.sh", "pyproject.toml", "uv.lock", "README.md")
PROJECT_DIRS = ("coderig", "components", "stacks")


def tools_cache() -> Path:
    return Path(os.environ.get("CODERIG_TOOLS_CACHE", Path.home() / ".cache" / "coderig" / "tools"))


def built_pulumi() -> str:
    """The `pulumi` on PATH, checked to be the one .ci/pulumi-deps.sh built (fails the test if not)."""
    exe = shutil.which("pulumi")
    if exe is None:
        message = "pulumi is not on PATH: `source .ci/pulumi-deps.sh` first (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    real = Path(exe).resolve()
    assert real.is_relative_to(tools_cache().resolve()), f"pulumi on PATH is {real}, not from {tools_cache()}"
    version = subprocess.run([exe, "version"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == PULUMI_VERSION, f"{exe} version is {version}, expected {PULUMI_VERSION}"
    for plugin in (
        "pulumi-language-python",
        "pulumi-resource-command",
        "pulumi-resource-random",
        "pulumi-resource-tls",
    ):
        found = shutil.which(plugin)
        assert found and Path(found).resolve().parent == real.parent, f"{plugin} is not beside {real}: {found}"
    return exe


@dataclass
class Project:
    """A copy of the project with its own file backend and passphrase; `.venv` is the repo's."""

    dir: Path
    home: Path  # PULUMI_HOME: must hold no plugins at the end
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *cmd: str, check: bool = True, stdin: str | None = None, label: str | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(list(cmd), cwd=self.dir, env=self.env, input=stdin, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if label:
            self.timings[label] = round(time.monotonic() - t0, 1)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def pulumi(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("pulumi", *args, "--non-interactive", **kw)  # type: ignore[arg-type]

    def plugins_downloaded(self) -> list[str]:
        plugins = self.home / "plugins"
        return sorted(p.name for p in plugins.iterdir()) if plugins.is_dir() else []


def project_copy(tmp: Path) -> Project:
    """The project's files in `tmp/project` (no state, no stack files), `.venv` linked to the repo's."""
    built_pulumi()
    dest = tmp / "project"
    dest.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, dest / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".venv").symlink_to(ROOT / ".venv")
    home = tmp / "pulumi-home"
    home.mkdir()
    env = {
        **os.environ,
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": f"file://{dest / '.pulumi-state'}",
        "PULUMI_CONFIG_PASSPHRASE": "coderig-engine-test",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "UV_NO_SYNC": "1",  # the linked .venv is the repo's: never re-sync it from the copy
    }
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return Project(dest, home, env)
