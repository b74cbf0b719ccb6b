"""`coderig:gateway.allowedCidrs` in nginx: only these client addresses reach the gateway's API.

Checked in nginx's server-rewrite phase, the first one a request meets: before the route allow-list,
the developer-key check, the rate limit and any upstream, so a refused address learns nothing (not even
whether its key is valid) and gets `403` in its client's error shape. Loopback is always allowed (the
node's own readiness checks run inside the gateway container), and so is `GET /healthz` (it holds no
secret and load balancers and Kubernetes probes ask it from their own addresses). Empty: no check.

The address is the TCP peer's (`$remote_addr`): behind a proxy or load balancer that rewrites the source
address (a Kubernetes LoadBalancer Service without `externalTrafficPolicy: Local`), the list must name
that proxy's addresses, or the filtering belongs there.
"""

from __future__ import annotations

import ipaddress

from coderig.frontdoor.nginx import anthropic_error, nginx_quote, openai_error

ALWAYS = ("127.0.0.0/8", "::1/128")
EXEMPT_PATHS = ("/healthz",)
MESSAGE = "your address may not use this gateway (coderig:gateway.allowedCidrs)"
ANTHROPIC_PREFIXES = ("/v1/messages", "/api/")  # the paths whose clients expect Anthropic's error shape


def normalized(cidrs: tuple[str, ...]) -> list[str]:
    """Each network once, in nginx's form (host bits cleared), loopback first."""
    nets = [str(ipaddress.ip_network(c, strict=False)) for c in (*ALWAYS, *cidrs)]
    return list(dict.fromkeys(nets))


def http_lines(cidrs: tuple[str, ...]) -> list[str]:
    """http-level: which addresses are allowed, which requests are refused, and the refusal's body."""
    if not cidrs:
        return []
    forbidden_anthropic = nginx_quote(anthropic_error("permission_error", MESSAGE))
    forbidden_openai = nginx_quote(openai_error("invalid_request_error", "forbidden", MESSAGE))
    return [
        "# coderig:gateway.allowedCidrs (coderig/frontdoor/cidrs.py): refused before any other check.",
        "geo $coderig_cidr_allowed {",
        "    default 0;",
        *[f"    {net} 1;" for net in normalized(cidrs)],
        "}",
        "map $uri $coderig_cidr_exempt {",
        "    default 0;",
        *[f"    {path} 1;" for path in EXEMPT_PATHS],
        "}",
        'map "$coderig_cidr_allowed$coderig_cidr_exempt" $coderig_cidr_refused {',
        "    default 0;",
        "    00 1;",
        "}",
        "map $uri $coderig_cidr_body {",
        f"    default {forbidden_openai};",
        *[f"    ~^{prefix} {forbidden_anthropic};" for prefix in ANTHROPIC_PREFIXES],
        "}",
    ]


def server_lines(cidrs: tuple[str, ...]) -> list[str]:
    """server-level, so it runs before location selection (the key check lives in the locations)."""
    return ["if ($coderig_cidr_refused) { return 403 $coderig_cidr_body; }"] if cidrs else []
