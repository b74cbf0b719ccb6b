"""coderig.runtime.usage_slot: each relay sharing a usage volume takes its own record slot, holds it for
its whole life (the lock crosses exec), and a later relay takes a freed slot back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

from coderig.runtime import usage_slot


def test_each_holder_gets_its_own_slot_and_a_freed_one_is_taken_back(tmp_path: Path) -> None:
    first, fd0 = usage_slot.take_slot(tmp_path / "usage")
    second, fd1 = usage_slot.take_slot(tmp_path / "usage")
    assert (first, second) == (0, 1)
    os.close(fd0)  # the first relay exits
    again, fd2 = usage_slot.take_slot(tmp_path / "usage")
    assert again == 0
    os.close(fd1)
    os.close(fd2)


def test_every_slot_held_is_an_error(tmp_path: Path) -> None:
    fds = [usage_slot.take_slot(tmp_path, limit=2)[1] for _ in range(2)]
    try:
        try:
            usage_slot.take_slot(tmp_path, limit=2)
        except OSError as exc:
            assert "all 2 usage record slots" in str(exc)
        else:
            raise AssertionError("a third holder got a slot")
    finally:
        for fd in fds:
            os.close(fd)


def test_the_relay_runs_with_its_slots_record_and_holds_the_slot_until_it_exits(tmp_path: Path) -> None:
    usage = tmp_path / "usage"
    child = "import sys, time; print(sys.argv[1:], flush=True); time.sleep(3)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "coderig.runtime.usage_slot", "--", sys.executable, "-c", child]
        + ["--usage-file", str(usage / "usage.json"), "--flush", "10"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == f"usage_slot: slot 0: {usage / 'usage-0.json'}"
    assert proc.stdout.readline().strip() == repr(["--usage-file", str(usage / "usage-0.json"), "--flush", "10"])
    # the exec'd program (not the launcher, which is gone) holds slot 0
    held, fd = usage_slot.take_slot(usage)
    assert held == 1
    os.close(fd)
    proc.wait(10)
    time.sleep(0.1)
    freed, fd = usage_slot.take_slot(usage)
    assert freed == 0
    os.close(fd)


def test_a_command_without_a_record_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coderig.runtime.usage_slot", "--", "true"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--usage-file" in proc.stderr and "Traceback" not in proc.stderr
