"""What a client held by the relay's wake path hears (stdlib only; ships with coderig.runtime.relay_wake).

A streaming request for the served model gets the stream's headers at once (EARLY_HEAD), SSE
keepalives while it waits, then the model's own stream spliced in (Splice); a wake that fails ends
it with an error event in the client's shape (Anthropic on /v1/messages, OpenAI elsewhere). A
request that does not stream waits silently and gets an error response in its shape on failure (529 or 503).
"""

from __future__ import annotations

import json


def request_info(data: bytes) -> tuple[str, bool, str] | None:
    """(path, streams, model) of the HTTP request at the start of `data` once its whole body is
    there; None while more bytes are needed. nginx sends buffered bodies with Content-Length."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    path = parts[1].split(b"?", 1)[0].decode("latin-1") if len(parts) > 1 else "/"
    length = 0
    for raw in lines[1:]:
        name, _, value = raw.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    if len(data) < end + 4 + length:
        return None
    try:
        body = json.loads(data[end + 4 : end + 4 + length] or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return path, body.get("stream") is True, str(body.get("model", ""))


def shape_of(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def error_json(shape: str, message: str) -> bytes:
    if shape == "anthropic":
        return json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": message}}).encode()
    err = {"message": message, "type": "server_error", "param": None, "code": "model_unavailable"}
    return json.dumps({"error": err}).encode()


# Anthropic answers overloaded_error with 529 (https://docs.anthropic.com/en/api/errors), which the
# gateway's /v1/messages location does not replace with its own page (it intercepts 502-504 to replay a
# claude-* name to LiteLLM): the client reads why the wake failed. OpenAI's shape keeps 503.
STATUS_LINE = {"anthropic": b"HTTP/1.1 529 Overloaded", "openai": b"HTTP/1.1 503 Service Unavailable"}


def error_response(shape: str, message: str) -> bytes:
    body = error_json(shape, message)
    head = STATUS_LINE[shape] + (
        b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    return head + body


EARLY_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def error_event(shape: str, message: str) -> bytes:
    """An SSE error event and the stream's end, as the client's SDK reads one."""
    payload = error_json(shape, message)
    event = (b"event: error\ndata: %s\n\n" if shape == "anthropic" else b"data: %s\n\n") % payload
    return chunk(event) + b"0\r\n\r\n"


class Splice:
    """After early headers: turns the model server's response into the rest of the client's
    stream. A 200 chunked event stream loses its head (the client already has one); anything else
    becomes an error event carrying the model server's message."""

    def __init__(self, shape: str) -> None:
        self.shape = shape
        self.buf = b""
        self.done = False  # the head is handled: pass bytes through
        self.failed = False  # an error event replaced the response: drop the rest

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b"" if self.failed else data
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.buf[:end].lower(), self.buf[end + 4 :]
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
        if status == b"200" and b"text/event-stream" in head and b"chunked" in head:
            self.done = True
            return rest
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        if len(rest) < length:
            return b""
        self.done = self.failed = True
        message = _message_of(rest[:length]) or f"the model server answered HTTP {status.decode() or '?'}"
        return error_event(self.shape, message)


def _message_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:300]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", ""))[:300]
    return str(err or data.get("message", "") if isinstance(data, dict) else "")[:300]
