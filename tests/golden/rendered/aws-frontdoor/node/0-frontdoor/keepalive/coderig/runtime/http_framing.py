"""HTTP/1.1 response framing, followed byte by byte in whatever splits the bytes arrive (stdlib only;
ships with coderig.runtime.sse_keepalive, the relay that uses it to know when a keepalive comment may
go between two SSE events and when a response has ended). Strict: a malformed chunk size or
content-length marks the stream broken rather than guessing (tests/runtime/test_relay_faults.py
checks it against h11 on random splits)."""

from __future__ import annotations

import re
from typing import Any

_HEAD_LIMIT = 1 << 16

# response parser states; _BROKEN: framing we must not guess at (the relay drops that connection)
_HEAD, _SIZE, _DATA, _TRAILER, _LENGTH, _UNTIL_CLOSE, _BROKEN = range(7)
# RFC 9112 7.1: chunk-size = 1*HEXDIG, then optional extensions; optional whitespace before CRLF as h11
# tolerates. At most 16 hex digits (2^64 bytes): int() alone also takes "-6", "+5", "0x5", "1_0"
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?[ \t]*")
_DIGITS = re.compile(rb"[0-9]{1,19}")


class ResponseFramer:
    """Follows HTTP/1.1 response framing in the bytes it is fed (any split) and says when the
    stream sits between SSE events inside a chunked event-stream body. Pure: no I/O.

    With a `sink` (the usage meter, coderig.runtime.usage.ResponseMeter) it also hands over what it
    parsed, so the bytes are framed once: `on_head(status, content_type, raw_head, chunked)` for
    each final (non-1xx) head, `on_body(piece)` for each piece of the body without its chunk framing
    (a head too long to be HTTP is handed over as body too), `on_end()` when a response ends."""

    __slots__ = ("state", "buf", "remaining", "sse", "at_event_end", "tail", "completed", "sink")

    @property
    def between_responses(self) -> bool:
        """The last response ended and nothing of the next one has arrived."""
        return self.state == _HEAD and not self.buf

    @property
    def broken(self) -> bool:
        """The upstream's framing is malformed (a bad chunk size or content-length): stop relaying it."""
        return self.state == _BROKEN

    def __init__(self, sink: Any = None) -> None:
        self.sink = sink
        self.state = _HEAD
        self.buf = b""
        self.remaining = 0
        self.sse = False
        self.at_event_end = True
        self.tail = b""
        self.completed = 0  # responses whose end was seen

    @property
    def between_chunks(self) -> bool:
        """Nothing of a head, a chunk or a trailer is part-way through: the next byte starts one."""
        return self.state in (_HEAD, _SIZE) and not self.buf

    @property
    def until_close(self) -> bool:
        """The body runs to the end of the connection (no length, not chunked, or not HTTP)."""
        return self.state == _UNTIL_CLOSE

    def can_inject(self) -> bool:
        return self.sse and self.state == _SIZE and not self.buf and self.at_event_end

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            st = self.state
            if st == _DATA:
                take = min(self.remaining, n - pos)
                payload = min(take, self.remaining - 2) if self.remaining > 2 else 0
                if payload and self.sse:
                    end = pos + payload
                    self.tail = (self.tail + data[max(pos, end - 4) : end])[-4:]
                if payload and self.sink is not None:
                    self.sink.on_body(data[pos : pos + payload])
                ending = data[pos + payload : pos + take]  # part of the CRLF after the chunk's data
                if ending and ending != b"\r\n"[2 - min(2, self.remaining) :][: len(ending)]:
                    self.state, self.sse = _BROKEN, False
                    return
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self.state = _SIZE
                    self.at_event_end = self.tail.endswith(b"\n\n") or self.tail == b"\r\n\r\n"
                continue
            if st == _LENGTH:
                take = min(self.remaining, n - pos)
                if self.sink is not None:
                    self.sink.on_body(data[pos : pos + take])
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self._ended()
                continue
            if st == _UNTIL_CLOSE and self.sink is not None:
                self.sink.on_body(data[pos:] if pos else data)
            if st in (_UNTIL_CLOSE, _BROKEN):
                return
            # line-oriented states: head, chunk size, trailer
            sep = b"\r\n\r\n" if st == _HEAD else b"\r\n"
            if self.buf:
                data, pos, n = self.buf + data[pos:], 0, len(self.buf) + n - pos
                self.buf = b""
            idx = data.find(sep, pos)
            if idx < 0:
                self.buf = data[pos:]
                if len(self.buf) > _HEAD_LIMIT:  # not HTTP framing we understand: stop looking
                    if self.sink is not None:
                        self.sink.on_body(self.buf)
                    self.state, self.sse, self.buf = _UNTIL_CLOSE, False, b""
                return
            line, pos = data[pos:idx], idx + len(sep)
            if st == _HEAD:
                self._head(line, data[idx - len(line) : pos] if self.sink is not None else b"")
            elif st == _SIZE:
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    self.state, self.sse, self.buf = _BROKEN, False, b""
                    return
                size = int(match.group(1), 16)
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.remaining, self.state = size + 2, _DATA  # data + CRLF
            elif st == _TRAILER and not line:
                self.sse = False
                self._ended()

    def _ended(self) -> None:
        self.state = _HEAD
        self.completed += 1
        if self.sink is not None:
            self.sink.on_end()

    def _head(self, head: bytes, wire: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        chunked, length, sse, ctype = False, None, False, b""
        for raw in lines[1:]:
            name, _, value = raw.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-length":  # digits only; a list of equal values counts once (as h11)
                values = {v.strip() for v in value.split(b",")}
                given = values.pop()
                if values or not _DIGITS.fullmatch(given) or (length is not None and int(given) != length):
                    self.state, self.sse = _BROKEN, False
                    return
                length = int(given)
            elif name == b"content-type":
                ctype = value.strip().lower()
                sse = ctype.startswith(b"text/event-stream")
        if 100 <= status < 200:
            self.state = _HEAD
            return
        if self.sink is not None:
            self.sink.on_head(status, ctype, wire, chunked and status not in (204, 304))
        if status in (204, 304) or (not chunked and length == 0):
            self._ended()
        elif chunked:
            self.state, self.sse, self.at_event_end, self.tail = _SIZE, sse, True, b""
        elif length is not None:
            self.state, self.remaining = _LENGTH, length
        else:
            self.state = _UNTIL_CLOSE
