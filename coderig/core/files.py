"""Files a stack deploys ({relative path: RenderedFile}), the one private-file writer and the one
JSON-file reader.

Secret values never appear in what `coderig render` writes: files that hold secrets (keys, env
files) are produced at deploy time from Pulumi secrets.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coderig.core.errors import UserError


@dataclass(frozen=True)
class RenderedFile:
    content: str
    mode: int = 0o644


# {relative path: file}: what a machine or `coderig render` gets (the developer bundle is another
# thing: coderig.client.bundle.Bundle)
FileSet = dict[str, RenderedFile]


def read_json_file(path: Path) -> Any:
    """The JSON in `path`, or a UserError naming the file and what is wrong with it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise UserError(f"{path}: not JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None


def write_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Atomically write `text` with `mode` (the file never exists with a wider mode, and a reader
    never sees it half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_files(bundle: FileSet, out_dir: Path) -> list[Path]:
    written = []
    for rel, f in sorted(bundle.items()):
        write_file(out_dir / rel, f.content, f.mode)
        written.append(out_dir / rel)
    return written
