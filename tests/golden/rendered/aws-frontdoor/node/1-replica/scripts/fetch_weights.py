"""coderig weights fetcher: runs once, in the node's one-shot `weights` container, before the model server.

Downloads a Hugging Face repo into the HF cache layout under $HF_HOME (the cache volume), so the model
server finds it with HF_HUB_OFFLINE=1. Resumable (huggingface_hub keeps `.incomplete` blobs and resumes
them), prints one progress line every few seconds, and writes a completion marker
$HF_HOME/coderig-markers/<org>--<name>.json. When that marker exists and names the same repo, revision and
file patterns, it exits at once without touching the network: a restart or a second `up` downloads nothing.

Standard library only until a download is really needed; then huggingface_hub is imported from the image
(the pinned vLLM image has it). Nothing is installed at run time, unless CODERIG_PIP_REQUIREMENTS names a
requirements file in which every distribution is pinned by sha256 (the llama.cpp preset's small Python
image): pip then runs with --require-hashes --only-binary :all:, and without HF_TOKEN in its environment.

Environment:
  HF_HOME                  cache root (the mounted volume), e.g. /cache
  CODERIG_REPO             e.g. deepseek-ai/DeepSeek-V3.2
  CODERIG_REVISION         commit sha (pins the weights), or a branch or tag (default main; floats)
  CODERIG_ALLOW_PATTERNS   comma-separated glob patterns to fetch (default: everything)
  CODERIG_WEIGHTS_BYTES    expected total bytes, used for progress when the hub does not say
  CODERIG_PIP_REQUIREMENTS optional: hash-pinned requirements to install huggingface_hub from when the
                           image lacks it (unset: a missing huggingface_hub is a failure, not an install)
  CODERIG_LINK_FILE        optional file of the repo (e.g. a GGUF) to expose at a stable path
  CODERIG_LINK_TO          that stable path (default $HF_HOME/coderig-models/<org>--<name>/<file>);
                           a relative symlink, so it resolves in any container that mounts the cache
  HF_TOKEN                 optional, for gated repos (comes from the 0600 env file, never printed)
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

MARKER_DIR = "coderig-markers"
LINK_DIR = "coderig-models"


def repo_slug(repo: str) -> str:
    return repo.replace("/", "--")


def marker_path(hf_home: Path, repo: str) -> Path:
    return hf_home / MARKER_DIR / f"{repo_slug(repo)}.json"


def wanted(repo: str, revision: str, patterns: list[str]) -> dict[str, object]:
    return {"repo": repo, "revision": revision, "allow_patterns": sorted(patterns)}


def marker_matches(hf_home: Path, repo: str, revision: str, patterns: list[str]) -> bool:
    path = marker_path(hf_home, repo)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    want = wanted(repo, revision, patterns)
    return all(data.get(k) == v for k, v in want.items())


def write_marker(hf_home: Path, repo: str, revision: str, patterns: list[str], commit: str, nbytes: int) -> Path:
    path = marker_path(hf_home, repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wanted(repo, revision, patterns) | {
        "commit": commit,
        "bytes": nbytes,
        "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # atomic: a marker is either absent or complete
    return path


def bytes_on_disk(repo_dir: Path) -> int:
    total = 0
    blobs = repo_dir / "blobs"
    if blobs.is_dir():
        for f in blobs.iterdir():
            with contextlib.suppress(OSError):
                total += f.stat().st_size
    return total


def fmt_progress(done: int, total: int, rate: float) -> str:
    gb = 1e9
    if total > 0:
        pct = min(100.0, 100.0 * done / total)
        eta = f" eta {int((total - done) / rate // 60)}m" if rate > 0 and done < total else ""
        return f"weights: {pct:.1f}% {done / gb:.1f}/{total / gb:.1f} GB {rate / 1e6:.0f} MB/s{eta}"
    return f"weights: {done / gb:.1f} GB {rate / 1e6:.0f} MB/s"


class Progress(threading.Thread):
    """Prints download progress from the bytes in the repo's blob directory."""

    def __init__(self, repo_dir: Path, total: int, interval: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.repo_dir, self.total, self.interval = repo_dir, total, interval
        self.stop = threading.Event()

    def run(self) -> None:
        last, last_t = bytes_on_disk(self.repo_dir), time.monotonic()
        while not self.stop.wait(self.interval):
            now, now_t = bytes_on_disk(self.repo_dir), time.monotonic()
            rate = max(0.0, (now - last) / max(now_t - last_t, 1e-6))
            print(fmt_progress(now, self.total, rate), flush=True)
            last, last_t = now, now_t


Downloader = Callable[[str, str, list[str], Path], str]
"""(repo, revision, patterns, hf_home) -> resolved snapshot directory."""


SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # never in pip's environment


class MissingDownloader(Exception):
    """huggingface_hub is not in the image and no hash-pinned install is allowed."""


def pip_install_command(requirements: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--require-hashes",
        "--only-binary",
        ":all:",
        "--no-input",
        "-r",
        requirements,
    ]


def ensure_hub(env: dict[str, str], run: Callable[..., object] = subprocess.run) -> None:
    """Import huggingface_hub from the image; install it only from hash-pinned requirements, when allowed."""
    try:
        import huggingface_hub  # noqa: F401  # pyright: ignore[reportMissingImports]

        return
    except ImportError:
        pass
    requirements = env.get("CODERIG_PIP_REQUIREMENTS", "")
    if not requirements:
        raise MissingDownloader(
            "huggingface_hub is not in this image and CODERIG_PIP_REQUIREMENTS is not set: the weights step "
            "runs in an image that has it (coderig.core.versions); nothing is installed at run time"
        )
    print(f"weights: installing huggingface_hub from {requirements} (hash-pinned)", flush=True)
    pip_env = {k: v for k, v in env.items() if k not in SECRET_ENV}
    run(pip_install_command(requirements), check=True, env=pip_env)
    importlib.invalidate_caches()


def hub_download(repo: str, revision: str, patterns: list[str], hf_home: Path) -> str:
    """huggingface_hub's snapshot_download (main() makes sure it is importable first)."""
    from huggingface_hub import snapshot_download  # pyright: ignore[reportMissingImports]

    return snapshot_download(
        repo_id=repo,
        revision=revision,
        allow_patterns=patterns or None,
        cache_dir=str(hf_home / "hub"),
    )


def expected_total(repo: str, revision: str, patterns: list[str], fallback: int) -> int:
    try:
        from fnmatch import fnmatch

        from huggingface_hub import HfApi  # pyright: ignore[reportMissingImports]

        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
        return (
            sum(
                s.size or 0
                for s in info.siblings or []
                if not patterns or any(fnmatch(s.rfilename, p) for p in patterns)
            )
            or fallback
        )
    except Exception:  # noqa: BLE001 - progress is best effort; the download itself reports errors
        return fallback


def link_file(hf_home: Path, repo: str, snapshot: Path, name: str, link_to: str = "") -> Path:
    """Expose one file of the snapshot at a stable path (relative symlink inside the cache)."""
    target = snapshot / name
    if not target.exists():
        raise FileNotFoundError(f"{name} is not in {repo} at this revision")
    link = Path(link_to) if link_to else hf_home / LINK_DIR / repo_slug(repo) / name
    link.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(target, link.parent)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(rel)
    return link


def main(env: dict[str, str] | None = None, download: Downloader = hub_download, interval: float = 10.0) -> int:
    env = dict(os.environ) if env is None else env
    hf_home = Path(env.get("HF_HOME", "/cache"))
    repo = env.get("CODERIG_REPO", "")
    if not repo or "/" not in repo:
        print(f"weights: FAIL CODERIG_REPO must be 'org/name', got {repo!r}", flush=True)
        return 2
    revision = env.get("CODERIG_REVISION", "main") or "main"
    patterns = [p.strip() for p in env.get("CODERIG_ALLOW_PATTERNS", "").split(",") if p.strip()]
    link = env.get("CODERIG_LINK_FILE", "")
    link_to = env.get("CODERIG_LINK_TO", "")

    if marker_matches(hf_home, repo, revision, patterns):
        print(
            f"weights: {repo}@{revision} already complete in {hf_home} (marker found); nothing to download",
            flush=True,
        )
        return 0

    repo_dir = hf_home / "hub" / f"models--{repo_slug(repo)}"
    already = bytes_on_disk(repo_dir)
    if already:
        print(f"weights: resuming {repo}@{revision}: {already / 1e9:.1f} GB already in the cache", flush=True)
    else:
        print(f"weights: downloading {repo}@{revision} into {hf_home}", flush=True)
    total = int(env.get("CODERIG_WEIGHTS_BYTES", "0") or 0)
    if download is hub_download:
        try:
            ensure_hub(env)
        except MissingDownloader as exc:
            print(f"weights: FAIL {exc}", flush=True)
            return 2
        except subprocess.CalledProcessError as exc:
            print(f"weights: FAIL installing huggingface_hub: pip exited {exc.returncode}", flush=True)
            return 1
        total = expected_total(repo, revision, patterns, total)
    progress = Progress(repo_dir, total, interval)
    progress.start()
    try:
        snapshot = Path(download(repo, revision, patterns, hf_home))
    except Exception as exc:  # noqa: BLE001 - report one clear line, keep partial files for the resume
        print(f"weights: FAIL download of {repo}@{revision} stopped: {type(exc).__name__}: {exc}", flush=True)
        print("weights: partial files are kept; the next run resumes them", flush=True)
        return 1
    finally:
        progress.stop.set()
        progress.join()
    if link:
        print(f"weights: {link} at {link_file(hf_home, repo, snapshot, link, link_to)}", flush=True)
    done = bytes_on_disk(repo_dir)
    print(fmt_progress(done, total or done, 0.0), flush=True)
    write_marker(hf_home, repo, revision, patterns, snapshot.name, done)
    print(f"weights: complete: {repo}@{revision} (commit {snapshot.name})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
