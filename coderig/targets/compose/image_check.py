"""`coderig:model.image` checked on the node, inside the image, before the running model server is replaced.

coderig's flags and parser names are checked against the pinned vLLM (tests/vllm/). An override brings
another vLLM, so the node asks that image's own `vllm serve` parser and validators about the exact command
the model service will run (coderig/runtime/vllm_argcheck.py, a stdlib script fed with `python3 -c`) in a
throw-away container: no GPU, no network (`VLLM_TARGET_DEVICE=cpu` selects vLLM's CPU platform, so the
parser builds without a device, as the suite's check does), the image pulled by `docker run` if missing.
The component (components/node.py) runs it as the `image-check` step between the bundle and `up`: `up` is
delete-before-replace, so a refused command fails the deploy before the old container is stopped.
"""

from __future__ import annotations

import shlex

from coderig.core import versions
from coderig.core.settings import StackSettings
from coderig.runtime.scripts import script_text
from coderig.targets.compose.rendered import RenderedNode

CHECK_SCRIPT = "vllm_argcheck.py"


def checked_argv(settings: StackSettings, node: RenderedNode) -> list[str] | None:
    """(image, `vllm` arguments) the node checks, or None: no model server here, llama.cpp, or the pinned
    vLLM image (already checked by the suite at versions.VLLM_VERSION)."""
    model = node.compose["services"].get("model")
    if model is None or settings.model.spec.engine != "vllm" or model["image"] == versions.VLLM_IMAGE:
        return None
    entrypoint = model["entrypoint"]  # ["vllm", "serve"]
    return [model["image"], *entrypoint[1:], *model["command"]]


def image_check_command(settings: StackSettings, node: RenderedNode, user: str | None = None) -> str | None:
    """The shell command of the `image-check` step, or None when there is nothing to check."""
    argv = checked_argv(settings, node)
    if argv is None:
        return None
    image = argv[0]
    sudo = "" if user in (None, "root") else "sudo -n "
    run = ["docker", "run", "--rm", "--network", "none", "-e", "VLLM_TARGET_DEVICE=cpu"]
    run += ["--entrypoint", "python3", image, "-c", script_text(CHECK_SCRIPT), *argv]
    return sudo + shlex.join(run)
