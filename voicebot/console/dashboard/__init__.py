"""The ROI report laid out: the console's « Tableau de bord » and ``voicebot report``.

The figures come from ``voicebot.records.report`` (computed, pure) through
``CallRecords.roi_report`` (read); here they are only laid out:

- ``render``: the HTML page, shared by the console and the written report;
- ``svg``: the console's charts, inline SVG; ``png``: the written report's charts (matplotlib);
- ``page``: ``/tableau-de-bord`` on the console (behind the token);
- ``write_report`` / ``report_command``: ``voicebot report --from --to [--out DIR] [--json]``
  writes ``rapport.html``, ``rapport.json`` and the PNG charts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from html import escape
from pathlib import Path

from voicebot.console.dashboard.page import PATH, dashboard_page
from voicebot.console.dashboard.render import render_html
from voicebot.core.config import Settings
from voicebot.core.errors import ConfigError, VoicebotError
from voicebot.records.report import RoiReport
from voicebot.records.report_queries import ReportQueries
from voicebot.records.store import open_engine

HTML_NAME = "rapport.html"
JSON_NAME = "rapport.json"

__all__ = [
    "HTML_NAME",
    "JSON_NAME",
    "PATH",
    "dashboard_page",
    "render_html",
    "report_command",
    "write_report",
]


def write_report(report: RoiReport, out_dir: Path) -> list[Path]:
    """``rapport.html`` (self-contained but for its PNG files next to it), ``rapport.json``
    and the PNG charts in ``out_dir``; returns the files written."""
    from voicebot.console.dashboard.png import CHARTS, write_charts

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        charts = write_charts(report, out_dir)
        alt = {key: text for key, _name, text in CHARTS}
        images = {
            key: (
                f'<img src="{escape(path.name)}" alt="{escape(alt[key])}" '
                'width="900" height="auto">'
            )
            for key, path in charts.items()
        }
        html_path, json_path = out_dir / HTML_NAME, out_dir / JSON_NAME
        html_path.write_text(render_html(report, images, stylesheet_href=None), encoding="utf-8")
        json_path.write_text(
            json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise VoicebotError(f"cannot write the report into {out_dir}: {exc.strerror}") from None
    return [html_path, json_path, *charts.values()]


def report_command(
    settings: Settings,
    first_day: dt.date,
    last_day: dt.date,
    out_dir: Path | None = None,
    as_json: bool = False,
) -> int:
    """``voicebot report``: compute the report on the records, write it, say where (or print
    its JSON with ``as_json``)."""
    if last_day < first_day:
        raise ConfigError(f"--to ({last_day}) is before --from ({first_day})")
    if out_dir is None:
        out_dir = Path(settings.paths.data_dir) / "rapports" / f"{first_day}_{last_day}"

    async def run() -> RoiReport:
        records = ReportQueries(open_engine(settings))
        try:
            return await records.roi_report(first_day, last_day, settings.report)
        finally:
            await records.close()

    report = asyncio.run(run())
    written = write_report(report, out_dir)
    if as_json:
        json.dump(report.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        rates = report.rates
        print(
            f"{report.calls} appel(s) ; résolus nets : {report.resolved.net} "
            f"(taux net {_pct(rates.containment)}) ; transferts : {report.transferred} "
            f"({_pct(rates.transfer)}) ; abandons : {report.abandoned} ({_pct(rates.abandon)})."
        )
        print(f"Rapport : {written[0]}")
        print(f"Chiffres (JSON) : {written[1]}")
        print(f"Graphiques : {', '.join(str(p) for p in written[2:])}")
    return 0


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f} %"
