"""volume.sh never writes before it has checked: on real loop devices, every refusal leaves the device
byte-for-byte unchanged (sha256 before/after), the fstab untouched and nothing mounted; a blank device is
formatted once, mounted by UUID through one fstab line, and kept on every later run."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coderig.runtime.scripts import script_text

# the script exactly as a node gets it (the shared argument prelude in place)
SCRIPT = Path(tempfile.mkdtemp(prefix="coderig-volume-")) / "volume.sh"
SCRIPT.write_text(script_text("volume.sh"))
MIB = 1024 * 1024
SIZE = 64 * MIB

pytestmark = pytest.mark.integration


def tool(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


def require(problem: str | None) -> None:
    """Skip locally, fail in CI (where .ci/node-deps.sh installs the tools and the job runs as root)."""
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(problem)
    pytest.skip(problem)


def run_volume(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"} | env
    return subprocess.run(["bash", str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=120)


def blkid(dev: str, tag: str) -> str:
    out = subprocess.run(["blkid", "-p", "-o", "value", "-s", tag, dev], capture_output=True, text=True)
    return out.stdout.strip()


def wipefs_signatures(dev: str) -> str:
    return subprocess.run(["wipefs", "-n", dev], capture_output=True, text=True, check=True).stdout.strip()


def sha256(dev: str) -> str:
    digest = hashlib.sha256()
    with open(dev, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def is_mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


def fstab_entries(fstab: Path) -> list[str]:
    return [ln for ln in fstab.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def random_bytes(n: int, seed: int = 1) -> bytes:
    # seeded: the same bytes every run, checked below to carry no signature blkid or wipefs knows
    return random.Random(seed).randbytes(n)


def assert_refused(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """One `volume: REFUSED` line naming the device, exit 1, and no format attempted."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volume: REFUSED"), result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    assert "formatting" not in result.stdout, result.stdout
    return lines[0]


class Disks:
    """Loop devices over image files in tmp_path, a cache mount point and an fstab; cleaned up after."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.mnt = tmp / "cache"
        self.fstab = tmp / "fstab"
        self.fstab.write_text("# test fstab\n")
        self.loops: list[str] = []
        self.maps: list[str] = []
        self.mounts: list[Path] = [self.mnt]

    def loop(self, name: str, content: bytes | None = None, *, partscan: bool = False, size: int = SIZE) -> str:
        """A loop device of `size` bytes: sparse (reads as zeros) or holding `content` from offset 0."""
        image = self.tmp / f"{name}.img"
        with image.open("wb") as f:
            if content:
                f.write(content)
            f.truncate(size)
        cmd = ["losetup", "-f", "--show", *(["-P"] if partscan else []), str(image)]
        dev = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        self.loops.append(dev)
        return dev

    def env(self, device: str) -> dict[str, str]:
        return {"CODERIG_CACHE_DEVICE": device, "CODERIG_CACHE_PATH": str(self.mnt), "CODERIG_FSTAB": str(self.fstab)}

    def cleanup(self) -> None:
        for path in self.mounts:
            while is_mounted(path):
                if subprocess.run(["umount", "-l", str(path)]).returncode != 0:
                    break
        for dev in self.loops:
            for target in subprocess.run(
                ["findmnt", "-rn", "-o", "TARGET", "-S", dev], capture_output=True, text=True
            ).stdout.split():
                subprocess.run(["umount", "-l", target], check=False)
        for name in self.maps:
            subprocess.run(["dmsetup", "remove", "--noudevsync", name], capture_output=True, check=False)
        for dev in self.loops:
            subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[Disks]:
    problem = None
    if os.geteuid() != 0:
        problem = "loop devices and mounts need root"
    else:
        missing = [t for t in ("losetup", "blkid", "wipefs", "mkfs.ext4", "findmnt") if tool(t) is None]
        if missing:
            problem = f"{', '.join(missing)} not installed (.ci/node-deps.sh installs them)"
    require(problem)
    d = Disks(tmp_path)
    try:
        yield d
    finally:
        d.cleanup()


# --- a) the reproduction: a device path re-pointed at another disk holding data ---------------


def test_repointed_device_with_unsigned_data_is_refused_untouched(disks: Disks) -> None:
    first = disks.loop("first")
    second = disks.loop("second", random_bytes(SIZE))
    assert blkid(second, "TYPE") == "" and blkid(second, "PTTYPE") == "" and wipefs_signatures(second) == ""
    link = disks.tmp / "coderig-weights"  # like /dev/coderig-weights, the udev link the aws target uses
    link.symlink_to(first)
    env = disks.env(str(link))

    made = run_volume(env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "formatting it as ext4" in made.stdout and is_mounted(disks.mnt)
    uuid = blkid(first, "UUID")
    fstab_before = disks.fstab.read_text()
    subprocess.run(["umount", str(disks.mnt)], check=True)

    # the name now points at another disk (NVMe renumbering after a reboot, a typo in the stack)
    link.unlink()
    link.symlink_to(second)
    before = sha256(second)
    result = run_volume(env)
    assert sha256(second) == before, "the other disk's data was overwritten"  # not one byte written
    line = assert_refused(result, second)
    assert f"UUID={uuid}" in line and "CODERIG_CACHE_DEVICE" in line  # says why: the name was re-pointed
    assert disks.fstab.read_text() == fstab_before and not is_mounted(disks.mnt)
    assert blkid(first, "UUID") == uuid


# --- b) data without a signature, first run ---------------------------------------------------


def _random_everywhere() -> bytes:
    return random_bytes(SIZE, seed=2)


def _random_only_at_the_end() -> bytes:
    return bytes(SIZE - MIB) + random_bytes(MIB, seed=3)


def _random_only_in_the_middle() -> bytes:
    offset = 37 * MIB + 12345  # away from the head and tail windows: only the samples see it
    return bytes(offset) + random_bytes(64 * 1024, seed=4) + bytes(SIZE - offset - 64 * 1024)


@pytest.mark.parametrize(
    "content",
    [_random_everywhere, _random_only_at_the_end, _random_only_in_the_middle],
    ids=["random-everywhere", "random-tail", "random-middle"],
)
def test_unsigned_data_is_refused_untouched(disks: Disks, content) -> None:
    dev = disks.loop("data", content())
    assert blkid(dev, "TYPE") == "" and blkid(dev, "PTTYPE") == "" and wipefs_signatures(dev) == ""
    before = sha256(dev)
    result = run_volume(disks.env(dev))
    assert sha256(dev) == before, "the device was written to"
    line = assert_refused(result, dev)
    assert "not blank" in line and "blkdiscard" in line and "wipefs -a" in line
    assert fstab_entries(disks.fstab) == [] and not is_mounted(disks.mnt)


def test_wipefsd_disk_that_still_holds_data_is_refused(disks: Disks) -> None:
    """A disk used before and only `wipefs -a`'d: no signature left, but its data is: refused."""
    dev = disks.loop("used")
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    used = disks.tmp / "used"
    used.mkdir()
    disks.mounts.append(used)
    subprocess.run(["mount", dev, str(used)], check=True)
    (used / "weights.bin").write_bytes(random_bytes(4 * MIB, seed=5))
    subprocess.run(["umount", str(used)], check=True)
    subprocess.run(["wipefs", "-q", "-a", dev], check=True)
    assert blkid(dev, "TYPE") == "" and wipefs_signatures(dev) == ""
    before = sha256(dev)
    result = run_volume(disks.env(dev))
    assert sha256(dev) == before, "the device was written to"
    line = assert_refused(result, dev)
    assert "not blank" in line
    assert fstab_entries(disks.fstab) == []


# --- c) a device with a holder, or with kernel partitions -------------------------------------


def test_device_with_a_holder_is_refused(disks: Disks) -> None:
    """A real holder: a device-mapper linear target over the (blank) loop device, as LVM or dm-crypt makes."""
    dmsetup = tool("dmsetup")
    require(None if dmsetup else "dmsetup not installed (.ci/node-deps.sh installs it)")
    assert dmsetup
    dev = disks.loop("held")
    name = f"coderig-test-{os.getpid()}"
    made = subprocess.run(
        [dmsetup, "create", "--noudevsync", name, "--table", f"0 {SIZE // 512} linear {dev} 0"],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        # a kernel capability, not a missing tool: this kernel has no device-mapper
        pytest.skip(f"device-mapper unavailable in this kernel: {made.stderr.strip().splitlines()[0:1]}")
    disks.maps.append(name)
    holders = os.listdir(f"/sys/class/block/{Path(dev).name}/holders")
    assert holders, "the dm target did not register as a holder"
    before = sha256(dev)
    result = run_volume(disks.env(dev))
    assert sha256(dev) == before, "the device was written to"
    line = assert_refused(result, dev)
    assert "held by" in line and holders[0] in line
    assert fstab_entries(disks.fstab) == []


def test_device_with_a_holder_in_sysfs_is_refused(disks: Disks, tmp_path: Path) -> None:
    """The holder check on any kernel: the loop device's sysfs node as the kernel shows it, plus the
    holder a device-mapper target would register (`holders/dm-7`), given to volume.sh as its sysfs
    (CODERIG_SYSFS). The device is blank, so without the check it would be formatted."""
    dev = disks.loop("held-sysfs")
    majmin = Path(f"/sys/class/block/{Path(dev).name}/dev").read_text().strip()
    node = tmp_path / "sysfs" / "dev" / "block" / majmin
    (node / "holders").mkdir(parents=True)
    (node / "size").write_text(Path(f"/sys/class/block/{Path(dev).name}/size").read_text())
    (node / "holders" / "dm-7").touch()
    before = sha256(dev)
    result = run_volume(disks.env(dev) | {"CODERIG_SYSFS": str(tmp_path / "sysfs")})
    assert sha256(dev) == before, "the device was written to"
    line = assert_refused(result, dev)
    assert "held by dm-7" in line
    assert fstab_entries(disks.fstab) == []
    (node / "holders" / "dm-7").unlink()  # the control: the same blank device, no holder, is formatted
    assert run_volume(disks.env(dev) | {"CODERIG_SYSFS": str(tmp_path / "sysfs")}).returncode == 0
    assert blkid(dev, "TYPE") == "ext4"


def test_device_with_kernel_partitions_but_no_table_is_refused(disks: Disks) -> None:
    """A blank disk whose kernel partition (addpart, as a half-done repartitioning leaves) blkid cannot see."""
    require(None if tool("addpart") else "addpart not installed (util-linux)")
    dev = disks.loop("parted", partscan=True)
    subprocess.run(["addpart", dev, "1", "2048", "4096"], check=True)
    assert Path(f"/sys/class/block/{Path(dev).name}/{Path(dev).name}p1/partition").exists()
    assert blkid(dev, "PTTYPE") == ""
    before = sha256(dev)
    result = run_volume(disks.env(dev))
    assert sha256(dev) == before, "the device was written to"
    line = assert_refused(result, dev)
    assert f"{Path(dev).name}p1" in line
    assert fstab_entries(disks.fstab) == []


# --- d) the cache path is still a mount of another device -------------------------------------


def test_cache_path_mounted_from_another_device_formats_nothing(disks: Disks) -> None:
    blank = disks.loop("blank")
    other = disks.loop("other")
    subprocess.run(["mkfs.ext4", "-q", other], check=True)
    disks.mnt.mkdir()
    subprocess.run(["mount", other, str(disks.mnt)], check=True)
    before = sha256(blank)
    result = run_volume(disks.env(blank))
    assert sha256(blank) == before and blkid(blank, "TYPE") == "", "the device was written to"
    line = assert_refused(result, blank)
    assert str(disks.mnt) in line and other in line
    assert fstab_entries(disks.fstab) == []
    src = subprocess.run(["findmnt", "-rn", "-o", "SOURCE", str(disks.mnt)], capture_output=True, text=True)
    assert src.stdout.split() == [other]


def test_existing_volume_mounted_elsewhere_is_refused(disks: Disks) -> None:
    dev = disks.loop("elsewhere")
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    elsewhere = disks.tmp / "elsewhere"
    elsewhere.mkdir()
    disks.mounts.append(elsewhere)
    subprocess.run(["mount", dev, str(elsewhere)], check=True)
    line = assert_refused(run_volume(disks.env(dev)), dev)
    assert str(elsewhere) in line
    assert fstab_entries(disks.fstab) == [] and not is_mounted(disks.mnt)


# --- e) a blank device: formatted once, then kept ---------------------------------------------


def test_zero_filled_device_is_formatted_once_and_kept(disks: Disks) -> None:
    dev = disks.loop("zeros", bytes(SIZE))
    env = disks.env(dev)

    first = run_volume(env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "formatting it as ext4" in first.stdout
    assert blkid(dev, "TYPE") == "ext4"
    uuid = blkid(dev, "UUID")
    assert is_mounted(disks.mnt)
    entries = fstab_entries(disks.fstab)
    assert len(entries) == 1 and entries[0].split()[:3] == [f"UUID={uuid}", str(disks.mnt), "ext4"]
    src = subprocess.run(["findmnt", "-rn", "-o", "SOURCE", str(disks.mnt)], capture_output=True, text=True)
    assert src.stdout.split() == [dev]

    (disks.mnt / "weights.bin").write_bytes(b"precious" * 1000)
    second = run_volume(env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "formatting" not in second.stdout and "keeping it (no format)" in second.stdout
    assert blkid(dev, "UUID") == uuid
    assert (disks.mnt / "weights.bin").read_bytes() == b"precious" * 1000
    assert fstab_entries(disks.fstab) == entries

    # unmounted (a reboot before fstab ran, a stop): mounted again from the one fstab line
    subprocess.run(["umount", str(disks.mnt)], check=True)
    third = run_volume(env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "formatting" not in third.stdout and is_mounted(disks.mnt)
    assert (disks.mnt / "weights.bin").read_bytes() == b"precious" * 1000
    assert fstab_entries(disks.fstab) == entries


def test_blank_device_formats_as_xfs_when_asked(disks: Disks) -> None:
    dev = disks.loop("xfs", size=300 * MIB)  # mkfs.xfs's minimum
    result = run_volume(disks.env(dev) | {"CODERIG_FS_TYPE": "xfs"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "formatting it as xfs" in result.stdout and blkid(dev, "TYPE") == "xfs"
    uuid = blkid(dev, "UUID")
    assert [e.split()[:3] for e in fstab_entries(disks.fstab)] == [[f"UUID={uuid}", str(disks.mnt), "xfs"]]
    assert is_mounted(disks.mnt)
