"""`ssh` target: existing GPU hosts reached over SSH with pinned host keys.

One model replica per host; the first host also runs LiteLLM (balancing across every replica) and
the gateway, the stack's only public listener.
"""

from __future__ import annotations

from coderig import node
from components.node import NodeStack, front_door_access, ssh_connection
from stacks import StackContext
from stacks.outputs import client_outputs


def build(ctx: StackContext) -> dict[str, object]:
    s = ctx.settings
    t = s.target
    assert t.kind == "ssh"
    specs = node.node_specs(s)
    first = t.hosts[0]
    access = front_door_access(s, [first.address, *s.gateway.hostnames], ctx.secrets)
    nodes = []
    for i, (host, spec) in enumerate(zip(t.hosts, specs, strict=True)):
        where = f"coderig:target.hosts[{i}]"
        key = ctx.secrets["sshPrivateKey"]
        conn = ssh_connection(host, key, insecure_skip=t.insecureSkipHostKeyCheck, where=where)
        nodes.append(NodeStack(f"node-{i}", settings=s, spec=spec, conn=conn, secrets=access.secrets, host=host))
    return {
        **client_outputs(
            ctx, host=first.address, port=s.gateway.port, ca_pem=access.ca_pem, tokens=access.developer_keys
        ),
        "endpoint": f"https://{first.address}:{s.gateway.port}",
        "nodes": [h.address for h in t.hosts],
        "ready": nodes[0].ready,
    }
