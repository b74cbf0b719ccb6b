"""Replica links: mutual TLS between the first machine and the model replicas on other hosts. Pure.

Between hosts, the model API key and every prompt (developers' source code) would otherwise cross
the network in clear. Each replica's model server binds to loopback like the first machine's, and
an nginx `stream` server on the replica's private address terminates TLS in front of it; on the
first machine an nginx `stream` server per replica listens on loopback and opens TLS to it. The
gateway, LiteLLM and the SSE keepalive relay keep talking plain HTTP to loopback ports, so one
change covers every path to a replica, and the link works for any engine (vLLM, llama.cpp).

Both ends authenticate: the replica accepts only a client certificate from the stack's internal CA
(`ssl_verify_client on`), and the first machine accepts only the replica's own certificate
(`proxy_ssl_verify on`, checked against the name `replica_name(i)`). The internal CA is the stack's
own (components.frontdoor.ReplicaLinks), never the gateway's: developers trust the gateway's CA,
and it may be a certificate the company supplied. TLS 1.3 only: both ends are the pinned nginx.

The pinned image (nginx.org packages) has the stream module built in (`nginx -V`: --with-stream
--with-stream_ssl_module); Debian's nginx loads it as a module (`load_module`, libnginx-mod-stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coderig.core.access import certificate_sans
from coderig.frontdoor.nginx import hostport

LINK_PORT = 4200  # the first machine's loopback listener for replica i (i >= 1) is LINK_PORT + i
LINK_DOMAIN = "coderig.internal"  # names only inside certificates: never looked up in DNS
CONNECT_TIMEOUT_S = 5  # a replica that does not answer: the gateway moves the request to another


def replica_name(index: int) -> str:
    """The name replica `index` (1, 2, …: its machine's position) proves with its certificate."""
    if index < 1:
        raise ValueError("replica_name: machine 0 is the gateway's, replicas start at 1")
    return f"replica-{index}.{LINK_DOMAIN}"


def link_port(index: int) -> int:
    return LINK_PORT + index


def link_listen(index: int) -> str:
    """host:port on the first machine that reaches replica `index` through its link."""
    return f"127.0.0.1:{link_port(index)}"


@dataclass(frozen=True)
class LinkCertificate:
    """What one machine's link certificate says (the component issues it from the internal CA)."""

    common_name: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    allowed_uses: tuple[str, ...]


def link_certificate(index: int, address: str = "") -> LinkCertificate:
    """Machine 0 (the gateway's) gets a client certificate; replica `index` a server certificate for
    its link name and its private address (an IP literal or a host name, as configured)."""
    if index == 0:
        return LinkCertificate(f"gateway.{LINK_DOMAIN}", (), (), ("digital_signature", "client_auth"))
    dns, ips = certificate_sans([replica_name(index), address], loopback=False)
    return LinkCertificate(replica_name(index), tuple(dns), tuple(ips), ("digital_signature", "server_auth"))


@dataclass(frozen=True)
class LinkPaths:
    """Where a link's nginx finds its files (in its container, or a test's temporary directory)."""

    cert: str
    key: str
    ca: str
    pid_path: str = "/var/run/nginx.pid"
    error_log: str = "/var/log/nginx/error.log"
    load_stream_module: str | None = None  # a dynamic ngx_stream_module.so to load (Debian's nginx)


def _conf(paths: LinkPaths, servers: list[list[str]]) -> str:
    head = [
        "# Rendered by coderig (replica link): mutual TLS between the gateway's machine and a replica.",
        *([f"load_module {paths.load_stream_module};"] if paths.load_stream_module else []),
        "worker_processes auto;",
        f"pid {paths.pid_path};",
        f"error_log {paths.error_log} warn;",
        "daemon off;",
        "events {",
        "    worker_connections 4096;",
        "}",
        "stream {",
    ]
    body: list[str] = []
    for server in servers:
        body += ["    server {", *(f"        {line}" for line in server), "    }"]
    return "\n".join([*head, *body, "}"]) + "\n"


def render_server_conf(address: str, port: int, model: str, paths: LinkPaths, timeout_s: int) -> str:
    """A replica's end: TLS on `address:port` (its private address), for gateway-CA clients only, to
    the model server on `model` (loopback)."""
    return _conf(
        paths,
        [
            [
                f"listen {hostport(address, port)} ssl;",
                f"ssl_certificate {paths.cert};",
                f"ssl_certificate_key {paths.key};",
                "ssl_protocols TLSv1.3;",
                f"ssl_client_certificate {paths.ca};",
                "ssl_verify_client on;",
                "ssl_verify_depth 1;",
                "ssl_session_cache shared:coderig_link:1m;",
                "ssl_session_tickets off;",
                f"proxy_pass {model};",
                f"proxy_connect_timeout {CONNECT_TIMEOUT_S}s;",
                f"proxy_timeout {timeout_s}s;",  # a long prefill is silent on the wire
            ]
        ],
    )


def render_client_conf(replicas: Sequence[tuple[int, str]], model_port: int, paths: LinkPaths, timeout_s: int) -> str:
    """The first machine's end: for each (index, address) of a replica, a loopback listener
    (`link_listen(index)`) that opens verified TLS to `address:model_port`. A replica that cannot be
    reached, or shows another certificate, closes the connection without a byte: nginx's upstream
    counts that as a failed attempt and tries another replica."""
    servers = []
    for index, address in replicas:
        servers.append(
            [
                f"listen {link_listen(index)};",
                f"proxy_pass {hostport(address, model_port)};",
                "proxy_ssl on;",
                "proxy_ssl_protocols TLSv1.3;",
                f"proxy_ssl_certificate {paths.cert};",
                f"proxy_ssl_certificate_key {paths.key};",
                f"proxy_ssl_trusted_certificate {paths.ca};",
                "proxy_ssl_verify on;",
                "proxy_ssl_verify_depth 1;",
                f"proxy_ssl_name {replica_name(index)};",
                "proxy_ssl_server_name on;",
                "proxy_ssl_session_reuse on;",
                f"proxy_connect_timeout {CONNECT_TIMEOUT_S}s;",
                f"proxy_timeout {timeout_s}s;",
            ]
        )
    return _conf(paths, servers)
