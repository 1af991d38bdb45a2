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

With ``VOICEBOT_CONSOLE_TOKEN`` set every page, API and WebSocket needs the token (login
form, then a cookie; or ``Authorization: Bearer``); without a token the server refuses to
listen anywhere but on the loopback address. An address that gives a wrong token 5 times
within a minute is refused (HTTP 429) until the minute is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import WSMsgType, web

from voicebot.core.audio import SAMPLE_RATE, AudioFrame, RateEdge
from voicebot.core.config import Settings
from voicebot.core.errors import ConfigError, VoicebotError
from voicebot.core.events import CallEvent, CallHub
from voicebot.core.interfaces import (
    AudioIn,
    CallerActive,
    CallerHungUp,
    CallStarted,
    DtmfIn,
    MediaTransport,
    TextIn,
    TransportEvent,
)
from voicebot.core.logs import call_logger, redact_numbers
from voicebot.records.store import OUTCOMES, CallRecords

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
COOKIE_NAME = "allonantes_console"
COOKIE_MAX_AGE_S = 12 * 3600
PUBLIC_PATHS = ("/login", "/healthz", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
DTMF_DIGITS = frozenset("0123456789*#")
MIN_BROWSER_RATE = 8000
MAX_BROWSER_RATE = 192000

OnCall = Callable[[MediaTransport], Awaitable[None]]


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


# ---- access ---------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(settings: Settings) -> None:
    """No token: loopback only. Raises ConfigError."""
    host = settings.server.host
    if not settings.console.token and not is_loopback(host):
        raise ConfigError(
            f"the console would be open to anyone on {host}: set VOICEBOT_CONSOLE_TOKEN, "
            "or keep server.host on 127.0.0.1"
        )


def token_matches(given: str, token: str) -> bool:
    """Constant time, whatever the lengths: the digests compared always have the same size."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode("utf-8")).digest(),
        hashlib.sha256(token.encode("utf-8")).digest(),
    )


def _session_value(token: str) -> str:
    """What the cookie holds: derived from the token, never the token itself."""
    return hmac.new(
        token.encode("utf-8"), b"allonantes-console-session", hashlib.sha256
    ).hexdigest()


def _auth_state(request: web.Request, token: str) -> str:
    """'ok', 'missing' or 'wrong'."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and token_matches(given.strip(), token):
            return "ok"
        return "wrong"
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is None:
        return "missing"
    # The cookie is computable from a guessed token: a wrong one is a wrong token too.
    if token_matches(cookie, _session_value(token)):
        return "ok"
    return "wrong"


def client_address(remote: str | None) -> str:
    """The address failed logins are counted against: the TCP peer, never a header.

    X-Forwarded-For and the like are NOT trusted: anyone can write them, so an attacker would
    pick a new "address" for every guess. (Behind a reverse proxy every browser shares the
    proxy's address, and so shares its limit.) An IPv6 client owns a whole /64: counted as one.
    """
    if not remote:
        return "inconnue"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """Wrong tokens per client address: after ``max_failures`` within ``window_s`` the address
    may not try again (not even the right token) until the oldest of them is ``window_s`` old.

    Memory stays bounded: an address whose failures are all older than the window is
    forgotten, and at most ``max_addresses`` are kept (the one that failed longest ago goes).
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        max_addresses: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        # address → times of its recent failures; the address that failed last comes last
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str) -> float:
        """Seconds before ``address`` may try a token again; 0 when it may now."""
        failures = self._failures.get(address)
        if failures is None or len(failures) < self.max_failures:
            return 0.0
        wait = failures[0] + self.window_s - self.clock()
        return max(0.0, wait)

    def failed(self, address: str) -> bool:
        """Count a wrong token; True when this failure is the one that blocks the address."""
        now = self.clock()
        self._forget_before(now - self.window_s)
        failures = self._failures.pop(address, None)
        if failures is None:
            failures = deque(maxlen=self.max_failures)
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        failures.append(now)
        self._failures[address] = failures
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return len(failures) >= self.max_failures

    def _forget_before(self, limit: float) -> None:
        while self._failures:
            oldest = next(iter(self._failures))
            if self._failures[oldest][-1] > limit:
                return
            del self._failures[oldest]


def _same_origin(request: web.Request) -> bool:
    """A browser's Origin must be this server (no other site may drive the console)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser request
    return origin == f"{request.scheme}://{request.host}"


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# ---- the outgoing side of one browser -------------------------------------------------------


class _Resync:
    """In an outbox's queue: a snapshot of the board goes here, taken when it is sent."""


_RESYNC = _Resync()


@dataclass(frozen=True)
class _Update:
    """In an outbox's queue: a change of the board (JSON), that a snapshot can stand for."""

    text: str


_Item = str | bytes | _Update | _Resync | None  # None: close the socket


class Outbox:
    """A bounded queue of messages to one browser, drained by its own task.

    Nothing here ever waits for the browser: ``offer``, ``update`` and ``resync`` return at
    once, so a browser cannot slow a call or another browser.

    - ``offer`` queues a message that must arrive as it is (a softphone's audio and events,
      replies). When the queue is full the browser is not reading: its connection is cut
      and ``on_drop`` runs.
    - ``update`` queues a change of the console board. A console that falls behind loses
      nothing and is not cut: its pending changes are replaced by one snapshot of the board,
      taken when it is sent, so it says all they said (``snapshot`` gives it, as JSON).

    One send that takes longer than ``send_timeout_s`` cuts the browser (it is stuck), and
    so does needing ``max_resyncs`` snapshots in a row without once keeping up with the
    changes in between; a console page reconnects by itself and starts from a snapshot.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        size: int,
        send_timeout_s: float,
        on_drop: Callable[[str], None] | None = None,
        call_id: str | None = None,
        snapshot: Callable[[], str] | None = None,
        max_resyncs: int = 3,
    ) -> None:
        self._ws = ws
        self._log: logging.Logger | logging.LoggerAdapter[logging.Logger] = (
            call_logger(__name__, call_id) if call_id else log
        )
        self._request = request
        self._size = size
        self._pending: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._send_timeout_s = send_timeout_s
        self._on_drop = on_drop
        self._snapshot = snapshot
        self._max_resyncs = max_resyncs
        self._resync_pending = False
        self._resyncs_in_a_row = 0
        self.resyncs = 0  # snapshots sent because the browser fell behind (or connected)
        self.dropped = False
        self.closing = False
        self._task = asyncio.create_task(self._drain())

    @property
    def pending(self) -> int:
        """Messages waiting to be sent (bounded by ``size``, plus one snapshot marker)."""
        return len(self._pending)

    def _put(self, item: _Item) -> None:
        self._pending.append(item)
        self._wake.set()

    def offer(self, message: dict[str, Any] | bytes | str) -> bool:
        """Queue one message (a ``str`` is JSON text already); False if it will not go."""
        if self.dropped or self.closing:
            return False
        if len(self._pending) >= self._size:
            self.drop("send queue full")
            return False
        item = message if isinstance(message, (bytes, str)) else _json(message)
        self._put(item)
        return True

    def update(self, text: str) -> bool:
        """Queue a change of the board (JSON text); coalesced into a snapshot when behind."""
        if self._snapshot is None:
            return self.offer(text)
        if self.dropped or self.closing:
            return False
        if self._resync_pending:
            return True  # the snapshot waiting in the queue will be taken after this change
        if len(self._pending) >= self._size:
            self._log.info("console behind by %d updates: a snapshot replaces them", self._size)
            self.resync()
        else:
            self._put(_Update(text))
        return True

    def resync(self) -> None:
        """Replace the pending board changes by one snapshot, taken when it is sent.

        The other messages (replies to the browser) keep their place.
        """
        if self._snapshot is None or self.dropped or self.closing or self._resync_pending:
            return
        self._resyncs_in_a_row += 1
        if self._resyncs_in_a_row > self._max_resyncs:
            self.drop(f"{self._max_resyncs} snapshots in a row without keeping up")
            return
        kept = [item for item in self._pending if not isinstance(item, _Update)]
        self._pending.clear()
        self._pending.extend(kept)
        self._resync_pending = True
        self._put(_RESYNC)

    def drop_audio(self) -> int:
        """Forget the audio not sent yet (barge-in); keep the other messages in order."""
        kept = [item for item in self._pending if not isinstance(item, bytes)]
        dropped = len(self._pending) - len(kept)
        self._pending.clear()
        self._pending.extend(kept)
        return dropped

    def close_after_sending(self) -> None:
        """Send what is queued, then close the WebSocket."""
        if self.dropped or self.closing:
            return
        self.closing = True
        if len(self._pending) >= self._size:
            self.drop("send queue full")
            return
        self._put(None)

    def drop(self, why: str) -> None:
        if self.dropped:
            return
        self.dropped = True
        self._pending.clear()
        self._log.warning("browser disconnected: %s", why)
        transport = self._request.transport
        if transport is not None:
            transport.abort()  # a close frame could not get through either
        if self._task is not asyncio.current_task():
            self._task.cancel()
        if self._on_drop is not None:
            self._on_drop(why)

    def _take_batch(self) -> list[str | bytes | None]:
        """Everything waiting, with the snapshot marker turned into the board as it is now."""
        batch: list[str | bytes | None] = []
        kept_up = False
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, _Resync):
                assert self._snapshot is not None
                # Taken now, after every change queued so far: the changes it replaced, and
                # those dropped while it waited, are all in it.
                self._resync_pending = False
                self.resyncs += 1
                batch.append(self._snapshot())
            elif isinstance(item, _Update):
                kept_up = True
                batch.append(item.text)
            else:
                batch.append(item)
        if kept_up:
            self._resyncs_in_a_row = 0
        return batch

    async def _drain(self) -> None:
        try:
            while True:
                # Everything waiting goes out in one batch under one timeout: the sender
                # keeps up with any producer that the event loop itself keeps up with.
                await self._wake.wait()
                self._wake.clear()
                batch = self._take_batch()
                if batch and not await asyncio.wait_for(self._send(batch), self._send_timeout_s):
                    return
        except asyncio.TimeoutError:
            self.drop("the browser stopped reading")
        except (ConnectionError, RuntimeError):
            self.dropped = True  # the connection is gone already

    async def _send(self, batch: list[str | bytes | None]) -> bool:
        """Send a batch; False once the socket is closed (the ``None`` marker)."""
        for item in batch:
            if item is None:
                await self._ws.close()
                return False
            if isinstance(item, bytes):
                await self._ws.send_bytes(item)
            else:
                await self._ws.send_str(item)
        return True

    async def finish(self, timeout_s: float) -> None:
        """Send what is queued and close (unless dropped); give up after ``timeout_s``."""
        if not self.dropped:
            self.close_after_sending()
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


# ---- the console's live board ---------------------------------------------------------------

REASON_LABELS = {
    "demande": "Demande de l'appelant",
    "dtmf": "Touche du clavier",
    "urgence": "Urgence",
    "incompréhension": "Incompréhension répétée",
    "confiance_asr": "Reconnaissance vocale incertaine",
    "durée": "Durée maximale atteinte",
    "erreur": "Incident technique",
    "arrêt": "Arrêt du service",
}


def _clean(value: Any) -> Any:
    """No phone number leaves for the console (strings, lists, dicts)."""
    if isinstance(value, str):
        return redact_numbers(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class LiveBoard:
    """What every console shows, kept up to date from the call hub, pushed to each console.

    The hub calls ``apply`` inside every ``publish`` (a listener, never dropped): the board
    cannot fall behind the calls, whatever the burst (a task reading a bounded subscription
    could, and then lost events). It costs the publishing call a few dict updates, the
    redaction of the turn's text and one JSON encoding: well under a millisecond for a
    usual turn, and nothing that waits. Each console then gets the change through its own
    ``Outbox``, which never waits either and turns a backlog into one fresh snapshot.
    """

    def __init__(self, hub: CallHub, limits: WebLimits) -> None:
        self.hub = hub
        self.limits = limits
        self.live: dict[str, dict[str, Any]] = {}
        self.transcripts: dict[str, list[dict[str, Any]]] = {}
        self.queue: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.consoles: set[Outbox] = set()
        self._stop_listening: Callable[[], None] | None = None
        self._version = 0  # moves with every change of what the consoles show
        self._snapshot_text: tuple[int, str] | None = None

    def start(self) -> None:
        if self._stop_listening is None:
            self._stop_listening = self.hub.listen(self._on_event)

    def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    def _on_event(self, event: CallEvent) -> None:
        try:
            self.apply(event)
        except Exception:
            log.exception("console board: bad event %r", event.kind)

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "live": list(self.live.values()),
            "queue": list(self.queue.values()),
        }

    def snapshot_text(self) -> str:
        """The snapshot as JSON, encoded once per state of the board.

        A burst puts every console behind at once: they all get the same snapshot, and the
        event loop (which paces the calls' audio) encodes it only once.
        """
        if self._snapshot_text is None or self._snapshot_text[0] != self._version:
            self._snapshot_text = (self._version, _json(self.snapshot()))
        return self._snapshot_text[1]

    def broadcast(self, message: dict[str, Any]) -> None:
        if not self.consoles:
            return
        text = _json(message)  # once, whatever the number of consoles
        for outbox in list(self.consoles):
            outbox.update(text)

    def take(self, call_id: str) -> bool:
        """An operator took a transferred call: it leaves every console's queue."""
        if self.queue.pop(call_id, None) is None:
            return False
        self._version += 1
        self.broadcast({"type": "queue_remove", "call_id": call_id})
        return True

    def _call(self, event: CallEvent) -> dict[str, Any]:
        call = self.live.get(event.call_id)
        if call is None:
            call = {
                "call_id": event.call_id,
                "transport": None,
                "started_at": event.at,
                "state": "accueil",
                "last_caller": None,
                "last_bot": None,
                "intent": None,
                "confidence": None,
                "asr_confidence": None,
            }
            self.live[event.call_id] = call
            self.transcripts[event.call_id] = []
            while len(self.live) > self.limits.live_calls:
                oldest = next(iter(self.live))
                self.live.pop(oldest)
                self.transcripts.pop(oldest, None)
                # Its end was never seen: the consoles drop its row all the same.
                self.broadcast({"type": "call_ended", "call_id": oldest, "outcome": None})
        return call

    def _add_turn(self, event: CallEvent, speaker: str) -> str:
        """Add the turn to the call's transcript; returns its text, numbers redacted."""
        transcript = self.transcripts.setdefault(event.call_id, [])
        # Redacted once per turn: this runs inside the publishing call (see the class).
        text = _clean(str(event.data.get("text") or ""))
        turn = {
            "at": event.at,
            "speaker": speaker,
            "text": text,
            "intent": event.data.get("intent"),
            "confidence": event.data.get("confidence"),
            "asr_confidence": event.data.get("asr_confidence"),
        }
        transcript.append(turn)
        del transcript[: -self.limits.transcript_turns]
        return text

    def apply(self, event: CallEvent) -> None:
        kind, data = event.kind, event.data
        if kind not in ("started", "state", "caller", "bot", "handoff", "ended"):
            # "partial", "timing": too fine-grained for the operators. Any other kind is
            # not shown: it must not create a live row that no console is told about.
            return
        self._version += 1
        if kind == "ended":
            self.live.pop(event.call_id, None)
            self.transcripts.pop(event.call_id, None)
            entry = self.queue.get(event.call_id)
            if entry is not None:
                entry["ended"] = True
            self.broadcast(
                {
                    "type": "call_ended",
                    "call_id": event.call_id,
                    "outcome": data.get("outcome"),
                    "channel_end": data.get("channel_end"),
                    "duration_s": data.get("duration_s"),
                }
            )
            return
        call = self._call(event)
        if kind == "started":
            call["transport"] = data.get("transport")
            call["started_at"] = event.at
        elif kind == "state":
            call["state"] = str(data.get("state") or "")
        elif kind == "caller":
            call["last_caller"] = self._add_turn(event, "caller")
            call["asr_confidence"] = data.get("asr_confidence")
        elif kind == "bot":
            call["last_bot"] = self._add_turn(event, "bot")
            if data.get("intent") is not None:
                call["intent"] = data.get("intent")
                call["confidence"] = data.get("confidence")
        else:  # handoff
            self._on_handoff(event, call)
            return
        self.broadcast({"type": "call", "call": call})

    def _on_handoff(self, event: CallEvent, call: dict[str, Any]) -> None:
        data = event.data
        transcript = list(self.transcripts.get(event.call_id, []))
        reason = str(data.get("reason") or "")
        entry = {
            "call_id": event.call_id,
            "at": event.at,
            "transport": call.get("transport"),
            "started_at": call.get("started_at"),
            "reason": reason,
            "reason_label": REASON_LABELS.get(reason, reason),
            "intent": data.get("intent"),
            "entities": _clean(dict(data.get("entities") or {})),
            "summary": _clean(str(data.get("summary") or "")),
            "last_utterances": _clean(list(data.get("last_utterances") or [])),
            "context_delivered": data.get("context_delivered"),
            "bot_answers": [t["text"] for t in transcript if t["speaker"] == "bot" and t["text"]],
            "transcript": transcript,
            "ended": False,
        }
        call["state"] = "transfert"
        self.queue[event.call_id] = entry
        self.queue.move_to_end(event.call_id)
        while len(self.queue) > self.limits.queue_entries:
            oldest, _ = self.queue.popitem(last=False)
            # The consoles drop it too, or a page open all day would keep every one.
            self.broadcast({"type": "queue_remove", "call_id": oldest})
        self.broadcast({"type": "handoff", "entry": entry})
        self.broadcast({"type": "call", "call": call})


# ---- the softphone's transport --------------------------------------------------------------


class BadMessage(VoicebotError):
    """A browser message that breaks the softphone protocol (answered, not fatal)."""


def parse_start(message: str) -> int:
    """The softphone's first message: ``{"type": "start", "sample_rate": 48000}``."""
    try:
        data = json.loads(message)
    except ValueError:
        raise BadMessage("Le premier message doit être du JSON.") from None
    if not isinstance(data, dict) or data.get("type") != "start":
        raise BadMessage('Le premier message doit être {"type": "start", "sample_rate": …}.')
    rate = data.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise BadMessage("sample_rate doit être un nombre entier de Hz.")
    if not MIN_BROWSER_RATE <= rate <= MAX_BROWSER_RATE:
        raise BadMessage(
            f"sample_rate doit être entre {MIN_BROWSER_RATE} et {MAX_BROWSER_RATE} Hz."
        )
    return rate


class BrowserTransport:
    """One softphone call, seen by the call session as any other media transport.

    In: 16-bit PCM at the browser's rate (resampled here to 8 kHz, cut in 20 ms frames),
    typed text, "typing" notices (the user is writing: not a silence), keypad digits,
    hang-up. Out: 8 kHz PCM frames, ``flush`` and ``ended`` control messages, and the hub
    events of this call (transcript, intents, handoff).
    """

    name = "navigateur"
    dialplan_continues = False

    def __init__(
        self,
        call_id: str,
        browser_rate: int,
        outbox: Outbox,
        hub: CallHub,
        limits: WebLimits,
    ) -> None:
        self.call_id = call_id
        self.browser_rate = browser_rate
        self.outbox = outbox
        self.limits = limits
        self.log = call_logger(__name__, call_id)
        # Medium quality: plenty for 8 kHz speech, and soxr's HQ stream holds back ~130 ms
        # of a 48 kHz input, which the caller would hear as a slower bot.
        # Only the way in is converted: the page plays the bot's 8 kHz frames itself.
        self._edge = RateEdge(browser_rate, quality="MQ")
        self._inbox: asyncio.Queue[TransportEvent] = asyncio.Queue()
        self._max_inbox_frames = int(limits.max_audio_ahead_s / 0.02)
        self._audio_in_s = 0.0
        self._started = time.monotonic()
        self._typing_passed_at = -math.inf
        self._hung_up = False
        self.ended = False
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        # A listener, not a subscription: a burst of other calls' events could overfill a
        # subscription, which the hub would then drop, and the page would lose its handoff.
        self._stop_listening = hub.listen(self._forward)

    # -- MediaTransport ------------------------------------------------------------------

    async def events(self) -> AsyncIterator[TransportEvent]:
        yield CallStarted(call_id=self.call_id)
        while True:
            event = await self._inbox.get()
            yield event
            if isinstance(event, CallerHungUp):
                return

    async def send(self, frame: AudioFrame) -> None:
        if self.outbox.offer(frame.pcm):
            self.frames_out += 1

    async def flush(self) -> None:
        self.outbox.drop_audio()
        self.outbox.offer({"type": "flush"})

    async def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        # This call's events (the handoff) went into the outbox as they were published:
        # "ended" comes after them.
        self.outbox.offer({"type": "ended"})
        self.outbox.close_after_sending()

    # -- what the browser sends -----------------------------------------------------------

    def receive_audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        if len(pcm) % 2:
            raise BadMessage("L'audio doit être du PCM 16 bits : nombre d'octets impair.")
        self._audio_in_s += len(pcm) / (2 * self.browser_rate)
        ahead = self._audio_in_s - (time.monotonic() - self._started)
        if ahead > self.limits.max_audio_ahead_s:
            raise BadMessage("Audio envoyé plus vite que le temps réel.")
        for frame in self._edge.to_internal(pcm):
            if self._inbox.qsize() >= self._max_inbox_frames:
                self.frames_dropped += 1  # the session is behind: old audio is worthless
                continue
            self.frames_in += 1
            self._inbox.put_nowait(AudioIn(frame))

    def receive_text(self, message: str) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            raise BadMessage("Message illisible : JSON attendu.") from None
        if not isinstance(data, dict):
            raise BadMessage("Message illisible : un objet JSON est attendu.")
        kind = data.get("type")
        if kind == "text":
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                raise BadMessage("Le texte est vide.")
            if len(text) > self.limits.max_text_chars:
                raise BadMessage(
                    f"Texte trop long (maximum {self.limits.max_text_chars} caractères)."
                )
            self._inbox.put_nowait(TextIn(text.strip()))
        elif kind == "dtmf":
            digit = data.get("digit")
            if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                raise BadMessage("Touche inconnue : 0 à 9, * ou #.")
            self._inbox.put_nowait(DtmfIn(digit))
        elif kind == "typing":
            self._typing()
        elif kind == "hangup":
            self.hang_up("hung up in the browser")
        elif kind == "ping":
            self.outbox.offer({"type": "pong"})
        else:
            raise BadMessage("Type de message inconnu.")

    def _typing(self) -> None:
        """The user is typing in the text box: the call must not take it for a silence.

        The page sends this at most once a second; the extra ones a page might send are
        absorbed here, so that they never pile up in the call's inbox.
        """
        now = time.monotonic()
        if now - self._typing_passed_at >= self.limits.typing_interval_s:
            self._typing_passed_at = now
            self._inbox.put_nowait(CallerActive())

    def hang_up(self, reason: str) -> None:
        if not self._hung_up:
            self._hung_up = True
            self._inbox.put_nowait(CallerHungUp(reason))

    # -- this call's live events ----------------------------------------------------------

    def _forward(self, event: CallEvent) -> None:
        if event.call_id == self.call_id:
            self.outbox.offer({"type": "event", **event.as_dict()})

    async def close(self) -> None:
        self._stop_listening()


# ---- the application ------------------------------------------------------------------------


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
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    calls: set[asyncio.Task[None]] = field(default_factory=set)
    browser_calls: int = 0


CONTEXT = web.AppKey("voicebot", WebContext)


def make_app(
    settings: Settings,
    hub: CallHub,
    records: CallRecords,
    on_call: OnCall,
    limits: WebLimits | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """``clock`` times the failed logins (tests pass their own rather than wait a minute)."""
    limits = limits or WebLimits()
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024)
    logins = LoginThrottle(
        limits.login_max_failures, limits.login_window_s, limits.login_addresses, clock
    )
    app[CONTEXT] = WebContext(
        settings, hub, records, on_call, limits, LiveBoard(hub, limits), logins
    )
    app.router.add_get("/", _page("console.html"))
    app.router.add_get("/appeler", _page("softphone.html"))
    app.router.add_get("/login", _login_page)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_get("/api/calls", _api_calls)
    app.router.add_get("/api/calls/{call_id}", _api_call)
    app.router.add_get("/api/stats", _api_stats)
    app.router.add_get("/api/live", _api_live)
    app.router.add_get("/ws/console", _console_ws)
    app.router.add_get("/ws/softphone", _softphone_ws)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    # aiosignal's newer typing of Signal does not match aiohttp 3.9's stubs: hence the casts.
    cast(Any, app.on_startup).append(_start_board)
    cast(Any, app.on_shutdown).append(_close_sockets)
    cast(Any, app.on_cleanup).append(_stop_board)
    cast(Any, app.on_response_prepare).append(_security_headers)
    return app


async def start_web(
    settings: Settings, hub: CallHub, records: CallRecords, on_call: OnCall
) -> web.AppRunner:
    """Serve the console and the softphone on server.host:server.http_port."""
    check_access(settings)
    app = make_app(settings, hub, records, on_call)
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


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    host = request.host
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host} wss://{host}; media-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # Not "no-referrer": Chromium then sends "Origin: null" on the login form.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Permissions-Policy", "microphone=(self)")


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    path = request.path
    is_api = path.startswith(("/api/", "/ws/"))
    if (request.method == "POST" or path.startswith("/ws/")) and not _same_origin(request):
        return _json_error(403, "Origine refusée.")
    context = request.app[CONTEXT]
    token = context.settings.console.token
    public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
    if token and not public:
        state = _auth_state(request, token)
        target = _safe_next(path)
        if state == "missing":
            if is_api:
                return _json_error(401, "Authentification requise.")
            raise web.HTTPSeeOther(f"/login?next={target}")
        address = client_address(request.remote)
        wait = context.logins.retry_after(address)
        if wait > 0:
            # Even the right token is refused now: otherwise guessing would go on here.
            return _too_many_tries(wait, target, is_api)
        if state == "wrong":
            _count_failure(context, address)
            if is_api:
                refused: web.Response = _json_error(403, "Jeton refusé.")
            else:
                refused = web.HTTPSeeOther(f"/login?next={target}")
            if COOKIE_NAME in request.cookies:
                # Stale after a token change: not sent again, so not counted again.
                refused.del_cookie(COOKIE_NAME, path="/")
            if isinstance(refused, web.HTTPException):
                raise refused
            return refused
    return await handler(request)


def _count_failure(context: WebContext, address: str) -> None:
    logins = context.logins
    if logins.failed(address):  # once per block, not once per refused try
        log.warning(
            "console: %d wrong tokens from %s within %.0f s: its logins are refused for %.0f s",
            logins.max_failures,
            address,
            logins.window_s,
            logins.retry_after(address),
        )


def _too_many_tries(wait_s: float, target: str, is_api: bool) -> web.Response:
    seconds = max(1, math.ceil(wait_s))
    message = f"Trop de tentatives de connexion. Réessayez dans {seconds} secondes."
    response = _json_error(429, message) if is_api else _render_login(message, target, status=429)
    response.headers["Retry-After"] = str(seconds)
    return response


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def page(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(STATIC_DIR / name)
        response.headers["Cache-Control"] = "no-store"
        return response

    return page


def _safe_next(target: str | None) -> str:
    return target if target in ("/", "/appeler") else "/"


def _render_login(message: str, target: str, status: int = 200) -> web.Response:
    template = (STATIC_DIR / "login.html").read_text(encoding="utf-8")
    body = template.replace("{{message}}", html.escape(message)).replace(
        "{{next}}", html.escape(target)
    )
    return web.Response(text=body, content_type="text/html", status=status)


async def _login_page(request: web.Request) -> web.StreamResponse:
    if not request.app[CONTEXT].settings.console.token:
        raise web.HTTPSeeOther("/")
    return _render_login("", _safe_next(request.query.get("next")))


async def _login(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    token = context.settings.console.token
    form = await request.post()
    target = _safe_next(str(form.get("next") or "/"))
    if not token:
        raise web.HTTPSeeOther(target)
    address = client_address(request.remote)
    wait = context.logins.retry_after(address)
    if wait > 0:
        return _too_many_tries(wait, target, is_api=False)
    given = str(form.get("token") or "")
    if not token_matches(given, token):
        log.warning("console: wrong token from %s", address)  # never the token tried
        _count_failure(context, address)
        await asyncio.sleep(context.limits.login_failure_delay_s)  # slows guessing down
        return _render_login("Jeton incorrect.", target, status=403)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        COOKIE_NAME,
        _session_value(token),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    raise response


async def _logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True})


async def _no_icon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


# ---- the API --------------------------------------------------------------------------------


async def _api_calls(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "")
    if len(query) > 200:
        return _json_error(400, "Recherche trop longue (200 caractères au plus).")
    outcome = request.query.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        return _json_error(400, f"Issue inconnue : choisir parmi {', '.join(OUTCOMES)}.")
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 200:
        return _json_error(400, "limit doit être un nombre entre 1 et 200.")
    try:
        calls = await request.app[CONTEXT].records.search(query, limit=limit, outcome=outcome)
    except Exception:
        log.exception("console: call search failed")
        return _json_error(503, "Les enregistrements sont indisponibles.")
    return web.json_response({"calls": calls})


async def _api_call(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    if len(call_id) > 128:
        return _json_error(404, "Appel introuvable.")
    try:
        call = await request.app[CONTEXT].records.get_call(call_id)
    except Exception:
        log.exception("console: reading call failed")
        return _json_error(503, "Les enregistrements sont indisponibles.")
    if call is None:
        return _json_error(404, "Appel introuvable.")
    return web.json_response(call)


async def _api_stats(request: web.Request) -> web.StreamResponse:
    midnight = datetime.datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
    records = request.app[CONTEXT].records
    try:
        today = await records.stats(since=midnight.timestamp())
        overall = await records.stats()
    except Exception:
        log.exception("console: stats failed")
        return _json_error(503, "Les enregistrements sont indisponibles.")
    return web.json_response({"today": today, "all": overall})


async def _api_live(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[CONTEXT].board.snapshot())


# ---- the console's WebSocket ----------------------------------------------------------------


async def _console_ws(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    limits = context.limits
    board = context.board
    if len(board.consoles) >= limits.max_consoles:
        return _json_error(503, "Trop de consoles ouvertes.")
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
    except ValueError:
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


# ---- the softphone's WebSocket --------------------------------------------------------------


async def _softphone_ws(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    limits = context.limits
    ws = web.WebSocketResponse(max_msg_size=limits.softphone_max_msg_bytes, heartbeat=20.0)
    await ws.prepare(request)
    if context.browser_calls >= limits.max_browser_calls:
        await ws.send_json(
            {"type": "error", "message": "Trop d'appels en cours depuis le navigateur."}
        )
        await ws.close(code=1013, message=b"busy")
        return ws
    try:
        first = await ws.receive(timeout=limits.start_timeout_s)
    except asyncio.TimeoutError:
        await ws.close(code=1008, message="Pas de message de début".encode())
        return ws
    if first.type != WSMsgType.TEXT:
        if not ws.closed:
            await ws.close(code=1008, message="Message de début attendu".encode())
        return ws
    try:
        rate = parse_start(first.data)
    except BadMessage as exc:
        await ws.send_json({"type": "error", "message": str(exc)})
        await ws.close(code=1008, message="Message de début invalide".encode())
        return ws

    call_id = str(uuid.uuid4())
    transport: BrowserTransport | None = None

    def on_drop(why: str) -> None:
        if transport is not None:
            transport.hang_up(f"browser disconnected ({why})")

    outbox = Outbox(
        ws, request, limits.softphone_queue, limits.send_timeout_s, on_drop, call_id=call_id
    )
    transport = BrowserTransport(call_id, rate, outbox, context.hub, limits)
    outbox.offer({"type": "ready", "call_id": call_id, "sample_rate": SAMPLE_RATE})
    context.browser_calls += 1
    context.sockets.add(ws)
    call = asyncio.create_task(_run_call(context.on_call, transport), name=f"browser-{call_id}")
    context.calls.add(call)
    call.add_done_callback(context.calls.discard)
    transport.log.info("browser call started (%d Hz)", rate)
    bad = 0
    try:
        async for message in ws:
            try:
                if message.type == WSMsgType.BINARY:
                    transport.receive_audio(message.data)
                elif message.type == WSMsgType.TEXT:
                    transport.receive_text(message.data)
                else:
                    raise BadMessage("Type de message WebSocket inattendu.")
            except BadMessage as exc:
                bad += 1
                outbox.offer({"type": "error", "message": str(exc)})
                if bad > limits.max_bad_messages:
                    outbox.offer({"type": "ended"})
                    outbox.close_after_sending()
                    break
    finally:
        transport.hang_up("browser connection closed")
        context.sockets.discard(ws)
        try:
            # The session ends on the hang-up; wait for it so its records are complete.
            await asyncio.wait({call}, timeout=30.0)
        finally:
            context.browser_calls -= 1
            await transport.close()
            await outbox.finish(limits.send_timeout_s)
        transport.log.info(
            "browser call closed: %d frames in, %d out, %d dropped",
            transport.frames_in,
            transport.frames_out,
            transport.frames_dropped,
        )
    return ws


async def _run_call(on_call: OnCall, transport: BrowserTransport) -> None:
    try:
        await on_call(transport)
    except Exception:
        transport.log.exception("browser call failed")
    finally:
        await transport.end()  # whatever happened, the page learns the call is over
