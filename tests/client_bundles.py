"""A stack's client outputs and developer bundles as the client tests build them (tokens that must
never be printed, a fake CA), shared by tests/client/*."""

from __future__ import annotations

from typing import Any

from coderig.client import bundle as clients

TOKEN = "crk-AliceSecret0123456789abcdefXYZ"
BOB_TOKEN = "crk-BobSecret0123456789abcdefXYZ"
CA = "-----BEGIN CERTIFICATE-----\nMIIBfakeCAforTests\n-----END CERTIFICATE-----\n"
MODEL = "umans-coder-v0"


def public(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "project": "coderig",
        "stack": "dev",
        "host": "gpu1.internal",
        "port": 8443,
        "served_name": MODEL,
        "max_model_len": 131072,
        "max_output_tokens": 20000,
        "developers": ["alice", "bob"],
        "plan": {"preset": "deepseek-v3.2", "fits": True},
        "idle": {"stopAfterMinutes": 45},
        "usd_per_hour": 63.3,
        "ca_cert_pem": CA,
    }
    args.update(kw)
    return clients.stack_outputs(**args)


def outputs(**kw: Any) -> dict[str, Any]:
    return {clients.BUNDLE_OUTPUT: public(**kw), clients.TOKENS_OUTPUT: {"alice": TOKEN, "bob": BOB_TOKEN}}


def bundle(**kw: Any) -> clients.Bundle:
    return clients.load_bundle(clients.developer_bundle(outputs(**kw), "alice"))


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text and BOB_TOKEN not in text, "a token was printed"
