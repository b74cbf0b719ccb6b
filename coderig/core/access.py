"""Developer keys and gateway certificate names: the decisions, without Pulumi."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

KEY_LENGTH = 48  # random characters per developer key (≈ 285 bits from [A-Za-z0-9])
KEY_PREFIX = "crk-"  # marks a coderig key in logs and secret scanners, never the key itself
CA_VALIDITY_HOURS = 10 * 365 * 24
SERVER_VALIDITY_HOURS = 2 * 365 * 24
SERVER_EARLY_RENEWAL_HOURS = 30 * 24  # `pulumi up` in the last month re-issues the server certificate


def developer_token(random_part: str) -> str:
    return f"{KEY_PREFIX}{random_part}"


def certificate_sans(names: Iterable[str], *, loopback: bool = True) -> tuple[list[str], list[str]]:
    """Split host names and addresses into (DNS names, IP addresses) for a certificate, deduplicated;
    with `loopback`, localhost/127.0.0.1 too, so an operator on the node can reach the gateway."""
    dns: list[str] = []
    ips: list[str] = []
    for name in [*names, *(["localhost", "127.0.0.1"] if loopback else [])]:
        name = name.strip()
        if not name:
            continue
        try:
            ip = str(ipaddress.ip_address(name))
        except ValueError:
            if name.lower() not in dns:
                dns.append(name.lower())
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips
