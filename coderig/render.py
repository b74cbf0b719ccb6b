"""Everything a stack deploys, as files: what `coderig render` writes and the Pulumi program ships.

Each contributor returns {relative path: RenderedFile}. Secret values never appear here: files
that hold secrets (keys, env files) are produced at deploy time from Pulumi secrets.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coderig import engine, planner
from coderig.settings import StackSettings


@dataclass(frozen=True)
class RenderedFile:
    content: str
    mode: int = 0o644


Bundle = dict[str, RenderedFile]


def plan_files(settings: StackSettings, stack: str) -> Bundle:
    p = planner.plan_stack(settings)
    summary = {"stack": stack, **p.summary()}
    return {
        "plan.json": RenderedFile(json.dumps(summary, indent=2) + "\n"),
        "plan.txt": RenderedFile(format_plan(p, stack) + "\n"),
    }


def model_server_files(settings: StackSettings, stack: str) -> Bundle:
    if settings.target.kind == "external":
        return {}
    p = planner.plan_stack(settings)
    line = engine.command_line(settings.model, p.gpu_count)
    return {"model-server/command.sh": RenderedFile(f"#!/bin/sh\nexec {line}\n", 0o755)}


def kubernetes_manifests(settings: StackSettings, stack: str) -> Bundle:
    from coderig.kube import render_manifests  # late: coderig.kube imports this module

    return render_manifests(settings, stack)


def node_bundles(settings: StackSettings, stack: str) -> Bundle:
    from coderig.node import render_node_files  # late: coderig.node imports this module

    return render_node_files(settings, stack)


CONTRIBUTORS: list[Callable[[StackSettings, str], Bundle]] = [
    plan_files,
    model_server_files,
    kubernetes_manifests,
    node_bundles,
]


def render_stack(settings: StackSettings, stack: str) -> Bundle:
    out: Bundle = {}
    for contribute in CONTRIBUTORS:
        files = contribute(settings, stack)
        clash = set(out) & set(files)
        if clash:
            raise RuntimeError(f"two renderers write {sorted(clash)}")
        out.update(files)
    return out


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


def write_bundle(bundle: Bundle, out_dir: Path) -> list[Path]:
    written = []
    for rel, f in sorted(bundle.items()):
        write_file(out_dir / rel, f.content, f.mode)
        written.append(out_dir / rel)
    return written


def format_plan(p: planner.Plan, stack: str = "") -> str:
    s = p.summary()
    lines = [f"stack {stack}: {p.preset} ({p.engine})" if stack else f"{p.preset} ({p.engine})"]
    if p.gpu:
        where = f"{p.gpu_count}× {p.gpu}" + (f" ({p.instance_type})" if p.instance_type else "")
        lines.append(f"  GPUs per replica   {where}, {s['gpu_memory_gb']} GB, replicas {p.replicas}")
    lines += [
        f"  weights            {s['weights_gb']} GB",
        f"  max-model-len      {p.max_model_len} tokens, KV cache {p.kv_cache_dtype}",
        f"  KV per token       {p.kv_bytes_per_token} bytes",
        f"  KV per request     {s['kv_gb_per_request']} GB at full context",
    ]
    if p.gpu:
        lines.append(f"  KV space           {s['kv_space_gb']} GB → {p.max_concurrent_requests} concurrent requests")
    if p.usd_per_hour is not None:
        month = p.usd_per_hour * 24 * 30
        lines.append(f"  cost               ${p.usd_per_hour:.2f}/h on demand (${month:,.0f}/month if never stopped)")
    lines.append(f"  {'fits' if p.fits else 'DOES NOT FIT'}: {p.reason}")
    if p.suggestion:
        lines.append(f"  {p.suggestion}")
    return "\n".join(lines)
