"""`coderig:model.image`: the model server image instead of the one pinned in coderig.core.versions, so
a stack upgrades (or pins a patched) vLLM or llama.cpp without editing code.

Only a reference that cannot move is accepted: a tag other than `latest`, or a digest. The flags and
parser names coderig renders are checked against the pinned vLLM (coderig.core.versions.VLLM_IMAGE) by
the suite; with another vLLM image each compose node asks that image's own `vllm serve` parser before
its running model server is replaced (coderig.targets.compose.image_check), and `coderig plan` and
`pulumi up` say so.
"""

from __future__ import annotations

import re

# [registry[:port]/]path[:tag][@sha256:digest], as `docker pull` reads it
_REF = re.compile(
    r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def check_ref(ref: str) -> str:
    m = _REF.match(ref)
    if not m:
        raise ValueError(f"got {ref!r}: not an image reference like vllm/vllm-openai:v0.29.0")
    if not m.group("digest") and (not m.group("tag") or m.group("tag") == "latest"):
        raise ValueError(f"got {ref!r}: pin a tag (not latest) or a digest, e.g. vllm/vllm-openai:v0.29.0")
    return ref


def override_warning(ref: str | None, pinned: str) -> list[str]:
    if not ref or ref == pinned:
        return []
    return [
        f"coderig:model.image: {ref} replaces the pinned {pinned}; coderig's flags and parsers were checked "
        "against the pinned version: on ssh/local/aws hosts `pulumi up` first has the new image's vLLM parser "
        "read the model command (the image-check step; a refusal leaves the running server as it was), "
        "elsewhere read `coderig render` and the first start's model log"
    ]
