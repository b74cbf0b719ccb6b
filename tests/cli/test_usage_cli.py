"""`coderig usage`: the report from a record (cost split, idle share, p50), its errors, its plot."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coderig.cli import usage_report
from coderig.runtime import usage_record
from coderig.runtime.usage import Exchange, Usage
from coderig.runtime.usage_record import Ledger
from tests.conftest import ssh_config, write_stack

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0


def week(now: float) -> Ledger:
    """Seven days: awake 9:00-18:00 UTC each weekday-like day, alice busy mornings, bob afternoons."""
    ledger = Ledger(started=now - 8 * DAY)
    midnight = now - now % DAY
    for d in range(7, 0, -1):
        day0 = midnight - d * DAY
        ledger.mark_awake(day0 + 9 * 3600, day0 + 18 * 3600, 60)
        for i in range(d * 3):
            t = day0 + 10 * 3600 + i * 120
            ledger.add(
                Exchange(
                    "alice",
                    "/v1/messages",
                    0.0,
                    status=200,
                    first_byte=0.4,
                    finished=30.0,
                    usage=Usage(20_000 + 1000 * d, 15_000, 800),
                ),
                t,
            )
        for i in range(10 - d):
            t = day0 + 15 * 3600 + i * 120
            ledger.add(
                Exchange(
                    "bob",
                    "/v1/responses",
                    0.0,
                    status=200,
                    first_byte=1.5,
                    finished=60.0,
                    usage=Usage(30_000, 0, 2_000),
                ),
                t,
            )
    return ledger


def test_report_splits_the_awake_cost_between_developers_and_idle() -> None:
    now = 1_800_000_000.0 + 12 * 3600
    ledger = week(now)
    report = usage_report.build(ledger, "prod", usage_report.Period(now - 8 * DAY, now), 63.0, "developer")
    assert report["awake_hours"] == pytest.approx(7 * 9, abs=0.01)
    # busy: each run of requests is one interval (gaps of 120 s > 60 s are not merged: per request)
    busy_h = report["busy_hours"]
    assert 0 < busy_h < 7 * 9
    assert report["cost_usd"] == pytest.approx(63 * 63.0, rel=1e-3)
    assert report["idle_cost_usd"] == pytest.approx((63 - busy_h) * 63.0, rel=1e-3)
    devs = {d["developer"]: d for d in report["developers"]}
    assert devs["alice"]["requests"] == sum(3 * d for d in range(1, 8))
    assert devs["alice"]["cached_share"] == pytest.approx(
        15_000 * 84 / sum(3 * d * (20_000 + 1000 * d) for d in range(1, 8)), abs=1e-4
    )
    assert devs["alice"]["p50_ttft_s"] == pytest.approx(0.375, abs=0.13)  # in the (0.25, 0.5] bucket
    assert devs["bob"]["p50_ttft_s"] > 1.0
    used = sum(d["cost_usd"] for d in report["developers"])
    assert used == pytest.approx(busy_h * 63.0, rel=1e-3)  # the busy part, split by tokens
    text = usage_report.table(report, "8d").splitlines()
    assert text[0].startswith("prod, last 8d: $3,969.00 of GPU time") and "% idle" in text[0]
    assert text[1].split()[:3] == ["developer", "requests", "errors"] and text[2].split()[0] == "alice"


def test_since_is_checked() -> None:
    assert usage_report.parse_since("24h") == 86400
    with pytest.raises(ValueError, match="--since '7 days'"):
        usage_report.parse_since("7 days")


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coderig.cli", "usage", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_no_record_corrupt_record_unknown_stack_are_one_line_exit_2(tmp_path: Path) -> None:
    write_stack(tmp_path, ssh_config(), "prod")
    cases = {
        "no usage record yet": run_cli(tmp_path, "prod"),
        "unknown stack 'staging'": run_cli(tmp_path, "staging"),
        "--since": run_cli(tmp_path, "prod", "--since", "yesterday"),
    }
    (tmp_path / "bad.json").write_text('{"version": 1, "started": "x"')
    cases["corrupt usage record"] = run_cli(tmp_path, "prod", "--record", "bad.json")
    for expected, out in cases.items():
        assert out.returncode == 2, (expected, out.stderr)
        assert out.stderr.count("\n") == 1 and expected in out.stderr and out.stderr.startswith("coderig: ")
        assert "Traceback" not in out.stderr


def test_json_and_plot_from_a_record_file(tmp_path: Path) -> None:
    write_stack(tmp_path, ssh_config(), "prod")
    now = time.time()
    usage_record.save(week(now), tmp_path / "prod.json")
    png = tmp_path / "usage.png"
    args = ("--record", "prod.json", "--since", "8d", "--json", "--usd-per-hour", "63", "--plot", str(png))
    out = run_cli(tmp_path, "prod", *args)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {d["developer"] for d in report["developers"]} == {"alice", "bob"}
    assert report["cost_usd"] == pytest.approx(report["awake_hours"] * 63, rel=1e-3)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # what a reader sees: each developer's bar colour and the awake band's colour, in real amounts
    from PIL import Image

    from coderig.cli.usage_plot import AWAKE_COLOR, COLORS

    image = Image.open(png).convert("RGB")
    pixels = [image.getpixel((x, y)) for x in range(image.width) for y in range(image.height)]
    for colour in (COLORS[0], COLORS[1], AWAKE_COLOR):
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert sum(p == rgb for p in pixels) > 2000, colour
    plain = run_cli(tmp_path, "prod", "--record", "prod.json", "--by", "day")
    assert plain.returncode == 0 and plain.stdout.splitlines()[1].split()[0] == "day"
    assert "GPU cost unknown" in plain.stdout.splitlines()[0]  # an ssh stack has no price of its own
