"""Every shell command the README shows, run as written from a fresh temporary directory.

Which commands run (each command of every ```bash block is classified; an unclassified one fails
the test, so a new README command forces a decision here):

- run: `coderig plan|render|frontdoor run|bundle --outputs|onboard|smoke` and the shell lines around
  them (`echo … > keys.json && chmod …`), in README order but the `frontdoor run` block first, each
  block with `bash -euo pipefail` (a block that also holds skipped commands: its runnable lines only).
  `frontdoor run` runs in the background (against the stand-in model server) until its ready line and
  serves the later blocks; it is stopped at the end.
- skipped, needs the Pulumi CLI: `./up.sh` (its no-Pulumi path is `test_up_sh_without_pulumi`),
  any `pulumi …` line and `coderig bundle` without `--outputs` (it runs `pulumi stack output`).
- skipped, needs cloud credentials: `coderig idle|stop|start` on the `aws` stack.
- run, shell set-up around them: `ssh-keygen` (the deploy key, into the test's HOME), `mkdir`,
  `(umask …)`, `export` (the state directory and passphrase the quick start makes before `pulumi`).
- skipped, runs on a GPU host or needs one reachable: `nvidia-smi`, `sudo …` (sudoers line, compose
  logs), `ssh-copy-id`, `ssh-keyscan`; the keyscan line runs against an sshd test host in
  `test_readme_keyscan_line_is_a_host_key`, the sudoers line is checked by `visudo -c` where it exists.
- skipped, interactive agents: `claude`, `codex`, `opencode` launched for a session (their headless
  round trips are tests/client/*_integration.py).
- `uv run pytest` is not run recursively: it must be exactly the command `.ci/run` runs.

The environment, not the commands, is what the test arranges: stack files are the README's own
```yaml blocks (`# Pulumi.<stack>.yaml` first line) copied into the directory; `uv run` finds the
project through UV_PROJECT (no sync), and `coderig` on PATH is the project's entry point (what
`uv tool install` gives a developer); HOME is an empty directory. `outputs.json` (what `pulumi stack
output --json --show-secrets` prints) is made from the running front door's own bundle.

Substitutions (hosts, ports and file names only):

| README                      | test                                   |
|-----------------------------|----------------------------------------|
| http://10.0.0.9:8000/v1     | the stand-in's URL                     |
| 0.0.0.0:8443                | 127.0.0.1:<free port>                  |
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT
from frontdoor_fixtures import free_port, require_tool, standin_server

from coderig.client import bundle as clients
from coderig.frontdoor.run import READY_LINE

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SKIP = {
    "pulumi": "needs the Pulumi CLI",
    "up.sh": "needs the Pulumi CLI (test_up_sh_without_pulumi covers its no-Pulumi path)",
    "cloud": "needs cloud credentials",
    "agent": "an interactive agent session",
    "host": "runs on a GPU host, or needs one reachable",
}
SHELL = ("ssh-keygen", "mkdir", "(umask", "export")
HOST = ("nvidia-smi", "sudo", "ssh-copy-id", "ssh-keyscan")


@dataclass(frozen=True)
class Command:
    text: str  # continuation lines joined, comments kept (bash ignores them)
    block: int


def readme_blocks(lang: str) -> list[str]:
    return [m.group(2) for m in BLOCK.finditer(README.read_text()) if m.group(1) == lang]


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined; blank and comment-only lines dropped."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip() and not pending.strip().startswith("#"):
            out.append(pending.strip())
        pending = ""
    return out


def classify(cmd: str) -> str:
    """'run', 'pytest' or a SKIP key."""
    words = cmd.split("#", 1)[0].split()
    if words[:1] == ["./up.sh"]:
        return "up.sh"
    if "pulumi" in words or ("bundle" in words and "--outputs" not in words):
        return "pulumi"
    if re.search(r"coderig (idle|stop|start) ", cmd):
        return "cloud"
    if words[:1] in (["claude"], ["codex"], ["opencode"]) or re.search(r"&& (codex|opencode)\s*$", cmd.split("#")[0]):
        return "agent"
    if words[:1] and words[0] in HOST or re.search(r"\| sudo ", cmd):
        return "host"
    if words[:3] == ["uv", "run", "pytest"]:
        return "pytest"
    if re.match(r"(uv run )?coderig (plan|render|frontdoor run|bundle|onboard|smoke)\b", cmd) or words[:1] == ["echo"]:
        return "run"
    if words[:1] and words[0] in SHELL:
        return "run"
    return "unclassified"


def test_every_readme_command_is_classified() -> None:
    kinds = {c: classify(c) for b in readme_blocks("bash") for c in commands(b)}
    assert "unclassified" not in kinds.values(), [c for c, k in kinds.items() if k == "unclassified"]
    ran = {k for k in kinds.values()}
    assert {"run", "pytest", "pulumi", "up.sh"} <= ran
    runnable = " ".join(c for c, k in kinds.items() if k == "run")
    for name in ("coderig plan", "coderig render", "coderig frontdoor run", "coderig bundle", "coderig onboard",
                 "coderig smoke"):  # fmt: skip
        assert name in runnable


def test_readme_test_command_is_what_ci_runs() -> None:
    pytest_lines = [c for b in readme_blocks("bash") for c in commands(b) if classify(c) == "pytest"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_commands = [line for line in ci if line and not line.startswith("#")]
    assert ci_commands[-1] == "uv run pytest"
    assert [c.split("#")[0].strip() for c in pytest_lines] == ["uv run pytest"]


def test_readme_quick_run_selects_the_fast_tests_only() -> None:
    """The quick run the README names, as written, but collect-only (running it here would run this
    test again): it keeps the pure and mock tests and leaves out every integration test."""
    quick = re.search(r"`(uv run pytest -m [^`]+)` is the quick run", README.read_text())
    assert quick, "the README names its quick run"
    proc = subprocess.run(["bash", "-c", quick.group(1) + " --collect-only -q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]  # "N/M tests collected (K deselected) in …"
    selected, deselected = map(int, re.findall(r"(\d+)(?:/\d+ tests collected| deselected)", summary))
    assert selected > 300 and deselected > 50, summary
    assert "test_replica_link.py" not in proc.stdout and "test_links.py" in proc.stdout


def test_readme_plan_example_is_what_plan_prints(tmp_path: Path) -> None:
    example = next(b for b in readme_blocks("") if b.startswith("$ uv run coderig plan"))
    command, *expected = example.rstrip("\n").splitlines()
    stack_files(tmp_path)
    proc = subprocess.run(["bash", "-c", command[2:]], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip("\n").splitlines() == expected, "refresh README's plan example"


# ---------------------------------------------------------------- running the README


def stack_files(work: Path) -> list[str]:
    names = []
    for block in readme_blocks("yaml"):
        first = block.splitlines()[0]
        if first.startswith("# Pulumi.") and first.endswith(".yaml"):
            (work / first[2:]).write_text(block)
            names.append(first[2:])
    return names


def environment(work: Path) -> dict[str, str]:
    bin_dir = work.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "coderig"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m coderig.cli "$@"\n')
    shim.chmod(0o755)
    home = work.parent / "home"
    home.mkdir(exist_ok=True)
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)  # a workstation's ~/.ssh, where ssh-keygen writes
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "CODERIG_"))}
    env.update(
        PATH=f"{bin_dir}:{Path(uv).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        HOME=str(home),
        XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"),  # LiteLLM's venv, uv's cache
        UV_PROJECT=str(ROOT),
        UV_NO_SYNC="1",
    )
    return env


def substitute(cmd: str, backend: str, port: int) -> str:
    return cmd.replace("http://10.0.0.9:8000/v1", backend).replace("0.0.0.0:8443", f"127.0.0.1:{port}")


@pytest.mark.integration
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    require_tool("nginx")
    work = tmp_path / "work"
    work.mkdir()
    stack_files(work)
    env = environment(work)
    port = free_port()
    model = re.search(r"--model (\S+)", README.read_text())
    assert model
    background: list[subprocess.Popen[str]] = []
    ran: list[str] = []
    with standin_server(model=model.group(1)) as standin:
        try:
            # the front door first: it is the endpoint the bundle, onboard and smoke blocks use
            blocks = readme_blocks("bash")
            for block in sorted(blocks, key=lambda b: "frontdoor run" not in b):
                cmds = [c for c in commands(block) if classify(c) == "run"]
                if not cmds:
                    continue
                # a block that mixes in skipped commands (`pulumi … > outputs.json`) runs its runnable lines
                whole = all(classify(c) == "run" for c in commands(block))
                script = substitute(block if whole else "\n".join(cmds), standin.url, port)
                if "frontdoor run" in script:
                    background.append(start_background(script, work, env))
                    make_outputs(work)
                else:
                    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env,
                                          capture_output=True, text=True, timeout=600)  # fmt: skip
                    assert proc.returncode == 0, f"{script}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                ran += cmds
        finally:
            for proc in background:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    joined = "\n".join(ran)
    for name in ("coderig plan", "coderig render", "coderig frontdoor run", "--outputs outputs.json",
                 "coderig onboard", "coderig smoke"):  # fmt: skip
        assert name in joined
    assert (work / "rendered" / ".coderig-render").exists()
    assert Path(env["HOME"], ".claude", "settings.json").exists() and (work / "alice.json").exists()


def start_background(script: str, work: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    ready = threading.Event()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith(READY_LINE):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 180
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("frontdoor run did not become ready:\n" + "".join(output))
    return proc


def make_outputs(work: Path) -> None:
    """outputs.json as `pulumi stack output --json --show-secrets --stack prod` would print it, for the
    endpoint the README's `frontdoor run` serves (the environment of the `coderig bundle --outputs` line)."""
    bundles = sorted((work / "bundles").glob("*.json"))
    assert bundles, "frontdoor run --bundles-dir wrote no bundle"
    data = json.loads(bundles[0].read_text())
    tokens = {json.loads(p.read_text())["developer"]: json.loads(p.read_text())["token"] for p in bundles}
    public = {k: v for k, v in data.items() if k not in ("developer", "token")}
    public.update(kind=clients.STACK_KIND, stack="prod")
    out = work / "outputs.json"
    out.write_text(json.dumps({clients.BUNDLE_OUTPUT: public, clients.TOKENS_OUTPUT: tokens}))
    out.chmod(0o600)


# ---------------------------------------------------------------- ./up.sh without Pulumi


def test_up_sh_without_pulumi(tmp_path: Path) -> None:
    """From a copy of the repository, with no `pulumi` on PATH: exit non-zero, the plan printed first,
    the no-Pulumi paths named, and nothing created (.pulumi-state). An invalid stack file stops at the
    plan (exit 2)."""
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    shutil.copy2(ROOT / "up.sh", repo / "up.sh")
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").symlink_to(uv)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "UV_PROJECT_ENVIRONMENT": str(ROOT / ".venv"), "UV_NO_SYNC": "1"}  # fmt: skip
    assert not shutil.which("pulumi", path=env["PATH"])
    proc = subprocess.run(["./up.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stdout.startswith("stack dev: qwen3-1.7b-cpu"), proc.stdout + proc.stderr
    assert "the Pulumi CLI is not installed" in proc.stderr
    assert "coderig render --config Pulumi.dev.yaml" in proc.stderr and "coderig frontdoor run" in proc.stderr
    assert not (repo / ".pulumi-state").exists()

    (repo / "Pulumi.bad.yaml").write_text("config:\n  coderig:target: {kind: gcp}\n  coderig:model: {preset: x}\n")
    proc = subprocess.run(["./up.sh", "bad"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "coderig:target.kind" in proc.stderr
    assert not (repo / ".pulumi-state").exists()


# ---------------------------------------------------------------- the GPU-host lines of the quick start


def readme_command(prefix: str) -> str:
    found = [c for b in readme_blocks("bash") for c in commands(b) if c.startswith(prefix)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.integration
def test_readme_keyscan_line_is_a_host_key(ssh_host) -> None:  # noqa: ANN001 (the sshhost fixture)
    """The quick start's `ssh-keyscan` line, against an sshd test host in place of gpu1.internal: it
    prints the host's own key, in the form `coderig:target.hosts[].hostKey` pins."""
    line = readme_command("ssh-keyscan ")
    cmd = line.replace("gpu1.internal", f"-p {ssh_host.port} {ssh_host.address}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    keys = [" ".join(row.split()[1:3]) for row in proc.stdout.splitlines() if not row.startswith("#")]
    assert keys == [ssh_host.host_key], proc.stdout


def test_readme_sudoers_line_is_valid(tmp_path: Path) -> None:
    """The quick start's passwordless-sudo line, written to a file instead of /etc/sudoers.d: sudo's
    own parser accepts it (visudo -c), and it grants NOPASSWD to the login user the stack file names."""
    line = readme_command("echo 'ubuntu ALL=")
    entry = re.match(r"echo '([^']+)' \| sudo tee /etc/sudoers.d/coderig", line)
    assert entry, line
    assert entry.group(1).startswith("ubuntu ") and "NOPASSWD: ALL" in entry.group(1)
    assert "user: ubuntu" in README.read_text()
    visudo = shutil.which("visudo") or pytest.skip("visudo (Debian package sudo) is not installed")
    path = tmp_path / "coderig"
    path.write_text(entry.group(1) + "\n")
    path.chmod(0o440)
    proc = subprocess.run([visudo, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_files_the_readme_makes_in_the_project_are_git_ignored() -> None:
    """Every file a README command writes in the project directory holds a secret (keys, every token, a
    developer's bundle): git must ignore each one where the README makes it."""
    made: set[str] = set()
    for cmd in (c for b in readme_blocks("bash") for c in commands(b)):
        code = cmd.split("#", 1)[0]
        made.update(re.findall(r"(?:>|--out|--out-dir|--bundles-dir|--keys-file) (\S+)", code))
    made = {m for m in made if not m.startswith(("~", "/", "$", ".pulumi-state/"))}
    assert {"keys.json", "outputs.json", "alice.json", "bundles/", "rendered/"} <= made, made
    proc = subprocess.run(["git", "check-ignore", "--no-index", "-v", *sorted(made)], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    ignored = {line.split("\t")[-1] for line in proc.stdout.splitlines()}
    assert ignored == made, f"not git-ignored: {made - ignored}"


def block_with(line_start: str) -> str:
    found = [b for b in readme_blocks("bash") if any(c.startswith(line_start) for c in commands(b))]
    assert len(found) == 1, line_start
    return found[0]


@pytest.mark.integration
def test_quick_start_state_and_migration_blocks_run_with_the_real_engine(tmp_path: Path) -> None:
    """The quick start's deploy key and state blocks, then the State section's move to an object store, as
    written, with the Pulumi CLI built here; the object store is a second file backend (the same DIY
    backend code as s3://, which is unreachable here): the secret set before `./up.sh` reads back the same
    from the new backend, with the same passphrase."""
    from engine import built_pulumi

    pulumi = built_pulumi()
    work = tmp_path / "work"
    work.mkdir()
    stack_files(work)
    # `{secure: v1:…}` in the README's stack file stands for what `pulumi config set --secret` writes there
    prod = work / "Pulumi.prod.yaml"
    prod.write_text("".join(line for line in prod.read_text().splitlines(True) if "{secure: v1:…}" not in line))
    shutil.copy2(ROOT / "Pulumi.yaml", work / "Pulumi.yaml")
    env = environment(work) | {"PULUMI_HOME": str(tmp_path / "pulumi-home"), "PULUMI_SKIP_UPDATE_CHECK": "1",
                               "PATH": f"{Path(pulumi).parent}:{environment(work)['PATH']}"}  # fmt: skip
    store = tmp_path / "object-store"
    store.mkdir()
    script = "\n".join([
        readme_command("ssh-keygen "),
        block_with("mkdir -p .pulumi-state"),
        block_with("export PULUMI_BACKEND_URL=s3://").replace("s3://acme-coderig-state/prod", f"file://{store}"),
        "pulumi config get --stack prod coderig:sshPrivateKey > migrated.key",
    ])  # fmt: skip
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    key = Path(env["HOME"], ".ssh", "coderig").read_text()
    assert (work / "migrated.key").read_text().strip() == key.strip()
    assert key.strip() not in (work / "Pulumi.prod.yaml").read_text()  # kept encrypted in the stack file
    assert list(work.glob("Pulumi.prod.yaml.bak.*")) and (store / ".pulumi" / "stacks").is_dir()


def test_every_in_page_link_names_a_heading() -> None:
    """The README is read by jumping from 'Where to start' and between sections: each `(#anchor)` is the
    GitHub slug of one of its headings."""
    text = README.read_text()
    body = BLOCK.sub("", text)  # headings inside code blocks are comments, not sections

    def slug(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    headings = {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", body, re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and links <= headings, sorted(links - headings)
