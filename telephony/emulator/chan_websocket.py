"""Asterisk's side of a media WebSocket: what ``chan_websocket`` does when it dials the bot.

``ChanWebSocketPeer`` connects with subprotocol ``media``, sends ``MEDIA_START``, paces the
caller's audio (binary frames of ``optimal_frame_size`` every ``ptime``), sends
``DTMF_END``, and models chan_websocket's playout queue the way ``chan_websocket.c`` does:

* the bot's binary data is cut into ``optimal_frame_size`` frames; a trailing partial frame
  is dropped unless media buffering is on (``START_MEDIA_BUFFERING``); data arriving while
  1,000 frames are queued is ignored;
* a timer takes one frame off the queue every ``ptime`` (the audio the caller hears,
  recorded in ``played`` with its time); ``MEDIA_XOFF`` is sent when the queue reaches 900
  frames, ``MEDIA_XON`` when it falls under 800;
* ``FLUSH_MEDIA`` empties the queue; ``MARK_MEDIA``/``STOP_MEDIA_BUFFERING`` queue a
  ``MEDIA_MARK_PROCESSED``/``MEDIA_BUFFERING_COMPLETED`` sent when playout reaches it;
  ``GET_STATUS`` answers ``STATUS``; ``HANGUP`` hangs up: the socket is closed with 1000;
* text messages over 128 bytes are ignored, like Asterisk does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed
from websockets.legacy.client import WebSocketClientProtocol, connect
from websockets.typing import Subprotocol

from telephony.chan_websocket.codec import (
    MAX_TEXT_MESSAGE_LEN,
    PLAIN_TEXT,
    SLIN_FORMAT_RATES,
    SUBPROTOCOL,
    AsteriskEvent,
    Command,
    DriverStatus,
    DtmfEnd,
    MediaBufferingCompleted,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    QueueDrained,
    encode_event,
    parse_command,
)

QUEUE_LENGTH_MAX = 1000
QUEUE_LENGTH_XOFF_LEVEL = 900
QUEUE_LENGTH_XON_LEVEL = 800


@dataclass(frozen=True)
class _Notice:
    """A control event waiting in the playout queue (sent when playout reaches it)."""

    event: AsteriskEvent


class ChanWebSocketPeer:
    def __init__(
        self,
        *,
        codec: str = "slin16",
        control_format: str = PLAIN_TEXT,
        connection_id: str = "voicebot",
        channel: str = "WebSocket/voicebot/0x7f3a5c001230",
        channel_id: str = "1712345678.42",
        channel_variables: dict[str, str] | None = None,
        ptime: int = 20,
    ) -> None:
        if codec not in SLIN_FORMAT_RATES:
            raise ValueError(f"the emulator speaks signed-linear codecs only, not {codec!r}")
        self.codec = codec
        self.rate = SLIN_FORMAT_RATES[codec]
        self.ptime = ptime
        self.frame_bytes = self.rate * ptime // 1000 * 2
        self.control_format = control_format
        self.channel_id = channel_id
        self.media_start = MediaStart(
            connection_id=connection_id,
            channel=channel,
            channel_id=channel_id,
            format=codec,
            optimal_frame_size=self.frame_bytes,
            ptime=ptime,
            channel_variables=dict(channel_variables or {}),
        )
        self.commands: list[tuple[float, Command]] = []
        self.command_texts: list[str] = []  # as written by the bot
        self.received: list[tuple[float, bytes]] = []  # binary messages as they arrived
        self.played: list[tuple[float, bytes]] = []  # frames taken off the playout queue
        self.events_sent: list[str] = []
        self.ignored_texts: list[str] = []
        self.dropped_bytes = 0
        self.answered = False
        self.closed_by: str | None = None  # "bot_hangup", "bot_close", "caller"
        self.close_code: int | None = None
        self._queue: deque[bytes | _Notice] = deque()
        self._frames_queued = 0
        self._leftover = b""
        self._bulk = False
        self._paused = False
        self._queue_full = False
        self._report_drained = False
        self._ws: WebSocketClientProtocol | None = None
        self._t0 = 0.0
        self._closed = asyncio.Event()
        self._new_command = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.uri = ""

    # --- connection ------------------------------------------------------------------------

    async def connect(self, uri: str, *, send_media_start: bool = True) -> None:
        self.uri = uri  # with the v() parameters Asterisk puts in the query
        self._ws = await connect(uri, subprotocols=[Subprotocol(SUBPROTOCOL)], close_timeout=2)
        self._t0 = asyncio.get_running_loop().time()
        if send_media_start:
            await self.send_event(self.media_start)
        self._tasks.append(asyncio.create_task(self._read_loop()))
        self._tasks.append(asyncio.create_task(self._playout_loop()))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def queue_length(self) -> int:
        return self._frames_queued

    async def hangup(self) -> None:
        """The caller hangs up: Asterisk closes the WebSocket."""
        await self._close("caller")

    async def close(self) -> None:
        await self._close(self.closed_by or "caller")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- sending -----------------------------------------------------------------------------

    async def send_event(self, event: AsteriskEvent) -> None:
        await self.send_text(encode_event(event, self.control_format, self.channel_id))

    async def send_text(self, text: str) -> None:
        if self._ws is None or self.closed:
            return
        self.events_sent.append(text)
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(text)

    async def send_dtmf(self, digit: str) -> None:
        await self.send_event(DtmfEnd(digit))

    async def play(self, pcm: bytes, realtime: bool = True) -> int:
        """Send caller audio at the channel rate, one ``ptime`` frame per message."""
        assert self._ws is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        for offset in range(0, len(pcm), self.frame_bytes):
            if self.closed:
                break
            chunk = pcm[offset : offset + self.frame_bytes]
            chunk += bytes(self.frame_bytes - len(chunk))
            if realtime:
                delay = start + sent * self.ptime / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(chunk)
            sent += 1
        return sent

    async def play_silence(self, seconds: float, realtime: bool = True) -> int:
        return await self.play(bytes(int(self.rate * seconds) * 2), realtime)

    # --- what the bot did --------------------------------------------------------------------

    def command_names(self) -> list[str]:
        return [command.name for _, command in self.commands]

    def received_audio(self) -> bytes:
        return b"".join(data for _, data in self.received)

    def played_audio(self) -> bytes:
        return b"".join(data for _, data in self.played)

    async def wait_for_command(self, name: str, timeout: float) -> Command | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for _, command in self.commands:
                if command.name == name:
                    return command
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._new_command.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new_command.wait(), remaining)

    async def wait_for_close(self, timeout: float) -> str | None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout)
        return self.closed_by

    async def wait_for_received(self, n_bytes: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.received_audio()) < n_bytes:
            if loop.time() > deadline or self.closed:
                return False
            await asyncio.sleep(0.01)
        return True

    # --- chan_websocket's behaviour ------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._ws is not None
        loop = asyncio.get_running_loop()
        try:
            async for message in self._ws:
                now = loop.time() - self._t0
                if isinstance(message, bytes):
                    self.received.append((now, message))
                    await self._queue_media(message)
                elif len(message.encode()) > MAX_TEXT_MESSAGE_LEN:
                    self.ignored_texts.append(message)
                else:
                    self.command_texts.append(message)
                    await self._on_command(now, parse_command(message))
        except ConnectionClosed:
            pass
        self.close_code = self._ws.close_code
        self._mark_closed("bot_close")

    async def _on_command(self, now: float, command: Command) -> None:
        self.commands.append((now, command))
        self._new_command.set()
        name = command.name
        if name == "ANSWER":
            self.answered = True
        elif name == "HANGUP":
            await self._close("bot_hangup")
        elif name == "START_MEDIA_BUFFERING":
            self._bulk = True
        elif name == "STOP_MEDIA_BUFFERING":
            self._bulk = False
            if self._leftover:
                self._enqueue(self._leftover)
                self._leftover = b""
            self._queue.append(_Notice(MediaBufferingCompleted(command.correlation_id or "")))
        elif name == "MARK_MEDIA":
            self._queue.append(_Notice(MediaMarkProcessed(command.correlation_id or "")))
        elif name == "FLUSH_MEDIA":
            self._queue.clear()
            self._frames_queued = 0
            self._bulk = False
            self._leftover = b""
        elif name == "REPORT_QUEUE_DRAINED":
            self._report_drained = True
        elif name == "GET_STATUS":
            await self.send_event(
                DriverStatus(
                    queue_length=self._frames_queued,
                    xon_level=QUEUE_LENGTH_XON_LEVEL,
                    xoff_level=QUEUE_LENGTH_XOFF_LEVEL,
                    queue_full=self._queue_full,
                    bulk_media=self._bulk,
                    media_paused=self._paused,
                )
            )
        elif name == "PAUSE_MEDIA":
            self._paused = True
        elif name == "CONTINUE_MEDIA":
            self._paused = False
        # Asterisk logs an unknown command and carries on; it stays in self.commands.

    async def _queue_media(self, data: bytes) -> None:
        if self._frames_queued >= QUEUE_LENGTH_MAX:
            self.dropped_bytes += len(data)
            return
        if self._bulk and self._leftover:
            data = self._leftover + data
            self._leftover = b""
        usable = len(data) - len(data) % self.frame_bytes
        for offset in range(0, usable, self.frame_bytes):
            if self._enqueue(data[offset : offset + self.frame_bytes]):
                await self.send_event(MediaXoff())
        rest = data[usable:]
        if self._bulk:
            self._leftover = rest
        else:
            self.dropped_bytes += len(rest)

    def _enqueue(self, frame: bytes) -> bool:
        """Queue one frame; True when this crossed the XOFF level."""
        self._queue.append(frame)
        self._frames_queued += 1
        if not self._queue_full and self._frames_queued >= QUEUE_LENGTH_XOFF_LEVEL:
            self._queue_full = True
            return True
        return False

    async def _playout_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.ptime / 1000
        next_tick = loop.time()
        while not self.closed:
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            await self._playout_one(loop.time() - self._t0)

    async def _playout_one(self, now: float) -> None:
        if self._paused:
            return
        if self._queue_full and self._frames_queued < QUEUE_LENGTH_XON_LEVEL:
            self._queue_full = False
            await self.send_event(MediaXon())
        while self._queue and isinstance(self._queue[0], _Notice):
            notice = self._queue.popleft()
            assert isinstance(notice, _Notice)
            await self.send_event(notice.event)
        if not self._queue:
            if self._report_drained:
                self._report_drained = False
                await self.send_event(QueueDrained())
            return
        frame = self._queue.popleft()
        assert isinstance(frame, bytes)
        self._frames_queued -= 1
        self.played.append((now, frame))

    async def _close(self, how: str) -> None:
        self._mark_closed(how)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close(1000)
            self.close_code = self._ws.close_code

    def _mark_closed(self, how: str) -> None:
        if not self._closed.is_set():
            self.closed_by = how
            self._closed.set()
