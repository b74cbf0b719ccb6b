"""The relay keeps asking each model what state it is in between requests, so GET /state (what
`coderig idle` shows) tells the truth: a model that came up after the relay reads awake without a
request waking it, and one put to sleep by someone else reads sleeping. A probe never overrides
what the reaper decided while it ran."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from frontdoor_fixtures import free_port
from wake_rig import MODEL, Rig, start_model_process, wake_rig

from coderig.runtime import relay_wake

MSG = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def wait_for(rig: Rig, state: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    route = rig.relay_state()
    while route["state"] != state and time.monotonic() < deadline:
        time.sleep(0.1)
        route = rig.relay_state()
    return route


@pytest.mark.integration
def test_a_model_started_after_the_relay_reads_awake_and_is_not_woken_for_it(tmp_path: Path) -> None:
    port = free_port()
    with wake_rig(tmp_path, port, wake=("--wake", "sleep", "--probe-interval", "0.3")) as rig:
        assert rig.relay_state()["state"] == "stopped"  # nothing listened when the relay started
        proc = start_model_process(port)
        try:
            route = wait_for(rig, "awake")
            assert route["state"] == "awake", route
            assert route["wakes_total"] == 0 and route["requests_total"] == 0  # no request needed
            # someone else puts it to sleep (by hand, not through the reaper): the relay reads it
            urllib.request.urlopen(  # noqa: S310 - the stand-in on loopback
                urllib.request.Request(f"http://127.0.0.1:{port}/sleep?level=1", data=b"", method="POST"), timeout=10
            ).close()
            assert wait_for(rig, "sleeping")["state"] == "sleeping"
            # and the next request is held and wakes it, as any request for a sleeping model is
            assert rig.post("/v1/chat/completions", MSG)[0] == 200
            route = rig.relay_state()
            assert route["state"] == "awake" and route["wakes_total"] == 1
        finally:
            proc.kill()
            proc.wait(10)


class SlowWaker:
    """A mechanism whose state answer arrives only when the test lets it."""

    name = "sleep"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked = threading.Event()

    def state(self) -> str:
        self.asked.set()
        self.release.wait(10)
        return "awake"

    def wake(self) -> None:
        return None


def test_a_probe_that_began_before_the_reapers_hold_does_not_undo_it() -> None:
    async def scenario() -> tuple[str, str]:
        waker = SlowWaker()
        gate = relay_wake.Gate("127.0.0.1:1", waker, "http://127.0.0.1:1/health", 5)
        probing = asyncio.get_running_loop().create_task(gate.probe())
        await asyncio.get_running_loop().run_in_executor(None, waker.asked.wait, 10)
        ok, _ = gate.hold("sleeping")  # the reaper closes the gate while the probe waits for its answer
        assert ok
        gate.settled("sleeping")
        waker.release.set()
        await probing
        after_hold = gate.state
        await gate.probe()  # a probe that began after the decision may read the model again
        return after_hold, gate.state

    after_hold, later = asyncio.run(scenario())
    assert after_hold == "sleeping"
    assert later == "waking"  # the mechanism says awake but /health does not answer: not served yet
