"""The console's JSON API (past calls, statistics, the live board) and its WebSocket (the
live board pushed as it changes; operators take transferred calls)."""

from __future__ import annotations

import datetime
import json
import logging

from aiohttp import WSMsgType, web

from voicebot.console.board import LiveBoard
from voicebot.console.context import CONTEXT, BadMessage, json_error
from voicebot.console.outbox import Outbox
from voicebot.records.store import OUTCOMES

log = logging.getLogger(__name__)


async def api_calls(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "")
    if len(query) > 200:
        return json_error(400, "Recherche trop longue (200 caractères au plus).")
    outcome = request.query.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        return json_error(400, f"Issue inconnue : choisir parmi {', '.join(OUTCOMES)}.")
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 200:
        return json_error(400, "limit doit être un nombre entre 1 et 200.")
    try:
        calls = await request.app[CONTEXT].records.search(query, limit=limit, outcome=outcome)
    except Exception:
        log.exception("console: call search failed")
        return json_error(503, "Les enregistrements sont indisponibles.")
    return web.json_response({"calls": calls})


async def api_call(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    if len(call_id) > 128:
        return json_error(404, "Appel introuvable.")
    try:
        call = await request.app[CONTEXT].records.get_call(call_id)
    except Exception:
        log.exception("console: reading call failed")
        return json_error(503, "Les enregistrements sont indisponibles.")
    if call is None:
        return json_error(404, "Appel introuvable.")
    return web.json_response(call)


async def api_stats(request: web.Request) -> web.StreamResponse:
    midnight = datetime.datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
    records = request.app[CONTEXT].records
    try:
        today = await records.stats(since=midnight.timestamp())
        overall = await records.stats()
    except Exception:
        log.exception("console: stats failed")
        return json_error(503, "Les enregistrements sont indisponibles.")
    return web.json_response({"today": today, "all": overall})


async def api_live(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[CONTEXT].board.snapshot())


# ---- the console's WebSocket ----------------------------------------------------------------


async def console_ws(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    limits = context.limits
    board = context.board
    if len(board.consoles) >= limits.max_consoles:
        return json_error(503, "Trop de consoles ouvertes.")
    ws = web.WebSocketResponse(max_msg_size=limits.console_max_msg_bytes, heartbeat=20.0)
    await ws.prepare(request)
    context.sockets.add(ws)
    outbox = Outbox(
        ws,
        request,
        limits.console_queue,
        limits.send_timeout_s,
        snapshot=board.snapshot_text,
        max_resyncs=limits.console_max_resyncs,
    )
    board.consoles.add(outbox)
    outbox.resync()  # the state first, then every change, in order
    bad = 0
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                bad += 1
                outbox.offer({"type": "error", "message": "Message texte JSON attendu."})
            else:
                try:
                    _console_command(board, outbox, message.data)
                except BadMessage as exc:
                    bad += 1
                    outbox.offer({"type": "error", "message": str(exc)})
            if bad > limits.max_bad_messages:
                outbox.close_after_sending()
                break
    finally:
        board.consoles.discard(outbox)
        context.sockets.discard(ws)
        await outbox.finish(limits.send_timeout_s)
    return ws


def _console_command(board: LiveBoard, outbox: Outbox, text: str) -> None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise BadMessage("Message illisible : JSON attendu.") from None
    if not isinstance(data, dict):
        raise BadMessage("Message illisible : un objet JSON est attendu.")
    kind = data.get("type")
    if kind == "take":
        call_id = data.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise BadMessage("call_id manquant.")
        if not board.take(call_id):
            raise BadMessage("Cet appel n'est plus dans la file.")
    elif kind == "ping":
        outbox.offer({"type": "pong"})
    else:
        raise BadMessage("Type de message inconnu.")
