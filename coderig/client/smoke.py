"""`coderig smoke`: check the endpoint of a bundle the way the agents use it, one line per check."""

import argparse
import contextlib
import http.client
import json
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coderig.client.bundle import Bundle, load_bundle_file
from coderig.client.configs import ClientPaths

CLIENTS = ("claude", "codex", "opencode")


# ---------------------------------------------------------------- coderig smoke

FIX_REFUSED = (
    "connection refused: nothing listens on {hostport}. Is the stack up (`pulumi up`), the node running "
    "(an idle policy may have stopped it: start it again), and the port right in the bundle?"
)
FIX_DNS = "cannot resolve {host}: check the name in the bundle, your VPN and your DNS resolver"
FIX_CONNECT_TIMEOUT = (
    "no answer from {hostport} (timed out): a firewall or security group drops your traffic; ask ops to "
    "allow your address (coderig:target.allowedCidrs) or connect through the VPN"
)
FIX_TLS_UNKNOWN_CA = (
    "TLS: the gateway's certificate is not signed by a CA you trust. With a self-signed CA, the bundle's CA "
    "must match the gateway's: ask ops for a fresh bundle and run `coderig onboard` again; Node clients "
    "(Claude Code, opencode) need NODE_EXTRA_CA_CERTS={ca} (onboard puts it in settings.json and use-{alias}.sh)"
)
FIX_TLS_PROVIDED = (
    "TLS: your machine does not trust the certificate's issuer: install your company's root CA in the "
    "system store and point NODE_EXTRA_CA_CERTS at it for Claude Code"
)
FIX_TLS_NAME = (
    "TLS: the certificate does not name {host}; ops add it to coderig:gateway.hostnames and run `pulumi up`, "
    "or use a name the certificate lists"
)
FIX_AUTH = (
    "the gateway rejected your key ({status}): the key was revoked or rotated (your name left "
    "coderig:developers, or the stack was re-created). Ask ops for a new bundle (`coderig bundle`) and run "
    "`coderig onboard` again; make sure no old ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN in your shell overrides it"
)
FIX_MODEL = (
    "the gateway does not serve {model!r} (it serves: {served}): the stack's model changed since your bundle "
    "was made; ask ops for a new bundle and run `coderig onboard` again. Claude Code's background calls "
    "(claude-haiku-…) 404 the same way when ANTHROPIC_DEFAULT_*_MODEL are not set: onboard sets them"
)
FIX_BACKEND = (
    "the gateway answered {status} but the model server behind it is not ready{health}: it is stopped "
    "(idle policy), still loading weights, or crashed. Ops: check the node (`coderig idle`, the model "
    "server's logs) and try again when GET /healthz answers 200"
)
FIX_TIMEOUT = (
    "no reply within {timeout:.0f}s: the model is loading or overloaded (see `coderig plan`: max concurrent "
    "requests). Retry with --timeout; for long agent turns keep API_TIMEOUT_MS (settings.json) at or above "
    "the gateway's 30-minute timeouts"
)
FIX_RATE = "rate limited (429): your key sends more requests than the gateway allows; wait, or ask ops to raise it"


class CheckFailed(Exception):
    def __init__(self, summary: str, fix: str):
        super().__init__(summary)
        self.summary = summary
        self.fix = fix


@dataclass
class HttpResult:
    status: int
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def error_text(self) -> str:
        data = self.json()
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err)[:300]
            if err:
                return str(err)[:300]
        return self.body[:300].decode("utf-8", "replace")


class Smoke:
    """The checks, in order; each raises CheckFailed with the fix."""

    def __init__(self, bundle: Bundle, timeout: float, paths: ClientPaths):
        self.b = bundle
        self.timeout = timeout
        self.paths = paths
        self.ctx: ssl.SSLContext | None = None
        self.served: list[str] = []

    # -- plumbing
    def _context(self) -> ssl.SSLContext:
        if self.b.ca_cert_pem:
            return ssl.create_default_context(cadata=self.b.ca_cert_pem)
        return ssl.create_default_context()

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self.b.scheme == "https":
            return http.client.HTTPSConnection(self.b.host, self.b.port, timeout=timeout, context=self._context())
        return http.client.HTTPConnection(self.b.host, self.b.port, timeout=timeout)

    def _headers(self, anthropic: bool = False) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.b.token}",
            "Content-Type": "application/json",
            "User-Agent": "coderig-smoke",
        }
        if anthropic:
            headers["anthropic-version"] = "2023-06-01"
        return headers

    def http(self, method: str, path: str, body: Any = None, anthropic: bool = False, auth: bool = True) -> HttpResult:
        conn = self._conn(self.timeout)
        try:
            headers = self._headers(anthropic) if auth else {"User-Agent": "coderig-smoke"}
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            return HttpResult(resp.status, resp.read())
        except TimeoutError:
            raise CheckFailed("timed out", FIX_TIMEOUT.format(timeout=self.timeout)) from None
        except ConnectionRefusedError:
            raise CheckFailed("connection refused", FIX_REFUSED.format(hostport=self._hostport())) from None
        finally:
            conn.close()

    def _hostport(self) -> str:
        return f"{self.b.host}:{self.b.port}"

    def _not_ready(self, status: int) -> CheckFailed:
        health = ""
        with contextlib.suppress(CheckFailed, OSError, ssl.SSLError):
            result = self.http("GET", "/healthz", auth=False)
            health = f" (GET /healthz: {result.status})"
        return CheckFailed(f"HTTP {status} from the gateway", FIX_BACKEND.format(status=status, health=health))

    def _classify(self, result: HttpResult, what: str) -> CheckFailed:
        text = result.error_text()
        if result.status in (401, 403):
            return CheckFailed(f"HTTP {result.status}: {text}", FIX_AUTH.format(status=result.status))
        if result.status == 429:
            return CheckFailed("HTTP 429", FIX_RATE)
        low = text.lower()
        if result.status in (400, 404) and "model" in low:
            return CheckFailed(f"HTTP {result.status}: {text}", self._model_fix())
        if result.status >= 500:
            return self._not_ready(result.status)
        return CheckFailed(f"{what}: HTTP {result.status}: {text}", "unexpected answer; ops: see the gateway's logs")

    def _model_fix(self) -> str:
        return FIX_MODEL.format(model=self.b.served_name, served=", ".join(self.served) or "unknown")

    # -- checks
    def check_tcp(self) -> str:
        try:
            infos = socket.getaddrinfo(self.b.host, self.b.port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise CheckFailed(f"cannot resolve {self.b.host}", FIX_DNS.format(host=self.b.host)) from None
        last: Exception | None = None
        for family, kind, proto, _name, addr in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(min(self.timeout, 10))
                try:
                    sock.connect(addr)
                    return f"{self.b.host} -> {addr[0]}, port {self.b.port} open"
                except OSError as exc:
                    last = exc
        if isinstance(last, ConnectionRefusedError):
            raise CheckFailed(
                f"connection refused on {self._hostport()}", FIX_REFUSED.format(hostport=self._hostport())
            )
        raise CheckFailed(
            f"cannot connect to {self._hostport()}: {last}", FIX_CONNECT_TIMEOUT.format(hostport=self._hostport())
        )

    def check_tls(self) -> str:
        if self.b.scheme != "https":
            return "skipped: plain http (allowed on loopback only)"
        try:
            raw = socket.create_connection((self.b.host, self.b.port), timeout=min(self.timeout, 10))
            with raw, self._context().wrap_socket(raw, server_hostname=self.b.host) as tls:
                version = tls.version()
        except ssl.SSLCertVerificationError as exc:
            reason = str(exc.verify_message or exc)
            if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
                raise CheckFailed(
                    f"certificate name mismatch: {reason}", FIX_TLS_NAME.format(host=self.b.host)
                ) from None
            fix = FIX_TLS_UNKNOWN_CA if self.b.ca_cert_pem else FIX_TLS_PROVIDED
            raise CheckFailed(
                f"certificate not trusted: {reason}",
                fix.format(ca=self.paths.ca_file(self.b.alias), alias=self.b.alias),
            ) from None
        except ssl.SSLError as exc:
            raise CheckFailed(
                f"TLS handshake failed: {exc}",
                "the port does not speak TLS as expected: is the bundle's scheme/port right?",
            ) from None
        trust = "the bundle's self-signed CA" if self.b.ca_cert_pem else "the system trust store"
        return f"{version}, certificate for {self.b.host} verified against {trust}"

    def check_auth(self) -> str:
        result = self.http("GET", "/v1/models")
        if result.status != 200:
            raise self._classify(result, "GET /v1/models")
        data = result.json()
        self.served = [str(m.get("id")) for m in (data or {}).get("data", []) if isinstance(m, dict)]
        return f"key of {self.b.developer} accepted (GET /v1/models: 200)"

    def check_model(self) -> str:
        if self.b.served_name not in self.served:
            raise CheckFailed(f"{self.b.served_name!r} not in GET /v1/models", self._model_fix())
        return f"{self.b.served_name} is served"

    def check_chat(self) -> str:
        body = {
            "model": self.b.served_name,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "Reply with the single word: ready"}],
        }
        started = time.monotonic()
        result = self.http("POST", "/v1/chat/completions", body)
        if result.status != 200:
            raise self._classify(result, "POST /v1/chat/completions")
        choice = ((result.json() or {}).get("choices") or [{}])[0]
        message = choice.get("message") or {}
        text = message.get("content") or message.get("reasoning_content") or ""
        if not text.strip():
            raise CheckFailed("empty reply", "the model answered nothing: ops, check the model server's logs")
        return f"replied {text.strip()[:40]!r} in {time.monotonic() - started:.1f}s"

    def check_count_tokens(self) -> str:
        body = {
            "model": self.b.served_name,
            "messages": [{"role": "user", "content": "How many tokens is this sentence?"}],
        }
        result = self.http("POST", "/v1/messages/count_tokens?beta=true", body, anthropic=True)
        if result.status != 200:
            raise self._classify(result, "POST /v1/messages/count_tokens")
        count = (result.json() or {}).get("input_tokens")
        if not isinstance(count, int) or count <= 0:
            raise CheckFailed(
                f"no input_tokens in the answer: {result.error_text()}",
                "the front door's LiteLLM does not answer count_tokens; ops: check its version",
            )
        return f"{count} input tokens"

    def _stream_messages(self, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]], str | None, bytes]:
        """POST /v1/messages with stream=true; (status, content blocks, stop_reason, error body)."""
        conn = self._conn(self.timeout)
        try:
            conn.request(
                "POST",
                "/v1/messages?beta=true",
                body=json.dumps({**body, "stream": True}).encode(),
                headers=self._headers(anthropic=True),
            )
            resp = conn.getresponse()
            if resp.status != 200:
                return resp.status, [], None, resp.read()
            blocks: dict[int, dict[str, Any]] = {}
            partial: dict[int, str] = {}
            stop = None
            while True:
                raw = resp.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line[5:].strip())
                    kind = event.get("type")
                    if kind == "content_block_start":
                        blocks[event["index"]] = dict(event["content_block"])
                    elif kind == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "input_json_delta":
                            partial[event["index"]] = partial.get(event["index"], "") + delta.get("partial_json", "")
                        elif delta.get("type") == "text_delta":
                            block = blocks.setdefault(event["index"], {"type": "text", "text": ""})
                            block["text"] = block.get("text", "") + delta.get("text", "")
                    elif kind == "message_delta":
                        stop = (event.get("delta") or {}).get("stop_reason") or stop
                    elif kind == "message_stop":
                        break
            for index, text in partial.items():
                with contextlib.suppress(ValueError):
                    blocks[index]["input"] = json.loads(text) if text else {}
            return 200, [blocks[i] for i in sorted(blocks)], stop, b""
        except TimeoutError:
            raise CheckFailed("timed out", FIX_TIMEOUT.format(timeout=self.timeout)) from None
        finally:
            conn.close()

    def check_tools(self) -> str:
        tool = {
            "name": "Write",
            "description": "Write a file to the local filesystem.",
            "input_schema": {
                "type": "object",
                "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["file_path", "content"],
            },
        }
        ask = {"role": "user", "content": "Use the Write tool to create a file /tmp/coderig-smoke.txt containing hello"}
        body = {"model": self.b.served_name, "max_tokens": 512, "tools": [tool], "messages": [ask]}
        status, blocks, stop, error = self._stream_messages(body)
        if status != 200:
            raise self._classify(HttpResult(status, error), "POST /v1/messages")
        calls = [b for b in blocks if b.get("type") == "tool_use"]
        if not calls:
            raise CheckFailed(
                f"no tool call (stop_reason {stop!r})",
                "the model answered without calling the tool: the model server needs --enable-auto-tool-choice "
                "and the preset's --tool-call-parser; ops: check the model server's flags",
            )
        call = calls[0]
        if call.get("name") != "Write" or not isinstance(call.get("input"), dict) or "file_path" not in call["input"]:
            raise CheckFailed(
                f"malformed tool call {call.get('name')!r}",
                "the tool call's arguments were not valid JSON: check the tool-call parser",
            )
        follow = {
            "model": self.b.served_name,
            "max_tokens": 256,
            "tools": [tool],
            "messages": [
                ask,
                {"role": "assistant", "content": blocks},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call["id"], "content": "File created successfully."}
                    ],
                },
            ],
        }
        result = self.http("POST", "/v1/messages?beta=true", follow, anthropic=True)
        if result.status != 200:
            raise self._classify(result, "POST /v1/messages (tool result)")
        data = result.json() or {}
        if data.get("type") != "message" or not data.get("content"):
            raise CheckFailed("no answer after the tool result", "ops: see the gateway and LiteLLM logs")
        return f"{call['name']} called (streamed), result accepted, stop_reason {data.get('stop_reason')!r}"


CHECKS: list[tuple[str, Callable[[Smoke], str]]] = [
    ("dns/tcp", Smoke.check_tcp),
    ("tls", Smoke.check_tls),
    ("auth", Smoke.check_auth),
    ("model", Smoke.check_model),
    ("chat", Smoke.check_chat),
    ("count_tokens", Smoke.check_count_tokens),
    ("tool call", Smoke.check_tools),
]


def run_smoke(bundle: Bundle, timeout: float, out: Any = None) -> int:
    out = out or sys.stdout
    smoke = Smoke(bundle, timeout, ClientPaths.for_home(Path.home(), os.environ))
    print(f"coderig smoke: {bundle.developer} -> {bundle.anthropic_base_url} (model {bundle.served_name})", file=out)
    failed = False

    def safe(text: str) -> str:  # an upstream error body could echo the key: never print it
        return text.replace(bundle.token, "<token>")

    for name, check in CHECKS:
        if failed:
            print(f"  SKIP {name}", file=out)
            continue
        try:
            detail = check(smoke)
            print(f"  ok   {name:13} {safe(detail)}", file=out)
        except CheckFailed as exc:
            failed = True
            print(f"  FAIL {name:13} {safe(exc.summary)}", file=out)
            print(f"       fix: {exc.fix}", file=out)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            failed = True
            print(f"  FAIL {name:13} {type(exc).__name__}: {safe(str(exc))}", file=out)
            print(
                "       fix: a network error interrupted the check; run it again, then see the gateway's logs", file=out
            )
    if os.environ.get("ANTHROPIC_API_KEY"):
        print(
            "  note: ANTHROPIC_API_KEY is set in this shell: Claude Code may send it instead of your token; "
            "`unset ANTHROPIC_API_KEY`",
            file=out,
        )
    print("coderig smoke: " + ("FAILED" if failed else "all checks passed"), file=out)
    return 1 if failed else 0


def cmd_smoke(args: argparse.Namespace) -> int:
    return run_smoke(load_bundle_file(args.bundle), args.timeout)
