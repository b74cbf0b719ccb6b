"""The native default path, for real: nginx from `coderig frontdoor run` -> SSE keepalive relay ->
the stand-in's vLLM-0.28-shaped /v1/messages and /v1/responses; LiteLLM only for names the model
server does not serve. Claude Code itself drives the tool round trip and the long silent prefill."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from frontdoor_fixtures import NPM_PREFIX, FrontDoor, require_tool, running_frontdoor, standin_server
from standin import StandIn

pytestmark = pytest.mark.integration

MODEL = "native-model"
KEYS = {"alice": "alice-native-0123456789abcdef"}
ALIASES = ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
           "ANTHROPIC_DEFAULT_OPUS_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL")  # fmt: skip


def claude_env(door: FrontDoor, home: Path, base_url: str | None = None) -> dict[str, str]:
    return {
        "PATH": f"{NPM_PREFIX / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": base_url or door.url, "ANTHROPIC_AUTH_TOKEN": KEYS["alice"],
        "NODE_EXTRA_CA_CERTS": str(door.ca), **dict.fromkeys(ALIASES, MODEL),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "4096",
    }  # fmt: skip


def posts(model: StandIn) -> list[str]:
    return [r.path for r in model.seen() if r.method == "POST"]


def access_log(door: FrontDoor) -> list[dict[str, str]]:
    return [json.loads(line) for line in (door.state_dir / "gateway-access.log").read_text().splitlines()]


def test_claude_code_tool_round_trip_goes_native(tmp_path: Path) -> None:
    claude = require_tool("claude")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(model.url, MODEL, tmp_path / "door", KEYS) as door,
    ):
        proc = subprocess.run(
            [claude, "-p", "Create a file hello.txt containing hello native door", "--permission-mode", "acceptEdits",
             "--output-format", "json"],
            cwd=work, env=claude_env(door, home), capture_output=True, text=True, timeout=240,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert (work / "hello.txt").read_text() == "hello native door\n"
        turns = model.seen("/v1/messages")
        assert len(turns) >= 2 and not model.seen("/v1/chat/completions")  # native, no translation
        assert {t.body["model"] for t in turns} == {MODEL}
        assert any(b.get("type") == "tool_result" for b in turns[-1].body["messages"][-1]["content"])
        sessions = {t.headers.get("x-claude-code-session-id") for t in turns}
        assert len(sessions) == 1 and None not in sessions  # the session header reaches the model server
        mine = [e for e in access_log(door) if e["path"] == "/v1/messages"]
        assert mine and all(e["status"] == "200" and e["developer"] == "alice" for e in mine)


def test_claude_names_fall_back_to_litellm_and_count_tokens_is_native(tmp_path: Path) -> None:
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(model.url, MODEL, tmp_path / "door", KEYS) as door,
    ):
        body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        reply = door.post("/v1/messages?beta=true", body, key=KEYS["alice"])
        assert reply.status == 200, reply.body
        assert reply.json()["type"] == "message"
        # vLLM's 404 for the unknown name, then LiteLLM's translation of the replayed request
        assert posts(model) == ["/v1/messages", "/v1/chat/completions"]
        model.clear()
        count = door.post("/v1/messages/count_tokens?beta=true", {**body, "model": MODEL}, key=KEYS["alice"])
        assert count.status == 200 and count.json()["input_tokens"] > 0
        assert posts(model) == ["/v1/messages/count_tokens"]
        model.clear()
        events = [e for _, e, _ in door.stream("/v1/responses", {"model": MODEL, "input": "hi", "stream": True},
                                               KEYS["alice"])]  # fmt: skip
        assert events[-1] == "response.completed"
        assert posts(model) == ["/v1/responses"]


# ---------------------------------------------------------------- a long silent prefill


class IdleCuttingProxy:
    """A TCP proxy like a corporate proxy or load balancer: it closes a connection that carried no
    byte in either direction for `idle_s`. Records the longest silence it saw and how many it cut."""

    def __init__(self, target_port: int, idle_s: float) -> None:
        self.target_port, self.idle_s = target_port, idle_s
        self.cut = 0
        self.longest_gap = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> IdleCuttingProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        last = [time.monotonic()]

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    now = time.monotonic()
                    self.longest_gap = max(self.longest_gap, now - last[0])
                    last[0] = now
                    writer.write(data)
                    await writer.drain()

        async def watchdog() -> None:
            while time.monotonic() - last[0] < self.idle_s:
                await asyncio.sleep(0.5)
            self.cut += 1

        tasks = [asyncio.ensure_future(t) for t in (pump(client_r, up_w), pump(up_r, client_w), watchdog())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (client_w, up_w):
            w.close()


def test_idle_cutting_proxy_cuts_a_silent_connection() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def scenario() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        with IdleCuttingProxy(server.sockets[0].getsockname()[1], idle_s=1) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after 1 s of silence
            writer.close()
            assert proxy.cut == 1
        server.close()

    asyncio.run(scenario())


def test_claude_code_turn_survives_150s_of_prefill_silence_behind_a_60s_idle_cut(tmp_path: Path) -> None:
    claude = require_tool("claude")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with (
        standin_server(model=MODEL) as model,
        running_frontdoor(model.url, MODEL, tmp_path / "door", KEYS) as door,
        IdleCuttingProxy(door.port, idle_s=60) as proxy,
    ):
        started = time.monotonic()
        proc = subprocess.run(
            [claude, "-p", "Say hello. [standin first_delay=150 tokens=5]", "--output-format", "json"],
            cwd=work, env=claude_env(door, home, f"https://127.0.0.1:{proxy.port}"), capture_output=True,
            text=True, timeout=420, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        result = json.loads(proc.stdout)
        assert result["is_error"] is False and result["result"], result
        assert took >= 150, took  # the silence really happened
        assert len(model.seen("/v1/messages")) == 1  # one request: no client retry after a cut
        assert proxy.cut == 0 and proxy.longest_gap < 20, (proxy.cut, proxy.longest_gap)


# ---------------------------------------------------------------- replicas and sessions


@contextlib.contextmanager
def two_replicas(tmp_path: Path) -> Iterator[tuple[list[StandIn], FrontDoor]]:
    with (
        standin_server(model=MODEL) as a,
        standin_server(model=MODEL) as b,
        running_frontdoor(a.url, MODEL, tmp_path / "door", KEYS, "--backend", b.url, "--rate-burst", "500") as door,
    ):
        yield [a, b], door


def turn(door: FrontDoor, session: str) -> int:
    body = {"model": MODEL, "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    reply = door.post("/v1/messages", body, key=KEYS["alice"], extra_headers={"X-Claude-Code-Session-Id": session})
    assert reply.status == 200 and b"message_stop" in reply.body, reply.body[:300]
    return reply.status


def landed(replicas: list[StandIn], session: str) -> list[int]:
    return [sum(1 for r in rep.seen("/v1/messages") if r.headers.get("x-claude-code-session-id") == session)
            for rep in replicas]  # fmt: skip


def test_one_session_one_replica_sessions_spread_and_a_dead_replica_fails_over(tmp_path: Path) -> None:
    with two_replicas(tmp_path) as (replicas, door):
        for _ in range(20):
            turn(door, "session-one")
        assert sorted(landed(replicas, "session-one")) == [0, 20]

        sessions = [f"session-{i:02d}" for i in range(20)]
        for s in sessions:
            turn(door, s)
        homes = {s: landed(replicas, s).index(1) for s in sessions}
        per_replica = [list(homes.values()).count(i) for i in (0, 1)]
        assert min(per_replica) >= 4, per_replica  # both replicas serve sessions

        dead = 0
        replicas[dead].stop()
        orphans = [s for s in sessions if homes[s] == dead]
        for s in orphans:  # the next turn of each of the dead replica's sessions succeeds elsewhere
            turn(door, s)
            assert landed(replicas, s)[1] == 1
        for s in sessions:  # and the survivors' sessions stay where their cache is
            if homes[s] == 1:
                turn(door, s)
                assert landed(replicas, s)[1] == 2
        failed = [e for e in access_log(door) if e["status"] != "200"]
        assert not failed, failed
        # the dead replica cost one failed attempt in all, not one per orphaned session or per worker:
        # max_fails=1 in a zone every worker shares keeps it out for fail_timeout (30 s)
        errors = (door.state_dir / "gateway-error.log").read_text().splitlines()
        attempts = [ln for ln in errors if "upstream prematurely closed" in ln or "connect() failed" in ln]
        assert len(orphans) >= 4 and len(attempts) == 1, attempts
