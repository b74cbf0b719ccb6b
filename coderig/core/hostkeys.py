"""SSH host keys: the one parser and pin rule for every place coderig connects to a host."""

from __future__ import annotations

import base64

KEY_TYPES = ("ssh-", "ecdsa-", "sk-")


def parse_host_key(host_key: str) -> tuple[str, str]:
    """'ssh-ed25519 AAAA… [comment]' or a known_hosts line 'host ssh-ed25519 AAAA…' -> ('ssh-ed25519',
    'AAAA…'): the form pulumi-command's `connection.hostKey` and OpenSSH's known_hosts take."""
    parts = host_key.split()
    if len(parts) >= 3 and not parts[0].startswith(KEY_TYPES):
        parts = parts[1:]  # a known_hosts line: drop the host field
    if len(parts) < 2 or not parts[0].startswith(KEY_TYPES):
        raise ValueError(
            f"host key {host_key[:40]!r}: expected a public key line like 'ssh-ed25519 AAAA…' "
            "(from `ssh-keyscan -t ed25519 HOST`)"
        )
    try:
        base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ValueError(f"host key {host_key[:40]!r}: the key is not base64") from None
    return parts[0], parts[1]


def known_hosts_line(address: str, port: int, host_key: str) -> str:
    kind, key = parse_host_key(host_key)
    name = address if port == 22 else f"[{address}]:{port}"
    return f"{name} {kind} {key}\n"


def pinned_host_key(host_key: str | None, address: str, port: int, *, insecure_skip: bool, where: str) -> str | None:
    """The host key to pin, or None when the stack knowingly skips the check. Raises when missing."""
    if host_key:
        kind, key = parse_host_key(host_key)
        return f"{kind} {key}"
    if insecure_skip:
        return None
    raise ValueError(
        f"{where}.hostKey is missing for {address}: refusing to connect to an unpinned host. "
        f"Pin it with the output of `ssh-keyscan -t ed25519 -p {port} {address}`, "
        "or set insecureSkipHostKeyCheck: true knowingly"
    )
