"""`coderig onboard` and `coderig smoke` (developer); `coderig bundle` (ops) is handout.py.

- onboard: writes the token (0600) and CA files, merges the env block into Claude Code's
  settings.json (backup first, other keys kept), writes `use-<alias>.sh`, a Codex provider and an
  opencode provider. Prints what changed, never the token; a second run changes nothing.
- smoke: checks the endpoint the way the agents use it, one line per check, with the fix on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coderig.client import bundle as clients
from coderig.client import configs
from coderig.client.bundle import Bundle, load_bundle_file
from coderig.client.configs import ClientPaths
from coderig.core.errors import UserError
from coderig.core.files import write_file

CLIENTS = ("claude", "codex", "opencode")


# ---------------------------------------------------------------- file helpers


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _pretty(path: Path, home: Path) -> str:
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- coderig onboard


@dataclass
class Change:
    path: Path
    text: str
    mode: int
    what: str
    details: list[str] = field(default_factory=list)
    backup: bool = False  # copy the old file aside before replacing it
    state: str = "unchanged"  # created | changed | unchanged


def _json_or_none(path: Path, text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); fix or move it, then run onboard again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object; fix or move it, then run onboard again")
    return data


def plan_changes(bundle: Bundle, paths: ClientPaths, selected: tuple[str, ...]) -> list[Change]:
    """Every file onboard owns or merges, with its new content and whether it differs."""
    alias = bundle.alias
    changes = [Change(paths.token_file(alias), bundle.token + "\n", 0o600, "developer token (secret, not shown)")]
    if bundle.ca_cert_pem:
        pem = bundle.ca_cert_pem if bundle.ca_cert_pem.endswith("\n") else bundle.ca_cert_pem + "\n"
        changes.append(Change(paths.ca_file(alias), pem, 0o644, "the gateway's self-signed CA certificate"))
    changes.append(
        Change(
            paths.use_script(alias), configs.use_script(bundle, paths), 0o644, "shell env for all clients (source it)"
        )
    )
    if "claude" in selected:
        path = paths.claude_settings
        old = _json_or_none(path, _read(path))
        new = configs.claude_settings(old, bundle, paths)
        details = configs.env_changes((old or {}).get("env") or {}, new["env"], [clients.TOKEN_ENV])
        changes.append(
            Change(
                path,
                configs.dumps_json(new),
                0o600,
                "Claude Code settings (env block; holds the token)",
                details,
                backup=True,
            )
        )
        if old == new:
            changes[-1].text = _read(path) or ""
    if "codex" in selected:
        path = paths.codex_config
        old_text = _read(path) or ""
        new_text = configs.codex_config(old_text, bundle)
        changes.append(
            Change(
                path,
                new_text,
                _mode(path) or 0o644,
                f"Codex provider {bundle.provider_id} (wire_api responses) + default model",
                backup=True,
            )
        )
    if "opencode" in selected:
        path = paths.opencode_config
        old_text = _read(path)
        old = _json_or_none(path, old_text)
        new = configs.opencode_config(old, bundle, paths)
        text = old_text if old == new and old_text is not None else configs.dumps_json(new)
        changes.append(
            Change(
                path,
                text,
                _mode(path) or 0o644,
                f"opencode provider {bundle.provider_id} (@ai-sdk/openai-compatible) + default model",
                backup=True,
            )
        )
    for change in changes:
        current = _read(change.path)
        if current is None:
            change.state = "created"
        elif current != change.text or _mode(change.path) != change.mode:
            change.state = "changed"
    return changes


def apply_changes(changes: list[Change], stamp: str) -> dict[Path, Path]:
    backups: dict[Path, Path] = {}
    for change in changes:
        if change.state == "unchanged":
            continue
        if change.backup and change.state == "changed":
            backup = change.path.with_name(f"{change.path.name}.coderig-backup-{stamp}")
            write_file(backup, change.path.read_text(), 0o600)
            backups[change.path] = backup
        # the token's folder is private; a new ~/.claude or ~/.codex is too (they hold tokens and history)
        change.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # a dotfiles manager's symlink stays a symlink: write the file it points to
        dest = change.path.resolve() if change.path.is_symlink() else change.path
        write_file(dest, change.text, change.mode)
    return backups


def cmd_onboard(args: argparse.Namespace) -> int:
    selected = CLIENTS if args.client == "all" else (args.client,)
    home = Path(args.home).expanduser() if args.home else Path.home()
    paths = ClientPaths.for_home(home, None if args.home else os.environ)
    try:
        bundle = load_bundle_file(args.bundle)
        changes = plan_changes(bundle, paths, selected)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        backups = {} if args.dry_run else apply_changes(changes, stamp)
    except OSError as exc:
        raise UserError(f"onboard: {exc}") from None
    would = "would be " if args.dry_run else ""
    print(
        f"coderig onboard: {bundle.developer} -> {bundle.anthropic_base_url} "
        f"(stack {bundle.stack}, model {bundle.served_name}){' [dry run: nothing written]' if args.dry_run else ''}"
    )
    for change in changes:
        where = _pretty(change.path, home)
        line = f"  {would}{change.state:9} {where}  ({change.what})"
        if change.path.is_symlink():
            line += f"; symlink to {change.path.resolve()}"
        if change.path in backups:
            line += f"; backup {_pretty(backups[change.path], home)}"
        elif args.dry_run and change.backup and change.state == "changed":
            line += "; a backup would be written first"
        print(line)
        if change.state != "unchanged":
            for detail in change.details:
                print(f"      {detail}")
    mode = _mode(Path(args.bundle))
    if mode is not None and mode & 0o077:
        print(f"warning: {args.bundle} holds your token and is readable by others: chmod 600 {args.bundle}")
    if all(c.state == "unchanged" for c in changes):
        print("coderig onboard: nothing to change: every file is already up to date")
    script = _pretty(paths.use_script(bundle.alias), home)
    print("next:")
    if "claude" in selected:
        print("  claude                  # Claude Code reads the env block of ~/.claude/settings.json")
    if "codex" in selected or "opencode" in selected:
        print(f"  . {script}   # then codex / opencode (they read the token and CA from this env)")
    print(f"  coderig smoke {args.bundle}")
    if os.environ.get("ANTHROPIC_API_KEY"):
        print(
            "note: ANTHROPIC_API_KEY is set in this shell; the settings env block blanks it for Claude Code, "
            "but `unset ANTHROPIC_API_KEY` (and remove it from your shell profile) to avoid surprises"
        )
    return 0
