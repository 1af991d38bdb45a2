"""The ROI report's figures: call records in, one frozen ``RoiReport`` out (pure, no I/O).

``compute_report`` takes the calls started in a period (``CallRow``) and the start times of
the calls made by each hashed number (to find repeat calls), and returns every figure of the
report; ``definitions`` says in plain French what each figure is. ``report_queries`` reads
the rows from the database; the CLI (``voicebot report``) and the console's « Tableau de
bord » lay the same report out.

The definitions, precisely (the words shown to readers say the same):

- *calls*: calls with an outcome (ended) that started in ``[first_day 00:00, last_day + 1
  00:00)`` in the report's time zone. Calls still in progress, or whose end was never
  recorded, are counted apart (``unfinished``) and nowhere else.
- *resolved (gross)*: outcome ``resolved``.
- *called back*: a resolved call C with a caller hash h is called back when another call
  with the same h started after C started and at most ``repeat_window_h`` hours after C
  ended (C's start plus its duration when no end time was recorded). That later call may
  fall after the period: it is looked for up to the window's end.
- *resolved net*: resolved, with a caller hash, not called back. Resolved calls without a
  caller hash (hidden number, browser, no hashing key) cannot be checked: they are NOT
  counted as resolved net (the cautious choice), and are counted apart
  (``without_number``). A resolved call whose window has not yet elapsed when the report
  is made counts as resolved net for now (``pending_check`` says how many).
- *containment rate*: resolved net / calls. *Gross resolution rate*: resolved / calls.
- *transfers*: outcome ``transferred`` or ``error`` (an incident inside the bot ends in a
  handoff with reason « erreur »: the caller reached an operator too). Transfer rate:
  transfers / calls. Transfers by reason: ``handoff_reason``.
- *abandons*: outcome ``abandoned``; abandon rate: abandons / calls. Resolved (gross),
  transfers and abandons add up to the calls.
- *topic* of a call: the last intent recorded on the call (its turns, then its
  ``last_intent``, which the handoff's intent overrides) that is not small talk
  or a request for a person (``NON_TOPIC_INTENTS``); none when there is no such intent.
- *operator time saved*: resolved net × ``operator_handling_s``.
- *weeks*: ISO weeks (Monday to Sunday) in the report's time zone, cut to the period.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

from voicebot.core.config import ReportSettings
from voicebot.core.french import date_fr

# Intents that say nothing of what the caller wanted: never a call's topic. Asking for a
# person is a reason to transfer (shown by reason), not a topic.
NON_TOPIC_INTENTS = frozenset(
    {
        "saluer",
        "au_revoir",
        "affirmer",
        "nier",
        "remercier",
        "repeter",
        "nlu_fallback",
        "demander_agent",
    }
)
TRANSFER_OUTCOMES = ("transferred", "error")
ENDED_OUTCOMES = ("resolved", "transferred", "abandoned", "error")
TOP_TOPICS = 10
WEEKDAYS_FR = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
REASON_LABELS_FR = {
    "demande": "L'appelant a demandé un conseiller",
    "dtmf": "L'appelant a tapé 0",
    "urgence": "Urgence signalée",
    "incompréhension": "Le robot n'a pas compris, deux fois de suite",
    "confiance_asr": "Reconnaissance de la parole incertaine",
    "durée": "Durée maximale de l'appel atteinte",
    "silence": "Appelant silencieux",
    "erreur": "Incident technique du robot",
    "arrêt": "Arrêt du service",
    "fin_non_transmise": "Fin d'appel non transmise à Asterisk",
}
NO_TOPIC_FR = "Sans sujet identifié"
NO_REASON_FR = "Motif non enregistré"


@dataclass(frozen=True)
class CallRow:
    """One call, as the report needs it (a row of the ``calls`` table and its intents)."""

    call_id: str
    started_at: float  # seconds since 1970, UTC
    ended_at: float | None
    caller_hash: str | None
    outcome: str | None
    handoff_reason: str | None
    duration_s: float | None
    last_intent: str | None
    intents: tuple[str, ...] = ()  # the intents of the call's turns, in order


@dataclass(frozen=True)
class Resolution:
    gross: int  # outcome "resolved"
    net: int  # resolved, number known, no call back within the window
    called_back: int  # resolved, but the same number called again within the window
    without_number: int  # resolved, no number: cannot be checked, not counted as net
    pending_check: int  # counted in net, but the window had not elapsed yet


@dataclass(frozen=True)
class Rates:
    """Fractions of ``calls`` (0 to 1); None when there was no call."""

    containment: float | None  # resolved net / calls
    gross_resolution: float | None  # resolved / calls
    transfer: float | None  # transfers / calls
    abandon: float | None  # abandons / calls


@dataclass(frozen=True)
class ReasonCount:
    reason: str | None
    label: str
    calls: int
    share: float  # of the transfers


@dataclass(frozen=True)
class TopicCount:
    topic: str | None
    label: str
    calls: int
    transferred: int
    transfer_share: float  # transferred / calls of this topic


@dataclass(frozen=True)
class Durations:
    """Time with the bot, in seconds, over the calls whose duration was recorded."""

    calls: int
    mean_s: float | None
    median_s: float | None


@dataclass(frozen=True)
class WeekLine:
    week: str  # ISO week, e.g. "2024-W10"
    first_day: dt.date  # within the period
    last_day: dt.date
    calls: int
    resolved_net: int
    transferred: int
    abandoned: int
    containment: float | None


@dataclass(frozen=True)
class RoiReport:
    first_day: dt.date
    last_day: dt.date
    timezone: str
    generated_at: dt.datetime
    operator_handling_s: float
    repeat_window_h: float
    calls: int
    unfinished: int
    calls_without_number: int
    resolved: Resolution
    transferred: int
    errors: int  # among the transfers: outcome "error" (reason « erreur »)
    abandoned: int
    rates: Rates
    transfers_by_reason: tuple[ReasonCount, ...]
    time_with_bot: Durations
    calls_without_topic: int
    top_topics: tuple[TopicCount, ...]
    most_transferred_topics: tuple[TopicCount, ...]
    by_weekday_hour: tuple[tuple[int, ...], ...]  # 7 weekdays (Monday first) × 24 hours
    operator_time_saved_s: float
    weeks: tuple[WeekLine, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (dates in ISO 8601), with the definitions of the figures."""
        data = _jsonable(asdict(self))
        data["weekdays"] = list(WEEKDAYS_FR)
        data["definitions"] = {key: text for key, _name, text in definitions(self)}
        return data


def period_bounds(first_day: dt.date, last_day: dt.date, timezone: str) -> tuple[float, float]:
    """``[first_day 00:00, last_day + 1 day 00:00)`` in ``timezone``, as seconds since 1970."""
    if last_day < first_day:
        raise ValueError(f"the period ends ({last_day}) before it starts ({first_day})")
    zone = ZoneInfo(timezone)
    start = dt.datetime.combine(first_day, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return start.timestamp(), end.timestamp()


def call_end(row: CallRow) -> float:
    """When the call ended: its end time, else its start plus its duration, else its start."""
    if row.ended_at is not None:
        return row.ended_at
    return row.started_at + (row.duration_s or 0.0)


def topic_of(row: CallRow) -> str | None:
    """The last intent of the call that names what the caller wanted (not small talk)."""
    for intent in reversed((*row.intents, *((row.last_intent,) if row.last_intent else ()))):
        if intent and intent not in NON_TOPIC_INTENTS:
            return intent
    return None


def topic_label(topic: str | None) -> str:
    return NO_TOPIC_FR if topic is None else topic.replace("_", " ")


def reason_label(reason: str | None) -> str:
    if reason is None:
        return NO_REASON_FR
    return REASON_LABELS_FR.get(reason, reason.replace("_", " "))


def compute_report(
    calls: Iterable[CallRow],
    caller_starts: Iterable[tuple[str, float]],
    first_day: dt.date,
    last_day: dt.date,
    settings: ReportSettings,
    now: float,
) -> RoiReport:
    """Every figure of the report on the calls started in the period.

    ``calls`` may hold calls outside the period (ignored). ``caller_starts`` holds
    (caller hash, start time) of the calls made by numbers, from the period's start to at
    least the end of the repeat window of its last call: the calls of the period themselves
    and those after it."""
    start, end = period_bounds(first_day, last_day, settings.timezone)
    zone = ZoneInfo(settings.timezone)
    window_s = settings.repeat_window_h * 3600.0
    in_period = [row for row in calls if start <= row.started_at < end]
    ended = [row for row in in_period if row.outcome in ENDED_OUTCOMES]
    starts_by_caller: dict[str, list[float]] = defaultdict(list)
    for caller_hash, started_at in caller_starts:
        starts_by_caller[caller_hash].append(started_at)

    def called_back(row: CallRow) -> bool:
        assert row.caller_hash is not None  # noqa: S101 — only rows with a caller hash get here; narrows the type
        limit = call_end(row) + window_s
        return any(
            row.started_at < other <= limit for other in starts_by_caller.get(row.caller_hash, ())
        )

    net_calls: set[str] = set()
    called_back_count = without_number = pending = 0
    for row in ended:
        if row.outcome != "resolved":
            continue
        if row.caller_hash is None:
            without_number += 1
        elif called_back(row):
            called_back_count += 1
        else:
            net_calls.add(row.call_id)
            if call_end(row) + window_s > now:
                pending += 1
    gross = sum(row.outcome == "resolved" for row in ended)
    transfers = [row for row in ended if row.outcome in TRANSFER_OUTCOMES]
    abandoned = sum(row.outcome == "abandoned" for row in ended)
    total = len(ended)

    reasons = Counter(row.handoff_reason for row in transfers)
    by_reason = tuple(
        ReasonCount(reason, reason_label(reason), count, count / len(transfers))
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0] or "~"))
    )

    durations = [row.duration_s for row in ended if row.duration_s is not None]
    topics = {row.call_id: topic_of(row) for row in ended}
    topic_calls = Counter(topic for topic in topics.values() if topic is not None)
    topic_transfers: Counter[str] = Counter()
    for row in transfers:
        transferred_topic = topics[row.call_id]
        if transferred_topic is not None:
            topic_transfers[transferred_topic] += 1

    def topic_count(topic: str) -> TopicCount:
        calls_n, transferred_n = topic_calls[topic], topic_transfers[topic]
        return TopicCount(
            topic, topic_label(topic), calls_n, transferred_n, transferred_n / calls_n
        )

    top = sorted(topic_calls, key=lambda t: (-topic_calls[t], t))[:TOP_TOPICS]
    most_transferred = sorted(
        topic_transfers,
        key=lambda t: (-topic_transfers[t], -topic_transfers[t] / topic_calls[t], t),
    )[:TOP_TOPICS]

    grid = [[0] * 24 for _ in range(7)]
    for row in ended:
        local = dt.datetime.fromtimestamp(row.started_at, zone)
        grid[local.weekday()][local.hour] += 1

    return RoiReport(
        first_day=first_day,
        last_day=last_day,
        timezone=settings.timezone,
        generated_at=dt.datetime.fromtimestamp(now, zone),
        operator_handling_s=settings.operator_handling_s,
        repeat_window_h=settings.repeat_window_h,
        calls=total,
        unfinished=len(in_period) - total,
        calls_without_number=sum(row.caller_hash is None for row in ended),
        resolved=Resolution(gross, len(net_calls), called_back_count, without_number, pending),
        transferred=len(transfers),
        errors=sum(row.outcome == "error" for row in transfers),
        abandoned=abandoned,
        rates=Rates(
            containment=_share(len(net_calls), total),
            gross_resolution=_share(gross, total),
            transfer=_share(len(transfers), total),
            abandon=_share(abandoned, total),
        ),
        transfers_by_reason=by_reason,
        time_with_bot=Durations(
            len(durations),
            statistics.fmean(durations) if durations else None,
            float(statistics.median(durations)) if durations else None,
        ),
        calls_without_topic=sum(topic is None for topic in topics.values()),
        top_topics=tuple(topic_count(t) for t in top),
        most_transferred_topics=tuple(topic_count(t) for t in most_transferred),
        by_weekday_hour=tuple(tuple(day) for day in grid),
        operator_time_saved_s=len(net_calls) * settings.operator_handling_s,
        weeks=_weeks(ended, net_calls, first_day, last_day, zone),
    )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _weeks(
    ended: list[CallRow],
    net_calls: set[str],
    first_day: dt.date,
    last_day: dt.date,
    zone: ZoneInfo,
) -> tuple[WeekLine, ...]:
    by_week: dict[dt.date, list[CallRow]] = defaultdict(list)
    for row in ended:
        day = dt.datetime.fromtimestamp(row.started_at, zone).date()
        by_week[day - dt.timedelta(days=day.weekday())].append(row)
    lines = []
    monday = first_day - dt.timedelta(days=first_day.weekday())
    while monday <= last_day:
        rows = by_week.get(monday, [])
        net = sum(row.call_id in net_calls for row in rows)
        year, week, _ = monday.isocalendar()
        lines.append(
            WeekLine(
                week=f"{year}-W{week:02d}",
                first_day=max(monday, first_day),
                last_day=min(monday + dt.timedelta(days=6), last_day),
                calls=len(rows),
                resolved_net=net,
                transferred=sum(row.outcome in TRANSFER_OUTCOMES for row in rows),
                abandoned=sum(row.outcome == "abandoned" for row in rows),
                containment=_share(net, len(rows)),
            )
        )
        monday += dt.timedelta(days=7)
    return tuple(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --- plain French -------------------------------------------------------------------------


def number_fr(value: float, decimals: int = 0) -> str:
    """12345.6 → "12 345,6" (thin no-break space between thousands)."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\u202f").replace(".", ",")


def percent_fr(share: float | None, decimals: int = 1) -> str:
    if share is None:
        return "—"
    return f"{number_fr(share * 100, decimals)}\u00a0%"


def duration_fr(seconds: float | None) -> str:
    """83 → "1 min 23 s"; 7380 → "2 h 03 min"."""
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{number_fr(hours)}\u00a0h\u00a0{minutes:02d}\u00a0min"
    if minutes:
        return f"{minutes}\u00a0min\u00a0{secs:02d}\u00a0s"
    return f"{secs}\u00a0s"


def hours_fr(hours: float) -> str:
    return f"{number_fr(hours, 0 if hours == int(hours) else 1)}\u00a0heures"


def definitions(report: RoiReport) -> tuple[tuple[str, str, str], ...]:
    """(key, name, definition) of every figure of the report, in plain French."""
    window = hours_fr(report.repeat_window_h)
    handling = duration_fr(report.operator_handling_s)
    period = (
        f"du {date_fr(report.first_day)} à 0\u00a0h au {date_fr(report.last_day)} à minuit "
        f"(heure de {report.timezone})"
    )
    return (
        (
            "calls",
            "Appels",
            f"Les appels que le robot a pris et qui sont terminés, commencés {period}. "
            "Les appels que le robot n'a jamais reçus (robot arrêté : Asterisk les envoie "
            "directement aux conseillers) ne sont pas ici. Les appels encore en cours, ou dont "
            "la fin n'a pas été enregistrée, sont comptés à part et ne comptent dans aucun "
            "autre chiffre.",
        ),
        (
            "resolved_net",
            "Résolus par le robot, nets des rappels",
            "Les appels où le robot a répondu à la demande sans passer l'appel à un "
            "conseiller (que l'appel finisse par « au revoir » ou que l'appelant raccroche "
            "ensuite), ET dont le numéro n'a pas rappelé dans les "
            f"{window} qui suivent la fin de l'appel. Un appel « résolu » suivi d'un rappel du "
            "même numéro dans ce délai compte comme non résolu : la personne n'avait sans doute "
            "pas sa réponse. Le numéro n'est jamais gardé en clair : on compare son empreinte "
            "chiffrée. Les appels résolus sans numéro connu (numéro masqué, appel depuis le "
            "navigateur) ne peuvent pas être vérifiés : par prudence, ils ne sont PAS comptés "
            "comme résolus ; leur nombre est donné à part.",
        ),
        (
            "containment",
            "Taux de résolution net (taux de confinement)",
            "Résolus par le robot, nets des rappels, divisés par le nombre d'appels. C'est la "
            "part des appels que le robot a traités seul, sans conseiller et sans rappel.",
        ),
        (
            "gross_resolution",
            "Taux de résolution brut",
            "Appels où le robot a répondu sans passer l'appel à un conseiller, divisés par le "
            "nombre d'appels, sans vérifier les rappels ni le numéro. Il est toujours au moins égal au "
            "taux net ; l'écart mesure les rappels et les appels invérifiables.",
        ),
        (
            "called_back",
            "Résolus mais rappelés",
            f"Appels résolus dont le même numéro a rappelé dans les {window} qui suivent.",
        ),
        (
            "without_number",
            "Résolus sans numéro (invérifiables)",
            "Appels résolus dont le numéro n'est pas connu : on ne peut pas savoir si la "
            "personne a rappelé. Ils ne sont pas comptés dans les résolus nets.",
        ),
        (
            "pending_check",
            "Résolus encore dans le délai de rappel",
            f"Appels comptés comme résolus nets dont les {window} ne sont pas encore écoulées "
            "au moment du rapport : un rappel peut encore les faire passer en non résolus.",
        ),
        (
            "transfers",
            "Transferts à un conseiller",
            "Les appels que le robot a passés à un conseiller (avec le motif et le résumé de "
            "la demande), y compris après un incident technique du robot (motif « incident "
            "technique »). Taux de transfert : transferts divisés par le nombre d'appels.",
        ),
        (
            "transfers_by_reason",
            "Transferts par motif",
            "La raison pour laquelle le robot a passé l'appel à un conseiller, telle qu'il l'a "
            "enregistrée au moment du transfert ; la part est calculée sur les transferts.",
        ),
        (
            "abandons",
            "Abandons",
            "Les appels où l'appelant a raccroché avant que le robot lui ait répondu, sans "
            "transfert. Taux d'abandon : abandons divisés par le nombre d'appels. Résolus "
            "(brut), transferts et abandons font ensemble tous les appels.",
        ),
        (
            "time_with_bot",
            "Temps passé avec le robot",
            "Du début de l'appel jusqu'au moment où le robot l'a terminé, l'a passé à un "
            "conseiller, ou où l'appelant a raccroché (l'attente d'un conseiller n'est pas "
            "comptée). Moyenne : le total divisé par le nombre d'appels. Médiane : la moitié "
            "des appels a duré moins, l'autre moitié plus.",
        ),
        (
            "top_topics",
            "Sujets les plus demandés",
            "Le sujet d'un appel est la dernière demande que le robot a reconnue (collecte des "
            "déchets, papiers d'identité…). Bonjour, merci, au revoir, oui, non, « répétez », la "
            "demande d'un conseiller (c'est un motif de transfert) et les phrases non "
            "comprises ne sont pas des sujets ; un appel sans autre demande "
            "reconnue est « sans sujet identifié ».",
        ),
        (
            "most_transferred_topics",
            "Sujets le plus souvent transférés",
            "Pour chaque sujet, le nombre de ses appels passés à un conseiller, et leur part "
            "parmi les appels de ce sujet.",
        ),
        (
            "by_weekday_hour",
            "Appels par heure et par jour",
            f"Le nombre d'appels selon le jour de la semaine et l'heure où ils ont commencé "
            f"(heure de {report.timezone}). Plus la case est foncée, plus il y a d'appels.",
        ),
        (
            "operator_time_saved",
            "Temps de conseiller économisé (estimation)",
            f"Résolus nets multipliés par la durée moyenne de traitement d'un appel par un "
            f"conseiller, fixée à {handling} (réglage report.operator_handling_s). C'est une "
            "estimation : elle ne compte pas le temps gagné sur les appels transférés (le "
            "conseiller reçoit déjà la demande), ni le coût de fonctionnement du robot.",
        ),
        (
            "weeks",
            "Tendance semaine par semaine",
            "Les mêmes chiffres, semaine par semaine (du lundi au dimanche), selon le jour où "
            "l'appel a commencé. La première et la dernière semaine peuvent être incomplètes : "
            "leurs jours sont indiqués.",
        ),
    )
