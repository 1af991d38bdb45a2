"""Asterisk's side of an AudioSocket call: what ``AudioSocket(uuid,host:port)`` does.

``AudioSocketCaller`` connects to the bot, sends the call's UUID, paces the caller's audio
every 20 ms in real time, sends DTMF, and records every message the bot sends with its
arrival time. Like Asterisk it refuses what the bot may not send:

* a kind other than audio (``0x10``-``0x18``) or hangup (``0x00``), or an empty audio
  payload: Asterisk logs an error, hangs up the channel and closes the socket;
* **2 s without a message either way**: ``app_audiosocket`` (since 20.14 / 21.9 / 22.4)
  waits at most 2,000 ms for activity on the channel *or* the socket, then gives up. A
  caller whose phone sends audio (silence included) keeps a silent bot's session up:
  seen on a real Asterisk 20.14.0, where a bot that accepted and never answered held a
  caller playing audio for over a minute. So the bot must keep sending (its silence
  included) and a caller script that plays audio keeps the session up.

When the bot sends ``0x00`` or closes the socket, Asterisk's dialplan continues:
``ended_by`` says which (before 20.14 / 21.9 / 22.4 only ``0x00`` ends the session, see
``eof_ends_session``). Only the standard library and the project's codec are
used, so a benchmark can drive hundreds of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from telephony.audiosocket.codec import (
    AUDIO_KIND_RATES,
    HEADER,
    KIND_HANGUP,
    encode_audio,
    encode_dtmf,
    encode_uuid,
)
from voicebot.core.audio import read_wav

FRAME_S = 0.020
NO_TRAFFIC_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ReceivedMessage:
    t: float  # seconds since the UUID was sent
    kind: int
    payload: bytes

    @property
    def is_audio(self) -> bool:
        return self.kind in AUDIO_KIND_RATES


class AudioSocketCaller:
    """One emulated call. ``received_frames`` holds ``(t, kind, payload)`` for every message."""

    def __init__(
        self,
        *,
        rate: int = 8000,
        no_traffic_timeout_s: float | None = NO_TRAFFIC_TIMEOUT_S,
        forwards_dtmf: bool = True,
        eof_ends_session: bool = True,
    ):
        self.rate = rate
        self.no_traffic_timeout_s = no_traffic_timeout_s
        # app_audiosocket forwards the caller's keys (kind 0x03) only since 20.14 / 21.9 /
        # 22.4; before, a key pressed during AudioSocket() never reaches the bot.
        self.forwards_dtmf = forwards_dtmf
        # Before those releases a socket closed without 0x00 reads as a null frame: the
        # session goes on in silence until the caller hangs up (and Asterisk's loop spins on
        # the readable socket: a core at 100 %, seen on a real 20.13.0). ``bot_closed_at``
        # says when the bot's side closed.
        self.eof_ends_session = eof_ends_session
        self.bot_closed_at: float | None = None
        self.call_uuid = ""
        self.received: list[ReceivedMessage] = []
        self.violations: list[str] = []
        self.ended_by: str | None = (
            None  # "bot_hangup", "bot_close", "timeout", "violation", "caller"
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._t0 = 0.0
        self._end_t: float | None = None
        self._last_rx = 0.0
        self._last_tx = 0.0  # the caller's last message (Asterisk's channel side)
        self._ended = asyncio.Event()
        self._new_message = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- connection ----------------------------------------------------------------------

    async def connect(self, host: str, port: int, call_uuid: uuid.UUID | str | None = None) -> str:
        """Connect and send the UUID message (Asterisk's first); returns the UUID."""
        value = uuid.UUID(str(call_uuid)) if call_uuid is not None else uuid.uuid4()
        self.call_uuid = str(value)
        self._reader, self._writer = await asyncio.open_connection(host, port)
        loop = asyncio.get_running_loop()
        self._t0 = self._last_rx = loop.time()
        self._writer.write(encode_uuid(value))
        await self._writer.drain()
        self._tasks.append(asyncio.create_task(self._read_loop()))
        if self.no_traffic_timeout_s is not None:
            self._tasks.append(asyncio.create_task(self._watchdog()))
        return self.call_uuid

    async def open_raw(self, host: str, port: int) -> None:
        """Connect without sending the UUID (to test garbage or a slow-loris client)."""
        self._reader, self._writer = await asyncio.open_connection(host, port)
        self._t0 = self._last_rx = asyncio.get_running_loop().time()
        self._tasks.append(asyncio.create_task(self._read_loop()))

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def hangup(self) -> None:
        """The caller hangs up: Asterisk just closes the socket (it never sends 0x00)."""
        self._finish("caller")

    async def close(self) -> None:
        self._finish(self.ended_by or "caller")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- sending -------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, protocol or not."""
        if self._writer is None or self.ended:
            return
        self._last_tx = asyncio.get_running_loop().time()
        self._writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def send_dtmf(self, digit: str) -> None:
        if self.forwards_dtmf:
            await self.send_raw(encode_dtmf(digit))

    async def play(self, pcm: bytes, realtime: bool = True) -> int:
        """Send caller audio (at ``self.rate``) as 20 ms messages; returns frames sent.

        Real-time pacing uses absolute deadlines, so the stream does not drift."""
        frame_bytes = int(self.rate * FRAME_S) * 2
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        for offset in range(0, len(pcm), frame_bytes):
            if self.ended:
                break
            chunk = pcm[offset : offset + frame_bytes]
            chunk += bytes(frame_bytes - len(chunk))
            if realtime:
                delay = start + sent * FRAME_S - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_raw(encode_audio(chunk, self.rate))
            sent += 1
        return sent

    async def play_wav(self, path: Path, realtime: bool = True) -> int:
        return await self.play(read_wav(path, self.rate), realtime)

    async def play_silence(self, seconds: float, realtime: bool = True) -> int:
        return await self.play(bytes(int(self.rate * seconds) * 2), realtime)

    # --- what the bot sent ----------------------------------------------------------------

    @property
    def received_frames(self) -> list[tuple[float, int, bytes]]:
        return [(m.t, m.kind, m.payload) for m in self.received]

    def audio_messages(self) -> list[ReceivedMessage]:
        return [m for m in self.received if m.is_audio]

    def received_audio(self) -> bytes:
        return b"".join(m.payload for m in self.received if m.is_audio)

    def max_gap_s(self) -> float:
        """Longest time without a message from the bot, from the UUID to the end of the call
        (or to now, while it lasts)."""
        if self._end_t is not None:
            end = self._end_t
        else:
            end = asyncio.get_running_loop().time() - self._t0
        times = [0.0, *(m.t for m in self.received), end]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def first_voice_s(self, threshold: int = 500) -> float | None:
        """When the bot's first non-silent audio arrived (peak above ``threshold``)."""
        for message in self.audio_messages():
            if _is_voice(message.payload, threshold):
                return message.t
        return None

    async def wait_for_quiet(self, seconds: float, timeout: float, threshold: int = 500) -> bool:
        """Wait until the bot has spoken and then sent only silence for ``seconds`` (its
        sentence ended: a caller would answer now), by the audio itself, whatever state the
        bot says it is in. False on timeout or if the call ended."""

        def quiet() -> bool:
            messages = self.audio_messages()
            voiced = [m.t for m in messages if _is_voice(m.payload, threshold)]
            return bool(voiced) and messages[-1].t - voiced[-1] >= seconds

        return await self._until_sent(quiet, timeout)

    async def wait_for_hangup(self, timeout: float) -> str | None:
        """Wait until the call ends; returns ``ended_by`` (None if still up)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self.ended_by

    async def wait_for_audio(self, seconds: float, timeout: float) -> bool:
        """Wait until the bot has sent ``seconds`` of audio in total."""
        wanted = int(seconds * self.rate) * 2
        return await self._until_sent(
            lambda: sum(len(m.payload) for m in self.audio_messages()) >= wanted, timeout
        )

    async def wait_for_voice(self, timeout: float, threshold: int = 500) -> float | None:
        await self._until_sent(lambda: self.first_voice_s(threshold) is not None, timeout)
        return self.first_voice_s(threshold)

    async def _until_sent(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait, message by message from the bot, until ``condition`` holds; False on
        timeout or if the call ended first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0 or self.ended:
                return False
            self._new_message.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new_message.wait(), remaining)
        return True

    # --- internals --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        while not self.ended:
            try:
                data = await self._reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                if not self.eof_ends_session:
                    self.bot_closed_at = loop.time() - self._t0
                    return  # nothing more will come; the call stays up, silent
                self._finish("bot_close")
                return
            now = loop.time()
            self._last_rx = now
            buffer += data
            while len(buffer) >= HEADER.size:
                kind, length = HEADER.unpack_from(buffer)
                if kind != KIND_HANGUP and kind not in AUDIO_KIND_RATES:
                    self._violate(f"kind 0x{kind:02x} is not allowed from the bot")
                    return
                if kind in AUDIO_KIND_RATES and length == 0:
                    self._violate("empty audio message")
                    return
                if len(buffer) < HEADER.size + length:
                    break
                payload = bytes(buffer[HEADER.size : HEADER.size + length])
                del buffer[: HEADER.size + length]
                self.received.append(ReceivedMessage(now - self._t0, kind, payload))
                self._new_message.set()
                if kind == KIND_HANGUP:
                    self._finish("bot_hangup")
                    return

    async def _watchdog(self) -> None:
        assert self.no_traffic_timeout_s is not None
        loop = asyncio.get_running_loop()
        while not self.ended:
            silent_for = loop.time() - max(self._last_rx, self._last_tx)
            if silent_for > self.no_traffic_timeout_s:
                self.violations.append(
                    f"no message either way for {silent_for:.2f} s: Asterisk hangs up"
                )
                self._finish("timeout")
                return
            await asyncio.sleep(0.05)

    def _violate(self, what: str) -> None:
        self.violations.append(what)
        self._finish("violation")

    def _finish(self, how: str) -> None:
        if self._ended.is_set():
            return
        self.ended_by = how
        with contextlib.suppress(RuntimeError):
            self._end_t = asyncio.get_running_loop().time() - self._t0
        self._ended.set()
        self._new_message.set()
        if self._writer is not None:
            self._writer.close()


def _is_voice(payload: bytes, threshold: int) -> bool:
    samples = np.frombuffer(payload, dtype="<i2")
    return bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) > threshold
