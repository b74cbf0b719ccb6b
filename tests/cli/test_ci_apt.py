"""Item 15: every apt-get the project runs (CI's .ci scripts, the node install step, cloud-init)
waits for another apt's locks instead of failing at once."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

APT_SOURCES = [
    *sorted((ROOT / ".ci").glob("*.sh")),
    ROOT / ".ci" / "run",
    *sorted((ROOT / "coderig" / "runtime" / "scripts").glob("*.sh")),
    ROOT / "coderig" / "targets" / "aws" / "plan.py",
]
APT_CALL = re.compile(r"\bapt-get\b(?=[^|;&]*\b(update|install|upgrade|remove|purge|dist-upgrade)\b)")


def apt_calls(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        code = line.split("#", 1)[0] if path.suffix != ".py" else line
        if APT_CALL.search(code) and "command -v" not in code and "install it" not in code:
            lines.append(line.strip())
    return lines


def test_every_apt_get_waits_for_the_dpkg_lock():
    calls = {str(p.relative_to(ROOT)): apt_calls(p) for p in APT_SOURCES if p.exists()}
    assert any(calls.values()), "the scan found no apt-get call at all: the pattern is broken"
    unguarded = [f"{p}: {c}" for p, cs in calls.items() for c in cs if "DPkg::Lock::Timeout" not in c]
    assert not unguarded, "apt-get without -o DPkg::Lock::Timeout=…:\n" + "\n".join(unguarded)


def _hold(lock: Path, seconds: float, ready: threading.Event) -> None:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # apt's own lock kind (fcntl), as a running apt holds it
        ready.set()
        time.sleep(seconds)
    finally:
        os.close(fd)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("apt-get") is None or os.geteuid() != 0, reason="needs apt-get, as root")
def test_ci_apt_update_waits_for_the_lists_lock(tmp_path: Path):
    """apt-get update ignores DPkg::Lock::Timeout for its lists lock (apt 2.6): ci_apt retries.
    A private lists directory and no sources, so nothing on this machine is touched."""
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)
    (tmp_path / "parts").mkdir()
    ready = threading.Event()
    holder = threading.Thread(target=_hold, args=(lists / "lock", 3.0, ready))
    holder.start()
    ready.wait(5)
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", "-c", f"source {ROOT / '.ci' / 'apt.sh'} && ci_apt "
         f"-o Dir::State::Lists={lists} -o Dir::Etc::sourcelist=/dev/null "
         f"-o Dir::Etc::sourceparts={tmp_path / 'parts'} "
         "update -q"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    holder.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - start >= 2.5
    assert "waiting" in proc.stdout
