"""Chat templates coderig ships (`coderig:model.chatTemplate`, a preset's `chat_template`).

The model server gets the template's text as `--chat-template` (vLLM: a file path or the template
itself, entrypoints/chat_utils.py load_chat_template; llama-server: the template itself, accepted
for any Jinja template once `--jinja` comes first), so no file has to reach the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

DIR = Path(__file__).parent
MODEL_OWN = "model"  # coderig:model.chatTemplate value: the model's own template, whatever the preset says


def names() -> list[str]:
    return sorted(p.name for p in DIR.glob("*.jinja"))


def checked_name(name: str | None) -> str | None:
    """A valid coderig:model.chatTemplate value, else ValueError naming what is allowed."""
    if name is None or name == MODEL_OWN or name in names():
        return name
    raise ValueError(f"got {name!r}; allowed: {', '.join([MODEL_OWN, *names()])} ({MODEL_OWN!r}: the model's own)")


def text(name: str) -> str:
    return (DIR / name).read_text()


Name = Annotated[str | None, AfterValidator(checked_name)]


def chosen(setting: str | None, preset_template: str | None) -> str | None:
    """The coderig template a stack's model server gets (None: the model's own)."""
    return None if setting == MODEL_OWN else setting or preset_template
