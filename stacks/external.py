"""`external` target: an OpenAI-compatible endpoint that already exists (e.g. a KServe
InferenceService URL) gets only the front door (LiteLLM + gateway), on this workstation or on an
`ssh` host, and the developer bundle. No weights, no model server, no GPU checks."""

from __future__ import annotations

from coderig.targets.compose.rendered import render_nodes
from coderig.targets.external.settings import ExternalTarget
from components.node import NodeStack, NodeStackArgs, front_door_access, local_connection, ssh_connection
from stacks import StackContext
from stacks.local import bundle_dir
from stacks.outputs import client_outputs


def build(ctx: StackContext) -> dict[str, object]:
    s = ctx.settings
    t = s.target
    assert isinstance(t, ExternalTarget)
    (node,) = render_nodes(s, ctx.plan)
    if t.frontDoor == "ssh":
        assert t.host is not None
        if "sshPrivateKey" not in ctx.secrets:
            raise ValueError("coderig:sshPrivateKey: required when coderig:target.frontDoor is ssh")
        where = t.host.address
        conn = ssh_connection(
            t.host, ctx.secrets["sshPrivateKey"], insecure_skip=t.insecureSkipHostKeyCheck, where="coderig:target.host"
        )
        access = front_door_access(s, [where, *s.gateway.hostnames], ctx.secrets)
        fd = NodeStack("frontdoor", NodeStackArgs(s, node, conn, access.secrets, host=t.host))
    else:
        where = "localhost"
        access = front_door_access(s, ["localhost", "127.0.0.1", *s.gateway.hostnames], ctx.secrets)
        fd = NodeStack(
            "frontdoor", NodeStackArgs(s, node, local_connection(), access.secrets, bundle_dir=bundle_dir(ctx.stack))
        )
    return {
        **client_outputs(ctx, host=where, port=s.gateway.port, ca_pem=access.ca_pem, tokens=access.developer_keys),
        "endpoint": f"https://{where}:{s.gateway.port}",
        "upstream": t.endpoint,
        "ready": fd.ready,
    }
