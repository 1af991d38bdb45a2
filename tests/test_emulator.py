"""The Asterisk emulator itself: it must hold the bot to Asterisk's rules, so it is tested
against scripted peers written with plain sockets (not with the project's servers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from websockets.legacy.server import WebSocketServerProtocol, serve
from websockets.typing import Subprotocol

from telephony.audiosocket.codec import encode_audio, encode_hangup, encode_uuid
from telephony.chan_websocket.codec import DriverStatus, parse_event
from telephony.emulator import AmiEmulator, AudioSocketCaller, ChanWebSocketPeer

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_bot(script: Script) -> AsyncIterator[int]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


# --- AudioSocket caller ----------------------------------------------------------------------


async def test_uuid_first_and_paced_caller_audio() -> None:
    arrivals: list[float] = []
    first_bytes = bytearray()
    script_done = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_bytes.extend(await reader.readexactly(19))
        loop = asyncio.get_running_loop()
        while True:
            try:
                header = await reader.readexactly(3)
            except asyncio.IncompleteReadError:
                break
            await reader.readexactly(int.from_bytes(header[1:], "big"))
            arrivals.append(loop.time())
            writer.write(encode_audio(bytes(320)))  # keep the call up
        script_done.set()

    async with tcp_bot(script) as port:
        caller = AudioSocketCaller()
        call = await caller.connect("127.0.0.1", port, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        assert await caller.play(bytes(320 * 25)) == 25
        await caller.hangup()
        await asyncio.wait_for(script_done.wait(), 5.0)
        await caller.close()
    assert bytes(first_bytes) == encode_uuid(uuid.UUID(call))
    assert len(arrivals) == 25
    span = arrivals[-1] - arrivals[0]
    assert 0.46 < span < 1.5  # 24 intervals of 20 ms: paced in real time, not bursted
    assert caller.ended_by == "caller"


async def test_two_seconds_without_bot_traffic_hangs_up() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads, never answers

    async with tcp_bot(silent) as port:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", port)
        assert await caller.wait_for_hangup(1.5) is None  # still up after 1.5 s
        assert await caller.wait_for_hangup(1.0) == "timeout"
        await caller.close()
    assert caller.violations and "2.0" in caller.violations[0]
    assert 2.0 <= caller.max_gap_s() < 2.3


async def test_only_audio_and_hangup_kinds_are_allowed_from_the_bot() -> None:
    for bad in (encode_uuid(uuid.uuid4()), b"\x03\x00\x011", b"\x10\x00\x00", b"\xff\x00\x00"):

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(encode_audio(bytes(320)) + bad)  # noqa: B023 - used at once
            await reader.read()

        async with tcp_bot(script) as port:
            caller = AudioSocketCaller()
            await caller.connect("127.0.0.1", port)
            assert await caller.wait_for_hangup(1.0) == "violation", bad
            await caller.close()
        assert len(caller.audio_messages()) == 1 and caller.violations


async def test_recording_gaps_voice_and_the_bots_hangup() -> None:
    voice = b"\x00\x10" * 160  # a frame whose peak is 4096

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_audio(bytes(320)))
        await asyncio.sleep(0.3)
        writer.write(encode_audio(voice))
        await asyncio.sleep(0.1)
        writer.write(encode_hangup())
        await reader.read()

    async with tcp_bot(script) as port:
        caller = AudioSocketCaller()
        await caller.connect("127.0.0.1", port)
        assert await caller.wait_for_hangup(1.0) == "bot_hangup"
        await caller.close()
    kinds = [kind for _, kind, _ in caller.received_frames]
    assert kinds == [0x10, 0x10, 0x00]
    first_voice = caller.first_voice_s()
    assert first_voice is not None and 0.28 < first_voice < 0.45
    assert 0.28 < caller.max_gap_s() < 0.45
    assert caller.received_audio() == bytes(320) + voice


# --- chan_websocket peer ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def ws_bot(
    handler: Callable[[WebSocketServerProtocol], Awaitable[None]],
) -> AsyncIterator[str]:
    server = await serve(handler, "127.0.0.1", 0, subprotocols=[Subprotocol("media")])
    try:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_media_start_playout_queue_xoff_xon_and_hangup() -> None:
    seen: list[str | bytes] = []

    async def bot(ws: WebSocketServerProtocol) -> None:
        seen.append(ws.subprotocol or "")
        seen.append(await ws.recv())
        await ws.send(bytes(640) * 950 + bytes(100))  # 950 frames and a partial one
        await asyncio.sleep(0.1)
        await ws.send("GET_STATUS")
        await asyncio.sleep(0.1)
        await ws.send("FLUSH_MEDIA")
        await asyncio.sleep(0.1)
        await ws.send("HANGUP")
        with contextlib.suppress(Exception):
            async for message in ws:
                seen.append(message)

    async with ws_bot(bot) as uri:
        peer = ChanWebSocketPeer(codec="slin16")
        await peer.connect(uri)
        assert await peer.wait_for_close(2.0) == "bot_hangup"
        await peer.close()
    assert seen[0] == "media"
    assert seen[1] == (
        "MEDIA_START connection_id:voicebot channel:WebSocket/voicebot/0x7f3a5c001230"
        " channel_id:1712345678.42 format:slin16 optimal_frame_size:640 ptime:20"
    )
    assert peer.dropped_bytes == 100  # Asterisk drops a trailing partial frame
    texts = peer.events_sent[1:]
    assert texts[0] == "MEDIA_XOFF"  # 900 frames queued
    status = parse_event(next(t for t in texts if t.startswith("STATUS")))
    assert isinstance(status, DriverStatus) and status.queue_full
    assert 930 < status.queue_length < 950  # 950 queued, a few played in 0.1 s
    assert "MEDIA_XON" in texts  # after FLUSH_MEDIA emptied the queue
    assert peer.command_names() == ["GET_STATUS", "FLUSH_MEDIA", "HANGUP"]
    assert peer.close_code == 1000


async def test_json_peer_and_long_texts_are_ignored() -> None:
    seen: list[str | bytes] = []

    async def bot(ws: WebSocketServerProtocol) -> None:
        seen.append(await ws.recv())
        await ws.send("MARK_MEDIA " + "x" * 200)  # over 128 bytes: Asterisk ignores it
        await ws.send('{"command":"MARK_MEDIA","correlation_id":"m1"}')
        seen.append(await ws.recv())
        await ws.close()

    async with ws_bot(bot) as uri:
        peer = ChanWebSocketPeer(codec="slin", control_format="json")
        await peer.connect(uri)
        assert await peer.wait_for_close(2.0) == "bot_close"
        await peer.close()
    start = json.loads(seen[0])
    assert start["event"] == "MEDIA_START" and start["optimal_frame_size"] == 320
    assert json.loads(seen[1]) == {
        "event": "MEDIA_MARK_PROCESSED",
        "channel_id": "1712345678.42",
        "correlation_id": "m1",
    }
    assert len(peer.ignored_texts) == 1


# --- AMI server ---------------------------------------------------------------------------------


async def ami_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lines: list[str]
) -> dict[str, str]:
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    return await read_message(reader)


async def read_message(reader: asyncio.StreamReader) -> dict[str, str]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
    message = {}
    for line in raw.decode().split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            message[key] = value
    return message


async def test_ami_text_protocol() -> None:
    emulator = AmiEmulator(username="bot", secret="s3cret")
    port = await emulator.start()
    channel = emulator.add_channel("PJSIP/standard-00000001", ALLO_UUID="abc")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readline() == b"Asterisk Call Manager/13.0.0\r\n"

    denied = await ami_exchange(reader, writer, ["Action: Ping", "ActionID: 1"])
    assert denied == {"Response": "Error", "ActionID": "1", "Message": "Permission denied"}
    ok = await ami_exchange(
        reader, writer, ["Action: Login", "ActionID: 2", "Username: bot", "Secret: s3cret"]
    )
    assert ok["Response"] == "Success" and ok["Message"] == "Authentication accepted"
    pong = await ami_exchange(reader, writer, ["Action: Ping", "ActionID: 3"])
    assert pong["Ping"] == "Pong" and pong["ActionID"] == "3" and "Timestamp" in pong
    setvar = [
        "Action: Setvar",
        "ActionID: 4",
        f"Channel: {channel.name}",
        "Variable: __ALLO_INTENT",
        "Value: horaires",
    ]
    assert (await ami_exchange(reader, writer, setvar))["Message"] == "Variable Set"
    getvar = ["Action: Getvar", "ActionID: 5", f"Channel: {channel.name}", "Variable: ALLO_INTENT"]
    assert (await ami_exchange(reader, writer, getvar))["Value"] == "horaires"
    missing = ["Action: Setvar", "ActionID: 6", "Channel: PJSIP/nope-1", "Variable: X", "Value: 1"]
    assert (await ami_exchange(reader, writer, missing))["Message"] == "No such channel"

    listing = await ami_exchange(
        reader, writer, ["Action: Status", "ActionID: 7", "Variables: ALLO_UUID"]
    )
    assert listing["EventList"] == "start" and listing["Message"] == "Channel status will follow"
    status = await read_message(reader)
    assert status["Event"] == "Status" and status["Variable"] == "ALLO_UUID=abc"
    assert status["ActionID"] == "7" and status["Channel"] == channel.name
    complete = await read_message(reader)
    assert complete["Event"] == "StatusComplete" and complete["ListItems"] == "1"

    redirect = [
        "Action: Redirect",
        "ActionID: 8",
        f"Channel: {channel.name}",
        "Context: operateurs",
        "Exten: s",
        "Priority: 1",
    ]
    assert (await ami_exchange(reader, writer, redirect))["Message"] == "Redirect successful"
    assert channel.context == "operateurs"
    unknown = await ami_exchange(reader, writer, ["Action: Frobnicate", "ActionID: 9"])
    assert unknown["Message"].startswith("Invalid/unknown command: Frobnicate.")

    emulator.emit_event("VarSet", Channel=channel.name, Variable="X", Value="1")
    assert (await read_message(reader))["Event"] == "VarSet"

    goodbye = await ami_exchange(reader, writer, ["Action: Logoff", "ActionID: 10"])
    assert goodbye == {
        "Response": "Goodbye",
        "ActionID": "10",
        "Message": "Thanks for all the fish.",
    }
    assert await asyncio.wait_for(reader.read(), 1.0) == b""
    writer.close()
    await emulator.stop()


async def test_ami_bad_login_closes_and_drop_cuts_connections() -> None:
    emulator = AmiEmulator(secret="right")
    port = await emulator.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    failed = await ami_exchange(
        reader, writer, ["Action: Login", "Username: voicebot", "Secret: wrong"]
    )
    assert failed == {"Response": "Error", "Message": "Authentication failed"}
    assert await asyncio.wait_for(reader.read(), 1.0) == b""
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    assert emulator.connection_count == 1
    await emulator.drop_connections()
    assert await asyncio.wait_for(reader.read(), 1.0) == b""
    writer.close()
    assert emulator.logins == [("voicebot", False)]
    await emulator.stop()
