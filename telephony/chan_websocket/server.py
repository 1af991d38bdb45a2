"""The media WebSocket server: Asterisk's ``chan_websocket`` dials the bot here.

Asterisk connects (``websocket_client.conf``, subprotocol ``media``) and sends
``MEDIA_START`` first; each connection becomes a ``WebSocketTransport`` (a
``voicebot.core.interfaces.MediaTransport``) handed to ``on_call``. When ``on_call`` returns the
bot sends ``HANGUP``: the WebSocket channel hangs up and the caller's dialplan continues
after ``Dial()`` (to the operators' queue).

Audio: binary frames carry the channel's codec; signed-linear formats (``slin``,
``slin16``…) are supported and converted to the bot's 8 kHz at this edge and back. Unlike
AudioSocket, Asterisk re-times what the bot sends (a playout queue of 1,000 frames), so
``flush()`` sends ``FLUSH_MEDIA`` to drop what is queued there (barge-in), and the bot stops
sending while Asterisk says ``MEDIA_XOFF`` (frames wait here until ``MEDIA_XON``).

The call id is the ``allo_uuid`` query parameter that the dialplan adds with
``v(allo_uuid=${ALLO_UUID})`` (so AMI can find the caller's channel), else the channel
variable ``ALLO_UUID`` (JSON format), else Asterisk's channel id.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.legacy.server import WebSocketServer, WebSocketServerProtocol
from websockets.legacy.server import serve as websocket_serve
from websockets.typing import Subprotocol

from telephony.audiosocket.server import EDGE_QUALITY
from telephony.chan_websocket.codec import (
    SUBPROTOCOL,
    AsteriskEvent,
    DriverError,
    DriverStatus,
    DtmfEnd,
    MediaBufferingCompleted,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    QueueDrained,
    UnknownEvent,
    encode_command,
    message_format,
    parse_event,
)
from voicebot.core.audio import TELEPHONE, AudioFrame, RateEdge
from voicebot.core.errors import ProtocolError
from voicebot.core.interfaces import (
    AudioIn,
    CallerHungUp,
    CallStarted,
    DtmfIn,
    OnCall,
    TransportEvent,
)
from voicebot.core.logs import CallLogger, call_logger
from voicebot.core.transport import serve_as_call

LOGGER_NAME = "telephony.websocket"
CALL_ID_PARAM = "allo_uuid"
# v(allo_appelant=${URIENCODE(${CALLERID(num)})}): the caller's number, kept only as a keyed hash.
CALLER_NUMBER_PARAM = "allo_appelant"
_PHONE_NUMBER = re.compile(r"\+?[0-9]{2,20}")
CALL_ID_VARIABLE = "ALLO_UUID"
# Frames kept while Asterisk says XOFF (10 s of audio); older ones are dropped past that.
DEFAULT_MAX_PENDING_FRAMES = 500
DEFAULT_MAX_WRITE_BUFFER = 256 * 1024


class WebSocketTransport:
    """One call's media WebSocket, seen as a MediaTransport."""

    name = "websocket"
    dialplan_continues = True

    def __init__(
        self,
        websocket: WebSocketServerProtocol,
        start: MediaStart,
        control_format: str,
        call_id: str,
        *,
        caller_number: str | None = None,
        max_pending_frames: int = DEFAULT_MAX_PENDING_FRAMES,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
    ) -> None:
        rate = start.sample_rate
        if rate is None:
            raise ProtocolError(f"chan_websocket: unsupported channel format {start.format!r}")
        self.call_id = call_id
        self.caller_number = caller_number
        self.start = start
        self.control_format = control_format
        self.log: CallLogger = call_logger(LOGGER_NAME, call_id)
        self.channel_rate = rate
        frame_bytes = start.optimal_frame_size or rate * start.ptime // 1000 * 2
        self.frame_bytes = frame_bytes
        self._ws = websocket
        # Asterisk queues whole frames of optimal_frame_size and drops a trailing partial one,
        # so the bot's audio leaves in exactly that size.
        self._edge = RateEdge(rate, frame_bytes, quality=EDGE_QUALITY)
        self._pending: deque[bytes] = deque(maxlen=max_pending_frames)
        self._max_write_buffer = max_write_buffer
        self._xoff = False
        self._closed = False
        self._ended = False
        self._status_waiters: list[asyncio.Future[DriverStatus]] = []
        self.last_status: DriverStatus | None = None
        self.marks_processed: list[str] = []
        self.frames_sent = 0
        self.frames_dropped = 0

    @property
    def paused(self) -> bool:
        """True while Asterisk's playout queue is full (between MEDIA_XOFF and MEDIA_XON)."""
        return self._xoff

    @property
    def closed(self) -> bool:
        return self._closed

    # --- MediaTransport --------------------------------------------------------------------

    async def events(self) -> AsyncIterator[TransportEvent]:
        yield CallStarted(
            call_id=self.call_id, channel=self.start.channel, caller_number=self.caller_number
        )
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    try:
                        frames = self.audio_in(message)
                    except ProtocolError as exc:
                        self.log.warning("%s (ignored)", exc)
                        continue
                    for frame in frames:
                        yield AudioIn(frame)
                    continue
                try:
                    event = parse_event(message)
                except ProtocolError as exc:
                    self.log.warning("%s (ignored)", exc)
                    continue
                digit = await self._on_event(event)
                if digit is not None:
                    yield DtmfIn(digit)
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            self._fail_status_waiters()
        if not self._ended:
            self.log.info("Asterisk closed the media WebSocket (caller hung up)")
            yield CallerHungUp("hangup")

    def audio_in(self, data: bytes) -> list[AudioFrame]:
        """A binary message from Asterisk as the bot's 8 kHz frames (ProtocolError if it is
        not whole 16-bit samples)."""
        if len(data) % 2:
            raise ProtocolError(f"chan_websocket: odd-sized 16-bit audio ({len(data)} bytes)")
        return self._edge.to_internal(data)

    async def send(self, frame: AudioFrame) -> None:
        if self._closed or self._ended:
            return
        if frame.format != TELEPHONE:
            raise ValueError(f"send() takes 8 kHz mono frames, not {frame.format}")
        for chunk in self._edge.to_peer(frame):
            if self._xoff:
                if len(self._pending) == self._pending.maxlen:
                    self.frames_dropped += 1
                self._pending.append(chunk)
            else:
                await self._send_binary(chunk)

    async def flush(self) -> None:
        """Barge-in: drop the audio queued here and in Asterisk's playout queue."""
        self._pending.clear()
        self._edge.reset_output()
        await self._command("FLUSH_MEDIA")

    async def end(self) -> None:
        """``HANGUP``: the WebSocket channel ends and the caller's dialplan continues."""
        if self._ended:
            return
        self._ended = True
        await self._command("HANGUP")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(1000, "fin de session"), 2.0)
        self._closed = True
        self.log.info("media session ended by the bot (HANGUP sent)")

    # --- other chan_websocket commands -----------------------------------------------------

    async def answer(self) -> None:
        """Needed only when the dialplan dials with the ``n`` (no auto-answer) option."""
        await self._command("ANSWER")

    async def get_status(self, timeout_s: float = 2.0) -> DriverStatus:
        """Ask Asterisk for its playout-queue status (``GET_STATUS`` → ``STATUS``).

        The answer arrives through ``events()``, which must be consumed meanwhile (the call
        session always is)."""
        waiter: asyncio.Future[DriverStatus] = asyncio.get_running_loop().create_future()
        self._status_waiters.append(waiter)
        try:
            await self._command("GET_STATUS")
            return await asyncio.wait_for(waiter, timeout_s)
        finally:
            with contextlib.suppress(ValueError):
                self._status_waiters.remove(waiter)

    async def mark(self, correlation_id: str) -> None:
        """``MARK_MEDIA``: Asterisk answers ``MEDIA_MARK_PROCESSED`` once it has played
        everything queued before the mark (recorded in ``marks_processed``)."""
        await self._command("MARK_MEDIA", correlation_id)

    async def send_buffered(self, pcm: bytes, correlation_id: str | None = None) -> None:
        """Send a whole prompt at once between ``START``/``STOP_MEDIA_BUFFERING``: Asterisk
        re-frames and plays it in real time (``MEDIA_BUFFERING_COMPLETED`` follows)."""
        await self._command("START_MEDIA_BUFFERING")
        await self._send_binary(self._edge.resample_to_peer(pcm))
        await self._command("STOP_MEDIA_BUFFERING", correlation_id)

    # --- internals -------------------------------------------------------------------------

    async def _on_event(self, event: AsteriskEvent) -> str | None:
        """Handle a control event; returns a DTMF digit when there is one for the session."""
        if isinstance(event, DtmfEnd):
            return event.digit
        if isinstance(event, MediaXoff):
            self.log.info("Asterisk's playout queue is full (MEDIA_XOFF): sending paused")
            self._xoff = True
        elif isinstance(event, MediaXon):
            self._xoff = False
            await self._send_pending()
        elif isinstance(event, DriverStatus):
            self.last_status = event
            for waiter in self._status_waiters:
                if not waiter.done():
                    waiter.set_result(event)
        elif isinstance(event, MediaMarkProcessed):
            self.marks_processed.append(event.correlation_id)
        elif isinstance(event, DriverError):
            self.log.warning("Asterisk reported an error: %s", event.text)
        elif isinstance(event, (MediaBufferingCompleted, QueueDrained)):
            self.log.debug("Asterisk: %s", event)
        elif isinstance(event, MediaStart):
            self.log.warning("a second MEDIA_START (ignored)")
        elif isinstance(event, UnknownEvent):
            self.log.info("unknown chan_websocket event %s (ignored)", event.name)
        return None

    async def _send_pending(self) -> None:
        while self._pending and not self._xoff and not self._closed:
            await self._send_binary(self._pending.popleft())

    async def _send_binary(self, data: bytes) -> None:
        if self._closed:
            return
        transport = self._ws.transport
        if transport is not None and transport.get_write_buffer_size() > self._max_write_buffer:
            self.log.warning("Asterisk reads nothing: closing this call")
            self._closed = True
            transport.abort()
            return
        try:
            await self._ws.send(data)
            self.frames_sent += 1
        except ConnectionClosed:
            self._closed = True

    async def _command(self, name: str, correlation_id: str | None = None) -> None:
        if self._closed:
            return
        try:
            await self._ws.send(encode_command(name, self.control_format, correlation_id))
        except ConnectionClosed:
            self._closed = True

    def _fail_status_waiters(self) -> None:
        for waiter in self._status_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("the media WebSocket is closed"))


async def start_websocket_server(
    host: str,
    port: int,
    on_call: OnCall,
    *,
    media_start_timeout_s: float = 2.0,
    answer: bool = False,
    max_pending_frames: int = DEFAULT_MAX_PENDING_FRAMES,
) -> WebSocketServer:
    """Listen for chan_websocket connections (subprotocol ``media``); one ``on_call`` per call.

    ``answer=True`` sends ``ANSWER`` after ``MEDIA_START``: needed only when the dialplan dials
    with the ``n`` option (otherwise Asterisk answers by itself).
    """

    async def handle(websocket: WebSocketServerProtocol) -> None:
        transport = await _accept(websocket, media_start_timeout_s, max_pending_frames)
        if transport is None:
            return
        transport.log.info(
            "call connected: channel %s, format %s", transport.start.channel, transport.start.format
        )

        async def answered(_: object) -> None:  # ANSWER first, inside the call's guard
            await transport.answer()
            await on_call(transport)

        await serve_as_call(transport, answered if answer else on_call, transport.log)

    return await websocket_serve(
        handle,
        host,
        port,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        max_size=2**20,
        close_timeout=2,
    )


async def _accept(
    websocket: WebSocketServerProtocol, timeout_s: float, max_pending_frames: int
) -> WebSocketTransport | None:
    log = call_logger(LOGGER_NAME, "?")
    peer = websocket.remote_address
    if websocket.subprotocol != SUBPROTOCOL:
        log.warning("%s did not ask for the 'media' subprotocol: refused", peer)
        await websocket.close(1002, "sous-protocole « media » requis")
        return None
    try:
        first = await asyncio.wait_for(websocket.recv(), timeout_s)
        if not isinstance(first, str):
            raise ProtocolError("chan_websocket: audio before MEDIA_START")
        start = parse_event(first)
        if not isinstance(start, MediaStart):
            raise ProtocolError(f"chan_websocket: expected MEDIA_START first, got {first[:60]!r}")
        return WebSocketTransport(
            websocket,
            start,
            message_format(first),
            _call_id(websocket.path, start),
            caller_number=_caller_number(websocket.path),
            max_pending_frames=max_pending_frames,
        )
    except asyncio.TimeoutError:
        log.warning("%s sent no MEDIA_START within %.1f s: closed", peer, timeout_s)
        await websocket.close(1008, "MEDIA_START attendu")
    except ProtocolError as exc:
        log.warning("%s: %s: closed", peer, exc)
        await websocket.close(1003, "message invalide")
    except ConnectionClosed:
        log.info("%s closed before MEDIA_START", peer)
    return None


def _call_id(path: str, start: MediaStart) -> str:
    """The ALLO_UUID the dialplan passed (query or channel variable), else Asterisk's ids."""
    query = parse_qs(urlsplit(path).query)
    candidates = [*query.get(CALL_ID_PARAM, []), start.channel_variables.get(CALL_ID_VARIABLE, "")]
    for candidate in candidates:
        with contextlib.suppress(ValueError):
            return str(uuid.UUID(candidate))
    return start.channel_id or start.connection_id


def _caller_number(path: str) -> str | None:
    """The number the dialplan passed, if it is one (not "anonymous", not empty)."""
    for value in parse_qs(urlsplit(path).query).get(CALLER_NUMBER_PARAM, []):
        number = re.sub(r"[\s.\-]", "", value)
        if _PHONE_NUMBER.fullmatch(number):
            return number
    return None


def websocket_server_port(server: WebSocketServer) -> int:
    """The port a server listens on (useful with ``port=0``)."""
    for sock in server.sockets:
        return int(sock.getsockname()[1])
    raise ValueError("the server has no listening socket")
