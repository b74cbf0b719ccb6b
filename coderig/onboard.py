"""`coderig bundle` (ops), `coderig onboard` and `coderig smoke` (developer).

- bundle: one developer's bundle (public stack outputs + that developer's token) as a 0600 JSON file,
  from `pulumi stack output --json --show-secrets --stack STACK` or a saved copy of that output.
- onboard: writes the token (0600) and CA files, merges the env block into Claude Code's
  settings.json (backup first, other keys kept), writes `use-<alias>.sh`, a Codex provider and an
  opencode provider. Prints what changed, never the token; a second run changes nothing.
- smoke: checks the endpoint the way the agents use it, one line per check, with the fix on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coderig import clients
from coderig.clients import Bundle, BundleError, ClientPaths
from coderig.render import write_file

CLIENTS = ("claude", "codex", "opencode")


# ---------------------------------------------------------------- file helpers


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _pretty(path: Path, home: Path) -> str:
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- coderig bundle


STATE_DIR = ".pulumi-state"  # the project-local backend `up.sh` creates (keep the two in step)


def project_backend_env(cwd: str | None) -> dict[str, str]:
    """The environment for `pulumi`: the project-local file backend and passphrase `up.sh` uses,
    unless the caller already chose a backend or passphrase."""
    env = dict(os.environ)
    state = Path(cwd or ".").resolve() / STATE_DIR
    if "PULUMI_BACKEND_URL" not in env and state.is_dir():
        env["PULUMI_BACKEND_URL"] = f"file://{state}"
        passphrase = state / "passphrase"
        if not ({"PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"} & set(env)) and passphrase.exists():
            env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    return env


def pulumi_outputs(stack: str, cwd: str | None) -> dict[str, Any]:
    exe = shutil.which("pulumi")
    if not exe:
        raise BundleError(
            "pulumi not found on PATH. Run this where the Pulumi CLI and the stack's backend are, or save the "
            f"outputs there with `pulumi stack output --json --show-secrets --stack {stack} > outputs.json` "
            "(a secret file: chmod 600) and pass --outputs outputs.json"
        )
    proc = subprocess.run(
        [exe, "stack", "output", "--json", "--show-secrets", "--stack", stack],
        capture_output=True, text=True, cwd=cwd, check=False, env=project_backend_env(cwd),
    )  # fmt: skip
    if proc.returncode != 0:
        raise BundleError(f"`pulumi stack output --stack {stack}` failed:\n{proc.stderr.strip()}")
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise BundleError("`pulumi stack output --json` did not print JSON") from None
    if not isinstance(data, dict):
        raise BundleError("`pulumi stack output --json` did not print an object")
    return data


def cmd_bundle(args: argparse.Namespace) -> int:
    try:
        if args.outputs:
            source = Path(args.outputs)
            try:
                outputs = json.loads(source.read_text())
            except FileNotFoundError:
                raise BundleError(f"{source}: no such file") from None
            except ValueError as exc:
                raise BundleError(f"{source}: not JSON ({exc})") from None
            if not isinstance(outputs, dict):
                raise BundleError(f"{source}: expected the object `pulumi stack output --json` prints")
            mode = _mode(source)
            if mode is not None and mode & 0o077:
                print(
                    f"coderig bundle: warning: {source} holds every developer's token and is readable by "
                    f"others (mode {mode:o}); chmod 600 it",
                    file=sys.stderr,
                )
        else:
            outputs = pulumi_outputs(args.stack, args.cwd)
        data = clients.developer_bundle(outputs, args.developer)
        if args.stack and data.get("stack") not in (None, args.stack):
            raise BundleError(f"the outputs are from stack {data.get('stack')!r}, not {args.stack!r}")
        out = Path(args.out)
        if out.is_dir():
            raise BundleError(f"--out {out} is a directory; give a file name such as {out}/{args.developer}.json")
        write_file(out, clients.dumps_json(data))
    except BundleError as exc:
        print(f"coderig bundle: {exc}", file=sys.stderr)
        return 2
    print(
        f"coderig bundle: wrote {out} (mode 0600, holds {args.developer}'s token) for stack {data['stack']}: "
        f"{data['endpoint']['anthropic_base_url']}, model {data['model']['served_name']}"
    )
    print(f"  send it to {args.developer} over a private channel; they run: coderig onboard {out.name}")
    return 0


# ---------------------------------------------------------------- coderig onboard


@dataclass
class Change:
    path: Path
    text: str
    mode: int
    what: str
    details: list[str] = field(default_factory=list)
    backup: bool = False  # copy the old file aside before replacing it
    state: str = "unchanged"  # created | changed | unchanged


def load_bundle_file(path: str) -> Bundle:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise BundleError(f"{p}: no such file") from None
    except ValueError as exc:
        raise BundleError(f"{p}: not JSON ({exc})") from None
    return clients.load_bundle(data)


def _json_or_none(path: Path, text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); fix or move it, then run onboard again") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} does not hold a JSON object; fix or move it, then run onboard again")
    return data


def plan_changes(bundle: Bundle, paths: ClientPaths, selected: tuple[str, ...]) -> list[Change]:
    """Every file onboard owns or merges, with its new content and whether it differs."""
    alias = bundle.alias
    changes = [Change(paths.token_file(alias), bundle.token + "\n", 0o600, "developer token (secret, not shown)")]
    if bundle.ca_cert_pem:
        pem = bundle.ca_cert_pem if bundle.ca_cert_pem.endswith("\n") else bundle.ca_cert_pem + "\n"
        changes.append(Change(paths.ca_file(alias), pem, 0o644, "the gateway's self-signed CA certificate"))
    changes.append(
        Change(
            paths.use_script(alias), clients.use_script(bundle, paths), 0o644, "shell env for all clients (source it)"
        )
    )
    if "claude" in selected:
        path = paths.claude_settings
        old = _json_or_none(path, _read(path))
        new = clients.claude_settings(old, bundle, paths)
        details = clients.env_changes((old or {}).get("env") or {}, new["env"], [clients.TOKEN_ENV])
        changes.append(
            Change(
                path,
                clients.dumps_json(new),
                0o600,
                "Claude Code settings (env block; holds the token)",
                details,
                backup=True,
            )
        )
        if old == new:
            changes[-1].text = _read(path) or ""
    if "codex" in selected:
        path = paths.codex_config
        old_text = _read(path) or ""
        new_text = clients.codex_config(old_text, bundle)
        changes.append(
            Change(
                path,
                new_text,
                _mode(path) or 0o644,
                f"Codex provider {bundle.provider_id} (wire_api responses) + default model",
                backup=True,
            )
        )
    if "opencode" in selected:
        path = paths.opencode_config
        old_text = _read(path)
        old = _json_or_none(path, old_text)
        new = clients.opencode_config(old, bundle, paths)
        text = old_text if old == new and old_text is not None else clients.dumps_json(new)
        changes.append(
            Change(
                path,
                text,
                _mode(path) or 0o644,
                f"opencode provider {bundle.provider_id} (@ai-sdk/openai-compatible) + default model",
                backup=True,
            )
        )
    for change in changes:
        current = _read(change.path)
        if current is None:
            change.state = "created"
        elif current != change.text or _mode(change.path) != change.mode:
            change.state = "changed"
    return changes


def apply_changes(changes: list[Change], stamp: str) -> dict[Path, Path]:
    backups: dict[Path, Path] = {}
    for change in changes:
        if change.state == "unchanged":
            continue
        if change.backup and change.state == "changed":
            backup = change.path.with_name(f"{change.path.name}.coderig-backup-{stamp}")
            write_file(backup, change.path.read_text(), 0o600)
            backups[change.path] = backup
        # the token's folder is private; a new ~/.claude or ~/.codex is too (they hold tokens and history)
        change.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # a dotfiles manager's symlink stays a symlink: write the file it points to
        dest = change.path.resolve() if change.path.is_symlink() else change.path
        write_file(dest, change.text, change.mode)
    return backups


def cmd_onboard(args: argparse.Namespace) -> int:
    selected = CLIENTS if args.client == "all" else (args.client,)
    home = Path(args.home).expanduser() if args.home else Path.home()
    paths = ClientPaths.for_home(home, None if args.home else os.environ)
    try:
        bundle = load_bundle_file(args.bundle)
        changes = plan_changes(bundle, paths, selected)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        backups = {} if args.dry_run else apply_changes(changes, stamp)
    except (BundleError, OSError) as exc:
        print(f"coderig onboard: {exc}", file=sys.stderr)
        return 2
    would = "would be " if args.dry_run else ""
    print(
        f"coderig onboard: {bundle.developer} -> {bundle.anthropic_base_url} "
        f"(stack {bundle.stack}, model {bundle.served_name}){' [dry run: nothing written]' if args.dry_run else ''}"
    )
    for change in changes:
        where = _pretty(change.path, home)
        line = f"  {would}{change.state:9} {where}  ({change.what})"
        if change.path.is_symlink():
            line += f"; symlink to {change.path.resolve()}"
        if change.path in backups:
            line += f"; backup {_pretty(backups[change.path], home)}"
        elif args.dry_run and change.backup and change.state == "changed":
            line += "; a backup would be written first"
        print(line)
        if change.state != "unchanged":
            for detail in change.details:
                print(f"      {detail}")
    mode = _mode(Path(args.bundle))
    if mode is not None and mode & 0o077:
        print(f"warning: {args.bundle} holds your token and is readable by others: chmod 600 {args.bundle}")
    if all(c.state == "unchanged" for c in changes):
        print("coderig onboard: nothing to change: every file is already up to date")
    script = _pretty(paths.use_script(bundle.alias), home)
    print("next:")
    if "claude" in selected:
        print("  claude                  # Claude Code reads the env block of ~/.claude/settings.json")
    if "codex" in selected or "opencode" in selected:
        print(f"  . {script}   # then codex / opencode (they read the token and CA from this env)")
    print(f"  coderig smoke {args.bundle}")
    if os.environ.get("ANTHROPIC_API_KEY"):
        print(
            "note: ANTHROPIC_API_KEY is set in this shell; the settings env block blanks it for Claude Code, "
            "but `unset ANTHROPIC_API_KEY` (and remove it from your shell profile) to avoid surprises"
        )
    return 0


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
    try:
        bundle = load_bundle_file(args.bundle)
    except BundleError as exc:
        print(f"coderig smoke: {exc}", file=sys.stderr)
        return 2
    return run_smoke(bundle, args.timeout)


# ---------------------------------------------------------------- CLI


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = subparsers.add_parser("bundle", help="(ops) write one developer's bundle file (0600) from stack outputs")
    b.add_argument("--stack", required=True, help="Pulumi stack name")
    b.add_argument("--developer", required=True, help="a name listed in coderig:developers")
    b.add_argument("--out", required=True, metavar="FILE", help="bundle file to write (mode 0600)")
    b.add_argument(
        "--outputs", metavar="FILE", help="saved `pulumi stack output --json --show-secrets` (default: run pulumi)"
    )
    b.add_argument("--cwd", help="Pulumi project directory for `pulumi stack output` (default: current)")
    b.set_defaults(func=cmd_bundle)

    o = subparsers.add_parser("onboard", help="(developer) configure Claude Code, Codex and opencode from a bundle")
    o.add_argument("bundle", metavar="BUNDLE", help="bundle file from `coderig bundle`")
    o.add_argument("--client", choices=[*CLIENTS, "all"], default="all", help="which client (default: all)")
    o.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    o.add_argument("--home", metavar="DIR", help="home directory to configure (default: $HOME)")
    o.set_defaults(func=cmd_onboard)

    s = subparsers.add_parser("smoke", help="(developer) check the endpoint of a bundle the way the agents use it")
    s.add_argument("bundle", metavar="BUNDLE", help="bundle file from `coderig bundle`")
    s.add_argument("--timeout", type=float, default=120, help="seconds per request (default: %(default)s)")
    s.set_defaults(func=cmd_smoke)
