"""``/transparence``: the algorithm card on the console's server, for anyone (no token).

Read-only (GET and HEAD only). The card is made once per application, on the first request,
in a thread (the first one imports the dialogue's actions): a public page must not cost
the server a card per request. It then shows what this process runs with.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from voicebot.console.context import CONTEXT
from voicebot.console.transparency.card import gather_card
from voicebot.console.transparency.render import render_html
from voicebot.core.config import Settings
from voicebot.core.errors import VoicebotError

log = logging.getLogger(__name__)


class CardPage:
    """The page's HTML, made once."""

    def __init__(self) -> None:
        self._html: str | None = None
        self._lock: asyncio.Lock | None = None

    async def html(self, settings: Settings) -> str:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._html is None:
                card = await asyncio.to_thread(gather_card, settings)
                self._html = render_html(card)
            return self._html


CARD_PAGE = web.AppKey("transparence", CardPage)


async def transparency_page(request: web.Request) -> web.StreamResponse:
    try:
        text = await request.app[CARD_PAGE].html(request.app[CONTEXT].settings)
    except VoicebotError as exc:
        log.error("transparence: the card cannot be made: %s", exc)
        return web.Response(
            status=503,
            text="La fiche de transparence est momentanément indisponible.",
            content_type="text/plain",
        )
    response = web.Response(text=text, content_type="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response
