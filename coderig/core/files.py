"""Files a stack deploys ({relative path: RenderedFile}) and the one private-file writer.

Secret values never appear in what `coderig render` writes: files that hold secrets (keys, env
files) are produced at deploy time from Pulumi secrets.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RenderedFile:
    content: str
    mode: int = 0o644


# {relative path: file}: what a machine or `coderig render` gets (the developer bundle is another
# thing: coderig.client.bundle.Bundle)
FileSet = dict[str, RenderedFile]


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
