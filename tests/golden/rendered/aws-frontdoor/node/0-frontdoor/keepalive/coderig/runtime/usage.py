"""Usage seen on the wire between the gateway and a model server (stdlib only; the SSE keepalive
relay runs it per connection).

What is counted comes from the model server's own usage figures, never an estimate:
- Anthropic `/v1/messages`: `message_start.message.usage` then `message_delta.usage` (a stream), or
  the body's `usage`; input = `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens`
  (Anthropic's `input_tokens` counts only the uncached part), cached = `cache_read_input_tokens`.
- OpenAI chat: the final chunk's `usage` (a stream; asked for with `stream_options.include_usage`),
  or the body's; cached = `prompt_tokens_details.cached_tokens`.
- OpenAI Responses: `response.completed`'s `response.usage`, or the body's; cached =
  `input_tokens_details.cached_tokens`.
`count_tokens` answers are counted as requests, not tokens: nothing was generated or prefilled.

No prompt or completion text is kept: a response body is looked at only for the events that carry a
`"usage"` key, and only the numbers are taken from them. A request body is read only on the chat
route, to ask for usage in a stream whose client did not (`RequestReader`); the extra usage chunk is
then taken out of what the client receives (`ResponseMeter(strip_usage=True)`).

Both follow HTTP/1.1 framing in bytes fed in any split (keepalive connections, many exchanges
each): the response side through `http_framing.ResponseFramer`, the one parser of response framing
in the relay (it hands the meter each head, body piece and end), the request side itself; both cost
one `find` per buffer while nothing they need is in it.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from coderig.runtime.http_framing import ResponseFramer

DEVELOPER_HEADER = b"x-coderig-developer"  # set by the gateway from the key (client input replaced)
CHAT_PATH = "/v1/chat/completions"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# what is a model request (counted); anything else through the relay (LiteLLM asking /v1/models) is not
MODEL_PATHS = frozenset({"/v1/messages", COUNT_TOKENS_PATH, CHAT_PATH, "/v1/responses", "/v1/completions"})
MAX_JSON_BODY = 16 << 20  # a non-streamed answer larger than this is counted without its usage
_HEAD_LIMIT = 1 << 16
_USAGE_KEY = b'"usage"'


@dataclass
class Usage:
    input: int = 0  # every prompt token, cached or not
    cached: int = 0  # of which the server read from its prefix cache
    output: int = 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_from(obj: Any) -> Usage | None:
    """A usage object in any of the three shapes -> Usage; None when `obj` is not one."""
    if not isinstance(obj, dict):
        return None
    if "prompt_tokens" in obj or "completion_tokens" in obj:  # OpenAI chat
        details = obj.get("prompt_tokens_details") or {}
        prompt, done = _int(obj.get("prompt_tokens")), _int(obj.get("completion_tokens"))
        return Usage(prompt, _int(details.get("cached_tokens")), done)
    if "input_tokens_details" in obj:  # OpenAI Responses
        details = obj.get("input_tokens_details") or {}
        return Usage(_int(obj.get("input_tokens")), _int(details.get("cached_tokens")), _int(obj.get("output_tokens")))
    if "input_tokens" in obj or "output_tokens" in obj:  # Anthropic
        read = _int(obj.get("cache_read_input_tokens"))
        written = _int(obj.get("cache_creation_input_tokens"))
        return Usage(_int(obj.get("input_tokens")) + read + written, read, _int(obj.get("output_tokens")))
    return None


def _merge_anthropic(into: Usage, obj: dict[str, Any]) -> None:
    """message_delta.usage: output_tokens is cumulative; input figures, when present, replace."""
    new = usage_from(obj)
    if new is None:
        return
    if "input_tokens" in obj:
        into.input, into.cached = new.input, new.cached
    if "output_tokens" in obj:
        into.output = new.output


@dataclass
class Exchange:
    """One request through the relay: who, where, when; filled in as the response comes back."""

    developer: str
    path: str
    started: float
    strip_usage: bool = False  # the relay asked a chat stream for usage the client did not ask for
    status: int = 0
    first_byte: float | None = None  # first byte of the response body (time to first token)
    finished: float | None = None
    usage: Usage | None = None

    @property
    def counted(self) -> bool:
        return self.path in MODEL_PATHS


@dataclass
class RequestReader:
    """Client -> server bytes: one Exchange per request head, queued for the response side; on the
    chat route, a streamed request whose client did not ask for usage is rewritten to ask."""

    clock: Any
    exchanges: deque[Exchange] = field(default_factory=deque)
    _buf: bytes = b""
    _remaining: int = 0  # body bytes still to pass through untouched
    _hold: Exchange | None = None  # a chat request whose body is being gathered
    _hold_head: bytes = b""
    _hold_length: int = 0
    _opaque: bool = False  # framing we do not follow (chunked request body): pass everything

    def feed(self, data: bytes) -> bytes:
        """The bytes to send on (the same object unless a chat request was rewritten)."""
        if self._opaque:
            return data
        if self._remaining >= len(data) and not self._buf and self._hold is None:
            self._remaining -= len(data)
            return data
        out: list[bytes] = []
        rewritten = False
        data, self._buf = self._buf + data, b""
        pos, n = 0, len(data)
        while pos < n:
            if self._hold is not None:
                need = self._hold_length - len(self._buf)
                take = data[pos : pos + need]
                self._buf += take
                pos += len(take)
                if len(self._buf) == self._hold_length:
                    out.append(self._release())
                    rewritten = True
                continue
            if self._remaining:
                take = min(self._remaining, n - pos)
                out.append(data[pos : pos + take])
                self._remaining -= take
                pos += take
                continue
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                self._buf = data[pos:]
                if len(self._buf) > _HEAD_LIMIT:
                    self._opaque = True
                    out.append(self._buf)
                    self._buf = b""
                break
            head = data[pos : end + 4]
            pos = end + 4
            exchange, length, chunked = self._head(head)
            self.exchanges.append(exchange)
            if chunked:
                self._opaque = True
                out.append(head + data[pos:])
                break
            if exchange.path == CHAT_PATH and length:
                self._hold, self._hold_head, self._hold_length = exchange, head, length
                rewritten = True
                continue
            out.append(head)
            self._remaining = length
        if not rewritten and len(out) == 1 and len(out[0]) == len(data):
            return data
        return b"".join(out)

    def _head(self, head: bytes) -> tuple[Exchange, int, bool]:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        target = parts[1].decode("latin-1") if len(parts) > 1 else ""
        developer, length, chunked = "", 0, False
        for raw in lines[1:]:
            name, _, value = raw.partition(b":")
            name = name.strip().lower()
            if name == DEVELOPER_HEADER:
                developer = value.strip().decode("latin-1")
            elif name == b"content-length":
                length = int(value.strip() or b"0")
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        path = target.split("?", 1)[0]
        return Exchange(developer or "-", path, self.clock()), length, chunked

    def _release(self) -> bytes:
        """The held chat request, asking for usage when it streams without asking."""
        exchange, head, body = self._hold, self._hold_head, self._buf
        assert exchange is not None
        self._hold, self._hold_head, self._buf = None, b"", b""
        new_body = ask_for_usage(body)
        if new_body is None:
            return head + body
        exchange.strip_usage = True
        return set_content_length(head, len(new_body)) + new_body


def ask_for_usage(body: bytes) -> bytes | None:
    """A streamed chat request body asking for usage (`stream_options.include_usage`), or None when
    it is not streamed or already asks."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("stream") is not True:
        return None
    options = obj.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    obj["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def set_content_length(head: bytes, length: int) -> bytes:
    lines = head[:-4].split(b"\r\n")
    out = [ln for ln in lines if not ln.lower().startswith(b"content-length:")]
    out.append(b"Content-Length: %d" % length)
    return b"\r\n".join(out) + b"\r\n\r\n"


class ResponseMeter:
    """Server -> client bytes: status, time to first body byte, the usage events, the end of each
    response, from the framing its `framer` (http_framing.ResponseFramer, which the relay also asks
    where a keepalive may go) parses once and hands over; `feed` returns the bytes to pass on (the
    same object unless a usage chunk the client did not ask for was taken out: then the body is
    re-chunked one SSE event a chunk, and trailers, which vLLM never sends, are dropped). Finished
    exchanges go to `on_done`."""

    def __init__(self, exchanges: deque[Exchange], clock: Any, on_done: Any) -> None:
        self.exchanges = exchanges
        self.clock = clock
        self.on_done = on_done
        self.framer = ResponseFramer(self)
        self.current: Exchange | None = None
        self.sse = False
        self.chunked = False
        self.event = b""  # the SSE event being gathered (only while it may hold usage)
        self.body = b""  # a non-streamed JSON body being gathered
        self.json_body = False
        self.out: list[bytes] | None = None  # what to pass on, while rewriting
        self.passing = False  # on_body's hot path applies (see there)
        self.withheld = False  # the last feed rewrote and kept bytes back: the next one must too

    def feed(self, data: bytes) -> bytes:
        strip = (
            self.withheld
            or (self.current is not None and self.current.strip_usage)
            or (self.exchanges and any(e.strip_usage for e in self.exchanges))
        )
        if not strip:
            self.framer.feed(data)
            return data
        self.out = out = []
        try:
            self.framer.feed(data)
        finally:
            self.out = None
        # the wire may go back to passing bytes through only between two chunks or two responses
        self.withheld = bool(self.event) or not self.framer.between_chunks
        return b"".join(out)

    # ------------------------------------------------------------ the framer's sink

    def on_head(self, status: int, ctype: bytes, raw: bytes, chunked: bool) -> None:
        if self.current is None and self.exchanges:
            self.current = self.exchanges.popleft()
        if self.current is not None:
            self.current.status = status
        self.sse = ctype.startswith(b"text/event-stream")
        self.json_body = ctype.startswith(b"application/json") and status == 200
        self.chunked = chunked
        self.passing = False  # set once the first byte of a chunked event stream is timed
        self.event, self.body = b"", b""
        if self.out is not None:
            self.out.append(raw)

    def on_body(self, piece: bytes) -> None:
        # the hot path, once per streamed token: a whole SSE event (vLLM sends one a chunk) without a
        # usage key, the first byte already timed, nothing to rewrite: nothing to do
        if self.passing and not self.event and self.out is None and piece.endswith(b"\n\n") and _USAGE_KEY not in piece:
            return
        if self.chunked and not self.framer.until_close:
            self._payload(piece, self.out)
            return
        self._body(piece)
        if self.out is not None:
            self.out.append(piece)

    def on_end(self) -> None:
        if self.chunked:
            self._flush_event(self.out)
            if self.out is not None:
                self.out.append(b"0\r\n\r\n")
        self._finish()

    # ------------------------------------------------------------ pieces

    def _first(self) -> None:
        ex = self.current
        if ex is not None and ex.first_byte is None:
            ex.first_byte = self.clock()

    def _body(self, piece: bytes) -> None:
        if not piece:
            return
        self._first()
        if self.json_body and len(self.body) + len(piece) <= MAX_JSON_BODY:
            self.body += piece
        else:
            self.json_body, self.body = False, b""

    def _payload(self, piece: bytes, out: list[bytes] | None) -> None:
        """One piece of a chunk's data. An SSE body is cut into whole events; only those holding
        a usage key are parsed (vLLM sends one event per chunk, so this is one `find` each)."""
        if not piece:
            return
        if not self.sse:
            self._body(piece)
            if out is not None:
                out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            return
        self._first()
        self.passing = True
        event = self.event + piece if self.event else piece
        start = 0
        while True:
            end = event.find(b"\n\n", start)
            if end < 0:
                break
            one = event[start : end + 2]
            start = end + 2
            keep = _USAGE_KEY not in one or self._event(one)
            if out is not None and keep:
                out.append(b"%x\r\n%s\r\n" % (len(one), one))
        self.event = event[start:] if start < len(event) else b""

    def _flush_event(self, out: list[bytes] | None) -> None:
        if self.event and out is not None:
            out.append(b"%x\r\n%s\r\n" % (len(self.event), self.event))
        self.event = b""

    def _event(self, raw: bytes) -> bool:
        """Take the usage out of one whole SSE event; False when it is the usage-only chat chunk
        the relay asked for on the client's behalf (not forwarded)."""
        data = b"".join(ln[5:].lstrip() for ln in raw.split(b"\n") if ln.startswith(b"data:"))
        try:
            obj = json.loads(data)
        except ValueError:
            return True
        if not isinstance(obj, dict) or self.current is None:
            return True
        ex = self.current
        kind = obj.get("type")
        if kind == "message_start":
            found = usage_from((obj.get("message") or {}).get("usage"))
            if found is not None:
                ex.usage = found
        elif kind == "message_delta":
            if isinstance(obj.get("usage"), dict):
                ex.usage = ex.usage or Usage()
                _merge_anthropic(ex.usage, obj["usage"])
        elif isinstance(kind, str) and kind.startswith("response."):
            found = usage_from((obj.get("response") or {}).get("usage"))
            if found is not None:
                ex.usage = found
        else:
            found = usage_from(obj.get("usage"))
            if found is not None:
                ex.usage = found
                if ex.strip_usage and obj.get("choices") == []:
                    return False
        return True

    def _finish(self) -> None:
        ex, self.current = self.current, None
        if ex is None:
            return
        if self.body and self.json_body:
            try:
                obj = json.loads(self.body)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and ex.path != COUNT_TOKENS_PATH:
                found = usage_from(obj.get("usage"))
                if found is not None:
                    ex.usage = found
        self.body, self.event = b"", b""
        ex.finished = self.clock()
        self.on_done(ex)

    def close(self) -> None:
        """The connection ended: a response cut short (or read to close) is still counted."""
        if self.current is not None:
            if self.current.status == 0:
                self.current.status = 502
            self._finish()
        while self.exchanges:  # asked but never answered
            ex = self.exchanges.popleft()
            ex.status, ex.finished = 502, self.clock()
            self.on_done(ex)
