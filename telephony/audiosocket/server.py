"""The AudioSocket server: Asterisk connects here, each connection becomes one call.

Asterisk's ``AudioSocket(uuid,host:port)`` (or ``Dial(AudioSocket/host:port/uuid/c(slin16))``)
opens a TCP connection and sends the call's UUID first. Each accepted connection is wrapped
in an ``AudioSocketTransport`` (a ``voicebot.core.interfaces.MediaTransport``) and handed to
``on_call``; when ``on_call`` returns, the media session is ended (``0x00`` then close), which
lets Asterisk's dialplan continue to the operators' queue.

A connection that breaks the protocol (unknown kind, bad length, garbage before the UUID,
no UUID within ``uuid_timeout_s``, a peer that never reads what we send) is closed on its
own: other calls never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from telephony.audiosocket.codec import (
    Audio,
    AudioSocketDecoder,
    AudioSocketMessage,
    Dtmf,
    Error,
    Hangup,
    Uuid,
    encode_audio,
    encode_hangup,
)
from voicebot.core.audio import SAMPLE_RATE, TELEPHONE, AudioFrame, RateEdge
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

LOGGER_NAME = "telephony.audiosocket.codec"
READ_CHUNK = 4096
# Audio the kernel and asyncio may hold for a peer that does not read: past this, the peer
# is stuck and the call is closed (64 KiB is 4 s at 8 kHz, 2 s at 16 kHz).
DEFAULT_MAX_WRITE_BUFFER = 64 * 1024
# Asterisk sends caller audio every 20 ms; a silent connection for this long is a dead peer.
DEFAULT_IDLE_TIMEOUT_S = 30.0
# soxr quality at the telephone edge: "MQ" adds ~26 ms of filter delay where "HQ" adds ~66 ms
# (each way, measured at 8<->16 kHz); its passband still covers the whole telephone band.
EDGE_QUALITY = "MQ"


class AudioSocketTransport:
    """One call's AudioSocket connection, seen as a MediaTransport.

    Inside the bot audio is 8 kHz 20 ms frames. A caller at a higher rate (``0x11``-``0x18``)
    is resampled down at this edge, and the bot's audio is sent back at the caller's rate.
    ``send`` writes at once (the session's pacer calls it every 20 ms); ``flush`` has nothing
    to do (Asterisk queues nothing for AudioSocket); ``end`` sends ``0x00`` and closes.
    """

    name = "audiosocket"
    dialplan_continues = True

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: AudioSocketDecoder,
        call_uuid: str,
        early_messages: list[AudioSocketMessage],
        *,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.call_id = call_uuid
        self.peer = _peer_name(writer)
        self.log: CallLogger = call_logger(LOGGER_NAME, call_uuid)
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._early = early_messages
        self._max_write_buffer = max_write_buffer
        self._idle_timeout_s = idle_timeout_s
        self._rate_known = False
        # 8 kHz (no conversion) until the caller's first audio tells its rate.
        self._edge = RateEdge(SAMPLE_RATE, quality=EDGE_QUALITY)
        self._closed = False
        self._close_reason: str | None = None
        self.frames_sent = 0

    # --- state -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    # --- MediaTransport --------------------------------------------------------------------

    async def events(self) -> AsyncIterator[TransportEvent]:
        yield CallStarted(call_id=self.call_id)
        for message in self._early:
            for event in self._on_message(message):
                yield event
                if isinstance(event, CallerHungUp):
                    return
        self._early = []
        while True:
            if self._close_reason is not None:
                if self._close_reason != "ended":
                    yield CallerHungUp(self._close_reason)
                return
            try:
                data = await asyncio.wait_for(self._reader.read(READ_CHUNK), self._idle_timeout_s)
            except asyncio.TimeoutError:
                self.log.warning("no data from Asterisk for %.0f s: closing", self._idle_timeout_s)
                self._abort("timeout")
                continue
            except (ConnectionError, OSError) as exc:
                self._abort("hangup", f"connection error: {exc}")
                continue
            if not data:
                self._on_eof()
                continue
            try:
                messages = self._decoder.feed(data)
            except ProtocolError as exc:
                self.log.warning("%s: closing this call", exc)
                self._abort("protocol_error")
                continue
            for message in messages:
                for event in self._on_message(message):
                    yield event
                    if isinstance(event, CallerHungUp):
                        return

    async def send(self, frame: AudioFrame) -> None:
        if self._closed:
            return
        if frame.format != TELEPHONE:
            raise ValueError(f"send() takes 8 kHz mono frames, not {frame.format}")
        buffered = self._writer.transport.get_write_buffer_size()
        if buffered > self._max_write_buffer:
            self.log.warning(
                "Asterisk reads nothing (%d bytes waiting): closing this call", buffered
            )
            self._abort("peer_not_reading")
            return
        for pcm in self._edge.to_peer(frame):
            self._writer.write(encode_audio(pcm, self._edge.peer_rate))
            self.frames_sent += 1

    async def flush(self) -> None:
        """Nothing is queued on Asterisk's side of an AudioSocket: barge-in needs no flush."""

    async def end(self) -> None:
        """Send ``0x00`` and close: Asterisk's dialplan continues (the handoff point)."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = "ended"
        with contextlib.suppress(ConnectionError, OSError):
            self._writer.write(encode_hangup())
            await asyncio.wait_for(self._writer.drain(), 1.0)
        with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        self.log.info("media session ended by the bot (0x00 sent)")

    # --- internals -------------------------------------------------------------------------

    def _on_message(self, message: AudioSocketMessage) -> list[TransportEvent]:
        if isinstance(message, Audio):
            return [AudioIn(frame) for frame in self._to_bot_rate(message)]
        if isinstance(message, Dtmf):
            return [DtmfIn(message.digit)]
        if isinstance(message, Hangup):
            self._abort("hangup", "Asterisk sent a hangup message")
            return [CallerHungUp("hangup")]
        if isinstance(message, Error):
            # Asterisk's error code 0x01 means the calling party hung up.
            reason = "hangup" if message.code == 0x01 else "asterisk_error"
            self.log.warning("Asterisk reported error code %s", message.code)
            self._abort(reason)
            return [CallerHungUp(reason)]
        if isinstance(message, Uuid):  # the decoder refuses a second UUID; kept for mypy
            return []
        raise AssertionError(f"unexpected message {message!r}")

    def _to_bot_rate(self, audio: Audio) -> list[AudioFrame]:
        if audio.rate != self._edge.peer_rate:
            if self._rate_known:
                self.log.info(
                    "caller audio rate changed from %d to %d Hz", self._edge.peer_rate, audio.rate
                )
            # The caller's frames are 20 ms at its own rate (0x11-0x18), and so are ours.
            self._edge = RateEdge(audio.rate, quality=EDGE_QUALITY)
        self._rate_known = True
        return self._edge.to_internal(audio.pcm)

    def _on_eof(self) -> None:
        try:
            self._decoder.eof()
        except ProtocolError as exc:
            self.log.warning("%s", exc)
            self._abort("protocol_error")
            return
        self._abort("hangup", "Asterisk closed the connection (caller hung up)")

    def _abort(self, reason: str, note: str | None = None) -> None:
        """Close the connection at once (no 0x00): used when the peer is gone or broken."""
        if self._close_reason is None:
            self._close_reason = reason
        if note:
            self.log.info("%s", note)
        if self._closed:
            return
        self._closed = True
        if reason == "hangup":
            self._writer.close()  # the peer is already gone: a plain close
        else:
            self._writer.transport.abort()  # broken or stuck peer: drop what is queued


async def start_audiosocket_server(
    host: str,
    port: int,
    on_call: OnCall,
    *,
    uuid_timeout_s: float = 2.0,
    max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
    idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S,
) -> asyncio.AbstractServer:
    """Listen for Asterisk's AudioSocket connections; one ``on_call`` task per call.

    ``port=0`` picks a free port (read it from ``server.sockets[0].getsockname()``).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _set_nodelay(writer)
        transport = await _accept(reader, writer, uuid_timeout_s, max_write_buffer, idle_timeout_s)
        if transport is None:
            return
        transport.log.info("call connected from %s", transport.peer)
        await serve_as_call(transport, on_call, transport.log)

    return await asyncio.start_server(handle, host, port)


async def _accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    uuid_timeout_s: float,
    max_write_buffer: int,
    idle_timeout_s: float | None,
) -> AudioSocketTransport | None:
    """Read up to the UUID message; None (connection closed) if it does not come in time."""
    log = call_logger(LOGGER_NAME, "?")
    peer = _peer_name(writer)
    decoder = AudioSocketDecoder()
    messages: list[AudioSocketMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + uuid_timeout_s
    try:
        while not messages:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            data = await asyncio.wait_for(reader.read(READ_CHUNK), remaining)
            if not data:
                decoder.eof()
                log.info("%s closed the connection before sending its UUID", peer)
                writer.close()
                return None
            messages = decoder.feed(data)
    except asyncio.TimeoutError:
        log.warning("%s sent no UUID within %.1f s: connection closed", peer, uuid_timeout_s)
        writer.transport.abort()
        return None
    except ProtocolError as exc:
        log.warning("%s: %s: connection closed", peer, exc)
        writer.transport.abort()
        return None
    except (ConnectionError, OSError) as exc:
        log.info("%s: connection lost before the UUID (%s)", peer, exc)
        writer.transport.abort()
        return None
    first = messages[0]
    assert isinstance(first, Uuid)  # the decoder accepts nothing else first  # noqa: S101 — the decoder's invariant (it accepts nothing else first); narrows the type
    return AudioSocketTransport(
        reader,
        writer,
        decoder,
        str(first.uuid),
        messages[1:],
        max_write_buffer=max_write_buffer,
        idle_timeout_s=idle_timeout_s,
    )


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    # 20 ms frames must leave at once, not wait for Nagle's algorithm (Asterisk does the same).
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def server_port(server: asyncio.AbstractServer) -> int:
    """The port a server listens on (useful with ``port=0``)."""
    sockets = getattr(server, "sockets", None) or ()
    for sock in sockets:
        return int(sock.getsockname()[1])
    raise ValueError("the server has no listening socket")
