"""`coderig usage --plot FILE.png`: tokens per developer per day (stacked bars) over the time the
model was awake (shaded bands) and asleep (white). matplotlib is the `plot` extra, imported here only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from coderig.core.errors import UserError

AWAKE_COLOR = "#e8a33d"  # GPUs billed
ASLEEP_COLOR = "#e6e6e6"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def _day(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.dates as mdates  # noqa: PLC0415
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.patches import Patch  # noqa: PLC0415
        from matplotlib.ticker import FuncFormatter  # noqa: PLC0415
    except ImportError:
        raise UserError(
            "--plot needs matplotlib: install coderig with its plot extra (pip install 'coderig[plot]')"
        ) from None

    def num(epoch: float) -> float:
        return float(mdates.date2num(dt.datetime.fromtimestamp(epoch, dt.UTC)))

    start, end = num(report["since"]), num(report["until"])
    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(10, 5.4), dpi=110, sharex=True, gridspec_kw={"height_ratios": [8, 1], "hspace": 0.08}
    )
    # the lower strip: when the model was awake (billed) and asleep, on the same time axis as the bars
    strip.axvspan(start, end, color=ASLEEP_COLOR, lw=0)
    for a, b in report["awake"]:
        strip.axvspan(num(a), num(b), color=AWAKE_COLOR, lw=0)
    strip.set_yticks([])
    strip.set_ylabel("awake", rotation=0, ha="right", va="center")
    developers = [d["developer"] for d in report["developers"]]
    days = [(float(mdates.date2num(_day(d["day"]))), d["by_developer"]) for d in report["days"]]
    bottoms = [0] * len(days)
    for i, dev in enumerate(developers):
        heights = [per.get(dev, 0) for _, per in days]
        ax.bar(
            [day + 0.5 for day, _ in days],
            heights,
            width=0.6,
            bottom=bottoms,
            color=COLORS[i % len(COLORS)],
            label=dev,
            zorder=2,
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_xlim(min([start, *(d for d, _ in days)]), max(end, start + 1))
    strip.xaxis.set_major_locator(mdates.DayLocator())
    strip.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))
    ax.set_ylabel("tokens (input + output) per day")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v / 1000:,.0f}k" if v >= 1000 else f"{v:.0f}"))
    cost = report["cost_usd"]
    idle = report["idle_share"]
    title = f"{report['stack']}: tokens per developer per day"
    if cost is not None:
        title += f" — GPU ${cost:,.2f}" + ("" if idle is None else f", {idle:.0%} idle")
    ax.set_title(title)
    awake = Patch(color=AWAKE_COLOR, label="model awake (GPU billed)")
    asleep = Patch(color=ASLEEP_COLOR, label="asleep")
    handles = [*ax.get_legend_handles_labels()[0], awake, asleep]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", color="#dddddd", zorder=1)
    ax.set_axisbelow(True)
    fig.autofmt_xdate()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
