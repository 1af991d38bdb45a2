"""The AudioSocket server and transport, through real sockets, against the Asterisk emulator."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from telephony.audiosocket.codec import encode_audio, encode_uuid
from telephony.audiosocket.server import OnCall, server_port, start_audiosocket_server
from telephony.emulator import AudioSocketCaller
from telephony.emulator.paced_bot import CallRecord, PacedBot
from voicebot.core.audio import SILENCE_FRAME, read_wav, resample
from voicebot.core.interfaces import AudioIn, CallerHungUp, CallStarted, DtmfIn, MediaTransport

SOUNDS = Path("/usr/share/asterisk/sounds/fr")
GREETING = read_wav(SOUNDS / "hello-world.wav")  # real French speech, 8 kHz
CALLER_SPEECH = read_wav(SOUNDS / "agent-pass.wav")


@contextlib.asynccontextmanager
async def serve(on_call: OnCall, **options: float) -> AsyncIterator[int]:
    """An AudioSocket server on a free loopback port; yields the port."""
    server = await start_audiosocket_server("127.0.0.1", 0, on_call, **options)  # type: ignore[arg-type]
    try:
        yield server_port(server)
    finally:
        server.close()
        await server.wait_closed()


def correlation(a: bytes, b: bytes) -> float:
    x = np.frombuffer(a, dtype="<i2").astype(np.float64)
    y = np.frombuffer(b, dtype="<i2").astype(np.float64)
    n = min(x.size, y.size)
    return float(np.corrcoef(x[:n], y[:n])[0, 1])


async def test_greeting_arrives_paced_and_dtmf_0_ends_with_0x00() -> None:
    bot = PacedBot(GREETING)
    async with serve(bot) as port:
        caller = AudioSocketCaller()
        call_uuid = await caller.connect("127.0.0.1", port)
        await caller.play_silence(1.6)
        await caller.send_dtmf("0")
        assert await caller.wait_for_hangup(3.0) == "bot_hangup"
        await caller.close()

    record = bot.calls[0]
    assert record.events[0] == CallStarted(call_id=call_uuid)
    assert record.digits() == "0" and record.ended_by_bot
    assert record.frames_in >= 75  # 1.6 s of caller audio as 20 ms frames
    assert all(len(e.frame.pcm) == 320 for e in record.events if isinstance(e, AudioIn))
    voice = caller.first_voice_s()
    assert voice is not None and voice < 0.5
    audio = caller.audio_messages()
    assert {m.kind for m in audio} == {0x10} and {len(m.payload) for m in audio} == {320}
    # The greeting came back byte for byte, then silence, every 20 ms.
    assert caller.received_audio()[: len(GREETING)] == GREETING
    assert caller.max_gap_s() < 0.5  # paced: far from Asterisk's 2 s limit
    assert caller.received[-1].kind == 0x00 and caller.violations == []


async def test_caller_hangup_is_a_plain_close() -> None:
    bot = PacedBot(GREETING)
    async with serve(bot) as port:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", port)
        await caller.play(CALLER_SPEECH[:8000])  # half a second, then the caller hangs up
        await caller.hangup()
        record_done = await _wait_record(bot, 0)
        assert record_done.hung_up == "hangup"
        assert isinstance(record_done.events[-1], CallerHungUp)
        await caller.close()


async def test_16khz_caller_is_resampled_at_the_edge() -> None:
    bot = PacedBot(echo=True, end_on=None)
    async with serve(bot) as port:
        caller = AudioSocketCaller(rate=16000)
        await caller.connect("127.0.0.1", port)
        speech16 = resample(CALLER_SPEECH, 8000, 16000)
        await caller.play(speech16[: 16000 * 2])  # 1 s at 16 kHz
        await asyncio.sleep(0.3)
        await caller.hangup()
        record = await _wait_record(bot, 0)
        await caller.close()
    frames_in = [e.frame for e in record.events if isinstance(e, AudioIn)]
    assert {len(f.pcm) for f in frames_in} == {320} and {f.format.rate for f in frames_in} == {8000}
    inbound = b"".join(f.pcm for f in frames_in)
    assert abs(len(inbound) - 16000) <= 640  # 1 s at 8 kHz, give or take the filter delay
    # What the bot heard is the caller's speech (soxr delay of a few samples aside).
    best = max(correlation(inbound[k * 2 :], CALLER_SPEECH[:16000]) for k in range(0, 40))
    assert best > 0.9
    # The bot answers at the caller's rate: 0x12 messages of 640 bytes (20 ms at 16 kHz).
    replies = [m for m in caller.audio_messages() if m.kind == 0x12]
    assert len(replies) > 40 and {len(m.payload) for m in replies} == {640}
    assert all(m.kind == 0x12 for m in caller.audio_messages())


async def test_dtmf_digits_reach_the_bot_in_order() -> None:
    bot = PacedBot(end_on="#")
    async with serve(bot) as port:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", port)
        for digit in "12*9#":
            await caller.send_dtmf(digit)
        assert await caller.wait_for_hangup(2.0) == "bot_hangup"
        await caller.close()
    assert bot.calls[0].digits() == "12*9#"


@pytest.mark.parametrize(
    ("bad_bytes", "reason"),
    [
        (b"\x02\x00\x00", "protocol_error"),  # unknown kind
        (b"\x10\xff\xff" + bytes(1000), "protocol_error"),  # a 65,535-byte frame
        (b"\x03\x00\x02\x31\x32", "protocol_error"),  # DTMF of two bytes
    ],
    ids=["unknown-kind", "65535-byte-frame", "long-dtmf"],
)
async def test_malformed_input_closes_that_call_only(bad_bytes: bytes, reason: str) -> None:
    bot = PacedBot(GREETING)
    async with serve(bot) as port:
        healthy, broken = AudioSocketCaller(), AudioSocketCaller()
        await healthy.connect("127.0.0.1", port)
        await broken.connect("127.0.0.1", port)
        await broken.play_silence(0.2)
        await broken.send_raw(bad_bytes)
        assert await broken.wait_for_hangup(1.0) == "bot_close"
        await healthy.play_silence(0.5)
        assert not healthy.ended and healthy.max_gap_s() < 0.5
        await healthy.send_dtmf("0")
        assert await healthy.wait_for_hangup(2.0) == "bot_hangup"
        for caller in (healthy, broken):
            await caller.close()
    by_id = {r.call_id: r for r in bot.calls}
    assert by_id[broken.call_uuid].hung_up == reason
    assert by_id[healthy.call_uuid].ended_by_bot


async def test_length_larger_than_the_data_then_close() -> None:
    bot = PacedBot()
    async with serve(bot) as port:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", port)
        await caller.send_raw(b"\x10\x01\x40" + bytes(100))  # announces 320, sends 100
        await caller.hangup()
        record = await _wait_record(bot, 0)
        await caller.close()
    assert record.hung_up == "protocol_error"


@pytest.mark.parametrize(
    "first_bytes",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x10\x01\x40" + bytes(320), b"\x01\x00\x20"],
    ids=["http", "audio-first", "long-uuid"],
)
async def test_garbage_before_the_uuid_never_reaches_the_bot(first_bytes: bytes) -> None:
    bot = PacedBot()
    async with serve(bot) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first_bytes)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 1.0) == b""  # closed on us
        writer.close()
    assert bot.calls == []


async def test_slow_loris_without_uuid_is_dropped_after_the_timeout() -> None:
    bot = PacedBot()
    async with serve(bot, uuid_timeout_s=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for byte in encode_uuid(uuid.uuid4())[:10]:  # a trickle that never completes in time
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
            if reader.at_eof():
                break
        assert await asyncio.wait_for(reader.read(), 1.0) == b""
        assert loop.time() - started < 0.8
        writer.close()
    assert bot.calls == []


async def test_idle_peer_is_hung_up() -> None:
    bot = PacedBot()
    async with serve(bot, idle_timeout_s=0.3) as port:
        caller = AudioSocketCaller(no_traffic_timeout_s=None)
        await caller.connect("127.0.0.1", port)
        record = await _wait_record(bot, 0)
        assert record.hung_up == "timeout"
        assert await caller.wait_for_hangup(1.0) == "bot_close"
        await caller.close()


async def test_a_peer_that_never_reads_is_closed() -> None:
    transports: list[MediaTransport] = []
    outcome: list[str] = []

    async def flood(transport: MediaTransport) -> None:
        transports.append(transport)
        events = transport.events()
        assert isinstance(await anext(events), CallStarted)
        for _ in range(40_000):  # 13 MB: far more than loopback socket buffers hold
            await transport.send(SILENCE_FRAME)
            if getattr(transport, "closed", False):
                break
        async for event in events:
            if isinstance(event, CallerHungUp):
                outcome.append(event.reason)

    async with serve(flood, max_write_buffer=16 * 1024) as port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(encode_uuid(uuid.uuid4()) + encode_audio(bytes(320)))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if outcome:
                break
        sock.close()
    assert outcome == ["peer_not_reading"]


async def test_twenty_concurrent_calls_all_get_their_greeting() -> None:
    bot = PacedBot(GREETING)
    async with serve(bot) as port:
        callers = [AudioSocketCaller() for _ in range(20)]
        await asyncio.gather(*(c.connect("127.0.0.1", port) for c in callers))
        await asyncio.gather(*(c.play_silence(1.4) for c in callers))
        for caller in callers:
            await caller.send_dtmf("0")
        endings = await asyncio.gather(*(c.wait_for_hangup(3.0) for c in callers))
        for caller in callers:
            await caller.close()
    assert set(endings) == {"bot_hangup"}
    for caller in callers:
        assert caller.received_audio().startswith(GREETING)
        assert caller.max_gap_s() < 1.0 and caller.violations == []
    assert sorted(r.call_id for r in bot.calls) == sorted(c.call_uuid for c in callers)


async def test_handler_crash_still_ends_the_media_session() -> None:
    async def crashing(transport: MediaTransport) -> None:
        async for event in transport.events():
            if isinstance(event, DtmfIn):
                raise RuntimeError("boom")

    async with serve(crashing) as port:
        caller = AudioSocketCaller(no_traffic_timeout_s=None)
        await caller.connect("127.0.0.1", port)
        await caller.send_dtmf("5")
        # The caller is not dropped: 0x00 lets the dialplan go on to the queue.
        assert await caller.wait_for_hangup(2.0) == "bot_hangup"
        await caller.close()


async def _wait_record(bot: PacedBot, index: int) -> CallRecord:
    assert await bot.wait_for_calls(index + 1, 2.0)
    record = bot.calls[index]
    await asyncio.wait_for(record.done.wait(), 3.0)
    return record


async def test_uuid_audio_and_dtmf_in_one_segment() -> None:
    bot = PacedBot(end_on="0")
    async with serve(bot) as port:
        caller = AudioSocketCaller()
        await caller.open_raw("127.0.0.1", port)
        call_uuid = uuid.uuid4()
        frames = [bytes([i]) * 320 for i in range(1, 4)]
        await caller.send_raw(
            encode_uuid(call_uuid) + b"".join(encode_audio(f) for f in frames) + b"\x03\x00\x010"
        )
        assert await caller.wait_for_hangup(2.0) == "bot_hangup"
        await caller.close()
    events = bot.calls[0].events
    assert events[0] == CallStarted(call_id=str(call_uuid))
    assert [e.frame.pcm for e in events if isinstance(e, AudioIn)] == frames
    assert bot.calls[0].digits() == "0"


async def test_asterisk_error_message_ends_the_call() -> None:
    bot = PacedBot()
    async with serve(bot) as port:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", port)
        await caller.send_raw(b"\xff\x00\x01\x02")  # 0x02: frame forwarding error
        record = await _wait_record(bot, 0)
        await caller.close()
    assert record.hung_up == "asterisk_error"
