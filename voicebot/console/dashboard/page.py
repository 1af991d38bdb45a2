"""``/tableau-de-bord``: the ROI report on the console, behind the console's token.

``?du=YYYY-MM-DD&au=YYYY-MM-DD`` chooses the period (default: the retention period, up to
today); ``&format=json`` gives the same figures as ``voicebot report --json``. The figures
are read from the records on their own thread and the charts are inline SVG: a page costs
the server a database read and some string work, never a drawing.
"""

from __future__ import annotations

import datetime as dt
import logging
from html import escape
from zoneinfo import ZoneInfo

from aiohttp import web

from voicebot.console.context import CONTEXT
from voicebot.console.dashboard.render import render_html
from voicebot.console.dashboard.svg import console_charts
from voicebot.core.config import Settings

log = logging.getLogger(__name__)

PATH = "/tableau-de-bord"
MAX_DAYS = 366


def default_period(settings: Settings, today: dt.date) -> tuple[dt.date, dt.date]:
    """The records that can still exist: the retention period, up to today."""
    days = max(1, settings.records.retention_days)
    return today - dt.timedelta(days=days - 1), today


def _parse_period(
    query: dict[str, str], settings: Settings, today: dt.date
) -> tuple[dt.date, dt.date, str]:
    """(first day, last day, error message or "")."""
    first, last = default_period(settings, today)
    try:
        if query.get("du"):
            first = dt.date.fromisoformat(query["du"])
        if query.get("au"):
            last = dt.date.fromisoformat(query["au"])
    except ValueError:
        return *default_period(settings, today), "Date invalide : utilisez le format AAAA-MM-JJ."
    if last < first:
        return *default_period(settings, today), "La fin de la période est avant son début."
    if (last - first).days >= MAX_DAYS:
        return *default_period(settings, today), f"Période trop longue ({MAX_DAYS} jours au plus)."
    return first, last, ""


def _form(first: dt.date, last: dt.date, error: str) -> str:
    message = f'<p class="message error" role="alert">{escape(error)}</p>' if error else ""
    json_link = f"{PATH}?du={first.isoformat()}&amp;au={last.isoformat()}&amp;format=json"
    return (
        f'<form class="search" method="get" action="{PATH}" aria-label="Choisir la période">'
        f'<label for="du">Du <input id="du" name="du" type="date" value="{first.isoformat()}" '
        "required></label>"
        f'<label for="au">Au <input id="au" name="au" type="date" value="{last.isoformat()}" '
        "required></label>"
        '<button type="submit">Afficher</button>'
        f'<a href="{json_link}">Les chiffres en JSON</a></form>{message}'
    )


NAVIGATION = (
    '<nav aria-label="Pages"><a href="/">Console des opérateurs</a> · '
    '<a href="/transparence">Fiche de transparence</a></nav>'
)


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    settings = context.settings
    today = dt.datetime.now(ZoneInfo(settings.report.timezone)).date()
    first, last, error = _parse_period(dict(request.query), settings, today)
    try:
        report = await context.records.roi_report(first, last, settings.report)
    except Exception:
        log.exception("tableau de bord: the report cannot be made")
        return web.Response(
            status=503,
            text="Le tableau de bord est momentanément indisponible.",
            content_type="text/plain",
        )
    if request.query.get("format") == "json" and not error:
        response: web.Response = web.json_response(report.as_dict())
    else:
        page = render_html(
            report,
            console_charts(report),
            period_form=_form(first, last, error),
            navigation=NAVIGATION,
        )
        response = web.Response(text=page, content_type="text/html", status=400 if error else 200)
    response.headers["Cache-Control"] = "no-store"
    return response
