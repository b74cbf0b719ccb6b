"""Developer keys and gateway TLS as Pulumi resources (mocks) and their pure decisions."""

from __future__ import annotations

import pulumi
from conftest import run_program

from coderig.core import access
from components.frontdoor import DeveloperKeys, DeveloperKeysArgs, GatewayTls, GatewayTlsArgs, MasterKey, MasterKeyArgs


def keys_program(developers: list[str]):
    def program() -> dict[str, object]:
        keys = DeveloperKeys("dev-keys", DeveloperKeysArgs(developers))
        master = MasterKey("frontdoor", MasterKeyArgs())
        tls_ = GatewayTls("gw", GatewayTlsArgs(["gpu1.internal", "10.0.0.5"]))
        return {"tokens": keys.tokens, "master": master.value, "ca": tls_.ca_pem, "key": tls_.key_pem,
                "cert": tls_.cert_pem}

    return program


def test_one_key_per_developer_and_secret():
    run = run_program({}, keys_program(["alice", "bob"]))
    assert run.error is None, run.error
    pw = run.of_type("random:index/randomPassword:RandomPassword")
    assert sorted(r.name for r in pw) == ["dev-keys-alice", "dev-keys-bob", "frontdoor-litellm"]
    assert all(r.inputs["length"] >= 32 and r.inputs["special"] is False for r in pw)
    tokens = run.outputs["tokens"]
    assert set(tokens) == {"alice", "bob"} and tokens["alice"] != tokens["bob"]
    assert all(t.startswith(access.KEY_PREFIX) for t in tokens.values())
    assert {"tokens", "master", "key"} <= run.secret_outputs
    assert "ca" not in run.secret_outputs and "cert" not in run.secret_outputs  # public material


def test_removing_a_developer_revokes_exactly_that_key():
    before = run_program({}, keys_program(["alice", "bob", "carol"]))
    after = run_program({}, keys_program(["alice", "carol"]))
    names = lambda run: {r.name: r.inputs for r in run.of_type("random:index/randomPassword:RandomPassword")}  # noqa: E731
    b, a = names(before), names(after)
    assert set(b) - set(a) == {"dev-keys-bob"}
    # the survivors keep the same resource name and inputs: Pulumi sees no change, their keys stay valid
    assert all(b[n] == a[n] for n in a)
    assert before.outputs["tokens"]["alice"] == after.outputs["tokens"]["alice"]
    assert "bob" not in after.outputs["tokens"]


def test_self_signed_certificate_names_and_usages():
    run = run_program({}, keys_program(["alice"]))
    ca = run.named("gw-ca")
    assert ca.inputs["isCaCertificate"] is True
    csr = run.named("gw-csr")
    assert csr.inputs["dnsNames"] == ["gpu1.internal", "localhost"]
    assert csr.inputs["ipAddresses"] == ["10.0.0.5", "127.0.0.1"]
    server = run.named("gw-server")
    assert "server_auth" in server.inputs["allowedUses"]
    assert server.inputs["earlyRenewalHours"] > 0


def test_supplied_certificate_skips_the_ca():
    def program() -> dict[str, object]:
        cert, key = pulumi.Output.from_input("CERT"), pulumi.Output.secret("KEY")
        args = GatewayTlsArgs(["x"], supplied_cert=cert, supplied_key=key)
        t = GatewayTls("gw", args)
        return {"cert": t.cert_pem, "key": t.key_pem}

    run = run_program({}, program)
    assert run.error is None
    assert not run.of_type("tls:index/selfSignedCert:SelfSignedCert")
    assert run.outputs == {"cert": "CERT", "key": "KEY"} and "key" in run.secret_outputs


def test_certificate_sans_split_and_dedup():
    dns, ips = access.certificate_sans(["GPU1.internal", "10.0.0.5", "gpu1.internal", "::1", " "])
    assert dns == ["gpu1.internal", "localhost"]
    assert ips == ["10.0.0.5", "::1", "127.0.0.1"]
