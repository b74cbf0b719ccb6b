"""Rolling model restarts across the machines of a compose-based stack (ssh, local, aws): when the model
half changes, one machine's model server restarts at a time, the next only once the one before is back
ready, so the gateway always has a ready replica to send requests to (its upstreams already move a
request off a replica that refuses the connection: coderig.frontdoor.native.failover). A loading vLLM
refuses connections: it binds its port before loading but listens only once it serves
(vllm 0.34 entrypoints/launchers/launcher.py: create_server_socket binds, uvicorn listens). Pure.

First `pulumi up` (create) stays parallel: every machine downloads and loads at once. What separates the
two is a `restart-gate` step on machine p that machine n's `up` step depends on (components/node.py):

  - its create is a no-op, so on create the chain costs one SSH round trip per machine;
  - it is delete-before-replace and replaced when p's model half changes; its delete runs on p, after
    p's `up` was replaced, and waits (p's own readiness wait) until p's model server is ready again.
    Only then is the new gate created and n's `up` (down, then up) allowed to run. A delete runs only on
    a replacement or a destroy, never on a first create;
  - on a destroy the gate goes before p's bundle and `up`: the files on disk are still the ones the
    gate was made with (`model_files_digest`), so the delete does not wait for anything.

Order: the replicas first (1, 2, …), the first machine (which holds the gateway) last; machines that run
no model server (a front door) are not in the chain.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence

from coderig.core.files import FileSet
from coderig.frontdoor.native import FAIL_TIMEOUT_S


def restart_order(runs_model: Sequence[bool]) -> list[int]:
    """The machines whose model servers restart, in the order they restart: replicas, then machine 0."""
    order = [*range(1, len(runs_model)), 0] if len(runs_model) > 1 else []
    return [i for i in order if runs_model[i]]


def restart_after(runs_model: Sequence[bool]) -> dict[int, int]:
    """{machine: the machine whose model must be ready again before this one's restarts}."""
    order = restart_order(runs_model)
    return dict(zip(order[1:], order[:-1], strict=True))


# The gateway leaves a replica whose connection failed alone for FAIL_TIMEOUT_S (nginx max_fails=1
# fail_timeout): a replica back from its restart gets requests again only after that, so the next machine
# restarts only then (measured: without it, requests failed with 503 while the first host restarted
# within 30 s of the replica, tests/program/test_engine_ssh.py).
GATEWAY_SETTLE_S = FAIL_TIMEOUT_S + 1
MODEL_FILES = ("compose.yaml", "scripts/")  # the model half's non-secret files on a machine


def model_files_digest(files: FileSet) -> str:
    """sha256 over the model half's non-secret files of a machine (compose.yaml, then scripts/* in byte
    order), as `gate_delete_command` recomputes it from the bundle on disk. Not secret: no key is in them."""
    h = hashlib.sha256()
    for path in sorted(p for p in files if p == MODEL_FILES[0] or p.startswith(MODEL_FILES[1])):
        h.update(files[path].content.encode())
    return h.hexdigest()


def gate_delete_command(
    digest: str, wait_env: Mapping[str, str], bundle_dir: str, user: str | None, settle_s: int = GATEWAY_SETTLE_S
) -> str:
    """The gate's delete on its machine. When the bundle there no longer has the files the gate was made
    with (`digest`: model_files_digest), this machine's model half was just replaced: wait until it is
    ready (the shipped wait-ready.sh with `wait_env`, the machine's readiness wait), then until the gateway
    takes it back (`settle_s`), before the next machine restarts; a failed wait stops the roll there.
    Otherwise (a destroy, or nothing changed here) return at once. Only a change of the model half's
    secrets alone (the HF token) restarts without this wait."""
    d = shlex.quote(bundle_dir)
    sudo = "" if user in (None, "root") else "sudo -n "
    assigns = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(wait_env.items()))
    on_disk = f"(cd {d} 2>/dev/null && LC_ALL=C cat compose.yaml scripts/* 2>/dev/null) | sha256sum | cut -c1-64"
    return (
        f'if [ "$({on_disk})" != {digest} ]; then '
        "echo 'rolling restart: the next machine restarts once this one is ready again'; "
        f"{sudo}env {assigns}bash {d}/scripts/wait-ready.sh && "
        f"echo 'rolling restart: ready; {settle_s} s for the gateway to take it back' && "
        f"sleep {settle_s}; "
        "else echo 'rolling restart: no restart on this machine'; fi"
    )


GATE_CREATE = "echo 'rolling restart: gate in place'"
