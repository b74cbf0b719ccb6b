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


_P256 = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def new_ca(cert: Path, key: Path, subject: str, days: int) -> None:
    """A self-signed P-256 CA: `cert` and its `key` (also the test Kubernetes control plane's PKI)."""
    _openssl(
        "req",
        "-x509",
        *_P256,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        str(days),
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def new_signed(cert: Path, key: Path, subject: str, extensions: str, ca: tuple[Path, Path], days: int) -> None:
    """A P-256 `key` and its `cert` for `subject`, with `extensions` (openssl extension-file lines),
    signed by `ca` (certificate, key); the request and extension files are kept beside `cert`."""
    ext, csr = cert.with_suffix(".ext"), cert.with_suffix(".csr")
    ext.write_text(extensions)
    _openssl("req", *_P256, "-keyout", str(key), "-out", str(csr), "-subj", subject)
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        str(days),
        "-extfile",
        str(ext),
    )


def ensure_tls(tls_dir: Path, host: str, extra_names: list[str]) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): the CA is reused, the server certificate is new."""
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    cert, key = tls_dir / "server.pem", tls_dir / "server.key"
    old_umask = os.umask(0o077)
    try:
        if not (ca.exists() and ca_key.exists()):
            new_ca(ca, ca_key, "/CN=coderig front door CA", 3650)
        dns, ips = tls_names(host, extra_names)
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        extensions = (
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        new_signed(cert, key, "/CN=coderig front door", extensions, (ca, ca_key), 397)
    finally:
        os.umask(old_umask)
    os.chmod(ca, 0o644)
    return ca, cert, key
