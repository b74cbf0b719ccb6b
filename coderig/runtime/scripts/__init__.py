"""The scripts a node runs (shell, and fetch_weights.py), as the node gets them: `script_text`."""

from __future__ import annotations

import importlib.resources

SCRIPT_NAMES = (
    "preflight.sh",
    "install.sh",
    "volume.sh",
    "wait-ready.sh",
    "fetch_weights.py",
    "weights-requirements.txt",
)
ARGUMENTS_MARKER = "# @coderig-arguments"


def _read(*parts: str) -> str:
    node = importlib.resources.files("coderig.runtime")
    for part in parts:
        node = node / part
    return node.read_text()


def script_text(name: str) -> str:
    """A shipped file: `fetch_weights.py` (and its requirements) as is; a shell script with the shared
    argument prelude (scripts/arguments.sh, its label filled in) in place of its `# @coderig-arguments` line."""
    if not name.endswith(".sh"):
        return _read(name)
    text = _read("scripts", name)
    lines = text.splitlines(keepends=True)
    marker = [i for i, line in enumerate(lines) if line.startswith(ARGUMENTS_MARKER)]
    if len(marker) != 1:
        raise ValueError(f"{name}: expected one {ARGUMENTS_MARKER!r} line")
    body = [line for line in _read("scripts", "arguments.sh").splitlines(keepends=True) if not line.startswith("#")]
    prelude = "".join(body).replace("SCRIPT:", f"{name.removesuffix('.sh')}:")
    lines[marker[0]] = prelude
    return "".join(lines)
