"""The PNG charts, drawn with matplotlib (the `bench` optional dependencies) off screen:
per scenario, throughput, CPU and memory over time; over all scenarios, averages and peaks,
and records per CPU-second."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, whatever the environment says

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator

from benchkit.results import Sample, Summary

MIB = 1 << 20
COLORS = {"logd": "tab:blue", "rsyslog": "tab:orange"}


def _color(tool: str) -> str | None:
    return COLORS.get(tool)


def short(x: float) -> str:
    """1234567 -> "1.23M", 45600 -> "45.6k": bar labels that fit side by side."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= limit:
            return f"{x / limit:.3g}{suffix}"
    return f"{x:.3g}"


_SHORT = FuncFormatter(lambda x, _pos: short(x))


def timeline(samples: list[Sample], scenario: str, path: Path) -> None:
    """Records written/s, CPU% and RSS of each tool over the seconds of one scenario."""
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    tools = list(dict.fromkeys(s.tool for s in samples if s.scenario == scenario))
    for tool in tools:
        rows = [s for s in samples if s.scenario == scenario and s.tool == tool]
        x = [s.second for s in rows]
        axes[0].plot(x, [s.records for s in rows], label=tool, color=_color(tool))
        axes[1].plot(x, [s.cpu_percent for s in rows], label=tool, color=_color(tool))
        axes[2].plot(x, [s.rss_bytes / MIB for s in rows], label=tool, color=_color(tool))
    for ax, title in zip(axes, ("records written / s", "CPU % (100 = one core)", "RSS (MiB)"),
                         strict=True):
        ax.set_ylabel(title)
        ax.yaxis.set_major_formatter(_SHORT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    axes[-1].set_xlabel("second of the measured window")
    fig.suptitle(f"{scenario}: throughput, CPU and memory over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(ax: plt.Axes, summaries: list[Summary], value: str, title: str,
          scale: float = 1.0) -> None:
    scenarios = list(dict.fromkeys(s.scenario for s in summaries))
    tools = list(dict.fromkeys(s.tool for s in summaries))
    width = 0.8 / max(1, len(tools))
    for k, tool in enumerate(tools):
        got = {s.scenario: float(getattr(s, value)) / scale for s in summaries if s.tool == tool}
        xs = [i + (k - (len(tools) - 1) / 2) * width for i in range(len(scenarios))]
        ys = [got.get(sc, 0.0) for sc in scenarios]
        bars = ax.bar(xs, ys, width, label=tool, color=_color(tool))
        ax.bar_label(bars, labels=[short(y) for y in ys], fontsize=7)
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right")
    ax.set_title(title)
    ax.yaxis.set_major_formatter(_SHORT)
    ax.margins(y=0.15)  # room for the labels above the bars, and the legend
    ax.grid(axis="y", alpha=0.3)
    ax.legend()


def averages_and_peaks(summaries: list[Summary], path: Path) -> None:
    """Per scenario: written/s, average and peak CPU%, average and peak RSS, per tool."""
    fig, axes = plt.subplots(3, 2, figsize=(12, 12))
    _bars(axes[0][0], summaries, "written_per_s", "records written / s (average)")
    _bars(axes[0][1], summaries, "sent_per_s", "records in / s (loadgen, whole load)")
    _bars(axes[1][0], summaries, "cpu_avg", "CPU % average")
    _bars(axes[1][1], summaries, "cpu_peak", "CPU % peak")
    _bars(axes[2][0], summaries, "rss_avg", "RSS MiB average", MIB)
    _bars(axes[2][1], summaries, "rss_peak", "RSS MiB peak", MIB)
    fig.suptitle("averages and peaks per scenario")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def efficiency(summaries: list[Summary], path: Path) -> None:
    """Records taken in (read, filtered, the kept ones written) per CPU-second, per
    scenario and tool."""
    fig, ax = plt.subplots(figsize=(9, 5))
    _bars(ax, summaries, "in_per_cpu_second",
          "records taken in per CPU-second (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_all(samples: list[Sample], summaries: list[Summary], out: Path) -> list[Path]:
    """Every chart into `out`; returns their paths."""
    paths = []
    for scenario in dict.fromkeys(s.scenario for s in samples):
        p = out / f"timeline_{scenario}.png"
        timeline(samples, scenario, p)
        paths.append(p)
    for name, draw in (("averages_peaks.png", averages_and_peaks),
                       ("records_per_cpu_second.png", efficiency)):
        draw(summaries, out / name)
        paths.append(out / name)
    return paths
