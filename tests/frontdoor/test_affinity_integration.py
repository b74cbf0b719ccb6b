"""Session affinity for every agent CLI, for real: the pinned Codex and opencode, through
`coderig frontdoor run` (nginx + relay) in front of two stand-in replicas. Every turn of one session
lands on one replica (its prefix cache), and sessions spread over both.

Chance: without affinity each request picks a replica at random, so a session of n turns stays on one
replica with probability 2^(1-n); each client here runs two sessions of >= 5 turns (<= 2^-8 to pass
by luck; a new opencode session makes 2 requests, its title and its answer, each `--session` run 1;
a new Codex session 2, each `exec resume` 1). Spreading is checked over up to 12 fresh sessions (a
correct gateway fails that with probability 2^-11, a gateway that pins every session to one replica
always fails). With the Claude-Code-only map this branch replaced, the Codex test fails (one session's
turns on both replicas)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from frontdoor_fixtures import NPM_PREFIX, FrontDoor, require_tool, running_frontdoor, standin_server
from standin import StandIn

from coderig.client.configs import OPENAI_COMPATIBLE_NPM

pytestmark = pytest.mark.integration

MODEL = "affinity-model"
KEYS = {"alice": "alice-affinity-0123456789abcdef"}
SPREAD_TRIES = 12


@contextlib.contextmanager
def two_replicas(tmp_path: Path) -> Iterator[tuple[list[StandIn], FrontDoor]]:
    with (
        standin_server(model=MODEL) as a,
        standin_server(model=MODEL) as b,
        running_frontdoor(a.url, MODEL, tmp_path / "door", KEYS, "--backend", b.url, "--rate-burst", "500") as door,
    ):
        yield [a, b], door


def homes(replicas: list[StandIn], path: str, header: str) -> dict[str, set[int]]:
    """session id -> the replicas its requests reached (a request without the header fails the test)."""
    out: dict[str, set[int]] = {}
    for i, rep in enumerate(replicas):
        for req in rep.seen(path):
            assert header in req.headers, (header, sorted(req.headers))
            out.setdefault(req.headers[header], set()).add(i)
    return out


def turns(replicas: list[StandIn], path: str, header: str, session: str) -> int:
    return sum(1 for rep in replicas for r in rep.seen(path) if r.headers.get(header) == session)


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def check_affinity(
    replicas: list[StandIn],
    path: str,
    header: str,
    new_session: Callable[[int], None],
    more_turns: Callable[[str], None],
) -> None:
    """Two long sessions each stay on one replica; fresh sessions reach both replicas."""
    for n in range(2):
        before = set(homes(replicas, path, header))
        new_session(n)
        (session,) = set(homes(replicas, path, header)) - before  # the CLI's own session id
        more_turns(session)
        assert turns(replicas, path, header, session) >= 5
        assert len(homes(replicas, path, header)[session]) == 1, homes(replicas, path, header)
    for n in range(2, 2 + SPREAD_TRIES):
        if set().union(*homes(replicas, path, header).values()) == {0, 1}:
            break
        new_session(n)
    found = homes(replicas, path, header)
    assert all(len(h) == 1 for h in found.values()), found
    assert set().union(*found.values()) == {0, 1}, found  # sessions spread over both replicas


def test_codex_sessions_stick_to_one_replica_and_spread(tmp_path: Path) -> None:
    codex = require_tool("codex")
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    with two_replicas(tmp_path) as (replicas, door):
        (home / ".codex" / "config.toml").write_text(
            f'model = "{MODEL}"\nmodel_provider = "coderig"\n\n[model_providers.coderig]\nname = "coderig"\n'
            f'base_url = "{door.url}/v1"\nenv_key = "CODERIG_API_KEY"\nwire_api = "responses"\n'
        )
        env = {"PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
               "CODERIG_API_KEY": KEYS["alice"], "SSL_CERT_FILE": str(door.ca)}  # fmt: skip
        exec_ = [codex, "exec", "--skip-git-repo-check", "-s", "workspace-write"]

        def new_session(n: int) -> None:
            run([*exec_, f"Create a file s{n}.txt containing session {n}"], work, env)

        def more_turns(session: str) -> None:
            for k in range(3):  # resume the same session: Codex sends the same session id again
                run([*exec_, "resume", session, f"Create a file r{k}.txt containing turn {k}"], work, env)

        check_affinity(replicas, "/v1/responses", "session-id", new_session, more_turns)


def test_opencode_sessions_stick_to_one_replica_and_spread(tmp_path: Path) -> None:
    opencode = require_tool("opencode")
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".config" / "opencode").mkdir(parents=True)
    work.mkdir()
    with two_replicas(tmp_path) as (replicas, door):
        provider = {"npm": OPENAI_COMPATIBLE_NPM, "name": "coderig",
                    "options": {"baseURL": f"{door.url}/v1", "apiKey": KEYS["alice"]},
                    "models": {MODEL: {"name": MODEL, "tool_call": True}}}  # fmt: skip
        config = {"provider": {"coderig": provider}, "model": f"coderig/{MODEL}"}
        (home / ".config" / "opencode" / "opencode.json").write_text(json.dumps(config))
        env = {"PATH": f"{Path(opencode).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
               "NODE_EXTRA_CA_CERTS": str(door.ca), "OPENCODE_DISABLE_AUTOUPDATE": "1",
               "OPENCODE_DISABLE_MODELS_FETCH": "1"}  # fmt: skip

        def new_session(n: int) -> None:
            assert "tok0 tok1" in run([opencode, "run", f"Say hello {n}"], work, env)

        def more_turns(session: str) -> None:
            for k in range(3):  # continue the same session: opencode sends the same X-Session-Id again
                run([opencode, "run", "--session", session, f"And again {k}"], work, env)

        check_affinity(replicas, "/v1/chat/completions", "x-session-id", new_session, more_turns)
