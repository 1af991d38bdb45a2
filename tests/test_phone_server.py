"""The phone server at its process boundary: the Asterisk emulator on one side, the real
session, Rasa model, Whisper stand-in, Silero and voice on the other."""

from __future__ import annotations

import asyncio
import struct
import uuid

import pytest

from telephony.emulator import AmiEmulator, AudioSocketCaller, ChanWebSocketPeer
from tests.phone_helpers import phone_server
from tests.speech_helpers import french_prompt_pcm
from voicebot.call.runtime import Runtime


async def test_greeting_paced_audio_and_dtmf_zero_handoff(call_runtime: Runtime) -> None:
    async with phone_server(call_runtime) as server:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", server.audiosocket_port)
        play = asyncio.create_task(caller.play_silence(4.0))
        first_voice = await caller.wait_for_voice(timeout=2.0)
        assert first_voice is not None and first_voice < 2.0, "no greeting within 2 s"
        await play
        await caller.send_dtmf("0")
        sent_at = asyncio.get_running_loop().time()
        ended_by = await caller.wait_for_hangup(3.0)
        assert ended_by == "bot_hangup", caller.violations
        assert asyncio.get_running_loop().time() - sent_at < 3.0
        assert caller.max_gap_s() < 0.5, "the bot's audio stopped: Asterisk would hang up"
        assert not caller.violations
        await caller.close()


async def test_french_recording_is_transcribed_and_answered(call_runtime: Runtime) -> None:
    async with phone_server(call_runtime) as server:
        hub_events = server.runtime.services.hub.subscribe()
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", server.audiosocket_port)
        # Like a real caller: listen to the greeting, then say « Au revoir ».
        await caller.play_silence(1.0)
        keep_line = asyncio.create_task(caller.play_silence(25.0))
        events = []
        while True:
            event = await asyncio.wait_for(hub_events.get(), 30)
            events.append(event)
            if event.kind == "state" and event.data.get("state") == "écoute":
                break
        keep_line.cancel()
        await caller.play(french_prompt_pcm("vm-goodbye"))
        tail = asyncio.create_task(caller.play_silence(10.0))
        ended_by = await caller.wait_for_hangup(30.0)
        tail.cancel()
        while not hub_events.empty():
            events.append(hub_events.get_nowait())
        heard = [e.data["text"] for e in events if e.kind == "caller"]
        answers = [e.data for e in events if e.kind == "bot"]
        assert heard and "revoir" in heard[0].lower()
        assert answers[-1]["intent"] == "au_revoir"
        assert ended_by == "bot_hangup"
        assert not caller.violations
        await caller.close()


async def test_handoff_puts_context_on_the_channel_before_ending(call_runtime: Runtime) -> None:
    ami = AmiEmulator(secret="s3cret")
    port = await ami.start()
    try:
        async with phone_server(
            call_runtime, host="127.0.0.1", port=port, secret="s3cret"
        ) as server:
            assert server.call_control is not None
            await server.call_control.wait_connected(5.0)
            call_uuid = str(uuid.uuid4())
            channel = ami.add_channel("PJSIP/alice-00000001", ALLO_UUID=call_uuid)
            caller = AudioSocketCaller()
            await caller.connect("127.0.0.1", server.audiosocket_port, call_uuid)
            line = asyncio.create_task(caller.play_silence(20.0))
            await caller.wait_for_voice(timeout=5.0)
            await caller.send_dtmf("0")
            assert await caller.wait_for_hangup(5.0) == "bot_hangup"
            line.cancel()
            variables = channel.variables
            assert variables.get("__ALLO_HANDOFF_REASON") == "dtmf"
            assert "__ALLO_SUMMARY" in variables
            await caller.close()
    finally:
        await ami.stop()


async def test_handoff_still_happens_when_ami_is_down(call_runtime: Runtime) -> None:
    ami = AmiEmulator(secret="s3cret")
    port = await ami.start()
    await ami.stop()  # Asterisk's manager is gone: nothing listens there any more
    async with phone_server(call_runtime, host="127.0.0.1", port=port, secret="s3cret") as server:
        ended = server.runtime.services.hub.subscribe()
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", server.audiosocket_port)
        line = asyncio.create_task(caller.play_silence(20.0))
        await caller.wait_for_voice(timeout=5.0)
        await caller.send_dtmf("0")
        assert await caller.wait_for_hangup(8.0) == "bot_hangup"
        line.cancel()
        handoffs = []
        while not ended.empty():
            event = ended.get_nowait()
            if event.kind == "handoff":
                handoffs.append(event)
        assert handoffs and handoffs[0].data["context_delivered"] is False
        await caller.close()


async def test_malformed_call_is_closed_and_others_carry_on(call_runtime: Runtime) -> None:
    async with phone_server(call_runtime) as server:
        good = AudioSocketCaller()
        await good.connect("127.0.0.1", server.audiosocket_port)
        line = asyncio.create_task(good.play_silence(6.0))
        bad_inputs = [
            b"GET / HTTP/1.1\r\n\r\n",  # garbage before the UUID
            b"\x01\x00\x10" + uuid.uuid4().bytes + b"\x42\x00\x01\x00",  # unknown kind
            b"\x01\x00\x10" + uuid.uuid4().bytes + b"\x10\xff\xff" + bytes(100),  # 65535-byte frame
        ]
        bad_callers = []
        for data in bad_inputs:
            bad = AudioSocketCaller(no_traffic_timeout_s=None)
            await bad.open_raw("127.0.0.1", server.audiosocket_port)
            await bad.send_raw(data)
            bad_callers.append(bad)
        for bad in bad_callers:
            assert await bad.wait_for_hangup(5.0) is not None, "a malformed call was left open"
        assert await good.wait_for_voice(timeout=5.0) is not None
        await line
        assert not good.ended and good.max_gap_s() < 0.5
        for caller in (good, *bad_callers):
            await caller.close()


async def test_twenty_concurrent_calls_all_get_their_greeting(call_runtime: Runtime) -> None:
    async with phone_server(call_runtime) as server:
        callers = [AudioSocketCaller() for _ in range(20)]
        for caller in callers:
            await caller.connect("127.0.0.1", server.audiosocket_port)
        lines = [asyncio.create_task(c.play_silence(6.0)) for c in callers]
        voices = await asyncio.gather(*(c.wait_for_voice(timeout=6.0) for c in callers))
        await asyncio.gather(*lines)
        assert all(v is not None for v in voices), voices
        assert all(not c.violations for c in callers)
        print(f"first greeting audio, 20 calls: max {max(v for v in voices if v):.2f} s")
        for caller in callers:
            await caller.close()


async def test_websocket_media_greeting_and_dtmf_handoff(call_runtime: Runtime) -> None:
    async with phone_server(call_runtime) as server:
        peer = ChanWebSocketPeer(codec="slin16")
        await peer.connect(f"ws://127.0.0.1:{server.websocket_port}/")
        line = asyncio.create_task(peer.play_silence(10.0))
        assert await peer.wait_for_received(16000 * 2, timeout=6.0), "no greeting audio"
        await peer.send_dtmf("0")
        assert await peer.wait_for_command("HANGUP", timeout=5.0) is not None
        line.cancel()
        await peer.close()


def _independent_audiosocket_client(
    port: int, seconds: float
) -> tuple[float | None, float, float | None]:
    """A plain-socket AudioSocket client written from the protocol, not the project's code."""
    import socket
    import time

    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.01)
    sock.sendall(b"\x01\x00\x10" + uuid.uuid4().bytes)
    start = time.monotonic()
    buffer = b""
    first_voice = None
    hangup_at = None
    last_rx = start
    max_gap = 0.0
    sent_dtmf_at = None
    next_send = start
    while time.monotonic() - start < seconds + 4 and hangup_at is None:
        now = time.monotonic()
        if now >= next_send:
            sock.sendall(b"\x10\x01\x40" + bytes(320))  # 20 ms of silence
            next_send += 0.02
        if sent_dtmf_at is None and now - start >= seconds:
            sock.sendall(b"\x03\x00\x01" + b"0")
            sent_dtmf_at = now
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            chunk = None
        except OSError:
            chunk = None
        if chunk == b"":
            break
        if chunk:
            max_gap = max(max_gap, time.monotonic() - last_rx)
            last_rx = time.monotonic()
            buffer += chunk
        while len(buffer) >= 3:
            kind = buffer[0]
            (length,) = struct.unpack(">H", buffer[1:3])
            if len(buffer) < 3 + length:
                break
            payload, buffer = buffer[3 : 3 + length], buffer[3 + length :]
            if (
                kind == 0x10
                and first_voice is None
                and any(payload[i + 1] not in (0, 255) for i in range(0, len(payload), 2))
            ):
                first_voice = time.monotonic() - start
            if kind == 0x00:
                hangup_at = time.monotonic() - (sent_dtmf_at or start)
    sock.close()
    return first_voice, max_gap, hangup_at


async def test_independent_client_sees_greeting_no_gap_and_hangup_after_zero(
    call_runtime: Runtime,
) -> None:
    async with phone_server(call_runtime) as server:
        first_voice, max_gap, hangup_after = await asyncio.to_thread(
            _independent_audiosocket_client, server.audiosocket_port, 5.0
        )
    assert first_voice is not None and first_voice < 2.0
    assert max_gap < 2.0
    assert hangup_after is not None and hangup_after < 3.0


@pytest.mark.parametrize("reason", ["arrêt du service"])
async def test_shutdown_hands_live_calls_to_operators(call_runtime: Runtime, reason: str) -> None:
    async with phone_server(call_runtime) as server:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", server.audiosocket_port)
        line = asyncio.create_task(caller.play_silence(20.0))
        await caller.wait_for_voice(timeout=5.0)
        for session in list(server.sessions.values()):
            session.request_handoff(reason)
        assert await caller.wait_for_hangup(10.0) == "bot_hangup"
        line.cancel()
        await caller.close()


def test_settling_the_heap_keeps_loaded_objects_out_of_full_collections() -> None:
    import gc

    from voicebot.call.runtime import settle_heap

    loaded = [{"model": i} for i in range(50_000)]  # long-lived, like Rasa's and TF's objects
    try:
        frozen = settle_heap()
        assert frozen >= len(loaded)
        # a full collection now walks only what was created since
        assert len(gc.get_objects(generation=2)) < frozen
    finally:
        gc.unfreeze()


async def test_a_finished_call_frees_its_session_without_the_garbage_collector(
    call_runtime: Runtime,
) -> None:
    """A call's session (its recognizer, ~18 MB) must go when the call ends: full garbage
    collections are rare, so anything left in a reference cycle piles up call after call."""
    import gc
    import weakref

    async with phone_server(call_runtime) as server:
        gc.collect()
        gc.disable()  # only reference counting: a cycle would keep the session alive
        try:
            caller = AudioSocketCaller()
            await caller.connect("127.0.0.1", server.audiosocket_port)
            await caller.wait_for_voice(timeout=5.0)
            session = weakref.ref(next(iter(server.sessions.values())))
            await caller.play(french_prompt_pcm("auth-thankyou"))  # the recognizer is used
            await caller.play_silence(1.0)
            await caller.hangup()
            await caller.close()
            for _ in range(100):
                if not server.sessions and not server.tasks:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            assert not server.sessions
            assert session() is None, [type(r).__name__ for r in gc.get_referrers(session())]
        finally:
            gc.enable()
