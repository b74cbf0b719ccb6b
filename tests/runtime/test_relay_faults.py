"""The keepalive relay when its upstream misbehaves: malformed framing drops that one connection
(others keep their keepalives), the framer agrees with h11 on valid and malformed responses split
anywhere, and a stream the model server leaves silent is ended at the read timeout with an error
event in the client's shape."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time

import h11
import pytest
from frontdoor_fixtures import free_port

from coderig.runtime import sse_keepalive
from coderig.runtime.http_framing import ResponseFramer
from coderig.runtime.sse_keepalive import KEEPALIVE_CHUNK

HEAD_SSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENT = b'event: message_start\ndata: {"type":"message_start"}\n\n'


def _feed_all(wire: bytes) -> ResponseFramer:
    framer = ResponseFramer()
    framer.feed(wire)
    return framer


@pytest.mark.parametrize(
    "size_line",
    # int(x, 16) takes the first four; "-6" made the position move back forever (a relay at 100 % CPU)
    [b"+5", b"0x5", b"1_0", b" 5", b"-6", b"-0", b"", b"g", b"5\x0b", b"1" * 17],
)
def test_framer_refuses_a_malformed_chunk_size(size_line: bytes) -> None:
    framer = _feed_all(HEAD_SSE + size_line + b"\r\nhello\r\n0\r\n\r\n")
    assert framer.broken and not framer.can_inject()


@pytest.mark.parametrize("value", [b"+5", b"-5", b"0x5", b"5 5", b"", b"5, 6"])
def test_framer_refuses_a_malformed_content_length(value: bytes) -> None:
    framer = _feed_all(b"HTTP/1.1 200 OK\r\ncontent-length: " + value + b"\r\n\r\nhello")
    assert framer.broken


def test_framer_accepts_what_the_rfc_allows() -> None:
    for size_line in (b"5", b"05", b"5;name=value", b'5;a="b c"', b"5 \t", b"A" * 1 + b";x"):
        data = b"hello" if size_line[:1] != b"A" else b"0123456789"
        framer = _feed_all(HEAD_SSE + size_line + b"\r\n" + data + b"\r\n0\r\n\r\n")
        assert not framer.broken and framer.completed == 1, size_line
    assert _feed_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello").completed == 1
    assert _feed_all(HEAD_SSE + b"5\r\nhelloXX").broken  # the CRLF after a chunk's data is checked


# ---------------------------------------------------------------- differential fuzz against h11


def _h11_outcome(wire: bytes, pieces: list[bytes]) -> str:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/v1/messages", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    try:
        for piece in pieces:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.EndOfMessage):
                    return "complete"
    except h11.RemoteProtocolError:
        return "broken"
    return "incomplete"


def _framer_outcome(pieces: list[bytes]) -> str:
    framer = ResponseFramer()
    for piece in pieces:
        framer.feed(piece)
        if framer.broken:
            return "broken"
        if framer.completed:
            return "complete"
    return "incomplete"


_GOOD_SIZES = [b"%x", b"%X", b"0%x", b"%x;ext=1", b'%x;q="a;b"', b"%x ", b"%x\t"]
_BAD_SIZES = [b"+%x", b"-%x", b"0x%x", b" %x", b"%x_0", b"%x\x00", b"z%x", b"%x\n", b"\n%x"]
_BAD_LENGTHS = [b"+%d", b"-%d", b"%d.0", b"0x%d", b"%d %d"]


def _random_response(rng: random.Random) -> bytes:
    """One response: chunked SSE (sizes well- or ill-formed, data terminators sometimes wrong) or
    content-length framed (the value well- or ill-formed); valid about half of the time."""
    bad = rng.random() < 0.5
    if rng.random() < 0.7:
        body = b""
        chunks = [bytes(rng.choice(b"abc\n:") for _ in range(rng.randint(1, 40))) for _ in range(rng.randint(1, 5))]
        spoil = rng.randrange(len(chunks)) if bad else -1
        for i, data in enumerate(chunks):
            pattern = rng.choice(_BAD_SIZES if i == spoil else _GOOD_SIZES)
            size = pattern.replace(b"%x", b"%x" % len(data)).replace(b"%X", b"%X" % len(data))
            ending = b"\r\n" if i != spoil or rng.random() < 0.7 else rng.choice([b"\n\n", b"XY", b"\r\r"])
            if i == spoil and ending != b"\r\n":
                size = b"%x" % len(data)
            body += size + b"\r\n" + data + ending
        return HEAD_SSE + body + b"0\r\n\r\n"
    data = bytes(rng.choice(b"xyz") for _ in range(rng.randint(0, 30)))
    value = (rng.choice(_BAD_LENGTHS) if bad else b"%d").replace(b"%d", b"%d" % len(data))
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + value + b"\r\n\r\n" + data


def test_framer_agrees_with_h11_on_random_responses_split_anywhere() -> None:
    rng = random.Random(21)
    seen = {"complete": 0, "broken": 0}
    for _ in range(1500):  # bounded: ~1 s
        wire = _random_response(rng)
        cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randint(0, 12))))
        pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
        want = _h11_outcome(wire, pieces)
        assert _framer_outcome(pieces) == want, (wire, cuts)
        seen[want] = seen.get(want, 0) + 1
    assert seen["complete"] > 300 and seen["broken"] > 300  # both kinds were really exercised


# ---------------------------------------------------------------- the relay process


async def _model(handler_bad: bytes, silence: float) -> asyncio.Server:
    """A model server: /bad answers headers and a malformed chunk size; anything else answers the
    SSE headers, stays silent `silence` s, then one event and the end."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        writer.write(HEAD_SSE)
        if head.startswith(b"POST /bad "):
            writer.write(handler_bad)
            await writer.drain()
            await asyncio.sleep(5)
        else:
            await writer.drain()
            await asyncio.sleep(silence)
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(EVENT), EVENT))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _relay(target_port: int, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    route = f"127.0.0.1:{port}=127.0.0.1:{target_port}"
    cmd = [sys.executable, "-m", sse_keepalive.__name__, "--route", route, "--interval", "0.2", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None and b"ready" in proc.stdout.readline()
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # a relay spinning in a loop does not get to its signal handler
        proc.kill()
        proc.wait(5)


async def _request(port: int, path: str, timeout: float) -> tuple[bytes, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % path.encode())
    got = b""
    try:
        async with asyncio.timeout(timeout):
            while not got.endswith(b"\r\n0\r\n\r\n"):
                data = await reader.read(65536)
                if not data:
                    break
                got += data
    except TimeoutError:
        pass
    writer.close()
    return got, time.monotonic() - started


def test_a_malformed_upstream_drops_its_own_connection_while_other_streams_keep_their_keepalives() -> None:
    async def scenario() -> None:
        model = await _model(b"-6\r\nabcdef\r\n", silence=1.2)
        proc, port = _relay(model.sockets[0].getsockname()[1])
        try:
            bad, *good = await asyncio.gather(
                _request(port, "/bad", 4), *(_request(port, "/v1/messages", 4) for _ in range(3))
            )
            assert bad[1] < 1.0 and not bad[0].endswith(b"0\r\n\r\n")  # cut at once, not left hanging
            for got, _elapsed in good:  # the others: keepalives through the silence, then their event
                assert got.count(KEEPALIVE_CHUNK) >= 3 and got.endswith(b"0\r\n\r\n"), got
        finally:
            _stop(proc)
            model.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("path", "anthropic"), [("/v1/messages", True), ("/v1/responses", False)])
def test_a_silent_stream_ends_at_the_bound_with_an_error_event_in_the_clients_shape(path: str, anthropic: bool) -> None:
    async def scenario() -> None:
        model = await _model(b"", silence=30)
        proc, port = _relay(model.sockets[0].getsockname()[1], "--silence", "1")
        try:
            got, elapsed = await _request(port, path, 6)
        finally:
            _stop(proc)
            model.close()
        assert got.count(KEEPALIVE_CHUNK) >= 2  # keepalives while the bound had not passed
        assert 0.9 < elapsed < 3 and got.endswith(b"\r\n0\r\n\r\n"), (elapsed, got)  # ended, cleanly framed
        event = got.rsplit(b"event: error\ndata: ", 1)[1].split(b"\n\n", 1)[0]
        error = json.loads(event)
        if anthropic:
            assert error["type"] == "error" and error["error"]["type"] == "timeout_error"
        else:
            assert error["type"] == "error" and error["code"] == "timeout" and "sequence_number" in error

    asyncio.run(scenario())
