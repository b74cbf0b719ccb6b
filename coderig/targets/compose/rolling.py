"""Rolling model restarts across the machines of a compose-based stack (ssh, local, aws): when the model
half changes, one machine's model server restarts at a time, the next only once the one before is back
ready, so the gateway always has a ready replica to send requests to (its upstreams already move a
request off a replica that refuses the connection: coderig.frontdoor.native.failover). Pure.

First `pulumi up` (create) stays parallel: every machine downloads and loads at once. What separates the
two is a `restart-gate` step on machine p that machine n's `up` step depends on (components/node.py):

  - its create is a no-op, so on create the chain costs one SSH round trip per machine;
  - it is delete-before-replace and replaced when p's model half changes; its delete runs on p, after
    p's `up` was replaced, and waits (p's own readiness wait) until p's model server is ready again.
    Only then is the new gate created and n's `up` (down, then up) allowed to run. A delete runs only on
    a replacement or a destroy, never on a first create;
  - on a destroy the gate goes before p's bundle and `up`: the bundle on disk is still the one the
    gate was made with (`.bundle-hash`), so the delete does not wait for anything.

Order: the replicas first (1, 2, …), the first machine (which holds the gateway) last; machines that run
no model server (a front door) are not in the chain.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from coderig.targets.compose.commands import BUNDLE_HASH_FILE


def restart_order(runs_model: Sequence[bool]) -> list[int]:
    """The machines whose model servers restart, in the order they restart: replicas, then machine 0."""
    order = [*range(1, len(runs_model)), 0] if len(runs_model) > 1 else []
    return [i for i in order if runs_model[i]]


def restart_after(runs_model: Sequence[bool]) -> dict[int, int]:
    """{machine: the machine whose model must be ready again before this one's restarts}."""
    order = restart_order(runs_model)
    return dict(zip(order[1:], order[:-1], strict=True))


def gate_delete_command(guard: str, wait_command: str, bundle_dir: str) -> str:
    """The gate's delete on its machine: when the bundle there is no longer the one the gate was made
    with (`guard`: commands.bundle_guard), this machine's model half was just replaced: wait until it is
    ready (`wait_command`, its readiness wait) before the next machine restarts. Otherwise (a destroy,
    or nothing restarted here) return at once."""
    hash_file = shlex.quote(f"{bundle_dir}/{BUNDLE_HASH_FILE}")
    return (
        f'if [ "$(cat {hash_file} 2>/dev/null)" != {shlex.quote(guard)} ]; then '
        "echo 'rolling restart: the next machine restarts once this one is ready again'; "
        f"{wait_command}; else echo 'rolling restart: no restart on this machine'; fi"
    )


GATE_CREATE = "echo 'rolling restart: gate in place'"
