"""`external` target (not implemented yet)."""

from __future__ import annotations

from stacks import StackContext


def build(ctx: StackContext) -> dict[str, object]:
    raise NotImplementedError("the external target is not implemented yet")
