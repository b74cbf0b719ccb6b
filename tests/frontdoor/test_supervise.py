"""The supervisor's parts on real processes: a child's whole process group goes, also when its leader
(the child we started) was killed first, and restarts back off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from coderig.frontdoor.supervise import BACKOFF_MAX_S, Child, Supervisor, backoff_s, group_members, stop_group

# a master with two workers in its process group, like nginx's and LiteLLM's
WORKERS = (
    "import subprocess, sys, time\n"
    "for _ in range(2): subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "time.sleep(60)"
)


def test_backoff_doubles_up_to_a_ceiling() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_s(50) == BACKOFF_MAX_S


def _wait_members(pgid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 20
    while len(members := group_members(pgid)) < count:
        assert time.monotonic() < deadline, members
        time.sleep(0.05)
    return members


def test_a_group_whose_leader_was_killed_leaves_no_worker_behind() -> None:
    """kill -9 of a master (nginx, LiteLLM) leaves its workers running: stopping the group ends them."""
    leader = subprocess.Popen([sys.executable, "-c", WORKERS], start_new_session=True)
    assert len(_wait_members(leader.pid, 3)) == 3
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(5)
    assert len(group_members(leader.pid)) == 2  # the orphans: still there
    stop_group(leader.pid, grace_s=5)
    assert group_members(leader.pid) == []


def test_the_supervisor_restarts_an_exited_child_after_clearing_its_group() -> None:
    child = Child("workers", [sys.executable, "-c", WORKERS], lambda: True, startup_s=10)
    supervisor = Supervisor([child])
    try:
        assert supervisor.start(child) and child.proc is not None
        first = child.proc.pid
        _wait_members(first, 3)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while child.restarts == 0 or child.state != "up":
            assert time.monotonic() < deadline
            supervisor.poll()
            time.sleep(0.05)
        assert group_members(first) == [] and child.proc.pid != first and supervisor.degraded() == []
    finally:
        supervisor.close()
    assert group_members(child.proc.pid) == []
