"""Which usage record a front-door pod keeps, on a volume its Deployment's pods share (stdlib only).

`python -m coderig.runtime.usage_slot -- python -m coderig.runtime.sse_keepalive … --usage-file DIR/usage.json …`

Pods of a Deployment have no stable identity, so each relay takes a slot instead: the first N whose
lock file `DIR/usage-N.lock` it can lock (flock, exclusive, non-blocking; NFS and EFS honour it), and
runs the command with `--usage-file DIR/usage-N.json`. The lock's descriptor is inherited across exec,
so the slot is held for the relay's whole life and freed when it exits, whatever the cause; the next
pod (a restart, a rollout's new pod) takes it and loads that record, so counters survive a pod
restart. A rollout with a surge pod uses one slot more for a while: its record is kept too, and the
records of all slots together are the front door's usage.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Sequence
from pathlib import Path

MAX_SLOTS = 64


def take_slot(directory: Path, limit: int = MAX_SLOTS) -> tuple[int, int]:
    """(slot, locked descriptor) of the first free slot; OSError when every slot is held."""
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(limit):
        fd = os.open(directory / f"usage-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    raise OSError(f"all {limit} usage record slots in {directory} are held by running relays")


def with_slot(command: Sequence[str], slot: int) -> list[str]:
    """`command` with its --usage-file DIR/NAME replaced by DIR/usage-SLOT.json."""
    out = list(command)
    i = out.index("--usage-file") + 1
    out[i] = str(Path(out[i]).with_name(f"usage-{slot}.json"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[1:] if args[:1] == ["--"] else args
    if "--usage-file" not in command[:-1]:
        print("usage_slot: expected -- COMMAND … --usage-file DIR/NAME …", file=sys.stderr)
        return 2
    record = Path(command[command.index("--usage-file") + 1])
    try:
        slot, fd = take_slot(record.parent)
    except OSError as exc:
        print(f"usage_slot: {exc}", file=sys.stderr)
        return 1
    os.set_inheritable(fd, True)  # the relay holds the lock until it exits
    command = with_slot(command, slot)
    print(f"usage_slot: slot {slot}: {command[command.index('--usage-file') + 1]}", flush=True)
    os.execvp(command[0], command)  # noqa: S606 - the relay's own argv, from the pod spec
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
