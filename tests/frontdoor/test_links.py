"""The replica link's decisions (coderig.frontdoor.links): certificate contents and both ends' nginx
stream configs. tests/targets/test_replica_link.py runs them on a network."""

from __future__ import annotations

import re

import pytest

from coderig.frontdoor import links

PATHS = links.LinkPaths(cert="/l/link.crt", key="/l/link.key", ca="/l/ca.crt")


def test_machine_zero_gets_a_client_certificate_replicas_a_server_certificate_for_their_name() -> None:
    client = links.link_certificate(0)
    assert client.allowed_uses == ("digital_signature", "client_auth") and not client.dns_names + client.ip_addresses
    by_ip = links.link_certificate(1, "10.0.0.6")
    assert by_ip.dns_names == ("replica-1.coderig.internal",) and by_ip.ip_addresses == ("10.0.0.6",)
    assert by_ip.allowed_uses == ("digital_signature", "server_auth")
    by_name = links.link_certificate(2, "GPU2.internal")
    assert by_name.dns_names == ("replica-2.coderig.internal", "gpu2.internal") and by_name.ip_addresses == ()
    with pytest.raises(ValueError, match="replicas start at 1"):
        links.replica_name(0)


def test_client_end_verifies_each_replica_by_its_own_name_over_tls13() -> None:
    conf = links.render_client_conf([(1, "10.0.0.6"), (2, "fd00::7")], 8000, PATHS, 1800)
    servers = conf.split("server {")[1:]
    assert len(servers) == 2
    for index, (server, target) in enumerate(zip(servers, ("10.0.0.6:8000", "[fd00::7]:8000"), strict=True), 1):
        assert f"listen 127.0.0.1:{links.link_port(index)};" in server  # loopback only
        assert f"proxy_pass {target};" in server
        assert f"proxy_ssl_name replica-{index}.coderig.internal;" in server
        for line in ("proxy_ssl on;", "proxy_ssl_verify on;", "proxy_ssl_protocols TLSv1.3;",
                     "proxy_ssl_certificate /l/link.crt;", "proxy_ssl_trusted_certificate /l/ca.crt;",
                     "proxy_timeout 1800s;"):  # fmt: skip
            assert line in server, line
    assert "load_module" not in conf  # the pinned image has the stream module built in


def test_server_end_listens_in_tls_only_and_requires_the_internal_ca() -> None:
    paths = links.LinkPaths(cert="/l/link.crt", key="/l/link.key", ca="/l/ca.crt", load_stream_module="/m/stream.so")
    conf = links.render_server_conf("10.0.0.6", 8000, "127.0.0.1:8000", paths, 600)
    assert conf.splitlines()[1] == "load_module /m/stream.so;"  # before any context, as nginx requires
    assert re.findall(r"listen (.+);", conf) == ["10.0.0.6:8000 ssl"]
    for line in ("ssl_verify_client on;", "ssl_client_certificate /l/ca.crt;", "ssl_protocols TLSv1.3;",
                 "proxy_pass 127.0.0.1:8000;", "proxy_timeout 600s;"):  # fmt: skip
        assert line in conf, line
