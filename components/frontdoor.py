"""Front-door access as Pulumi resources: one random key per developer, and the gateway's TLS.

Removing a developer from `coderig:developers` deletes exactly that developer's key resource at
the next `pulumi up` (the gateway's key file is re-rendered without it); the others are untouched
because each key is its own resource named after the developer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from coderig.core import access


@dataclass(frozen=True)
class DeveloperKeysArgs:
    developers: Sequence[str]


class DeveloperKeys(pulumi.ComponentResource):
    """One random key per developer (`tokens`: {name: token}, secret)."""

    tokens: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: DeveloperKeysArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:frontdoor:DeveloperKeys", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        passwords = {
            dev: random.RandomPassword(f"{name}-{dev}", length=access.KEY_LENGTH, special=False, opts=child)
            for dev in args.developers
        }
        self.tokens = pulumi.Output.secret(
            pulumi.Output.all(**{d: p.result for d, p in passwords.items()}).apply(
                lambda r: {d: access.developer_token(v) for d, v in r.items()}
            )
        )
        self.register_outputs({"tokens": self.tokens})


@dataclass(frozen=True)
class MasterKeyArgs:
    prefix: str = "sk-"  # LiteLLM expects master keys to start with sk-


class MasterKey(pulumi.ComponentResource):
    """LiteLLM's master key: only the gateway knows it; it never leaves the node."""

    value: pulumi.Output[str]

    def __init__(self, name: str, args: MasterKeyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:frontdoor:MasterKey", name, None, opts)
        key = random.RandomPassword(f"{name}-litellm", length=access.KEY_LENGTH, special=False,
                                    opts=pulumi.ResourceOptions(parent=self))  # fmt: skip
        self.value = pulumi.Output.secret(key.result.apply(lambda v: f"{args.prefix}{v}"))
        self.register_outputs({})


@dataclass(frozen=True)
class GatewayTlsArgs:
    names: pulumi.Input[Sequence[str]]  # DNS names and addresses the certificate covers
    supplied_cert: pulumi.Output[str] | None = None  # coderig:tlsCertificate / tlsPrivateKey
    supplied_key: pulumi.Output[str] | None = None


class GatewayTls(pulumi.ComponentResource):
    """The gateway certificate: a stack-owned CA and a server certificate for the node's names and
    addresses, or a certificate and key supplied as config secrets (then `ca_pem` is None)."""

    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
    ca_pem: pulumi.Output[str] | None

    def __init__(self, name: str, args: GatewayTlsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:frontdoor:GatewayTls", name, None, opts)
        if args.supplied_cert is not None and args.supplied_key is not None:
            self.cert_pem, self.key_pem, self.ca_pem = args.supplied_cert, pulumi.Output.secret(args.supplied_key), None
        else:
            self.cert_pem, self.key_pem, self.ca_pem = _self_signed(name, args.names, self)
        self.register_outputs({"cert_pem": self.cert_pem, "ca_pem": self.ca_pem})


def _self_signed(
    name: str, names: pulumi.Input[Sequence[str]], parent: pulumi.Resource
) -> tuple[pulumi.Output[str], pulumi.Output[str], pulumi.Output[str]]:
    child = pulumi.ResourceOptions(parent=parent)
    stack = pulumi.get_stack()
    ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
    ca = tls.SelfSignedCert(
        f"{name}-ca",
        private_key_pem=ca_key.private_key_pem,
        is_ca_certificate=True,
        validity_period_hours=access.CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing"],
        subject=tls.SelfSignedCertSubjectArgs(common_name=f"coderig {stack} CA", organization="coderig"),
        opts=child,
    )
    sans = pulumi.Output.from_input(names).apply(access.certificate_sans)
    server_key = tls.PrivateKey(f"{name}-server-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
    csr = tls.CertRequest(
        f"{name}-csr",
        private_key_pem=server_key.private_key_pem,
        subject=tls.CertRequestSubjectArgs(common_name=f"coderig {stack} gateway", organization="coderig"),
        dns_names=sans.apply(lambda s: s[0]),
        ip_addresses=sans.apply(lambda s: s[1]),
        opts=child,
    )
    cert = tls.LocallySignedCert(
        f"{name}-server",
        cert_request_pem=csr.cert_request_pem,
        ca_private_key_pem=ca_key.private_key_pem,
        ca_cert_pem=ca.cert_pem,
        validity_period_hours=access.SERVER_VALIDITY_HOURS,
        early_renewal_hours=access.SERVER_EARLY_RENEWAL_HOURS,
        allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
        opts=child,
    )
    return cert.cert_pem, pulumi.Output.secret(server_key.private_key_pem), ca.cert_pem
