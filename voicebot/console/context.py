"""What the console's modules share: the limits on one browser, the application's context
(stored once on the aiohttp application), the protocol error and the JSON error reply."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from voicebot.core.config import Settings
from voicebot.core.errors import VoicebotError
from voicebot.core.events import CallHub
from voicebot.core.interfaces import OnCall
from voicebot.records.store import CallRecords

if TYPE_CHECKING:  # they import this module: no import cycle at run time
    from voicebot.console.auth import LoginThrottle
    from voicebot.console.board import LiveBoard

STATIC_DIR = Path(__file__).with_name("static")


@dataclass(frozen=True)
class WebLimits:
    """What one browser may cost the server; past these it is refused or dropped."""

    console_max_msg_bytes: int = 16 * 1024
    softphone_max_msg_bytes: int = 256 * 1024  # > 1 s of 96 kHz audio in one message
    console_queue: int = 256  # changes waiting for one console; past it: one snapshot instead
    # A console sent more snapshots than this in a row, without keeping up with one round of
    # changes between them, is cut (its page reconnects): it costs a snapshot every round.
    console_max_resyncs: int = 3
    softphone_queue: int = 250  # items waiting for one softphone (5 s of bot audio)
    send_timeout_s: float = 5.0  # one send that takes longer: the browser is not reading
    start_timeout_s: float = 10.0  # the softphone's first message
    max_bad_messages: int = 5
    max_audio_ahead_s: float = 5.0  # a browser may not send audio faster than real time
    max_text_chars: int = 500
    typing_interval_s: float = 0.5  # "the caller is typing" reaches the call at most this often
    max_consoles: int = 50
    max_browser_calls: int = 8
    queue_entries: int = 100  # transferred calls kept in the console's queue
    live_calls: int = 1000  # live calls shown (a call whose end was never seen ages out)
    transcript_turns: int = 200  # turns kept per live call
    login_max_failures: int = 5  # wrong tokens from one address within the window: then 429
    login_window_s: float = 60.0
    login_addresses: int = 10_000  # addresses whose failures are remembered (bounded memory)
    login_failure_delay_s: float = 0.5  # a wrong token in the login form is answered this late


class BadMessage(VoicebotError):
    """A browser message that breaks its WebSocket's protocol (answered, not fatal)."""


ServiceStatus = Callable[[], dict[str, Any]]


@dataclass
class WebContext:
    """Everything the handlers share, stored once on the application."""

    settings: Settings
    hub: CallHub
    records: CallRecords
    on_call: OnCall
    limits: WebLimits
    board: LiveBoard
    logins: LoginThrottle
    # Which model this server answers with, and its last reload (None: not known here).
    service_status: ServiceStatus | None = None
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    calls: set[asyncio.Task[None]] = field(default_factory=set)
    browser_calls: int = 0


CONTEXT = web.AppKey("voicebot", WebContext)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
