"""`coderig frontdoor run` and `coderig frontdoor install-litellm`: argument parsing only."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from coderig import frontdoor
from coderig.client import bundle as clients
from coderig.client import configs
from coderig.core.errors import UserError
from coderig.core.files import write_file
from coderig.core.settings import DEVELOPER_RE, GatewaySettings
from coderig.frontdoor import run
from coderig.frontdoor.nginx import WILDCARDS, public_name
from coderig.runtime.http import http_get
from coderig.targets.external.settings import EXTERNAL_HEALTH_PATH


def rate_per_second(args: argparse.Namespace) -> int:
    """--rate-limit-per-minute as nginx's per-second rate, by the stack's own conversion."""
    if args.rate_limit is not None:
        raise UserError(
            f"--rate-limit (requests per second) was replaced by --rate-limit-per-minute, the unit of "
            f"coderig:gateway.rateLimitPerMinute: use --rate-limit-per-minute {_per_minute(args.rate_limit)}"
        )
    try:
        return GatewaySettings(rateLimitPerMinute=args.rate_limit_per_minute).rate_per_second
    except ValueError:
        raise UserError(f"--rate-limit-per-minute must be 1 or more, got {args.rate_limit_per_minute}") from None


def _per_minute(per_second: str) -> str:
    return str(int(per_second) * 60) if per_second.isdigit() else "N"


def served_models(backend: str) -> list[str] | None:
    """The model ids the backend's GET /v1/models lists; None when it does not answer 200 with a list."""
    body = http_get(backend.rstrip("/") + "/models", timeout=10)
    try:
        entries = json.loads(body or "null")["data"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(entries, list):
        return None
    return [str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e]


def unserved_model(backends: list[str], model: str) -> str | None:
    """Why --model cannot work: a backend lists its models and `model` is not among them. A backend that
    does not list them (not up yet, a key on /v1/models) is left to /healthz."""
    for backend in backends:
        served = served_models(backend)
        if served is not None and model not in served:
            hint = f"; use --model {served[0]}" if len(served) == 1 else ""
            listed = ", ".join(repr(m) for m in served) or "none"
            return f"--model {model!r} is not served by {backend} (its /models lists: {listed}){hint}"
    return None


def served_context(backend: str, model: str) -> int | None:
    """The backend's context length for `model` from its GET /v1/models (`max_model_len`, as vLLM reports it)."""
    body = http_get(backend.rstrip("/") + "/models", timeout=10)
    try:
        entries = json.loads(body or "{}").get("data") or []
    except (ValueError, AttributeError):
        return None
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id") == model and isinstance(entry.get("max_model_len"), int):
            return int(entry["max_model_len"])
    return None


def public_base(base_url: str, tls_names: list[str]) -> str:
    """The base URL developers use: a wildcard listen address is named by --tls-name or this host's name."""
    parts = urlsplit(base_url)
    if parts.hostname not in WILDCARDS:
        return base_url
    host = tls_names[0] if tls_names else public_name(parts.hostname)
    return f"{parts.scheme}://{host}:{parts.port}"


def bundle_writer(args: argparse.Namespace) -> Callable[[str, str | None, dict[str, str]], None] | None:
    """The runner's hook for --bundles-dir: each developer's bundle as DIR/<developer>.json (0600), rewritten
    on every key reload (a revoked developer's file is removed)."""
    if not args.bundles_dir:
        return None
    out = Path(args.bundles_dir)
    max_model_len = args.max_model_len or served_context(args.backend[0], args.model)
    if not max_model_len:
        raise UserError(
            f"--bundles-dir needs the served context length: {args.backend[0]}/models does not report "
            f"max_model_len for {args.model!r}; pass --max-model-len N"
        )
    if not 0 < args.max_tokens < max_model_len:
        raise UserError(f"--max-tokens {args.max_tokens} must be below the context length {max_model_len}")
    written: set[str] = set()

    def write(base_url: str, ca_pem: str | None, keys: dict[str, str]) -> None:
        bundles = clients.frontdoor_bundles(
            name=args.name,
            base_url=public_base(base_url, args.tls_name),
            served_name=args.model,
            aliases=args.alias,
            max_model_len=max_model_len,
            max_output_tokens=args.max_tokens,
            ca_cert_pem=ca_pem,
            tokens=keys,
            backends=args.backend,
        )
        for developer, data in bundles.items():
            write_file(out / f"{developer}.json", configs.dumps_json(data), 0o600)
        for gone in written - set(bundles):
            (out / f"{gone}.json").unlink(missing_ok=True)
        written.clear()
        written.update(bundles)
        some = next(iter(bundles), "NAME")
        print(
            f"coderig frontdoor: wrote {len(bundles)} developer bundle(s) to {out}/ (mode 0600, each holds its "
            f"developer's key); a developer runs: coderig onboard {out / some}.json",
            flush=True,
        )

    return write


def daily_tokens(given: list[str]) -> tuple[tuple[str, int], ...]:
    """--daily-tokens NAME=TOKENS, each checked; every problem at once."""
    out: dict[str, int] = {}
    problems = []
    for item in given:
        name, _, tokens = item.partition("=")
        if not DEVELOPER_RE.fullmatch(name) or not tokens.isdigit() or int(tokens) < 1:
            problems.append(f"--daily-tokens {item!r}: expected NAME=TOKENS, e.g. alice=2000000 (TOKENS >= 1)")
        else:
            out[name] = int(tokens)
    if problems:
        raise UserError(problems)
    return tuple(sorted(out.items()))


def _cmd_run(args: argparse.Namespace) -> int:
    problem = unserved_model(args.backend, args.model)
    if problem:  # every request would fail with the backend's 404 while /healthz said ready
        raise UserError(problem)
    on_keys = bundle_writer(args)
    return run.run(
        run.RunOptions(
            backends=args.backend,
            model=args.model,
            listen=args.listen,
            keys_file=Path(args.keys_file),
            plain_http=args.plain_http,
            state_dir=Path(args.state_dir).resolve(),  # nginx runs with its own prefix
            aliases=args.alias,
            max_tokens=args.max_tokens,
            timeout_s=args.timeout,
            litellm_timeout_s=args.litellm_timeout or args.timeout,
            litellm_workers=args.litellm_workers,
            litellm_port=args.litellm_port,
            rate_per_second=rate_per_second(args),
            rate_burst=args.rate_burst,
            tls_names=args.tls_name,
            health_path=args.health_path,
            direct_chat=args.direct_chat,
            startup_timeout_s=args.startup_timeout,
            native_routes=tuple(r for r in args.native_routes.split(",") if r),
            keepalive_s=args.keepalive,
            metrics_listen=args.metrics_listen,
            daily_tokens=daily_tokens(args.daily_tokens),
            on_keys=on_keys,
        )
    )


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fd = subparsers.add_parser("frontdoor", help="run the front door (gateway + LiteLLM) locally")
    fd_sub = fd.add_subparsers(dest="frontdoor_command", required=True, metavar="SUBCOMMAND")
    p = fd_sub.add_parser(
        "run",
        help="serve an OpenAI-compatible endpoint to Claude Code/Codex/opencode until interrupted",
        description=run.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backend",
        action="append",
        required=True,
        metavar="URL",
        help="model server base URL ending in /v1 (repeat for replicas)",
    )
    p.add_argument("--model", required=True, metavar="NAME", help="model name the backend serves")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="gateway address")
    p.add_argument("--keys-file", required=True, metavar="FILE", help='JSON {"developer": "token"}')
    p.add_argument("--plain-http", action="store_true", help="no TLS (loopback listen addresses only)")
    p.add_argument("--state-dir", default=".coderig/frontdoor", help="CA, logs (default: %(default)s)")
    p.add_argument("--alias", action="append", default=[], metavar="NAME", help="extra model name")
    p.add_argument("--max-tokens", type=int, default=8192, help="default max_tokens (default: %(default)s)")
    p.add_argument(
        "--timeout",
        type=int,
        default=frontdoor.DEFAULT_TIMEOUT_S,
        help="gateway read/send timeouts, seconds (default: %(default)s)",
    )
    p.add_argument(
        "--litellm-timeout", type=int, default=0, help="LiteLLM request timeout, seconds (default: same as --timeout)"
    )
    p.add_argument("--litellm-workers", type=int, default=1, help="LiteLLM worker processes")
    p.add_argument("--litellm-port", type=int, default=0, help="LiteLLM loopback port (default: free)")
    p.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=GatewaySettings().rateLimitPerMinute,
        metavar="N",
        help="requests per minute per developer, like coderig:gateway.rateLimitPerMinute (default: %(default)s)",
    )
    p.add_argument("--rate-limit", help=argparse.SUPPRESS)  # replaced: refused with the new flag's name
    p.add_argument("--rate-burst", type=int, default=100, help="burst per developer (default: 100)")
    p.add_argument(
        "--tls-name",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP for the server certificate",
    )
    p.add_argument(
        "--health-path",
        default=EXTERNAL_HEALTH_PATH,
        help="what /healthz asks the backend, on its URL without the trailing /v1, like "
        "coderig:target.healthPath (default: %(default)s, which every OpenAI-compatible server answers; "
        "/health for vLLM)",
    )
    p.add_argument(
        "--direct-chat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send OpenAI-native /v1/chat/completions from the gateway straight to the backend, "
        "bypassing LiteLLM (default: on; it is much faster, see bench/frontdoor_bench.py). "
        "Such requests must name the served model; /v1/messages, count_tokens and /v1/responses "
        "follow --native-routes (by default straight to the backend too; a name it does not serve, "
        "such as claude-*, goes on to LiteLLM)",
    )
    p.add_argument(
        "--native-routes",
        default="messages,count_tokens,responses",
        metavar="LIST",
        help="routes the backend serves itself (vLLM: all three), sent there straight from the gateway; "
        "'' keeps them on LiteLLM (default: %(default)s)",
    )
    p.add_argument(
        "--keepalive", type=float, default=15.0, help="seconds of stream silence before an SSE comment (default: 15)"
    )
    p.add_argument(
        "--metrics-listen",
        default="",
        metavar="HOST:PORT",
        help="loopback address of the usage metrics listener (/metrics, /usage; default: a free port)",
    )
    p.add_argument(
        "--daily-tokens",
        action="append",
        default=[],
        metavar="NAME=TOKENS",
        help="a developer's daily token budget (input + output, UTC day; over it: 429 until 00:00 UTC), "
        "as coderig:developers[].dailyTokens on a stack (repeatable)",
    )
    p.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for LiteLLM")
    p.add_argument(
        "--bundles-dir",
        metavar="DIR",
        help="once ready, write each developer's bundle (what `coderig bundle` makes from a stack) as "
        "DIR/<developer>.json, mode 0600, and rewrite them when SIGHUP reloads the keys: developers run "
        "`coderig onboard` and `coderig smoke` on them",
    )
    p.add_argument(
        "--name",
        default="frontdoor",
        help="what the bundles call this endpoint (their stack and alias: use-NAME.sh, the /model picker label; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        metavar="N",
        help="the model's context length for the bundles (default: what the backend's /v1/models reports)",
    )
    p.set_defaults(func=_cmd_run)
    inst = fd_sub.add_parser("install-litellm", help="install the pinned LiteLLM into its own venv")
    inst.set_defaults(func=_cmd_install)


def _cmd_install(_args: argparse.Namespace) -> int:
    print(run.ensure_litellm())
    return 0
