"""`kubernetes` target (not implemented yet)."""

from __future__ import annotations

from stacks import StackContext


def build(ctx: StackContext) -> dict[str, object]:
    raise NotImplementedError("the kubernetes target is not implemented yet")
