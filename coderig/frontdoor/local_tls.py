"""`coderig frontdoor run`'s TLS: a CA kept in the state directory (reused across runs, so clients
trust it once) signs a fresh server certificate per run, named for the listen address."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from coderig.core import access
from coderig.frontdoor.nginx import public_name


def tls_names(host: str, extra: list[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the server certificate; a wildcard listen address is named by
    this machine's host name."""
    named = [public_name(name) for name in [host, *extra]]
    return access.certificate_sans([*named, "::1"])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ensure_tls(tls_dir: Path, host: str, extra_names: list[str]) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): the CA is reused, the server certificate is new."""
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    cert, key = tls_dir / "server.pem", tls_dir / "server.key"
    old_umask = os.umask(0o077)
    try:
        if not (ca.exists() and ca_key.exists()):
            _openssl(
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(ca_key),
                "-out",
                str(ca),
                "-days",
                "3650",
                "-subj",
                "/CN=coderig front door CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            )
        dns, ips = tls_names(host, extra_names)
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        ext = tls_dir / "server.ext"
        ext.write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        csr = tls_dir / "server.csr"
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=coderig front door",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "397",
            "-extfile",
            str(ext),
        )
    finally:
        os.umask(old_umask)
    os.chmod(ca, 0o644)
    return ca, cert, key
