"""`coderig:model.image`: the model server image instead of the one pinned in coderig.core.versions, so
a stack upgrades (or pins a patched) vLLM or llama.cpp without editing code.

Only a reference that cannot move is accepted: a tag other than `latest`, or a digest. The flags and
parser names coderig renders are checked against the pinned vLLM (coderig.core.versions.VLLM_IMAGE);
with another image `coderig plan` and `pulumi up` say so, since that check does not cover it.
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
        f"coderig:model.image: {ref} replaces the pinned {pinned}; the model-server flags and parsers coderig "
        "renders are checked against the pinned version only: read `coderig render` and the first `pulumi up`'s "
        "model log"
    ]
