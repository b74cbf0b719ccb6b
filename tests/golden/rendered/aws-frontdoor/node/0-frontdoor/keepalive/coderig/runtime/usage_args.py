"""The relay's usage-accounting options (stdlib only): its command-line flags, their checks, and
starting the accounting (coderig.runtime.usage_server, imported only when a flag asks for it, so the
relay runs without the usage modules where none is given)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coderig.runtime.usage_server import Accounting


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def usage_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--usage-file", help="usage record (JSON, 0600), loaded at start, written every --flush s")
    ap.add_argument("--metrics", help="HOST:PORT serving /metrics and /usage (loopback, or see --metrics-allow)")
    ap.add_argument("--metrics-allow", action="append", default=[], help="CIDR allowed to reach --metrics (repeatable)")
    ap.add_argument("--flush", type=float, default=10.0, help="seconds between usage record writes")
    ap.add_argument("--gateway", help="HOST:PORT of the gateway's listener, probed for coderig_gateway_up")
    ap.add_argument("--probe", type=float, default=30.0, help="seconds between model server health probes")


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the usage flags (None: nothing); raises ValueError for a bad HOST:PORT."""
    if args.flush <= 0 or args.probe <= 0:
        return "--flush and --probe must be > 0"
    if args.metrics:
        from coderig.runtime.usage_server import metrics_listen_error  # noqa: PLC0415

        return metrics_listen_error(_hostport(args.metrics)[0], args.metrics_allow)
    if args.usage_file and Path(args.usage_file).exists():
        from coderig.runtime.usage_record import RecordError, load  # noqa: PLC0415

        try:
            load(Path(args.usage_file))
        except RecordError as exc:
            return f"{exc}; move it aside to start a new record"
    return None


async def start_accounting(targets: Sequence[tuple[str, int]], args: argparse.Namespace) -> Accounting | None:
    """Usage accounting and the metrics listener, when a flag asks for them (None otherwise)."""
    if not (args.usage_file or args.metrics):
        return None
    from coderig.runtime.usage_server import Accounting  # noqa: PLC0415 - only when accounting is on

    gateway = _hostport(args.gateway) if args.gateway else None
    record = Path(args.usage_file) if args.usage_file else None
    accounting = Accounting(record, targets, args.flush, args.probe, gateway)
    accounting.start()
    if args.metrics:
        host, port = _hostport(args.metrics)
        await accounting.serve_metrics(host, port, args.metrics_allow)
    return accounting
