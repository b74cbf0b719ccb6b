"""Certificates for replica links, made with openssl exactly as `links.link_certificate` decides
(what components.frontdoor.ReplicaLinks issues with the tls provider): for the tests and the fault
bench that run real link nginx processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from coderig.core.secrets import LinkTls
from coderig.frontdoor import links


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


_USES = {"digital_signature": "keyUsage=critical,digitalSignature", "server_auth": "extendedKeyUsage=serverAuth",
         "client_auth": "extendedKeyUsage=clientAuth"}  # fmt: skip


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return d / "ca.crt", d / "ca.key"


def issue(d: Path, ca: tuple[Path, Path], want: links.LinkCertificate) -> LinkTls:
    """A certificate with exactly what `links.link_certificate` decides (what ReplicaLinks issues)."""
    tag = want.common_name
    sans = [f"DNS:{n}" for n in want.dns_names] + [f"IP:{a}" for a in want.ip_addresses]
    ext = [_USES[u] for u in want.allowed_uses] + ([f"subjectAltName={','.join(sans)}"] if sans else [])
    (d / f"{tag}.ext").write_text("\n".join(["basicConstraints=critical,CA:FALSE", *ext]) + "\n")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(d / f"{tag}.key"), "-out", str(d / f"{tag}.csr"), "-subj", f"/CN={tag}")  # fmt: skip
    run("openssl", "x509", "-req", "-in", str(d / f"{tag}.csr"), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-out", str(d / f"{tag}.crt"), "-extfile", str(d / f"{tag}.ext"))  # fmt: skip
    return LinkTls(ca[0].read_text(), (d / f"{tag}.crt").read_text(), (d / f"{tag}.key").read_text())
