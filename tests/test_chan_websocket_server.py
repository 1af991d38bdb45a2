"""The media WebSocket server and transport, through real sockets, against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import websockets.legacy.client
from websockets.typing import Subprotocol

from telephony.chan_websocket.codec import JSON_FORMAT, MediaXoff, MediaXon
from telephony.chan_websocket.server import (
    OnCall,
    WebSocketTransport,
    start_websocket_server,
    websocket_server_port,
)
from telephony.emulator import ChanWebSocketPeer
from telephony.emulator.paced_bot import PacedBot
from voicebot.core.audio import read_wav, resample
from voicebot.core.interfaces import AudioIn, CallerHungUp, CallStarted, MediaTransport

SOUNDS = Path("/usr/share/asterisk/sounds/fr")
GREETING = read_wav(SOUNDS / "hello-world.wav")
CALLER_SPEECH = read_wav(SOUNDS / "agent-pass.wav")


@contextlib.asynccontextmanager
async def serve(on_call: OnCall, **options: float) -> AsyncIterator[str]:
    """A media WebSocket server on a free loopback port; yields its ws:// URI."""
    server = await start_websocket_server("127.0.0.1", 0, on_call, **options)  # type: ignore[arg-type]
    try:
        yield f"ws://127.0.0.1:{websocket_server_port(server)}"
    finally:
        server.close()
        await server.wait_closed()


def best_correlation(a: bytes, b: bytes, max_shift: int = 400) -> float:
    x = np.frombuffer(a, dtype="<i2").astype(np.float64)
    y = np.frombuffer(b, dtype="<i2").astype(np.float64)
    scores = []
    for shift in range(0, max_shift, 4):
        n = min(x.size - shift, y.size)
        scores.append(float(np.corrcoef(x[shift : shift + n], y[:n])[0, 1]))
    return max(scores)


async def test_slin16_call_plain_text() -> None:
    bot = PacedBot(GREETING, flush_on="9")
    call_uuid = str(uuid.uuid4())
    async with serve(bot) as uri:
        peer = ChanWebSocketPeer(codec="slin16")
        await peer.connect(f"{uri}/media?allo_uuid={call_uuid}")
        await peer.play(resample(CALLER_SPEECH, 8000, 16000)[: 16000 * 2])  # 1 s of speech
        await peer.send_dtmf("9")
        assert await peer.wait_for_command("FLUSH_MEDIA", 1.0) is not None
        await peer.send_dtmf("0")
        assert await peer.wait_for_close(2.0) == "bot_hangup"
        await peer.close()
    record = bot.calls[0]
    assert record.events[0] == CallStarted(call_id=call_uuid, channel=peer.media_start.channel)
    frames_in = [e.frame for e in record.events if isinstance(e, AudioIn)]
    assert {len(f.pcm) for f in frames_in} == {320} and len(frames_in) >= 45
    heard = b"".join(f.pcm for f in frames_in)
    assert best_correlation(heard, CALLER_SPEECH[:16000]) > 0.9
    # The bot's audio: binary frames of exactly optimal_frame_size, the greeting at 16 kHz.
    assert {len(data) for _, data in peer.received} == {640}
    assert peer.dropped_bytes == 0
    assert best_correlation(peer.played_audio(), resample(GREETING, 8000, 16000)) > 0.9
    assert peer.command_names()[-1] == "HANGUP" and record.digits() == "90"
    assert all(" " not in t and not t.startswith("{") for t in peer.command_texts)


async def test_json_format_and_call_id_from_channel_variables() -> None:
    bot = PacedBot(end_on="0")
    call_uuid = str(uuid.uuid4())
    async with serve(bot) as uri:
        peer = ChanWebSocketPeer(
            codec="slin", control_format=JSON_FORMAT, channel_variables={"ALLO_UUID": call_uuid}
        )
        await peer.connect(uri)
        await peer.play_silence(0.3)
        await peer.send_dtmf("0")
        assert await peer.wait_for_close(2.0) == "bot_hangup"
        await peer.close()
    assert bot.calls[0].call_id == call_uuid
    assert [json.loads(t) for t in peer.command_texts] == [{"command": "HANGUP"}]
    assert {len(data) for _, data in peer.received} == {320}  # slin: 20 ms at 8 kHz


async def test_without_uuid_the_call_id_is_asterisks_channel_id() -> None:
    bot = PacedBot()
    async with serve(bot) as uri:
        peer = ChanWebSocketPeer(channel_id="1712345678.99")
        await peer.connect(f"{uri}/?allo_uuid=not-a-uuid")
        await peer.hangup()
        await asyncio.wait_for(_done(bot), 2.0)
        await peer.close()
    assert bot.calls[0].call_id == "1712345678.99"
    assert bot.calls[0].hung_up == "hangup"
    assert isinstance(bot.calls[0].events[-1], CallerHungUp)


async def test_xoff_pauses_sending_and_xon_resumes_it() -> None:
    bot = PacedBot()
    async with serve(bot) as uri:
        peer = ChanWebSocketPeer(codec="slin16")
        await peer.connect(uri)
        await asyncio.sleep(0.2)
        await peer.send_event(MediaXoff())
        await asyncio.sleep(0.1)  # frames already on the wire may still arrive
        during_xoff = len(peer.received)
        await asyncio.sleep(0.4)
        assert len(peer.received) == during_xoff  # nothing sent while XOFF
        transport = bot.transports[0]
        assert isinstance(transport, WebSocketTransport) and transport.paused
        await peer.send_event(MediaXon())
        await asyncio.sleep(0.1)
        # The ~20 frames held during XOFF went out at once, then pacing went on.
        assert len(peer.received) >= during_xoff + 20
        assert not transport.paused and transport.frames_dropped == 0
        await peer.close()


async def test_flush_status_and_marks_on_asterisks_queue() -> None:
    statuses = []

    async def handler(transport: MediaTransport) -> None:
        assert isinstance(transport, WebSocketTransport)
        received: list[object] = []

        async def consume() -> None:  # as the session does: replies arrive through events()
            async for event in transport.events():
                received.append(event)

        consumer = asyncio.create_task(consume())
        await transport.send_buffered(resample(CALLER_SPEECH, 8000, 16000)[: 3 * 32000], "p1")
        statuses.append(await transport.get_status())
        await transport.flush()  # barge-in
        statuses.append(await transport.get_status())
        await transport.mark("apres-flush")
        for _ in range(50):
            if transport.marks_processed:
                break
            await asyncio.sleep(0.02)
        await transport.end()
        await consumer
        assert isinstance(received[0], CallStarted)

    async with serve(handler) as uri:  # type: ignore[arg-type]
        peer = ChanWebSocketPeer(codec="slin16")
        await peer.connect(uri)
        assert await peer.wait_for_close(3.0) == "bot_hangup"
        await peer.close()
    assert statuses[0].queue_length > 100  # 3 s of prompt queued in Asterisk
    assert statuses[1].queue_length == 0 and not statuses[1].bulk_media
    assert peer.command_names() == [
        "START_MEDIA_BUFFERING",
        "STOP_MEDIA_BUFFERING",
        "GET_STATUS",
        "FLUSH_MEDIA",
        "GET_STATUS",
        "MARK_MEDIA",
        "HANGUP",
    ]
    assert "MEDIA_MARK_PROCESSED apres-flush" in peer.events_sent
    assert len(peer.played) < 50  # the flush cut the 150-frame prompt short


async def test_connection_refusals() -> None:
    bot = PacedBot()
    async with serve(bot, media_start_timeout_s=0.3) as uri:
        # No "media" subprotocol.
        ws = await websockets.legacy.client.connect(uri)
        await asyncio.wait_for(ws.wait_closed(), 2.0)
        assert ws.close_code == 1002
        # No MEDIA_START in time.
        ws = await websockets.legacy.client.connect(uri, subprotocols=[Subprotocol("media")])
        await asyncio.wait_for(ws.wait_closed(), 2.0)
        assert ws.close_code == 1008
        # A codec the bot cannot decode: closed, so the dialplan goes on to the queue.
        peer = ChanWebSocketPeer()
        peer.media_start = type(peer.media_start)(
            **{**peer.media_start.__dict__, "format": "ulaw", "optimal_frame_size": 160}
        )
        await peer.connect(uri)
        assert await peer.wait_for_close(2.0) == "bot_close"
        assert peer.close_code == 1003
        await peer.close()
        # Audio before MEDIA_START.
        ws = await websockets.legacy.client.connect(uri, subprotocols=[Subprotocol("media")])
        await ws.send(bytes(640))
        await asyncio.wait_for(ws.wait_closed(), 2.0)
        assert ws.close_code == 1003
    assert bot.calls == []


async def test_garbled_control_message_is_ignored_not_fatal() -> None:
    bot = PacedBot(end_on="0")
    async with serve(bot) as uri:
        peer = ChanWebSocketPeer(codec="slin")
        await peer.connect(uri)
        await peer.send_text("{broken json")
        await peer.send_text("SOMETHING_NEW x:1")
        await peer.play_silence(0.2)
        await peer.send_dtmf("0")
        assert await peer.wait_for_close(2.0) == "bot_hangup"
        await peer.close()
    assert bot.calls[0].frames_in >= 9


async def _done(bot: PacedBot) -> None:
    while not bot.calls:
        await asyncio.sleep(0.01)
    await bot.calls[0].done.wait()
