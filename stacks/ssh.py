"""`ssh` target: existing GPU hosts reached over SSH with pinned host keys.

One model replica per host; the first host also runs LiteLLM (balancing across every replica) and
the gateway, the stack's only public listener. With `frontDoor` set, that host runs LiteLLM and the
gateway instead, and every GPU host is a replica behind its mutual-TLS link.
"""

from __future__ import annotations

from coderig.targets.compose.rendered import render_nodes
from coderig.targets.ssh.settings import SshTarget
from components.node import NodeStack, NodeStackArgs, Rolling, front_door_access, replicas_first, ssh_connection
from stacks import StackContext
from stacks.outputs import client_outputs


def build(ctx: StackContext) -> dict[str, object]:
    s = ctx.settings
    t = s.target
    assert isinstance(t, SshTarget)
    nodes = render_nodes(s, ctx.plan)
    # machine i: the front door (when set) first, then the GPU hosts; each with its settings key
    hosts = [(t.frontDoor, "coderig:target.frontDoor")] if t.frontDoor else []
    hosts += [(h, f"coderig:target.hosts[{i}]") for i, h in enumerate(t.hosts)]
    assert len(nodes) == len(hosts)
    first = hosts[0][0]
    access = front_door_access(s, [first.address, *s.gateway.hostnames], ctx.secrets)
    key = ctx.secrets["sshPrivateKey"]

    def node_stack(i: int, after: list[NodeStack], rolling: Rolling) -> NodeStack:
        host, where = hosts[i]
        conn = ssh_connection(host, key, insecure_skip=t.insecureSkipHostKeyCheck, where=where)
        return NodeStack(
            f"node-{i}",
            NodeStackArgs(
                s,
                nodes[i],
                conn,
                access.secrets,
                host=host,
                after=after,
                model_secrets=access.model_secrets,
                link=access.link(i),
                rolling=rolling,
            ),
        )

    stacks = replicas_first([n.spec.runs_model for n in nodes], node_stack)
    return {
        **client_outputs(
            ctx, host=first.address, port=s.gateway.port, ca_pem=access.ca_pem, tokens=access.developer_keys
        ),
        "endpoint": f"https://{first.address}:{s.gateway.port}",
        "nodes": [h.address for h, _ in hosts],
        "ready": stacks[0].ready,
        "nodesReady": [n.ready for n in stacks],  # every host's readiness wait, first host first
    }
