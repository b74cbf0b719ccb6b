"""The stack outputs every target exports: the client bundle (schema in `coderig.client.bundle`) and the
developer tokens, the only secret output.

    return {**client_outputs(ctx, host=address, port=s.gateway.port, ca_pem=access.ca_pem,
                             tokens=access.developer_keys), "ready": node.ready}

`coderig bundle --stack STACK --developer NAME --out FILE` turns them into one developer's bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

from coderig import targets
from coderig.client import bundle as clients
from coderig.core import report
from stacks import StackContext


def client_outputs(
    ctx: StackContext,
    *,
    host: pulumi.Input[str],
    port: int,
    ca_pem: pulumi.Input[str] | None,
    tokens: pulumi.Input[dict[str, str]],
    aliases: Sequence[str] = (),
    scheme: str = "https",
) -> dict[str, Any]:
    """Stack outputs for the developers: `clientBundle` (public), `developerTokens` (secret), and
    a few flat copies of the bundle's fields for `pulumi stack output NAME`."""
    s = ctx.settings
    model = s.model
    plan = ctx.plan.summary()
    idle = s.idle.model_dump(mode="json")
    estimate = report.cost_estimate(s, targets.kind_of(s).idle_mechanism)

    def build(values: list[Any]) -> dict[str, Any]:
        address, ca = values
        return clients.stack_outputs(
            project=ctx.project,
            stack=ctx.stack,
            host=str(address),
            port=port,
            scheme=scheme,
            served_name=model.served_name,
            max_model_len=model.max_model_len,
            max_output_tokens=model.max_output_tokens,
            developers=s.developers,
            plan=plan,
            idle=idle,
            usd_per_hour=estimate.usd_per_hour,
            cost=estimate.summary(),
            ca_cert_pem=ca or None,
            tls="provided" if ca is None and s.tlsCertificate is not None else None,
            aliases=aliases,
        )

    bundle = pulumi.Output.all(host, ca_pem).apply(build)
    return {
        clients.BUNDLE_OUTPUT: bundle,
        clients.TOKENS_OUTPUT: pulumi.Output.secret(tokens),
        "anthropicBaseUrl": bundle.apply(lambda b: b["endpoint"]["anthropic_base_url"]),
        "openaiBaseUrl": bundle.apply(lambda b: b["endpoint"]["openai_base_url"]),
        "servedModel": model.served_name,
        "caCertificate": bundle.apply(lambda b: b["ca_cert_pem"]),
        "plan": plan,
    }
