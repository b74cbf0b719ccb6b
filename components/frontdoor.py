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
from coderig.core.secrets import LinkTls
from coderig.frontdoor import links


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
        key = random.RandomPassword(
            f"{name}-litellm", length=access.KEY_LENGTH, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
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


@dataclass(frozen=True)
class ReplicaLinksArgs:
    replica_addresses: Sequence[str]  # private address of machine 1, 2, … (machine 0 runs the gateway)


class ReplicaLinks(pulumi.ComponentResource):
    """The replica links' certificates (coderig.frontdoor.links): an internal CA the stack owns, a
    client certificate for machine 0 and a server certificate per replica. `tls[i]` is machine i's
    LinkTls (secret: it holds the key)."""

    tls: list[pulumi.Output[LinkTls]]

    def __init__(self, name: str, args: ReplicaLinksArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:frontdoor:ReplicaLinks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ca_key, ca = _ca(name, f"coderig {pulumi.get_stack()} internal CA", child)
        self.tls = []
        for i, address in enumerate(["", *args.replica_addresses]):
            want = links.link_certificate(i, address)
            names = (f"{name}-{i}-key", f"{name}-{i}-csr", f"{name}-{i}-cert")
            cert, key = _issued(
                names,
                ca_key,
                ca,
                child,
                common_name=want.common_name,
                dns_names=list(want.dns_names),
                ip_addresses=list(want.ip_addresses),
                allowed_uses=want.allowed_uses,
            )
            both = pulumi.Output.all(ca.cert_pem, cert, key)
            self.tls.append(pulumi.Output.secret(both.apply(lambda v: LinkTls(ca_cert=v[0], cert=v[1], key=v[2]))))
        self.register_outputs({"ca_pem": ca.cert_pem})


def _ca(name: str, common_name: str, child: pulumi.ResourceOptions) -> tuple[tls.PrivateKey, tls.SelfSignedCert]:
    key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
    cert = tls.SelfSignedCert(
        f"{name}-ca",
        private_key_pem=key.private_key_pem,
        is_ca_certificate=True,
        validity_period_hours=access.CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing"],
        subject=tls.SelfSignedCertSubjectArgs(common_name=common_name, organization="coderig"),
        opts=child,
    )
    return key, cert


def _issued(
    names: tuple[str, str, str],
    ca_key: tls.PrivateKey,
    ca: tls.SelfSignedCert,
    child: pulumi.ResourceOptions,
    *,
    common_name: str,
    dns_names: pulumi.Input[Sequence[str]],
    ip_addresses: pulumi.Input[Sequence[str]],
    allowed_uses: Sequence[str],
) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """A key and a certificate signed by the CA (`names`: of the key, the request and the
    certificate resources); returns (certificate PEM, key PEM as a secret)."""
    key_name, csr_name, cert_name = names
    key = tls.PrivateKey(key_name, algorithm="ECDSA", ecdsa_curve="P256", opts=child)
    csr = tls.CertRequest(
        csr_name,
        private_key_pem=key.private_key_pem,
        subject=tls.CertRequestSubjectArgs(common_name=common_name, organization="coderig"),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        opts=child,
    )
    cert = tls.LocallySignedCert(
        cert_name,
        cert_request_pem=csr.cert_request_pem,
        ca_private_key_pem=ca_key.private_key_pem,
        ca_cert_pem=ca.cert_pem,
        validity_period_hours=access.SERVER_VALIDITY_HOURS,
        early_renewal_hours=access.SERVER_EARLY_RENEWAL_HOURS,
        allowed_uses=list(allowed_uses),
        opts=child,
    )
    return cert.cert_pem, pulumi.Output.secret(key.private_key_pem)


def _self_signed(
    name: str, names: pulumi.Input[Sequence[str]], parent: pulumi.Resource
) -> tuple[pulumi.Output[str], pulumi.Output[str], pulumi.Output[str]]:
    child = pulumi.ResourceOptions(parent=parent)
    stack = pulumi.get_stack()
    ca_key, ca = _ca(name, f"coderig {stack} CA", child)
    sans = pulumi.Output.from_input(names).apply(access.certificate_sans)
    cert, key = _issued(
        (f"{name}-server-key", f"{name}-csr", f"{name}-server"),
        ca_key,
        ca,
        child,
        common_name=f"coderig {stack} gateway",
        dns_names=sans.apply(lambda s: s[0]),
        ip_addresses=sans.apply(lambda s: s[1]),
        allowed_uses=("digital_signature", "key_encipherment", "server_auth"),
    )
    return cert, key, ca.cert_pem
