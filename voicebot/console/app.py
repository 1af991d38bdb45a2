"""The operators' console and the browser softphone, on one small aiohttp server.

- ``/`` the console: live calls with the bot, the queue of transferred calls (each with its
  summary and full transcript, pushed over ``/ws/console`` the moment the handoff happens),
  and search in past calls (``/api/calls``).
- ``/appeler`` the softphone "Appeler AlloNantes": the browser streams its microphone as
  16-bit PCM at its own rate over ``/ws/softphone``; a ``BrowserTransport`` resamples it to
  the bot's 8 kHz and hands it to the same call session as the phone uses.

Every browser gets a bounded outgoing queue, and nothing it does slows a call or another
browser: a softphone that does not read is dropped; a console that falls behind gets one
fresh snapshot instead of its backlog (it misses nothing), and one that stays stuck is cut
(the page reconnects and starts from a snapshot).

With ``VOICEBOT_CONSOLE_TOKEN`` set every page, API and WebSocket needs the token; without
one the server listens on the loopback address only (``auth``).

The modules: ``auth`` (the token, its cookie, failed logins, the guard every request passes,
the login pages), ``outbox`` (the queue to one browser), ``board`` (the live board), ``api``
(the JSON API and the console's WebSocket), ``softphone`` (``BrowserTransport`` and its
WebSocket), ``metrics`` (``/metrics`` for Prometheus, loopback peers only, no token),
``dashboard`` (``/tableau-de-bord``, the ROI report, behind the token), ``improve``
(``/ameliorer``: trainers review the sentences the bot missed and relabel them),
``context`` (what they share) and this one, which puts them together with the
pages and the security headers. The console never imports the call: it is given
``on_call``, which runs a transport as a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from voicebot.console import (
    api,
    auth,
    dashboard,
    improve,
    softphone,
    training_api,
    transparency,
)
from voicebot.console.auth import LoginThrottle, check_access
from voicebot.console.board import LiveBoard
from voicebot.console.context import CONTEXT, STATIC_DIR, ServiceStatus, WebContext, WebLimits
from voicebot.console.metrics import Metrics, loopback_only, serve_metrics
from voicebot.core.config import Settings
from voicebot.core.errors import ConfigError
from voicebot.core.events import CallHub
from voicebot.core.interfaces import OnCall
from voicebot.records.store import CallRecords

log = logging.getLogger(__name__)


def make_app(
    settings: Settings,
    hub: CallHub,
    records: CallRecords,
    on_call: OnCall,
    limits: WebLimits | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    metrics: Metrics | None = None,
    board_hub: CallHub | None = None,
    service_status: ServiceStatus | None = None,
) -> web.Application:
    """``clock`` times the failed logins (tests pass their own rather than wait a minute);
    ``metrics`` is served at /metrics to loopback peers only (a bare one when not given);
    ``board_hub`` is what the live board follows (every host's calls when several hosts
    share a PostgreSQL: ``voicebot.records.live_relay``), ``hub`` when not given;
    ``service_status`` says which model this server answers with and how its last reload
    went (voicebot.dialogue.live_reload), for « Améliorer le robot »."""
    limits = limits or WebLimits()
    app = web.Application(middlewares=[loopback_only, auth.guard], client_max_size=64 * 1024)
    logins = LoginThrottle(
        limits.login_max_failures, limits.login_window_s, limits.login_addresses, clock
    )
    app[CONTEXT] = WebContext(
        settings,
        hub,
        records,
        on_call,
        limits,
        LiveBoard(board_hub or hub, limits, publish=hub),
        logins,
        service_status=service_status,
    )
    app.router.add_get("/", _page("console.html"))
    app.router.add_get("/appeler", _page("softphone.html"))
    app.router.add_get(improve.PAGE, _page("ameliorer.html"))  # trainers: the review queue
    app.router.add_get("/login", auth.login_page)
    app.router.add_post("/login", auth.login)
    app.router.add_post("/logout", auth.logout)
    app.router.add_get("/healthz", _health)
    app[transparency.CARD_PAGE] = transparency.CardPage()
    app.router.add_get("/transparence", transparency.transparency_page)  # public, read-only
    app.router.add_get(dashboard.PATH, dashboard.dashboard_page)  # ROI report, token
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_get("/api/calls", api.api_calls)
    app.router.add_get("/api/calls/{call_id}", api.api_call)
    app.router.add_get("/api/stats", api.api_stats)
    app.router.add_get("/api/live", api.api_live)
    app.router.add_get("/ws/console", api.console_ws)
    app.router.add_get("/ws/softphone", softphone.softphone_ws)
    improve.add_routes(app)  # « Améliorer le robot »: the review queue, relabelling
    training_api.setup(app)  # « Réentraîner le robot », /ameliorer/evaluation
    serve_metrics(app, hub, metrics or Metrics())
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    # aiosignal's newer typing of Signal does not match aiohttp 3.9's stubs: hence the casts.
    cast(Any, app.on_startup).append(_start_board)
    cast(Any, app.on_shutdown).append(_close_sockets)
    cast(Any, app.on_cleanup).append(_stop_board)
    cast(Any, app.on_response_prepare).append(_security_headers)
    return app


async def start_web(
    settings: Settings,
    hub: CallHub,
    records: CallRecords,
    on_call: OnCall,
    metrics: Metrics | None = None,
    board_hub: CallHub | None = None,
    service_status: ServiceStatus | None = None,
) -> web.AppRunner:
    """Serve the console and the softphone on server.host:server.http_port, and the
    process's ``metrics`` at /metrics to loopback peers; the board follows ``board_hub``."""
    check_access(settings)
    app = make_app(
        settings,
        hub,
        records,
        on_call,
        metrics=metrics,
        board_hub=board_hub,
        service_status=service_status,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = settings.server.host, settings.server.http_port
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"the console cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info(
        "console on http://%s:%d/ (%s)",
        host,
        bound,
        "token required" if settings.console.token else "no token: loopback only",
    )
    return runner


async def _start_board(app: web.Application) -> None:
    app[CONTEXT].board.start()


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[CONTEXT].sockets):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                ws.close(code=1001, message="Arrêt du serveur".encode()), timeout=2.0
            )


async def _stop_board(app: web.Application) -> None:
    app[CONTEXT].board.stop()


# A Host header that can go into the policy as it is (no ";", space or quote to add a directive).
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def content_security_policy(host: str) -> str:
    """Every resource from this server only; no inline script or style, no plug-in, no frame.
    ``connect-src`` names the WebSocket addresses too: older browsers do not count ws: and
    wss: as 'self'."""
    sockets = f" ws://{host} wss://{host}" if _PLAIN_HOST.fullmatch(host) else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; media-src 'self' blob:; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response: pages, static files, the API, errors and WebSocket handshakes."""
    response.headers.setdefault("Content-Security-Policy", content_security_policy(request.host))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # "same-origin", not "no-referrer": under "no-referrer" browsers send "Origin: null" with
    # the login form, which the Origin check must refuse (a sandboxed frame of any site sends
    # it too). Either way no address of the console goes to another site: the pages load
    # nothing from elsewhere (the policy above), and a link out carries no Referer.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    response.headers.setdefault("Permissions-Policy", "microphone=(self)")


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def page(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(STATIC_DIR / name)
        response.headers["Cache-Control"] = "no-store"
        return response

    return page


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True})


async def _no_icon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)
