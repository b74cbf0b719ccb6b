"""`local` target: the node bundle on this workstation (Docker Compose)."""

from __future__ import annotations

from stacks import StackContext


def build(ctx: StackContext) -> dict[str, object]:
    return {"plan": ctx.plan.summary()}
