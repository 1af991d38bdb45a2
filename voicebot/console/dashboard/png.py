"""The written report's charts as PNG files (matplotlib, without pyplot: no global state,
no display needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voicebot.records.report import WEEKDAYS_FR, RoiReport

ACCENT = "#0b4f8a"
COLOURS = ("#1d6b2f", "#8cc49a", ACCENT, "#9aa0a8")
LEGEND = ("Résolus nets", "Autres résolus (rappelés ou sans numéro)", "Transferts", "Abandons")
# (key, file name, alternative text)
CHARTS = (
    ("weeks", "tendance-semaines.png", "Appels par semaine et taux de résolution net"),
    ("reasons", "transferts-par-motif.png", "Transferts par motif"),
    ("topics", "sujets.png", "Appels par sujet, dont transférés"),
    ("heatmap", "appels-heure-jour.png", "Appels par jour de la semaine et par heure"),
)


def write_charts(report: RoiReport, out_dir: Path) -> dict[str, Path]:
    """Draw every chart into ``out_dir``; returns the file of each chart's key."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    draw: dict[str, tuple[tuple[float, float], Callable[[Any, Any], None]]] = {
        "weeks": ((9, 5), lambda fig, ax: _weeks(ax, report)),
        "reasons": ((9, 4), lambda fig, ax: _hbars(ax, _reasons(report), "Transferts")),
        "topics": ((9, 4.5), lambda fig, ax: _topics(ax, report)),
        "heatmap": ((12, 4.2), lambda fig, ax: _heatmap(fig, ax, report)),
    }
    written = {}
    for key, name, title in CHARTS:
        size, paint = draw[key]
        fig = Figure(figsize=size, dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        paint(fig, ax)
        ax.set_title(title)
        if key != "heatmap":  # counts: whole numbers only
            axis = ax.yaxis if key == "weeks" else ax.xaxis
            axis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path)
        written[key] = path
    return written


def _nothing(ax: Any) -> None:
    ax.text(0.5, 0.5, "Aucun appel concerné sur la période", ha="center", va="center")
    ax.set_axis_off()


def _reasons(report: RoiReport) -> list[tuple[str, int]]:
    return [(r.label, r.calls) for r in report.transfers_by_reason]


def _hbars(ax: Any, items: Sequence[tuple[str, int]], xlabel: str) -> None:
    if not items:
        _nothing(ax)
        return
    labels = [label for label, _ in items][::-1]
    values = [value for _, value in items][::-1]
    bars = ax.barh(labels, values, color=ACCENT)
    ax.bar_label(bars, padding=3)
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)


def _topics(ax: Any, report: RoiReport) -> None:
    topics = report.top_topics
    if not topics:
        _nothing(ax)
        return
    labels = [t.label for t in topics][::-1]
    ax.barh(labels, [t.calls for t in topics][::-1], color="#8cc49a", label="Appels")
    ax.barh(labels, [t.transferred for t in topics][::-1], color=ACCENT, label="Dont transférés")
    ax.set_xlabel("Appels")
    ax.legend(loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)


def _weeks(ax: Any, report: RoiReport) -> None:
    weeks = report.weeks
    if not weeks or not any(w.calls for w in weeks):
        _nothing(ax)
        return
    x = list(range(len(weeks)))
    series = (
        [w.resolved_net for w in weeks],
        [w.calls - w.resolved_net - w.transferred - w.abandoned for w in weeks],
        [w.transferred for w in weeks],
        [w.abandoned for w in weeks],
    )
    bottom = [0] * len(weeks)
    for values, colour, label in zip(series, COLOURS, LEGEND, strict=True):
        ax.bar(x, values, bottom=bottom, color=colour, label=label, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(x, [w.week for w in weeks], rotation=30 if len(weeks) > 8 else 0)
    ax.set_ylabel("Appels")
    ax.set_xlim(-0.6, max(len(weeks), 4) - 0.4)
    rate = ax.twinx()
    rate.plot(
        x,
        [None if w.containment is None else 100 * w.containment for w in weeks],
        color="#1a1a1a",
        marker="o",
        label="Taux de résolution net (%)",
    )
    rate.set_ylim(0, 100)
    rate.set_ylabel("Taux de résolution net (%)")
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = rate.get_legend_handles_labels()
    ax.legend(
        handles + more_handles,
        labels + more_labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        ncol=3,
        fontsize=8,
        frameon=False,
    )


def _heatmap(fig: Any, ax: Any, report: RoiReport) -> None:
    from matplotlib.ticker import MaxNLocator

    grid = [list(day) for day in report.by_weekday_hour]
    image = ax.imshow(grid, cmap="Blues", aspect="auto", vmin=0)
    ax.set_yticks(range(7), list(WEEKDAYS_FR))
    ax.set_xticks(range(24), [f"{h}h" for h in range(24)], fontsize=8)
    peak = max(max(day) for day in grid) or 1
    for day, hours in enumerate(grid):
        for hour, count in enumerate(hours):
            if count:
                ink = "white" if count > peak / 2 else "black"
                ax.text(hour, day, str(count), ha="center", va="center", color=ink, fontsize=8)
    bar = fig.colorbar(image, ax=ax, label="Appels")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
