"""The softphone "Appeler AlloNantes": the browser streams its microphone as 16-bit PCM at
its own rate over ``/ws/softphone``; a ``BrowserTransport`` resamples it to the bot's 8 kHz
and hands it to ``on_call``, which runs it as any other call."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from voicebot.console.context import CONTEXT, BadMessage, WebLimits
from voicebot.console.outbox import Outbox
from voicebot.core.audio import SAMPLE_RATE, AudioFrame, RateEdge
from voicebot.core.events import CallEvent, CallHub
from voicebot.core.interfaces import (
    AudioIn,
    CallerActive,
    CallerHungUp,
    CallStarted,
    DtmfIn,
    TextIn,
    TransportEvent,
)
from voicebot.core.logs import call_logger
from voicebot.core.transport import serve_as_call

DTMF_DIGITS = frozenset("0123456789*#")
MIN_BROWSER_RATE = 8000
MAX_BROWSER_RATE = 192000


def parse_start(message: str) -> int:
    """The softphone's first message: ``{"type": "start", "sample_rate": 48000}``."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
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
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
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


async def softphone_ws(request: web.Request) -> web.StreamResponse:
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
    call = asyncio.create_task(
        serve_as_call(transport, context.on_call, transport.log, failure="browser call failed"),
        name=f"browser-{call_id}",
    )
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
