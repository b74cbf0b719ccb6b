"""`coderig frontdoor run` and `coderig frontdoor install-litellm`: argument parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from coderig import frontdoor
from coderig.core.errors import UserError
from coderig.core.settings import EXTERNAL_HEALTH_PATH, GatewaySettings
from coderig.frontdoor import run


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


def _cmd_run(args: argparse.Namespace) -> int:
    return run.run(
        run.RunOptions(
            backends=args.backend,
            model=args.model,
            listen=args.listen,
            keys_file=Path(args.keys_file),
            plain_http=args.plain_http,
            state_dir=Path(args.state_dir),
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
        "Such requests must name the served model; /v1/messages and /v1/responses always "
        "go through LiteLLM",
    )
    p.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for LiteLLM")
    p.set_defaults(func=_cmd_run)
    inst = fd_sub.add_parser("install-litellm", help="install the pinned LiteLLM into its own venv")
    inst.set_defaults(func=_cmd_install)


def _cmd_install(_args: argparse.Namespace) -> int:
    print(run.ensure_litellm())
    return 0
