"""The secret values a deployment needs, as one type: plain strings here, Pulumi secrets in the
components. Nothing that renders, logs or exports ever sees them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LinkTls:
    """One machine's end of the replica links (coderig.frontdoor.links): the internal CA's
    certificate, this machine's certificate, and its key (the only secret of the three)."""

    ca_cert: str
    cert: str
    key: str


@dataclass(frozen=True)
class NodeSecrets:
    """Secret values a node needs; plain strings here, Pulumi secrets in the components."""

    model_api_key: str
    litellm_master_key: str = ""
    developer_keys: Mapping[str, str] = field(default_factory=dict)
    hf_token: str = ""
    tls_cert: str = ""  # public, but shipped with the key
    tls_key: str = ""
    external_api_key: str = ""
    link: LinkTls | None = None  # machines of a stack with replicas: their link certificate


def placeholder_secrets(developers: Sequence[str]) -> NodeSecrets:
    """Shape-valid stand-ins (never deployed): to validate Secret manifests and for render's checksums."""
    fill = "placeholder-not-a-secret"
    return NodeSecrets(
        model_api_key=f"{fill}-model",
        litellm_master_key=f"sk-{fill}",
        developer_keys={d: f"crk-{fill}-{i:04d}" for i, d in enumerate(developers)},
        hf_token=f"{fill}-hf",
        tls_cert="-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n",
        tls_key="-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----\n",
    )
