"""The ROI report as an accessible HTML page: the console's « Tableau de bord » and the file
``voicebot report`` writes share it.

One ``RoiReport`` in, one page out; every figure's definition (``records.report.definitions``)
is printed next to it. The charts are given by the caller as HTML fragments: inline SVG on
the console (cheap for the server), ``<img>`` of the PNG files in the written report. The
page loads nothing from anywhere else: the console links ``/static/style.css``; the written
file carries the same stylesheet inside.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from html import escape

from voicebot.console.context import STATIC_DIR
from voicebot.records.report import (
    WEEKDAYS_FR,
    RoiReport,
    date_fr,
    definitions,
    duration_fr,
    hours_fr,
    number_fr,
    percent_fr,
)

STYLESHEET = STATIC_DIR / "style.css"
TITLE = "Tableau de bord — ce que rapporte le robot"
CHART_KEYS = ("weeks", "reasons", "topics", "heatmap")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[tuple[str, Sequence[str]]],
    table_id: str = "",
) -> str:
    """``rows``: (row id, cells already escaped); the first cell heads its row."""
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    body = []
    for row_id, cells in rows:
        first, *rest = cells
        others = "".join(f"<td>{c}</td>" for c in rest)
        body.append(f'<tr id="{_e(row_id)}"><th scope="row">{first}</th>{others}</tr>')
    if not body:
        span = len(headers)
        body.append(f'<tr><td colspan="{span}" class="empty">Aucun appel concerné.</td></tr>')
    attribute = f' id="{_e(table_id)}"' if table_id else ""
    return (
        f"<table{attribute}><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _count_and_share(count: int, share: float | None) -> str:
    return f"{number_fr(count)} ({percent_fr(share)})"


def period_fr(report: RoiReport) -> str:
    return f"du {date_fr(report.first_day)} au {date_fr(report.last_day)}"


def _days(first: dt.date, last: dt.date) -> str:
    if first == last:
        return f"{first.day:02d}/{first.month:02d}"
    return f"{first.day:02d}/{first.month:02d} – {last.day:02d}/{last.month:02d}"


def render_html(
    report: RoiReport,
    charts: Mapping[str, str],
    stylesheet_href: str | None = "/static/style.css",
    period_form: str = "",
    navigation: str = "",
) -> str:
    """The page. ``charts``: HTML of each chart by key (``CHART_KEYS``; missing: none).
    ``stylesheet_href=None``: the console's stylesheet inside the page (a file)."""
    if stylesheet_href is None:
        css = STYLESHEET.read_text(encoding="utf-8").replace("</", "<\\/")
        style = f"<style>{css}</style>"
    else:
        style = f'<link rel="stylesheet" href="{_e(stylesheet_href)}">'
    defs = {key: (name, text) for key, name, text in definitions(report)}

    def name(key: str) -> str:
        return _e(defs[key][0])

    def define(key: str) -> str:
        return _e(defs[key][1])

    def chart(key: str) -> str:
        fragment = charts.get(key, "")
        return f'<figure class="chart">{fragment}</figure>' if fragment else ""

    resolved, rates, durations = report.resolved, report.rates, report.time_with_bot
    calls_value = number_fr(report.calls)
    if report.unfinished:
        calls_value += (
            f" (et {number_fr(report.unfinished)} en cours ou sans fin enregistrée, non comptés)"
        )
    essentials = _table(
        "Les chiffres de la période, et ce que chacun veut dire",
        ("Chiffre", "Valeur", "Ce que c'est"),
        (
            ("chiffre-calls", (name("calls"), calls_value, define("calls"))),
            (
                "chiffre-resolved_net",
                (name("resolved_net"), number_fr(resolved.net), define("resolved_net")),
            ),
            (
                "chiffre-containment",
                (
                    f"<strong>{name('containment')}</strong>",
                    f"<strong>{percent_fr(rates.containment)}</strong>",
                    define("containment"),
                ),
            ),
            (
                "chiffre-gross_resolution",
                (
                    name("gross_resolution"),
                    _count_and_share(resolved.gross, rates.gross_resolution),
                    define("gross_resolution"),
                ),
            ),
            (
                "chiffre-called_back",
                (name("called_back"), number_fr(resolved.called_back), define("called_back")),
            ),
            (
                "chiffre-without_number",
                (
                    name("without_number"),
                    number_fr(resolved.without_number),
                    define("without_number"),
                ),
            ),
            (
                "chiffre-pending_check",
                (name("pending_check"), number_fr(resolved.pending_check), define("pending_check")),
            ),
            (
                "chiffre-transfers",
                (
                    name("transfers"),
                    _count_and_share(report.transferred, rates.transfer),
                    define("transfers"),
                ),
            ),
            (
                "chiffre-abandons",
                (
                    name("abandons"),
                    _count_and_share(report.abandoned, rates.abandon),
                    define("abandons"),
                ),
            ),
            (
                "chiffre-time_with_bot",
                (
                    name("time_with_bot"),
                    f"moyenne {duration_fr(durations.mean_s)}, "
                    f"médiane {duration_fr(durations.median_s)}",
                    define("time_with_bot"),
                ),
            ),
            (
                "chiffre-operator_time_saved",
                (
                    name("operator_time_saved"),
                    duration_fr(report.operator_time_saved_s),
                    define("operator_time_saved"),
                ),
            ),
        ),
        table_id="essentiel",
    )

    reasons = _table(
        "Transferts à un conseiller, par motif",
        ("Motif", "Transferts", "Part des transferts"),
        (
            (f"motif-{r.reason or 'aucun'}", (_e(r.label), number_fr(r.calls), percent_fr(r.share)))
            for r in report.transfers_by_reason
        ),
    )
    top_topics = _table(
        "Sujets les plus demandés",
        ("Sujet", "Appels", "Dont transférés"),
        (
            (
                f"sujet-{t.topic}",
                (
                    _e(t.label),
                    number_fr(t.calls),
                    _count_and_share(t.transferred, t.transfer_share),
                ),
            )
            for t in report.top_topics
        ),
    )
    transferred_topics = _table(
        "Sujets le plus souvent transférés à un conseiller",
        ("Sujet", "Transférés", "Part des appels du sujet"),
        (
            (
                f"transfere-{t.topic}",
                (_e(t.label), number_fr(t.transferred), percent_fr(t.transfer_share)),
            )
            for t in report.most_transferred_topics
        ),
    )
    no_topic = (
        f"<p>{number_fr(report.calls_without_topic)} appel(s) sans sujet identifié.</p>"
        if report.calls_without_topic
        else ""
    )
    weeks = _table(
        "Semaine par semaine",
        (
            "Semaine",
            "Jours",
            "Appels",
            "Résolus nets",
            "Taux de résolution net",
            "Transferts",
            "Abandons",
        ),
        (
            (
                f"semaine-{w.week}",
                (
                    _e(w.week),
                    _days(w.first_day, w.last_day),
                    number_fr(w.calls),
                    number_fr(w.resolved_net),
                    percent_fr(w.containment),
                    number_fr(w.transferred),
                    number_fr(w.abandoned),
                ),
            )
            for w in report.weeks
        ),
    )
    busiest = _busiest(report)
    pending_note = (
        f'<p class="message info">{number_fr(resolved.pending_check)} appel(s) résolu(s) sont '
        f"encore dans le délai de rappel de {_e(hours_fr(report.repeat_window_h))} : le taux "
        "net peut encore baisser.</p>"
        if resolved.pending_check
        else ""
    )
    generated = (
        f"Rapport produit le {date_fr(report.generated_at.date())} à "
        f"{report.generated_at:%H:%M} (heure de {_e(report.timezone)}) à partir des "
        "enregistrements d'appels. Les enregistrements sont effacés après leur durée de "
        "conservation : une période plus ancienne n'a plus d'appels."
    )
    title = f"{TITLE} — AlloNantes"
    return (
        '<!doctype html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)} — {_e(period_fr(report))}</title>\n{style}\n</head>\n<body>\n"
        '<a class="skip-link" href="#contenu">Aller au contenu</a>\n'
        f'<header class="banner"><h1>{_e(title)}</h1>{navigation}</header>\n'
        '<main id="contenu" tabindex="-1">\n'
        f"{period_form}"
        f'<p id="periode">Appels commencés <strong>{_e(period_fr(report))}</strong>. '
        f"{generated}</p>\n{pending_note}"
        '<section aria-labelledby="essentiel-titre">'
        '<h2 id="essentiel-titre">L\'essentiel</h2>'
        f"{essentials}</section>\n"
        '<section aria-labelledby="motifs-titre">'
        f'<h2 id="motifs-titre">{name("transfers_by_reason")}</h2>'
        f"<p>{define('transfers_by_reason')}</p>{chart('reasons')}{reasons}</section>\n"
        '<section aria-labelledby="sujets-titre">'
        f'<h2 id="sujets-titre">{name("top_topics")}</h2>'
        f"<p>{define('top_topics')}</p>{chart('topics')}{top_topics}{no_topic}"
        f"<h3>{name('most_transferred_topics')}</h3>"
        f"<p>{define('most_transferred_topics')}</p>{transferred_topics}</section>\n"
        '<section aria-labelledby="heures-titre">'
        f'<h2 id="heures-titre">{name("by_weekday_hour")}</h2>'
        f"<p>{define('by_weekday_hour')}</p>{busiest}{chart('heatmap')}</section>\n"
        '<section aria-labelledby="semaines-titre">'
        f'<h2 id="semaines-titre">{name("weeks")}</h2>'
        f"<p>{define('weeks')}</p>{chart('weeks')}{weeks}</section>\n"
        "</main>\n</body>\n</html>\n"
    )


def _busiest(report: RoiReport) -> str:
    """The busiest hours in words (the heatmap's content for those who do not see it)."""
    slots = [
        (count, day, hour)
        for day, hours in enumerate(report.by_weekday_hour)
        for hour, count in enumerate(hours)
        if count
    ]
    if not slots:
        return "<p>Aucun appel sur la période.</p>"
    slots.sort(key=lambda slot: (-slot[0], slot[1], slot[2]))
    words = [
        f"le {WEEKDAYS_FR[day]} de {hour}\u00a0h à {hour + 1}\u00a0h ({number_fr(count)} appel(s))"
        for count, day, hour in slots[:3]
    ]
    return f"<p>Les créneaux les plus chargés : {_e(' ; '.join(words))}.</p>"
