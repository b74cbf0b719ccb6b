"""What keeps `coderig frontdoor run` from leaving anything behind: children that die with it, a
keys include with no name on disk, and removal of the prefixes of runs that were killed (the
process groups of its children: coderig.frontdoor.supervise)."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coderig.core.files import write_file

PREFIX_NAME = "coderig-frontdoor-"  # temporary nginx prefixes: <tempdir>/coderig-frontdoor-XXXX
RUNNER_PID = "runner.pid"  # in a prefix: the pid of the run that owns it
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
USAGE_FILE = "usage.json"  # in --state-dir: the usage record (coderig.runtime.usage_record)


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn after which the child gets SIGTERM when this process dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG; None elsewhere). nginx's master stops its workers on SIGTERM,
    LiteLLM (uvicorn) its workers."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class KeysInclude:
    """The gateway's keys include without a name on disk: a nameless (O_TMPFILE, or created and
    unlinked at once) file this process holds open, which nginx reads as /proc/<pid>/fd/<n>. It
    disappears with the process, however the process ends. Where /proc is missing, a 0600 file
    in the (0700) prefix, removed on exit."""

    def __init__(self, directory: Path, text: str) -> None:
        self.directory = directory
        self.proc_fd = Path(f"/proc/{os.getpid()}/fd").is_dir()
        self.fallback = directory / "gateway-keys.conf"
        self.fd = self._nameless(text) if self.proc_fd else -1
        if not self.proc_fd:
            write_file(self.fallback, text)

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}" if self.proc_fd else str(self.fallback)

    def replace(self, text: str) -> None:
        """New contents for the next nginx reload (same path)."""
        if not self.proc_fd:
            write_file(self.fallback, text)
            return
        new = self._nameless(text)
        os.dup2(new, self.fd, inheritable=False)
        os.close(new)

    def close(self) -> None:
        if self.proc_fd:
            os.close(self.fd)
        else:
            self.fallback.unlink(missing_ok=True)

    def _nameless(self, text: str) -> int:
        try:
            fd = os.open(self.directory, os.O_TMPFILE | os.O_RDWR, 0o600)
        except (AttributeError, OSError):  # no O_TMPFILE here, or not on this file system
            fd, name = tempfile.mkstemp(dir=self.directory)
            os.unlink(name)
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        return fd


def _pid_alive(pid_file: Path) -> bool | None:
    """Whether the process named in `pid_file` runs (None: no readable pid there)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_prefixes(tmp: Path, min_age_s: float = 60) -> list[Path]:
    """Remove the prefixes of runs that are gone (killed before their own cleanup): ours, and no
    live runner or nginx named in them. One without any pid file counts only once older than
    `min_age_s` (a run writes its pid right after creating the prefix)."""
    removed = []
    for prefix in tmp.glob(PREFIX_NAME + "*"):
        try:
            info = prefix.lstat()
        except OSError:
            continue
        if not prefix.is_dir() or prefix.is_symlink() or info.st_uid != os.getuid():
            continue
        alive = [_pid_alive(prefix / name) for name in (RUNNER_PID, "nginx.pid")]
        if True in alive:
            continue
        if alive == [None, None] and time.time() - info.st_mtime < min_age_s:
            continue
        shutil.rmtree(prefix, ignore_errors=True)
        removed.append(prefix)
    return removed


def usage_flags(state_dir: Path, metrics_listen: str, gateway: str) -> list[str]:
    """The relay's accounting flags for `frontdoor run`: the record in the state directory, the
    metrics listener on `metrics_listen` (which the gateway's budget check also asks), the gateway
    it probes."""
    return ["--usage-file", str(state_dir / USAGE_FILE), "--metrics", metrics_listen, "--gateway", gateway]
