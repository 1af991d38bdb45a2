"""The dashboard's charts as inline SVG, for the console: a few microseconds of string work,
where drawing PNGs would take the server's CPU away from the calls' audio.

Only presentation attributes (no ``style``), so the console's Content-Security-Policy
(``style-src 'self'``) applies unchanged. Every chart has a role and a name; the numbers are
also in the tables next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from voicebot.records.report import WEEKDAYS_FR, RoiReport, number_fr, percent_fr

INK = "#1a1a1a"
MUTED = "#4a4a4a"
LINE = "#c4cad3"
ACCENT = "#0b4f8a"
FONT = 'font-family="system-ui, sans-serif"'
# Net resolved, other resolved (called back or unverifiable), transfers, abandons.
SERIES = (
    ("Résolus nets", "#1d6b2f"),
    ("Autres résolus (rappelés ou sans numéro)", "#8cc49a"),
    ("Transferts", ACCENT),
    ("Abandons", "#9aa0a8"),
)


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _open(width: int, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(label)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" {FONT}>'
        f"<title>{_e(label)}</title>"
    )


def hbars(items: Sequence[tuple[str, int]], label: str, colour: str = ACCENT) -> str:
    """Horizontal bars, one per (label, count)."""
    if not items:
        return ""
    label_w, bar_w, row_h = 330, 420, 26
    height = row_h * len(items) + 10
    top = max(count for _, count in items) or 1
    parts = [_open(label_w + bar_w + 60, height, label)]
    for i, (name, count) in enumerate(items):
        y = 5 + i * row_h
        width = max(1.0, bar_w * count / top)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" font-size="14" '
            f'fill="{INK}">{_e(name)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" height="{row_h - 8}" '
            f'fill="{colour}"/>'
            f'<text x="{label_w + width + 6:.1f}" y="{y + 17}" font-size="14" '
            f'fill="{INK}">{number_fr(count)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def reasons_chart(report: RoiReport) -> str:
    return hbars([(r.label, r.calls) for r in report.transfers_by_reason], "Transferts par motif")


def topics_chart(report: RoiReport) -> str:
    return hbars(
        [(t.label, t.calls) for t in report.top_topics], "Appels par sujet (les plus demandés)"
    )


def heatmap(report: RoiReport) -> str:
    """7 days × 24 hours; the darker, the more calls; the count in each non-empty cell."""
    cell, left, top_margin = 34, 90, 24
    width, height = left + 24 * cell + 10, top_margin + 7 * cell + 10
    peak = max((max(day) for day in report.by_weekday_hour), default=0) or 1
    parts = [_open(width, height, "Appels par jour de la semaine et par heure")]
    for hour in range(24):
        parts.append(
            f'<text x="{left + hour * cell + cell / 2}" y="16" text-anchor="middle" '
            f'font-size="12" fill="{MUTED}">{hour}h</text>'
        )
    for day, hours in enumerate(report.by_weekday_hour):
        y = top_margin + day * cell
        parts.append(
            f'<text x="{left - 8}" y="{y + cell / 2 + 5}" text-anchor="end" font-size="14" '
            f'fill="{INK}">{WEEKDAYS_FR[day]}</text>'
        )
        for hour, count in enumerate(hours):
            level = count / peak
            fill = _blend(level)
            x = left + hour * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}" '
                f'stroke="{LINE}" stroke-width="0.5"/>'
            )
            if count:
                ink = "#ffffff" if level > 0.5 else INK
                parts.append(
                    f'<text x="{x + (cell - 2) / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                    f'font-size="12" fill="{ink}">{count}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def _blend(level: float) -> str:
    """White (no call) to the accent blue (the busiest hour)."""
    target = (0x0B, 0x4F, 0x8A)
    if level <= 0:
        return "#ffffff"
    level = 0.12 + 0.88 * level  # one call is visible
    rgb = (round(255 + (c - 255) * level) for c in target)
    return "#" + "".join(f"{c:02x}" for c in rgb)


def weeks_chart(report: RoiReport) -> str:
    """Calls per week, stacked by what became of them; the net containment rate above."""
    weeks = report.weeks
    if not weeks:
        return ""
    left, legend_h, plot_h, col = 50, 64, 220, 64
    width = max(left + col * len(weeks) + 20, 720)
    height = legend_h + plot_h + 40
    top = max((w.calls for w in weeks), default=0) or 1
    base = legend_h + plot_h
    parts = [_open(width, height, "Appels par semaine et taux de résolution net")]
    for i, (name, colour) in enumerate(SERIES):  # the legend, above the bars and their rates
        x = left + (i % 2) * 330
        y = 4 + (i // 2) * 20
        parts.append(
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 18}" y="{y + 11}" font-size="13" fill="{INK}">{_e(name)}</text>'
        )
    parts.append(
        f'<line x1="{left - 4}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="{MUTED}"/>'
    )
    # The report says how many were resolved net; the others resolved are the rest.
    for i, week in enumerate(weeks):
        x = left + i * col + 8
        other_resolved = week.calls - week.resolved_net - week.transferred - week.abandoned
        bar_top = float(base)
        for value, (_, colour) in zip(
            (week.resolved_net, other_resolved, week.transferred, week.abandoned),
            SERIES,
            strict=True,
        ):
            if value <= 0:
                continue
            h = plot_h * value / top
            bar_top -= h
            parts.append(
                f'<rect x="{x}" y="{bar_top:.1f}" width="{col - 16}" height="{h:.1f}" fill="{colour}"/>'
            )
        parts.append(
            f'<text x="{x + (col - 16) / 2}" y="{bar_top - 6:.1f}" text-anchor="middle" '
            f'font-size="12" fill="{INK}">{_e(percent_fr(week.containment, 0))}</text>'
            f'<text x="{x + (col - 16) / 2}" y="{base + 16}" text-anchor="middle" '
            f'font-size="12" fill="{INK}">{_e(week.week[-3:])}</text>'
            f'<text x="{x + (col - 16) / 2}" y="{base + 30}" text-anchor="middle" '
            f'font-size="11" fill="{MUTED}">{number_fr(week.calls)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def console_charts(report: RoiReport) -> dict[str, str]:
    return {
        "weeks": weeks_chart(report),
        "reasons": reasons_chart(report),
        "topics": topics_chart(report),
        "heatmap": heatmap(report),
    }
