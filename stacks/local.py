"""`local` target: the node bundle on this workstation, through local commands (Docker Compose).

The dev stack (`Pulumi.dev.yaml`): the CPU preset on llama.cpp, LiteLLM and the gateway on
https://localhost:<gateway.port>. Nothing is installed with apt here: preflight says what is missing.
The bundle lives in `.coderig/<stack>/node` under the project directory (git-ignored).
"""

from __future__ import annotations

import os

from coderig.targets.compose.rendered import render_nodes
from coderig.targets.local.settings import LocalTarget
from components.node import NodeStack, NodeStackArgs, front_door_access, local_connection
from stacks import StackContext
from stacks.outputs import client_outputs


def bundle_dir(stack: str) -> str:
    return os.path.abspath(os.path.join(".coderig", stack, "node"))


def build(ctx: StackContext) -> dict[str, object]:
    s = ctx.settings
    assert isinstance(s.target, LocalTarget)
    (node,) = render_nodes(s, ctx.plan)
    access = front_door_access(s, ["localhost", "127.0.0.1", *s.gateway.hostnames], ctx.secrets)
    stack = NodeStack(
        "node-local",
        NodeStackArgs(
            s,
            node,
            local_connection(),
            access.secrets,
            bundle_dir=bundle_dir(ctx.stack),
            model_secrets=access.model_secrets,
        ),
    )
    return {
        **client_outputs(
            ctx, host="localhost", port=s.gateway.port, ca_pem=access.ca_pem, tokens=access.developer_keys
        ),
        "endpoint": f"https://localhost:{s.gateway.port}",
        "ready": stack.ready,
    }
