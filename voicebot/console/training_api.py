"""Retraining from the console (« Réentraîner le robot ») and the model's evaluation page.

- ``POST /api/training`` starts `voicebot train` as the process's background job
  (voicebot.dialogue.training_job; optional JSON ``{"who": "…"}``, shown and logged, never
  put on the command line); 409 with a French message while a job runs.
- ``POST /api/evaluation`` evaluates the model in service when it has no report yet.
- ``POST /api/training/cancel`` ends the running job.
- ``GET /api/training``: the job's state, stage, elapsed time, last output lines, result,
  and the model in service (its version and its evaluation's address).
- ``GET /ameliorer/evaluation``: the evaluation report of the model in service (its folder
  ``nlu/models/evaluations/<name>/``), or a page that says there is none and offers to make
  one; ``?refused=<name>``: a refused candidate's report (``nlu/models/refused/<name>/``).
  Both redirect to the report's own address, ``/ameliorer/evaluation/<name>/report.html``
  (``…/refused/<name>/…``), so that its relative links to its charts and style sheet work;
  only report files present in that folder are served (never the model archive).

All of it is behind the console's token (auth.guard); the report pages pass its
Content-Security-Policy (their style sheet is a file: voicebot.dialogue.eval_report).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from voicebot.console.context import CONTEXT, json_error
from voicebot.core.config import Settings
from voicebot.dialogue.model_store import (
    EVALUATIONS_DIR,
    REFUSED_DIR,
    model_name,
    models_dir,
    read_version,
)
from voicebot.dialogue.training_job import (
    JobBusyError,
    JobRunner,
    JobSpec,
    JobStatus,
    current_model,
    evaluation_folder,
    evaluation_spec,
    training_spec,
)

log = logging.getLogger(__name__)

EVALUATION_PATH = "/ameliorer/evaluation"
REPORT_PAGE = "report.html"
# A report folder is named after its model (allonantes-YYYYMMDD-HHMMSS); its files are the
# page, its style sheet, its JSON and its charts.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_REPORT_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.(html|css|json|png)")
MAX_WHO_CHARS = 60


@dataclass(frozen=True)
class TrainingJobs:
    """The process's job runner and the jobs it may run (tests give stand-in commands)."""

    runner: JobRunner
    training: Callable[[Settings], JobSpec] = training_spec
    evaluation: Callable[[Settings], JobSpec] = evaluation_spec


TRAINING_JOBS = web.AppKey("training_jobs", TrainingJobs)


def setup(app: web.Application) -> None:
    """Register the routes, the job runner, and the end of a running job at shutdown."""
    app[TRAINING_JOBS] = TrainingJobs(JobRunner())
    app.router.add_get("/api/training", api_status)
    app.router.add_post("/api/training", api_start_training)
    app.router.add_post("/api/training/cancel", api_cancel)
    app.router.add_post("/api/evaluation", api_start_evaluation)
    app.router.add_get(EVALUATION_PATH, evaluation_page)
    app.router.add_get(EVALUATION_PATH + "/refused/{name}/{file}", refused_file)
    app.router.add_get(EVALUATION_PATH + "/{name}/{file}", evaluation_file)
    cast(Any, app.on_shutdown).append(_end_job)


async def _end_job(app: web.Application) -> None:
    await app[TRAINING_JOBS].runner.shutdown()


# ---- the job API ----------------------------------------------------------------------------


async def api_status(request: web.Request) -> web.StreamResponse:
    jobs = request.app[TRAINING_JOBS]
    context = request.app[CONTEXT]
    status = status_json(context.settings, jobs.runner.status())
    # What this server answers with (it takes an accepted model by itself: live_reload).
    status["service"] = context.service_status() if context.service_status else None
    return _no_store(web.json_response(status))


async def api_start_training(request: web.Request) -> web.StreamResponse:
    return await _start(request, request.app[TRAINING_JOBS].training)


async def api_start_evaluation(request: web.Request) -> web.StreamResponse:
    return await _start(request, request.app[TRAINING_JOBS].evaluation)


async def _start(request: web.Request, make: Callable[[Settings], JobSpec]) -> web.StreamResponse:
    who = await _who(request)
    if who is None:
        return json_error(400, 'Corps attendu : rien, ou un objet JSON {"who": "votre nom"}.')
    jobs = request.app[TRAINING_JOBS]
    settings = request.app[CONTEXT].settings
    try:
        jobs.runner.ensure_free()  # before the job is made: making it reads the disk
        status = jobs.runner.start(make(settings), who)
    except JobBusyError as exc:
        return json_error(409, str(exc))
    return _no_store(web.json_response(status_json(settings, status), status=202))


async def api_cancel(request: web.Request) -> web.StreamResponse:
    jobs = request.app[TRAINING_JOBS]
    if not await jobs.runner.cancel():
        return json_error(409, "Aucun entraînement ni évaluation en cours.")
    settings = request.app[CONTEXT].settings
    return _no_store(web.json_response(status_json(settings, jobs.runner.status())))


async def _who(request: web.Request) -> str | None:
    """The trainer's name from an optional JSON body, made printable and short; None when
    the body is not what is expected."""
    if not request.can_read_body:
        return ""
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    if data is None:
        return ""
    if not isinstance(data, dict) or not isinstance(data.get("who", ""), str):
        return None
    who = "".join(c for c in str(data.get("who", "")) if unicodedata.category(c)[0] != "C")
    return " ".join(who.split())[:MAX_WHO_CHARS]


def status_json(settings: Settings, status: JobStatus) -> dict[str, Any]:
    """What entrainement.js shows: the job, its result, and the model in service."""
    outcome = status.outcome
    return {
        "state": status.state,
        "kind": status.kind,
        "stage": status.stage,
        "who": status.who,
        "started_at": status.started_at,
        "elapsed_s": round(status.elapsed_s, 1),
        "lines": list(status.lines),
        "exit_code": status.exit_code,
        "message": outcome.message if outcome else "",
        "reasons": list(outcome.reasons) if outcome else [],
        "report_url": report_url(settings, outcome.report) if outcome else None,
        "version": outcome.version if outcome else "",
        "model": model_json(settings),
    }


def model_json(settings: Settings) -> dict[str, Any] | None:
    model = current_model(settings)
    if model is None:
        return None
    has_report = (evaluation_folder(settings, model) / REPORT_PAGE).is_file()
    return {
        "name": model_name(model),
        "version": read_version(model).version,
        "evaluation_url": EVALUATION_PATH if has_report else None,
    }


def report_url(settings: Settings, report: Path | None) -> str | None:
    """The console's address of a report.html under nlu/models/evaluations or refused."""
    if report is None:
        return None
    folder = models_dir(settings)
    name = report.parent.name
    if report.parent.parent == folder / EVALUATIONS_DIR:
        return f"{EVALUATION_PATH}/{name}/{report.name}"
    if report.parent.parent == folder / REFUSED_DIR:
        return f"{EVALUATION_PATH}/refused/{name}/{report.name}"
    return None


def _no_store(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Cache-Control"] = "no-store"
    return response


# ---- the evaluation pages -------------------------------------------------------------------


async def evaluation_page(request: web.Request) -> web.StreamResponse:
    settings = request.app[CONTEXT].settings
    refused = request.query.get("refused")
    if refused is not None:
        if _report_file(models_dir(settings) / REFUSED_DIR, refused, REPORT_PAGE) is None:
            return _page(404, "Rapport introuvable", "Ce modèle refusé n'a pas de rapport ici.")
        raise web.HTTPSeeOther(f"{EVALUATION_PATH}/refused/{refused}/{REPORT_PAGE}")
    model = current_model(settings)
    if model is not None:
        name = model_name(model)
        if _report_file(models_dir(settings) / EVALUATIONS_DIR, name, REPORT_PAGE) is not None:
            raise web.HTTPSeeOther(f"{EVALUATION_PATH}/{name}/{REPORT_PAGE}")
    return _page(
        200,
        "Aucune évaluation",
        "Le modèle en service n'a pas encore d'évaluation. Lancez-en une avec le bouton "
        "« Évaluer le modèle en service » ci-dessous (quelques minutes), ou sur le serveur "
        "avec la commande voicebot evaluate. Chaque nouveau modèle accepté par "
        "« Réentraîner le robot » arrive avec la sienne.",
    )


async def evaluation_file(request: web.Request) -> web.StreamResponse:
    settings = request.app[CONTEXT].settings
    return _serve(models_dir(settings) / EVALUATIONS_DIR, request)


async def refused_file(request: web.Request) -> web.StreamResponse:
    settings = request.app[CONTEXT].settings
    return _serve(models_dir(settings) / REFUSED_DIR, request)


def _serve(base: Path, request: web.Request) -> web.StreamResponse:
    path = _report_file(base, request.match_info["name"], request.match_info["file"])
    if path is None:
        return _page(404, "Fichier introuvable", "Ce rapport n'a pas de tel fichier.")
    return _no_store(web.FileResponse(path))


def _report_file(base: Path, name: str, file: str) -> Path | None:
    """``base/name/file`` when both names are plain file names and that report file is in
    the folder (listed, never a path built from what the browser sent and then opened)."""
    if not _FOLDER_NAME.fullmatch(name) or not _REPORT_FILE.fullmatch(file):
        return None
    if ".." in name or ".." in file:
        return None
    folder = base / name
    try:
        present = {p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink()}
    except OSError:
        return None
    return folder / file if file in present else None


def _page(status: int, title: str, text: str) -> web.Response:
    body = (
        '<!doctype html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} — AlloNantes</title>\n"
        '<link rel="stylesheet" href="/static/style.css">\n'
        '<script src="/static/common.js" defer></script>\n'
        '<script src="/static/entrainement.js" defer></script>\n</head>\n<body>\n'
        f'<header class="banner"><h1>{escape(title)}</h1>\n'
        '<nav aria-label="Pages"><a href="/ameliorer">Améliorer le robot</a> '
        '<a href="/">Console des opérateurs</a></nav></header>\n'
        f'<main>\n<p data-testid="evaluation-absente">{escape(text)}</p>\n'
        '<section id="entrainement" aria-label="Entraînement du robot"></section>\n'
        "</main>\n</body>\n</html>\n"
    )
    response = web.Response(text=body, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    return response
