"""« Améliorer le robot » (``/ameliorer``): trainers see what callers said that the bot
missed, and teach it, in the browser.

- ``GET /api/review``: the review queue (``voicebot.records.review``), with the confidence
  cutoff it used: the fallback threshold of the model the bot loads plus
  ``dialogue.review_confidence_margin``;
- ``GET /api/review/intents``: what the pickers offer (the domain's intents, the lookup
  tables' entity values);
- ``POST /api/review/relabel`` ``{text, intent | "ignorer", entity?, value?, who}``: the
  sentence taught (``voicebot.dialogue.relabel``) or set aside, and the decision kept with
  who and when in the records' ``relabels`` table. Refusals: 400 (a bad request) or 409 (it
  clashes with the training or test data), with the reason in French.

Behind the console token like every page (``auth.guard``). The token is shared, so the page
asks the trainer's name once and sends it with each decision. The training itself (the
retrain button) is another page's part: ``/static/entrainement.js`` and ``/api/training``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from voicebot.console.context import CONTEXT, json_error
from voicebot.core.errors import VoicebotError
from voicebot.dialogue.catalogue import fallback_thresholds
from voicebot.dialogue.relabel import IGNORE, Relabeller, RelabelRefused, Taught

log = logging.getLogger(__name__)

PAGE = "/ameliorer"
RELABELLER = web.AppKey("relabeller", Relabeller)
RASA_DEFAULT_THRESHOLD = 0.3  # FallbackClassifier's threshold when the config sets none
MAX_WHO_CHARS = 100
MAX_FIELD_CHARS = 500
DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def add_routes(app: web.Application) -> None:
    """The page and its API, on the console's application (its context already set)."""
    app[RELABELLER] = Relabeller(app[CONTEXT].settings.paths.nlu_dir)
    app.router.add_get("/api/review", api_review)
    app.router.add_get("/api/review/intents", api_intents)
    app.router.add_post("/api/review/relabel", api_relabel)


async def _blocking(work: Any, *args: Any) -> Any:
    """File and model reads off the event loop (the calls' audio runs on it)."""
    return await asyncio.get_running_loop().run_in_executor(None, work, *args)


async def api_review(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    try:
        limit = int(request.query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        return json_error(400, f"limit doit être un nombre entre 1 et {MAX_LIMIT}.")
    try:
        thresholds = await _blocking(fallback_thresholds, context.settings)
    except VoicebotError as exc:
        log.warning("console: fallback threshold unreadable: %s", exc)
        return json_error(503, "Le seuil de compréhension du robot est illisible.")
    threshold = thresholds.threshold if thresholds.threshold is not None else RASA_DEFAULT_THRESHOLD
    margin = context.settings.dialogue.review_confidence_margin
    cutoff = min(1.0, threshold + margin)
    try:
        groups = await context.records.review_queue(cutoff, limit=limit)
    except Exception:
        log.exception("console: review queue failed")
        return json_error(503, "Les enregistrements sont indisponibles.")
    return web.json_response(
        {"groups": groups, "threshold": threshold, "margin": margin, "cutoff": cutoff}
    )


async def api_intents(request: web.Request) -> web.StreamResponse:
    try:
        choices = await _blocking(request.app[RELABELLER].choices)
    except VoicebotError as exc:
        log.warning("console: intents unreadable: %s", exc)
        return json_error(503, "Les intentions du robot sont illisibles.")
    return web.json_response(choices.as_dict())


def _field(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise RelabelRefused(f"Champ « {name} » manquant.")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise RelabelRefused(
            f"Champ « {name} » : un texte de {MAX_FIELD_CHARS} caractères au plus."
        )
    return value


async def api_relabel(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "Requête illisible : un objet JSON est attendu.")
    if not isinstance(body, dict):
        return json_error(400, "Requête illisible : un objet JSON est attendu.")
    relabeller = request.app[RELABELLER]
    records = request.app[CONTEXT].records
    try:
        text = _field(body, "text") or ""
        intent = _field(body, "intent") or ""
        who = (_field(body, "who") or "").strip()
        if not who or len(who) > MAX_WHO_CHARS:
            raise RelabelRefused(f"Indiquer votre nom ({MAX_WHO_CHARS} caractères au plus).")
        entity = _field(body, "entity", required=False)
        value = _field(body, "value", required=False)
        if intent == IGNORE:
            sentence = relabeller.check_ignorable(text)
            await records.add_relabel(who, sentence, "ignored")
            return _ok("Phrase ignorée : elle quitte la file et ne sera pas apprise.")
        taught: Taught = await _blocking(relabeller.teach, text, intent, entity, value)
    except RelabelRefused as exc:
        return json_error(409 if exc.conflict else 400, str(exc))
    except VoicebotError as exc:
        log.error("console: relabelling failed: %s", exc)
        return json_error(503, "Impossible d'enregistrer : les données du robot sont illisibles.")
    try:
        await records.add_relabel(
            who,
            taught.text,
            "known" if taught.known else "trained",
            taught.intent,
            entity if entity and value else None,
            value if entity and value else None,
        )
    except Exception:
        # The example is in nlu/data already: saving again answers « déjà appris » and
        # records the decision then.
        log.exception("console: relabel decision not recorded")
        return json_error(503, "Phrase enregistrée, mais la décision n'a pas pu être notée.")
    log.info(
        "console: sentence %s under %s by a trainer",
        "already known" if taught.known else "taught",
        taught.intent,
    )
    return _ok(taught.message, known=taught.known, example=taught.example)


def _ok(message: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": True, "message": message, **extra})
