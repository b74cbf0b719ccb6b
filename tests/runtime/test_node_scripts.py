"""The scripts the kit ships to a node: shellcheck, the cache volume on a real loop device, preflight's
GPU logic with a stand-in nvidia-smi, the weights fetcher's marker, and the readiness wait."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from coderig.runtime.scripts import SCRIPT_NAMES, script_text

# the scripts exactly as a node gets them (the shared argument prelude in place)
SCRIPTS = Path(tempfile.mkdtemp(prefix="coderig-shipped-"))
for _name in SCRIPT_NAMES:
    (SCRIPTS / _name).write_text(script_text(_name))
SHELL_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))


def run(script: str, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"} | env
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- shellcheck ------------------------------------------------------------------------------


def test_every_expected_script_ships() -> None:
    names = {p.name for p in SCRIPTS.iterdir()}
    assert {"preflight.sh", "install.sh", "volume.sh", "wait-ready.sh", "fetch_weights.py"} <= names


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (.ci/node-deps.sh installs it)"
    result = subprocess.run([shellcheck, "-x", "-S", "style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = script.read_text()
    assert "set -euo pipefail" in text


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_every_script_explains_itself_and_refuses_unknown_arguments(script: Path) -> None:
    """--help prints the script's header (what it does, every parameter) and changes nothing; an
    argument that is not --name=value is a usage error (exit 2) naming it."""
    header = [ln for ln in script.read_text().splitlines()[1:] if ln.startswith("#")][:2]
    shown = run(script.name, {}, "--help", timeout=10)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:2] == [ln.removeprefix("#").removeprefix(" ") for ln in header]
    assert "CODERIG_" in shown.stdout  # the parameters are in the header
    wrong = run(script.name, {}, "--cache-path", timeout=10)
    assert wrong.returncode == 2 and f"{script.stem}: usage error: unknown argument '--cache-path'" in wrong.stderr


# --- volume.sh on a real loop device ----------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


@contextlib.contextmanager
def loop_device(tmp: Path, size_mb: int = 300) -> Iterator[str]:
    image = tmp / "disk.img"
    with image.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)  # sparse
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        # unmount anything still mounted from this device, then detach it
        mounts = subprocess.run(
            ["findmnt", "-rn", "-o", "TARGET", "-S", dev], capture_output=True, text=True
        ).stdout.split()
        for target in mounts:
            subprocess.run(["umount", "-l", target], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)
        image.unlink(missing_ok=True)


def blkid(dev: str, tag: str) -> str:
    out = subprocess.run(["blkid", "-p", "-o", "value", "-s", tag, dev], capture_output=True, text=True)
    return out.stdout.strip()


def is_mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


@pytest.fixture
def vol(tmp_path: Path) -> Iterator[tuple[str, Path, Path, dict[str, str]]]:
    with loop_device(tmp_path) as dev:
        mnt = tmp_path / "cache"
        fstab = tmp_path / "fstab"
        fstab.write_text("# test fstab\n")
        env = {"CODERIG_CACHE_DEVICE": dev, "CODERIG_CACHE_PATH": str(mnt), "CODERIG_FSTAB": str(fstab)}
        try:
            yield dev, mnt, fstab, env
        finally:
            if is_mounted(mnt):
                subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_root
@pytest.mark.integration
def test_volume_formats_blank_device_mounts_by_uuid_and_never_reformats(vol) -> None:
    dev, mnt, fstab, env = vol
    assert blkid(dev, "TYPE") == ""

    first = run("volume.sh", env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "formatting it as ext4" in first.stdout
    assert blkid(dev, "TYPE") == "ext4"
    uuid = blkid(dev, "UUID")
    assert is_mounted(mnt)
    lines = [ln for ln in fstab.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 1 and lines[0].split()[:3] == [f"UUID={uuid}", str(mnt), "ext4"]

    # data lands on the volume; a second run formats nothing and adds no fstab line
    (mnt / "hub").mkdir()
    (mnt / "hub" / "weights.bin").write_bytes(b"precious" * 1000)
    second = run("volume.sh", env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "formatting" not in second.stdout
    assert "keeping it (no format)" in second.stdout
    assert blkid(dev, "UUID") == uuid
    assert (mnt / "hub" / "weights.bin").read_bytes() == b"precious" * 1000
    assert fstab.read_text().count(f"UUID={uuid}") == 1

    # after an unmount (reboot, stop) the run mounts it again from fstab, data intact
    subprocess.run(["umount", str(mnt)], check=True)
    assert not (mnt / "hub").exists()
    third = run("volume.sh", env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "formatting" not in third.stdout
    assert is_mounted(mnt)
    assert (mnt / "hub" / "weights.bin").read_bytes() == b"precious" * 1000
    assert fstab.read_text().count(f"UUID={uuid}") == 1


@needs_root
@pytest.mark.integration
def test_volume_keeps_existing_xfs(vol) -> None:
    dev, mnt, fstab, env = vol
    subprocess.run(["mkfs.xfs", "-q", dev], check=True)
    uuid = blkid(dev, "UUID")
    result = run("volume.sh", env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "formatting" not in result.stdout
    assert blkid(dev, "UUID") == uuid and blkid(dev, "TYPE") == "xfs"
    assert f"UUID={uuid} {mnt} xfs" in fstab.read_text()


@needs_root
@pytest.mark.integration
@pytest.mark.parametrize("maker", [["mkswap", "-q"], ["mkfs.ext2", "-q"]], ids=["swap", "ext2"])
def test_volume_refuses_unexpected_signature(vol, maker: list[str]) -> None:
    dev, mnt, fstab, env = vol
    subprocess.run([*maker, dev], check=True, capture_output=True)
    before = (blkid(dev, "TYPE"), blkid(dev, "UUID"))
    result = run("volume.sh", env)
    assert result.returncode == 1
    assert "REFUSED" in result.stderr and before[0] in result.stderr
    assert (blkid(dev, "TYPE"), blkid(dev, "UUID")) == before  # untouched
    assert not is_mounted(mnt)
    assert "UUID=" not in fstab.read_text()


@needs_root
@pytest.mark.integration
def test_volume_refuses_partitioned_disk(vol) -> None:
    dev, mnt, fstab, env = vol
    sfdisk = shutil.which("sfdisk")
    if sfdisk is None:
        pytest.skip("sfdisk not installed")
    subprocess.run([sfdisk, "-q", dev], input="label: gpt\n,,L\n", text=True, check=True, capture_output=True)
    result = run("volume.sh", env)
    assert result.returncode == 1
    assert "partition table" in result.stderr
    assert blkid(dev, "PTTYPE") == "gpt"


def test_volume_directory_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "cache"
    result = run("volume.sh", {"CODERIG_CACHE_PATH": str(target), "CODERIG_FSTAB": str(tmp_path / "fstab")})
    assert result.returncode == 0, result.stderr
    assert target.is_dir()
    assert not (tmp_path / "fstab").exists()


def test_volume_rejects_non_block_device(tmp_path: Path) -> None:
    fake = tmp_path / "notadev"
    fake.write_text("")
    env = {"CODERIG_CACHE_PATH": str(tmp_path / "c"), "CODERIG_CACHE_DEVICE": str(fake)}
    result = run("volume.sh", env | {"CODERIG_FSTAB": str(tmp_path / "fstab")})
    assert result.returncode == 1 and "not a block device" in result.stderr


# --- preflight.sh GPU logic with a stand-in nvidia-smi -------------------------------------------


def fake_bin(tmp: Path, name: str, body: str) -> Path:
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bindir


def preflight_lines(out: str, kind: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(f"preflight: {kind} ")]


def test_preflight_gpu_model_count_and_driver(tmp_path: Path) -> None:
    bindir = fake_bin(
        tmp_path,
        "nvidia-smi",
        """
        printf 'NVIDIA H100 80GB HBM3, 550.90.07\\n%.0s' 1 2 3 4
        """,
    )
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "CODERIG_GPU_MODEL": "H200",
        "CODERIG_GPU_COUNT": "8",
        "CODERIG_DRIVER_MIN": "570.0",
        "CODERIG_CACHE_PATH": str(tmp_path),
    }
    result = run("preflight.sh", env)
    assert result.returncode == 1
    fails = preflight_lines(result.stdout, "FAIL")
    assert any("gpu-count: found 4 GPU(s) (4x NVIDIA H100 80GB HBM3), the plan needs 8" in f for f in fails)
    assert any("gpu-model: expected H200" in f for f in fails)
    assert any("driver: NVIDIA driver 550.90.07 is older than the required 570.0" in f for f in fails)

    ok = run(
        "preflight.sh", env | {"CODERIG_GPU_MODEL": "H100", "CODERIG_GPU_COUNT": "4", "CODERIG_DRIVER_MIN": "550.54.14"}
    )
    assert not [f for f in preflight_lines(ok.stdout, "FAIL") if "gpu" in f or "driver" in f], ok.stdout


def test_preflight_cpu_mode_skips_gpu_checks(tmp_path: Path) -> None:
    result = run("preflight.sh", {"CODERIG_MODE": "cpu", "CODERIG_CACHE_PATH": str(tmp_path / "c")})
    assert "nvidia" not in result.stdout.lower()
    assert "gpu" not in " ".join(preflight_lines(result.stdout, "FAIL"))


def test_preflight_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run(
            "preflight.sh", {"CODERIG_MODE": "cpu", "CODERIG_CACHE_PATH": str(tmp_path), "CODERIG_PORTS": f"{port}"}
        )
    assert f"preflight: FAIL ports: port {port} is already in use by another process" in result.stdout
    assert result.returncode == 1


def test_preflight_unsupported_os(tmp_path: Path) -> None:
    osr = tmp_path / "os-release"
    osr.write_text('ID=centos\nVERSION_ID="7"\n')
    result = run(
        "preflight.sh", {"CODERIG_MODE": "cpu", "CODERIG_OS_RELEASE": str(osr), "CODERIG_CACHE_PATH": str(tmp_path)}
    )
    assert "preflight: FAIL os: centos 7 is not supported" in result.stdout
    assert result.returncode == 1


def test_preflight_complete_marker_needs_no_space(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "coderig-markers").mkdir(parents=True)
    (cache / "coderig-markers" / "org--model.json").write_text("{}")
    env = {
        "CODERIG_MODE": "cpu",
        "CODERIG_CACHE_PATH": str(cache),
        "CODERIG_REPO": "org/model",
        "CODERIG_WEIGHTS_BYTES": str(10**15),
    }
    result = run("preflight.sh", env)
    assert "already complete" in result.stdout
    assert not [ln for ln in preflight_lines(result.stdout, "FAIL") if "disk" in ln]


# --- fetch_weights.py: marker, skip, resume-friendly failure --------------------------------------


def load_fetcher():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_weights", SCRIPTS / "fetch_weights.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fetch_weights_downloads_once_then_skips(tmp_path: Path, capsys) -> None:
    fw = load_fetcher()
    calls: list[tuple[str, str, list[str]]] = []

    def fake_download(repo: str, revision: str, patterns: list[str], hf_home: Path) -> str:
        calls.append((repo, revision, patterns))
        repo_dir = hf_home / "hub" / "models--org--tiny"
        snap = repo_dir / "snapshots" / "abc123"
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "blobs" / "sha").write_bytes(b"x" * 4096)
        snap.mkdir(parents=True, exist_ok=True)
        if not (snap / "tiny.Q4.gguf").is_symlink():
            (snap / "tiny.Q4.gguf").symlink_to("../../blobs/sha")
        return str(snap)

    env = {
        "HF_HOME": str(tmp_path),
        "CODERIG_REPO": "org/tiny",
        "CODERIG_REVISION": "main",
        "CODERIG_ALLOW_PATTERNS": "*.Q4.gguf",
        "CODERIG_LINK_FILE": "tiny.Q4.gguf",
        "CODERIG_WEIGHTS_BYTES": "4096",
    }
    assert fw.main(env, download=fake_download, interval=0.05) == 0
    marker = json.loads((tmp_path / "coderig-markers" / "org--tiny.json").read_text())
    assert marker["repo"] == "org/tiny" and marker["commit"] == "abc123" and marker["bytes"] == 4096
    link = tmp_path / "coderig-models" / "org--tiny" / "tiny.Q4.gguf"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link)) and link.read_bytes() == b"x" * 4096
    out = capsys.readouterr().out
    assert "weights: 100.0% 0.0/0.0 GB" in out and "complete" in out

    # second run: marker matches, no download
    assert fw.main(env, download=fake_download) == 0
    assert len(calls) == 1
    assert "nothing to download" in capsys.readouterr().out

    # a different revision is not "complete"
    assert fw.main(env | {"CODERIG_REVISION": "v2"}, download=fake_download, interval=0.05) == 0
    assert len(calls) == 2


def test_fetch_weights_failure_keeps_partial_and_writes_no_marker(tmp_path: Path, capsys) -> None:
    fw = load_fetcher()
    partial = tmp_path / "hub" / "models--org--big" / "blobs"
    partial.mkdir(parents=True)
    (partial / "abc.incomplete").write_bytes(b"y" * 2_000_000)

    def broken(repo: str, revision: str, patterns: list[str], hf_home: Path) -> str:
        raise ConnectionError("network unreachable")

    env = {"HF_HOME": str(tmp_path), "CODERIG_REPO": "org/big"}
    assert fw.main(env, download=broken, interval=0.05) == 1
    out = capsys.readouterr().out
    assert "resuming org/big@main: 0.0 GB already" in out
    assert "FAIL download of org/big@main stopped: ConnectionError" in out
    assert (partial / "abc.incomplete").exists()
    assert not (tmp_path / "coderig-markers" / "org--big.json").exists()


def test_fetch_weights_progress_line() -> None:
    fw = load_fetcher()
    assert fw.fmt_progress(350 * 10**9, 700 * 10**9, 500e6) == "weights: 50.0% 350.0/700.0 GB 500 MB/s eta 11m"


def test_fetch_weights_runs_as_script_without_huggingface_hub_when_complete(tmp_path: Path) -> None:
    fw = load_fetcher()
    fw.write_marker(tmp_path, "org/m", "main", [], "c0ffee", 1)
    env = {"HF_HOME": str(tmp_path), "CODERIG_REPO": "org/m", "PATH": os.environ["PATH"]}
    result = subprocess.run(
        [sys.executable, "-I", str(SCRIPTS / "fetch_weights.py")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to download" in result.stdout


# --- wait-ready.sh against a stand-in docker -------------------------------------------------------

FAKE_DOCKER = """
# Stand-in for `docker compose ps/logs`: state advances one step per `ps` call.
state_file="$FAKE_STATE_DIR/tick"
tick=$(cat "$state_file" 2>/dev/null || echo 0)
args="$*"
case "$args" in
  *" ps "*)
    echo $((tick + 1)) > "$state_file"
    if [ "$tick" -lt 2 ]; then
      echo "weights|running||0"
    else
      echo "weights|exited||${FAKE_WEIGHTS_EXIT:-0}"
    fi
    if [ "$tick" -lt 4 ]; then
      echo "model|running|starting|0"
    else
      echo "model|running|${FAKE_MODEL_HEALTH:-healthy}|0"
    fi
    echo "litellm|running|healthy|0"
    echo "gateway|running||0"
    ;;
  *" logs "*weights*)
    echo "weights: $((tick * 25)).0% $((tick * 175)).0/700.0 GB 900 MB/s eta 9m"
    ;;
  *" logs "*model*)
    echo "Loading safetensors checkpoint shards: $((tick * 20))% Completed"
    ;;
  *" logs "*gateway*)
    echo "2026/11/21 [notice] 1#1: start worker processes"
    ;;
  *" exec -T gateway wget -q -O - --no-check-certificate https://127.0.0.1:8443/healthz")
    # /healthz through the gateway: fails FAKE_HEALTHZ_FAILS times (default 0), then answers
    probes=$(cat "$FAKE_STATE_DIR/probes" 2>/dev/null || echo 0)
    echo $((probes + 1)) > "$FAKE_STATE_DIR/probes"
    if [ "$probes" -lt "${FAKE_HEALTHZ_FAILS:-0}" ]; then
      echo "wget: server returned error: HTTP/1.1 503 Service Unavailable"
      exit 1
    fi
    echo '"I'"'"'m alive!"'
    ;;
  *" exec -T gateway wget -q -O - --no-check-certificate http://127.0.0.1:4201/health")
    # a replica's /health through its TLS link: fails FAKE_LINK_FAILS times (default 0)
    links=$(cat "$FAKE_STATE_DIR/link-probes" 2>/dev/null || echo 0)
    echo $((links + 1)) > "$FAKE_STATE_DIR/link-probes"
    if [ "$links" -lt "${FAKE_LINK_FAILS:-0}" ]; then
      echo "wget: can't connect to remote host (127.0.0.1): Connection reset by peer"
      exit 1
    fi
    ;;
  *) echo "unexpected: $args" >&2; exit 3 ;;
esac
"""


def wait_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    bindir = fake_bin(tmp_path, "docker", FAKE_DOCKER)
    return {
        "DOCKER": str(bindir / "docker"),
        "FAKE_STATE_DIR": str(tmp_path),
        "CODERIG_POLL_SECONDS": "0",
        "CODERIG_BUNDLE_DIR": str(tmp_path),
    } | extra


def test_wait_ready_streams_progress_then_ready(tmp_path: Path) -> None:
    result = run("wait-ready.sh", wait_env(tmp_path, CODERIG_BUDGET_SECONDS="60"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weights: 25.0% 175.0/700.0 GB" in result.stdout
    assert "weights: complete" in result.stdout
    assert "model: Loading safetensors checkpoint shards" in result.stdout
    assert "ready after" in result.stdout


def test_wait_ready_weights_failure_prints_logs(tmp_path: Path) -> None:
    result = run("wait-ready.sh", wait_env(tmp_path, CODERIG_BUDGET_SECONDS="60", FAKE_WEIGHTS_EXIT="1"))
    assert result.returncode == 1
    assert "FAIL weights: download exited with code 1" in result.stdout
    assert "last 60 log lines of weights:" in result.stdout and "  | weights:" in result.stdout


def test_wait_ready_unhealthy_model_fails(tmp_path: Path) -> None:
    result = run("wait-ready.sh", wait_env(tmp_path, CODERIG_BUDGET_SECONDS="60", FAKE_MODEL_HEALTH="unhealthy"))
    assert result.returncode == 1
    assert "FAIL model: health check reports unhealthy" in result.stdout
    assert "  | Loading safetensors" in result.stdout


def test_wait_ready_budget_exhausted(tmp_path: Path) -> None:
    env = wait_env(tmp_path, CODERIG_BUDGET_SECONDS="0", CODERIG_POLL_SECONDS="1")
    result = run("wait-ready.sh", env)
    assert result.returncode == 1
    assert "FAIL weights: not ready within the budget of 0s" in result.stdout


def test_preflight_local_target_any_os_but_needs_docker(tmp_path: Path) -> None:
    osr = tmp_path / "os-release"
    osr.write_text('ID=fedora\nVERSION_ID="41"\n')
    env = {
        "CODERIG_MODE": "cpu",
        "CODERIG_TARGET": "local",
        "CODERIG_OS_RELEASE": str(osr),
        "CODERIG_CACHE_PATH": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = run("preflight.sh", env)
    assert "preflight: ok os: fedora 41 (local target: nothing is installed here)" in result.stdout
    if shutil.which("docker", path="/usr/bin:/bin") is None:
        assert (
            "preflight: FAIL docker: Docker with the compose plugin is missing: install Docker Desktop" in result.stdout
        )
        assert result.returncode == 1


def test_preflight_ports_held_by_our_running_stack_are_fine(tmp_path: Path) -> None:
    import socket

    bindir = fake_bin(tmp_path, "docker", 'case "$1" in ps) echo abc123 ;; *) exit 1 ;; esac\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run(
            "preflight.sh",
            {
                "CODERIG_MODE": "cpu",
                "CODERIG_CACHE_PATH": str(tmp_path),
                "CODERIG_PORTS": str(port),
                "PATH": f"{bindir}:{os.environ['PATH']}",
            },
        )
    assert f"preflight: ok ports: {port} in use by the running coderig stack" in result.stdout


def test_wait_ready_compose_up_failure_prints_its_log(tmp_path: Path) -> None:
    env = wait_env(tmp_path, CODERIG_BUDGET_SECONDS="60")
    # no containers at all: `docker compose up` failed while pulling
    bindir = fake_bin(tmp_path, "docker", "exit 0\n")
    env["DOCKER"] = str(bindir / "docker")
    (tmp_path / "up.log").write_text(
        "Pulling model ...\nError response from daemon: manifest unknown\ncompose-up-exit=18\n"
    )
    result = run("wait-ready.sh", env)
    assert result.returncode == 1
    assert "FAIL compose: docker compose up exited with code 18" in result.stdout
    assert "  | Error response from daemon: manifest unknown" in result.stdout


HEALTHZ = {"CODERIG_GATEWAY_URL": "https://127.0.0.1:8443/healthz", "CODERIG_GATEWAY_SERVICE": "gateway"}


def test_wait_ready_ends_with_a_request_through_the_gateway(tmp_path: Path) -> None:
    env = wait_env(tmp_path, CODERIG_BUDGET_SECONDS="60", FAKE_HEALTHZ_FAILS="2", **HEALTHZ)
    result = run("wait-ready.sh", env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # every service running and healthy is not enough: the gateway's /healthz must answer
    assert "GET https://127.0.0.1:8443/healthz through the gateway failed: wget: server returned error" in out
    assert out.count("through the gateway failed") == 1  # progress is printed once, not every poll
    assert 'through the gateway: "I\'m alive!"' in out.splitlines()[-1]
    assert (tmp_path / "probes").read_text().strip() == "3"


def test_wait_ready_needs_every_replica_through_its_link(tmp_path: Path) -> None:
    """With replicas, ready also needs each one's /health through its TLS link (commands.wait_command)."""
    urls = "https://127.0.0.1:8443/healthz http://127.0.0.1:4201/health"
    env = wait_env(
        tmp_path, CODERIG_BUDGET_SECONDS="60", FAKE_LINK_FAILS="2", **(HEALTHZ | {"CODERIG_GATEWAY_URL": urls})
    )
    result = run("wait-ready.sh", env)
    assert result.returncode == 0, result.stdout + result.stderr
    failed = "GET http://127.0.0.1:4201/health through the gateway failed: wget: can't connect to remote host"
    assert failed in result.stdout
    assert (tmp_path / "link-probes").read_text().strip() == "3"
    assert f"GET {urls} through the gateway:" in result.stdout.splitlines()[-1]


def test_wait_ready_fails_when_the_gateway_never_answers(tmp_path: Path) -> None:
    # no sleep between polls: every service is healthy within milliseconds, then only /healthz fails
    env = wait_env(
        tmp_path, CODERIG_BUDGET_SECONDS="3", CODERIG_POLL_SECONDS="0", FAKE_HEALTHZ_FAILS="999999", **HEALTHZ
    )
    result = run("wait-ready.sh", env)
    assert result.returncode == 1
    assert "FAIL gateway: not ready within the budget of 3s (GET https://127.0.0.1:8443/healthz" in result.stdout
    assert "last 60 log lines of gateway:" in result.stdout and "  | 2026/11/21 [notice]" in result.stdout


def test_preflight_host_ram_must_hold_the_sleeping_weights(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       65536000 kB\nMemFree:        1000 kB\n")  # 67.1 GB
    env = {"CODERIG_MODE": "cpu", "CODERIG_CACHE_PATH": str(tmp_path / "c"), "CODERIG_MEMINFO": str(meminfo)}
    small = run("preflight.sh", env | {"CODERIG_SLEEP_RAM_BYTES": str(50 * 10**9)})
    assert any("host-ram: 67.1 GB holds the sleeping model's weights (50.0 GB + 10%)" in f
               for f in preflight_lines(small.stdout, "ok")), small.stdout  # fmt: skip
    big = run("preflight.sh", env | {"CODERIG_SLEEP_RAM_BYTES": str(700 * 10**9)})
    (fail,) = [f for f in preflight_lines(big.stdout, "FAIL") if "host-ram" in f]
    assert "cannot hold the weights (700.0 GB + 10%)" in fail and "coderig:idle.action: stop" in fail
    assert big.returncode == 1
    none = run("preflight.sh", env)  # no sleep: no check
    assert "host-ram" not in none.stdout


def test_preflight_checks_the_ram_and_shm_the_host_kv_tier_was_sized_for(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       65536000 kB\nMemFree:        1000 kB\n")  # 67.1 GB
    shm = tmp_path / "shm"
    shm.mkdir()
    env = {
        "CODERIG_MODE": "cpu",
        "CODERIG_CACHE_PATH": str(tmp_path / "c"),
        "CODERIG_MEMINFO": str(meminfo),
        "CODERIG_SHM_PATH": str(shm),
    }
    fits = run("preflight.sh", env | {"CODERIG_KV_TIER_BYTES": "4096", "CODERIG_KV_HOST_BYTES": str(64 * 2**30)})
    oks = [f.removeprefix("preflight: ok ") for f in preflight_lines(fits.stdout, "ok")]
    assert any(f.startswith("kv-tier: 67.1 GB of RAM, as the plan assumed (68.7 GB)") for f in oks), fits.stdout
    assert any(f.startswith(f"kv-shm: {shm} holds") for f in oks), fits.stdout
    short = run("preflight.sh", env | {"CODERIG_KV_TIER_BYTES": str(2**62), "CODERIG_KV_HOST_BYTES": str(1024 * 2**30)})
    fails = [f for f in preflight_lines(short.stdout, "FAIL") if f.startswith("preflight: FAIL kv-")]
    assert len(fails) == 2 and short.returncode == 1, short.stdout
    assert "the plan sized the host KV tier for 1099.5 GB: set coderig:model.kvOffload.hostMemoryGiB" in fails[0]
    assert "lower coderig:model.kvOffload.sizeGiB" in fails[1]
    assert "kv-" not in run("preflight.sh", env).stdout  # no tier: no check
