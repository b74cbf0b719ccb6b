"""The SSE keepalive relay: framing parser (pure) and the relay on loopback sockets."""

from __future__ import annotations

import asyncio
import random

import pytest

from coderig.runtime import sse_keepalive
from coderig.runtime.http_framing import ResponseFramer
from coderig.runtime.sse_keepalive import KEEPALIVE_CHUNK, parse_route

HEAD_SSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = [b'event: message_start\ndata: {"type":"message_start"}\n\n', b"event: message_stop\ndata: {}\n\n"]


def chunked(events: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def test_framer_follows_any_split_of_keepalive_responses() -> None:
    wire = HEAD_SSE + chunked(EVENTS) + b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope!" + HEAD_SSE
    rng = random.Random(7)
    for _ in range(500):
        framer, prev = ResponseFramer(), 0
        for cut in [*sorted(rng.sample(range(1, len(wire)), rng.randint(0, 25))), len(wire)]:
            framer.feed(wire[prev:cut])
            prev = cut
        assert framer.can_inject()  # the third response's headers are in: silence may be filled


def test_framer_injects_only_between_events() -> None:
    framer = ResponseFramer()
    framer.feed(HEAD_SSE)
    assert framer.can_inject()
    framer.feed(b"%x\r\n" % len(EVENTS[0]) + EVENTS[0][:10])
    assert not framer.can_inject()  # inside a chunk
    framer.feed(EVENTS[0][10:] + b"\r\n")
    assert framer.can_inject()
    framer.feed(b"6\r\nevent:\r\n")
    assert not framer.can_inject()  # a chunk ended mid-event
    plain = ResponseFramer()
    plain.feed(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    assert not plain.can_inject()


def test_routes_listen_on_loopback_only() -> None:
    assert parse_route("127.0.0.1:9101=10.0.0.6:8000") == (("127.0.0.1", 9101), ("10.0.0.6", 8000))
    with pytest.raises(ValueError, match="loopback"):
        parse_route("0.0.0.0:9101=127.0.0.1:8000")


async def _silent_sse_server(silence: float) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(HEAD_SSE)
            await writer.drain()
            await asyncio.sleep(silence)
            writer.write(chunked(EVENTS))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    out = await reader.readuntil(b"\r\n\r\n")
    while not out.endswith(b"\r\n0\r\n\r\n"):
        out += await reader.read(65536)
    return out


def test_relay_fills_silence_with_comment_chunks_and_keeps_the_connection() -> None:
    async def scenario() -> None:
        model, port = await _silent_sse_server(0.55)
        servers = await sse_keepalive.serve([(("127.0.0.1", 0), ("127.0.0.1", port))], 0.2)
        relay_port = servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
        request = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        for _ in range(2):  # two requests on one kept-alive connection
            writer.write(request)
            got = await _read_response(reader)
            assert got.count(KEEPALIVE_CHUNK) == 2, got
            assert got.endswith(chunked(EVENTS))
        writer.close()
        for s in [*servers, model]:
            s.close()

    asyncio.run(scenario())


def test_relay_closes_without_a_byte_when_the_model_is_down() -> None:
    async def scenario() -> None:
        servers = await sse_keepalive.serve([(("127.0.0.1", 0), ("127.0.0.1", 1))], 0.2)
        relay_port = servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        servers[0].close()

    asyncio.run(scenario())
