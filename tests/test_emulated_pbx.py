"""The emulated PBX runs the deployed deploy/asterisk/extensions.conf: what a real Asterisk
does after the bot ends the media session (hang up, or queue with the bot's context).

The bot here is a tiny scripted one (a plain asyncio AudioSocket server, a plain WebSocket
server and a plain AMI client), not the project's: these tests are about the dialplan and the
emulator, the project's bot has its own end-to-end tests against the same emulator."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.legacy.server import WebSocketServerProtocol, serve
from websockets.typing import Subprotocol

from telephony.audiosocket.codec import (
    HEADER,
    KIND_DTMF,
    KIND_UUID,
    encode_audio,
    encode_hangup,
)
from telephony.audiosocket.versions import audiosocket_is_current
from telephony.emulator import AmiEmulator, AudioSocketCaller, ChanWebSocketPeer
from telephony.emulator.ami import DEFAULT_ASTERISK_VERSION
from telephony.emulator.dialplan import (
    CallResult,
    DialplanError,
    EmulatedPbx,
    Media,
    Step,
    UnsupportedApplication,
    evaluate_expression,
    separate_args,
    uri_encode,
)
from telephony.emulator.net import free_port
from tests.pbx_helpers import deployed_copy, media_targets, websocket_connection

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "asterisk"
EXTENSIONS = DEPLOY / "extensions.conf"
SILENCE = bytes(320)  # 20 ms at 8 kHz
NUMBER = "0612345678"
# A bot that talked with the caller: longer than any failed connection (2 s) plus the second
# of EPOCH's granularity, which is how the dialplan tells one from the other.
TALKED_S = 4.5
# Asterisk releases whose AudioSocket() returns -1 for every end and drops keys (CURRENT: 0 on
# the bot's hangup, keys forwarded).
OLDER = ("18.26.4", "20.13.0", "21.8.0", "22.3.0")
CURRENT = ("20.14.0", "21.9.0", "22.4.0", "23.4.1")


# --- the other side of the process boundary -----------------------------------------------


class PlainAmi:
    """A minimal AMI client: one action at a time, list actions read to their end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._ids = 0

    @classmethod
    async def login(cls, port: int) -> PlainAmi:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()  # the banner
        ami = cls(reader, writer)
        reply = await ami.send(
            {"Action": "Login", "Username": "voicebot", "Secret": "secret-de-test"}
        )
        assert reply[0]["Response"] == "Success", reply
        return ami

    async def send(self, fields: dict[str, str]) -> list[dict[str, str]]:
        self._ids += 1
        action_id = str(self._ids)
        lines = [f"{k}: {v}" for k, v in {**fields, "ActionID": action_id}.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        messages: list[dict[str, str]] = []
        while True:
            message = await self._read()
            if message.get("ActionID") != action_id:
                continue
            messages.append(message)
            if messages[0].get("EventList") != "start" or message.get("EventList") == "Complete":
                return messages

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send({"Action": "Logoff"})
        self.writer.close()

    async def _read(self) -> dict[str, str]:
        message: dict[str, str] = {}
        while True:
            line = (await self.reader.readline()).decode().rstrip("\r\n")
            if not line:
                if message:
                    return message
                continue
            key, _, value = line.partition(": ")
            message[key] = value


@dataclass
class BotCall:
    call_id: str = ""
    path: str = ""  # the WebSocket request's path and query
    media_start: str = ""
    status: dict[str, str] = field(default_factory=dict)  # the caller's Status event
    digits: str = ""
    caller_gone: bool = False
    ami_failed: bool = False


@dataclass
class TinyBot:
    """Answers AudioSocket and media WebSocket calls: sends 20 ms of silence every 20 ms,
    then (after ``talk_s``, or on the caller's first key) sets its decision through AMI and
    ends the media session."""

    decision: str | None = "raccrocher"  # None: it never uses AMI
    reason: str = ""
    intent: str = ""
    summary: str = ""
    talk_s: float = 0.3
    on_dtmf: bool = False
    silent: bool = False  # sends nothing: Asterisk's AudioSocket gives up after 2 s
    end: Literal["hangup", "close"] = "hangup"
    calls: list[BotCall] = field(default_factory=list)
    ami_port: int = 0  # set by emulated_pbx()

    async def audiosocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = BotCall()
        self.calls.append(record)
        kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
        assert kind == KIND_UUID
        record.call_id = str(uuid.UUID(bytes=await reader.readexactly(length)))
        trigger = asyncio.Event()

        async def read() -> None:
            while True:
                try:
                    kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
                    payload = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    record.caller_gone = True
                    trigger.set()
                    return
                if kind == KIND_DTMF:
                    record.digits += payload.decode()
                    trigger.set()

        async def send_silence() -> None:
            while not self.silent:
                writer.write(encode_audio(SILENCE))
                await writer.drain()
                await asyncio.sleep(0.02)

        async def end() -> None:
            if self.end == "hangup":
                writer.write(encode_hangup())
                await writer.drain()
            writer.close()

        await self._converse(record, trigger, read(), send_silence(), end)

    async def websocket(self, ws: WebSocketServerProtocol, path: str) -> None:
        record = BotCall(path=path)
        self.calls.append(record)
        record.call_id = parse_qs(urlsplit(path).query)["allo_uuid"][0]
        trigger = asyncio.Event()

        async def read() -> None:
            try:
                async for message in ws:
                    if isinstance(message, str) and message.startswith("MEDIA_START"):
                        record.media_start = message
                    elif isinstance(message, str) and message.startswith("DTMF_END"):
                        record.digits += re.findall(r"digit:(\S)", message)[0]
                        trigger.set()
            except ConnectionClosed:
                pass
            record.caller_gone = True
            trigger.set()

        async def send_silence() -> None:
            with contextlib.suppress(ConnectionClosed):
                while not self.silent:
                    await ws.send(SILENCE)
                    await asyncio.sleep(0.02)

        async def end() -> None:
            if self.end == "hangup":
                await ws.send("HANGUP")
            await ws.wait_closed()

        await self._converse(record, trigger, read(), send_silence(), end)

    async def _converse(
        self,
        record: BotCall,
        trigger: asyncio.Event,
        reading: Coroutine[Any, Any, None],
        sending: Coroutine[Any, Any, None],
        end: Callable[[], Awaitable[None]],
    ) -> None:
        reader = asyncio.ensure_future(reading)
        pacer = asyncio.ensure_future(sending)
        try:
            if self.on_dtmf:
                await trigger.wait()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(trigger.wait(), self.talk_s)
            if record.caller_gone or self.silent:
                await reader
                return
            await self._decide(record)
            pacer.cancel()
            await end()
        finally:
            for task in (reader, pacer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _decide(self, record: BotCall) -> None:
        """What the real bot does: find the caller's channel by ALLO_UUID with Status, set
        the context first and the decision last (the dialplan reads it next)."""
        if self.decision is None:
            return
        try:
            ami = await PlainAmi.login(self.ami_port)
        except OSError:
            record.ami_failed = True
            return
        try:
            replies = await ami.send({"Action": "Status", "Variables": "ALLO_UUID"})
            for reply in replies:
                if (
                    reply.get("Event") == "Status"
                    and reply.get("Variable", "").lower() == f"allo_uuid={record.call_id}"
                    and not reply["Channel"].startswith(("AudioSocket/", "WebSocket/"))
                ):
                    record.status = reply
            variables = {"ALLO_DECISION": self.decision}
            if self.decision == "transfert":
                variables = {
                    "__ALLO_HANDOFF_REASON": self.reason,
                    "__ALLO_INTENT": self.intent,
                    "__ALLO_SUMMARY": self.summary,
                    **variables,
                }
            channel = record.status["Channel"]
            for name, value in variables.items():
                setvar = {"Action": "Setvar", "Channel": channel, "Variable": name, "Value": value}
                reply = (await ami.send(setvar))[0]
                assert reply["Message"] == "Variable Set", reply
        finally:
            await ami.close()


@contextlib.asynccontextmanager
async def emulated_pbx(
    bot: TinyBot | None = None,
    *,
    extensions: Path = EXTENSIONS,
    asterisk_version: str = DEFAULT_ASTERISK_VERSION,
) -> AsyncIterator[tuple[EmulatedPbx, AmiEmulator]]:
    """An AMI emulator, the tiny bot's two servers (without a bot: ports nobody listens
    on), and the PBX pointed at them."""
    ami = AmiEmulator(asterisk_version=asterisk_version)
    await ami.start()
    servers: list[asyncio.Server] = []
    ws_server = None
    if bot is not None:
        bot.ami_port = ami.port
    try:
        if bot is None:
            audiosocket_port = ws_port = free_port()  # nobody listens: the bot is down
        else:
            servers.append(await asyncio.start_server(bot.audiosocket, "127.0.0.1", 0))
            audiosocket_port = servers[0].sockets[0].getsockname()[1]
            ws_server = await serve(
                bot.websocket, "127.0.0.1", 0, subprotocols=[Subprotocol("media")]
            )
            ws_port = next(iter(ws_server.sockets)).getsockname()[1]
        pbx = EmulatedPbx(
            ami=ami,
            extensions=extensions,
            globals_override={"ALLO_AUDIOSOCKET_1": f"127.0.0.1:{audiosocket_port}"},
            websocket_uri=f"ws://127.0.0.1:{ws_port}",
        )
        yield pbx, ami
    finally:
        for server in servers:
            server.close()
        if ws_server is not None:
            ws_server.close()
            await ws_server.wait_closed()
        await ami.stop()


def apps(result: CallResult) -> list[str]:
    return [step.app for step in result.trace]


def contexts(result: CallResult) -> list[str]:
    return list(dict.fromkeys(step.context for step in result.trace))


# --- AudioSocket (3939) --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["18.26.4", "20.13.0", "20.14.0", "23.4.1"])
async def test_raccrocher_hangs_the_caller_up(version: str) -> None:
    """On every Asterisk: the older ones report the bot's normal end as a failure
    (TRYSTATUS=FAILED), and the dialplan goes by the decision, not by that."""
    bot = TinyBot(decision="raccrocher")
    async with emulated_pbx(bot, asterisk_version=version) as (pbx, ami):
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=20)
        assert result.channel not in ami.channels  # hung up: gone from AMI
    assert result.ending == "hangup" and result.hangup_cause == 16
    assert result.variables["ALLO_DECISION"] == "raccrocher"
    current = audiosocket_is_current(version)
    assert result.app_status == {"TRYSTATUS": "SUCCESS" if current else "FAILED"}
    assert len(media_targets(result)) == 1  # not offered to the host again
    assert contexts(result) == [
        "allonantes-entrant",
        "allonantes-audiosocket",
        "allonantes-decision",
    ]
    assert result.trace[-1] == Step("allonantes-decision", "s", 4, "Hangup", "16")
    assert "Queue" not in apps(result) and result.queue is None
    # The bot reached the caller's channel, by the UUID AudioSocket gave it, while it ran.
    call = bot.calls[0]
    assert call.call_id == result.variables["ALLO_UUID"]
    assert call.status["Channel"] == result.channel
    assert call.status["CallerIDNum"] == NUMBER and call.status["CallerIDName"] == "<unknown>"
    assert call.status["Context"] == "allonantes-audiosocket"
    assert call.status["Application"] == "AudioSocket" and call.status["ChannelStateDesc"] == "Up"
    assert isinstance(result.media, AudioSocketCaller)
    assert result.media.ended_by == "bot_hangup" and result.media.received_audio()


async def test_transfer_on_the_callers_key_queues_with_the_context() -> None:
    bot = TinyBot(
        decision="transfert",
        reason="dtmf",
        intent="etat_civil",
        summary="Acte de naissance",
        on_dtmf=True,
    )

    async def caller(media: Media) -> None:
        await media.play_silence(0.2)
        await media.send_dtmf("0")
        await media.play_silence(5.0)  # still on the line when the bot hands over

    async with emulated_pbx(bot) as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, caller=caller, timeout_s=20)
    assert bot.calls[0].digits == "0"
    assert result.ending == "queue"
    assert result.queue is not None and result.queue.name == "operators"
    assert result.variables["ALLO_HANDOFF_REASON"] == "dtmf"
    assert result.raw_variables["__ALLO_HANDOFF_REASON"] == "dtmf"  # inherited by operators
    assert result.callerid_name == "dtmf etat_civil"
    # What an operator's phone receives: Queue's b() handler ran on the operator's channel,
    # which sees only inherited variables.
    assert result.operator_headers == {
        "X-Allo-Motif": "dtmf",
        "X-Allo-Intention": "etat_civil",
        "X-Allo-Resume": "Acte de naissance",
    }
    assert [step.app for step in result.operator_trace] == ["Set", "Set", "Set", "Return"]
    assert contexts(result)[-2:] == ["allonantes-decision", "allonantes-operateurs"]


@pytest.mark.parametrize("version", ["20.13.0", "23.4.1"])
async def test_no_decision_because_ami_is_down_queues_with_reason_inconnu(version: str) -> None:
    bot = TinyBot(decision="raccrocher", talk_s=TALKED_S)
    async with emulated_pbx(bot, asterisk_version=version) as (pbx, ami):
        await ami.stop()
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=20)
    assert bot.calls[0].ami_failed
    current = audiosocket_is_current(version)
    assert result.app_status == {"TRYSTATUS": "SUCCESS" if current else "FAILED"}
    assert "ALLO_DECISION" not in result.variables
    assert result.ending == "queue"
    assert result.variables["ALLO_HANDOFF_REASON"] == "inconnu"
    # "inconnu " with an empty intent: CALLERID(name) trims trailing blanks.
    assert result.callerid_name == "inconnu"
    assert result.operator_headers["X-Allo-Motif"] == "inconnu"


async def test_unreachable_bot_queues_with_robot_indisponible() -> None:
    async with emulated_pbx() as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=20)
    assert result.app_status == {"TRYSTATUS": "FAILED"}
    assert result.ending == "queue"
    assert result.variables["ALLO_HANDOFF_REASON"] == "robot_indisponible"
    assert result.callerid_name == "robot_indisponible"
    assert "allonantes-decision" not in contexts(result)


async def test_silent_bot_is_given_up_after_2_s_and_the_caller_queued() -> None:
    bot = TinyBot(decision=None, silent=True)
    async with emulated_pbx(bot) as (pbx, _):
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=20)
        assert loop.time() - start >= 2.0
    assert isinstance(result.media, AudioSocketCaller) and result.media.ended_by == "timeout"
    assert result.app_status == {"TRYSTATUS": "FAILED"}
    assert result.ending == "queue"
    assert result.variables["ALLO_HANDOFF_REASON"] == "robot_indisponible"


async def test_caller_hanging_up_stops_the_dialplan() -> None:
    bot = TinyBot(decision="transfert", reason="demande", on_dtmf=True)

    async def caller(media: Media) -> None:
        await media.play_silence(0.2)
        await media.hangup()

    async with emulated_pbx(bot) as (pbx, ami):
        result = await pbx.call("3939", caller_number=NUMBER, caller=caller, timeout_s=20)
        await asyncio.sleep(0.1)
        assert result.channel not in ami.channels
        assert ami.actions_named("Setvar") == []
    assert result.ending == "caller_hangup"
    assert result.trace[-1].app == "TryExec"  # nothing ran after the media
    assert bot.calls[0].caller_gone
    assert isinstance(result.media, AudioSocketCaller) and result.media.ended_by == "caller"


async def test_ami_hangup_ends_the_call() -> None:
    bot = TinyBot(decision=None, on_dtmf=True)

    async def caller(media: Media) -> None:
        ami = await PlainAmi.login(port)
        channel = next(name for name in pbx.ami.channels if name.startswith("PJSIP/"))
        await ami.send({"Action": "Hangup", "Channel": channel})
        await ami.close()
        await asyncio.sleep(5)

    async with emulated_pbx(bot) as (pbx, emulator):
        port = emulator.port
        result = await pbx.call("3939", caller_number=NUMBER, caller=caller, timeout_s=20)
    assert result.ending == "ami_hangup" and result.trace[-1].app == "TryExec"


async def test_ami_redirect_interrupts_the_media_and_jumps() -> None:
    bot = TinyBot(decision=None, on_dtmf=True)

    async def caller(media: Media) -> None:
        ami = await PlainAmi.login(port)
        channel = next(name for name in pbx.ami.channels if name.startswith("PJSIP/"))
        redirect = {"Context": "allonantes-operateurs", "Exten": "s", "Priority": "1"}
        await ami.send({"Action": "Redirect", "Channel": channel, **redirect})
        await ami.close()
        await asyncio.sleep(5)

    async with emulated_pbx(bot) as (pbx, emulator):
        port = emulator.port
        result = await pbx.call("3939", caller_number=NUMBER, caller=caller, timeout_s=20)
    assert bot.calls[0].caller_gone  # AudioSocket closed the socket
    assert result.ending == "queue" and result.callerid_name == "inconnu"
    assert [s.context for s in result.trace[-4:]] == ["allonantes-operateurs"] * 4


async def test_a_failing_caller_script_fails_the_call() -> None:
    async def caller(media: Media) -> None:
        raise AssertionError("the caller heard nothing")

    async with emulated_pbx(TinyBot(on_dtmf=True)) as (pbx, ami):
        with pytest.raises(AssertionError, match="heard nothing"):
            await pbx.call("3939", caller=caller, timeout_s=20)
        assert not ami.channels


async def test_straight_to_the_operators() -> None:
    async with emulated_pbx() as (pbx, _):
        result = await pbx.call("3941", caller_number=NUMBER, timeout_s=5)
    assert result.ending == "queue" and result.media is None
    assert result.callerid_name == "inconnu"
    assert result.queue is not None and result.queue.timeout == "600"


# --- WebSocket (3940) ----------------------------------------------------------------------


async def test_websocket_bot_gets_uuid_and_number_then_hangs_up() -> None:
    bot = TinyBot(decision="raccrocher")
    async with emulated_pbx(bot) as (pbx, _):
        result = await pbx.call("3940", caller_number="+33612345678", timeout_s=20)
    call = bot.calls[0]
    query = parse_qs(urlsplit(call.path).query)
    assert query["allo_uuid"] == [result.variables["ALLO_UUID"]]
    assert query["allo_appelant"] == ["+33612345678"]
    assert "allo_appelant=%2B33612345678" in call.path  # URIENCODE, then '&' for ','
    assert call.media_start.startswith("MEDIA_START connection_id:voicebot")
    assert "format:slin " in call.media_start
    # Two channels carry the call in AMI; the bot set its decision on the caller's.
    assert call.status["Channel"] == result.channel
    assert isinstance(result.media, ChanWebSocketPeer) and result.media.closed_by == "bot_hangup"
    assert result.media.played_audio()
    assert result.app_status == {"DIALSTATUS": "ANSWER"}
    assert result.ending == "hangup"
    assert result.trace[-1].context == "allonantes-decision"


async def test_websocket_bot_unreachable_queues_with_robot_indisponible() -> None:
    async with emulated_pbx() as (pbx, _):
        result = await pbx.call("3940", caller_number=NUMBER, timeout_s=20)
    assert result.app_status == {"DIALSTATUS": "CHANUNAVAIL"}
    assert result.ending == "queue"
    assert result.variables["ALLO_HANDOFF_REASON"] == "robot_indisponible"


# --- what the emulator refuses ----------------------------------------------------------------


async def test_unknown_application_fails_loudly(tmp_path: Path) -> None:
    changed = EXTENSIONS.read_text(encoding="utf-8").replace(
        " same => n,Answer()", " same => n,Playback(bienvenue)\n same => n,Answer()", 1
    )
    (tmp_path / "extensions.conf").write_text(changed, encoding="utf-8")
    line = changed.splitlines().index(" same => n,Playback(bienvenue)") + 1
    async with emulated_pbx(extensions=tmp_path / "extensions.conf") as (pbx, ami):
        with pytest.raises(
            UnsupportedApplication,
            match=rf"allonantes-audiosocket,s,2 .*extensions.conf:{line}\).*Playback\(\)",
        ):
            await pbx.call("3939", caller_number=NUMBER, timeout_s=5)
        assert not ami.channels


async def test_dialplan_mistakes_fail_loudly(tmp_path: Path) -> None:
    text = EXTENSIONS.read_text(encoding="utf-8")
    (tmp_path / "extensions.conf").write_text(
        text.replace("?decision)", "?decisio)", 1), encoding="utf-8"
    )
    bot = TinyBot(decision="raccrocher")  # it answers: the mistaken branch is taken
    async with emulated_pbx(bot, extensions=tmp_path / "extensions.conf") as (pbx, _):
        with pytest.raises(DialplanError, match="no label 'decisio'"):
            await pbx.call("3939", timeout_s=5)


# --- Asterisk's parsing and expression rules --------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ('"FAILED" != "SUCCESS"', "1"),
        ('"" = "raccrocher"', "0"),
        ('"raccrocher" = "raccrocher"', "1"),
        ('"a" = a', "0"),  # a quoted string keeps its quotes in Asterisk
        ("1 = 01", "1"),  # numbers compare as numbers
        ('"2" < "10"', "0"),  # quoted: as strings
        ("2 < 10 & 3 > 1", "1"),
    ],
)
def test_expressions_as_asterisk(expression: str, value: str) -> None:
    assert evaluate_expression(expression) == value


def test_arguments_and_uri_encoding_as_asterisk() -> None:
    assert separate_args("WebSocket/v/c(slin)v(a=1,b=2),5,g", max_args=4) == [
        "WebSocket/v/c(slin)v(a=1,b=2)",
        "5",
        "g",
    ]
    assert separate_args('x,"y,z",a\\,b') == ["x", "y,z", "a,b"]
    assert uri_encode("+33 6/é(x)") == "%2B33%206%2F%C3%A9(x)"
    with pytest.raises(DialplanError, match="not emulated"):
        evaluate_expression("5 / 2")  # Asterisk divides in long double: 2.5


# --- several bot hosts: the dialplan tries each in turn, then the queue ----------------------


@contextlib.asynccontextmanager
async def emulated_hosts(
    bots: list[TinyBot | None], folder: Path, asterisk_version: str = DEFAULT_ASTERISK_VERSION
) -> AsyncIterator[tuple[EmulatedPbx, AmiEmulator]]:
    """The PBX with one bot host per entry of ``bots`` (None: a host that is down, its port
    closed), named in the globals ALLO_AUDIOSOCKET_1, _2, _3 and, for WebSocket, as the
    websocket_client.conf connections voicebot, voicebot2, voicebot3 (added to a copy of the
    deployed files, as an admin would)."""
    extensions = deployed_copy(folder, len(bots))
    ami = AmiEmulator(asterisk_version=asterisk_version)
    await ami.start()
    servers: list[asyncio.Server] = []
    ws_servers: list[Any] = []
    overrides: dict[str, str] = {}
    uris: dict[str, str] = {}
    try:
        for n, bot in enumerate(bots, 1):
            if bot is None:
                audiosocket_port = ws_port = free_port()  # nobody listens: this host is down
            else:
                bot.ami_port = ami.port
                servers.append(await asyncio.start_server(bot.audiosocket, "127.0.0.1", 0))
                audiosocket_port = servers[-1].sockets[0].getsockname()[1]
                ws_servers.append(
                    await serve(bot.websocket, "127.0.0.1", 0, subprotocols=[Subprotocol("media")])
                )
                ws_port = next(iter(ws_servers[-1].sockets)).getsockname()[1]
            connection = websocket_connection(n)
            overrides[f"ALLO_AUDIOSOCKET_{n}"] = f"127.0.0.1:{audiosocket_port}"
            overrides[f"ALLO_WEBSOCKET_{n}"] = connection
            uris[connection] = f"ws://127.0.0.1:{ws_port}"
        pbx = EmulatedPbx(
            ami=ami,
            extensions=extensions,
            globals_override=overrides,
            websocket_uris=uris,
        )
        yield pbx, ami
    finally:
        for server in servers:
            server.close()
        for ws_server in ws_servers:
            ws_server.close()
            await ws_server.wait_closed()
        await ami.stop()


@pytest.mark.parametrize("exten", ["3939", "3940"])
async def test_first_host_down_the_second_takes_the_call(exten: str, tmp_path: Path) -> None:
    second = TinyBot(decision="raccrocher")
    async with emulated_hosts([None, second], tmp_path) as (pbx, _):
        result = await pbx.call(exten, caller_number=NUMBER, timeout_s=30)
        first_host = pbx.globals["ALLO_AUDIOSOCKET_1"] if exten == "3939" else "voicebot"
    assert media_targets(result)[0] == first_host  # tried first, and it failed
    assert len(media_targets(result)) == 2 and len(second.calls) == 1
    # The second host took the call with a UUID of its own, found the caller's channel
    # through AMI by it, and its decision was carried out.
    assert second.calls[0].status["Channel"] == result.channel
    assert result.ending == "hangup" and result.variables["ALLO_DECISION"] == "raccrocher"
    assert result.app_status == (
        {"TRYSTATUS": "SUCCESS"} if exten == "3939" else {"DIALSTATUS": "ANSWER"}
    )
    assert "ALLO_HANDOFF_REASON" not in result.variables
    assert result.queue is None


@pytest.mark.parametrize("exten", ["3939", "3940"])
async def test_no_host_answers_the_caller_reaches_the_queue(exten: str, tmp_path: Path) -> None:
    async with emulated_hosts([None, None, None], tmp_path) as (pbx, _):
        result = await pbx.call(exten, caller_number=NUMBER, timeout_s=30)
    assert len(media_targets(result)) == 3  # every host tried
    assert result.ending == "queue" and result.queue is not None
    assert result.variables["ALLO_HANDOFF_REASON"] == "robot_indisponible"


async def test_a_silent_host_is_given_up_for_the_next(tmp_path: Path) -> None:
    """A host that accepts the connection and says nothing: AudioSocket() gives up after 2 s
    (FAILED) and the next host is tried."""
    silent, second = TinyBot(decision=None, silent=True), TinyBot(decision="transfert")
    async with emulated_hosts([silent, second], tmp_path) as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=30)
    assert len(silent.calls) == 1 and len(second.calls) == 1
    assert silent.calls[0].call_id != second.calls[0].call_id  # a UUID per host
    assert result.ending == "queue" and result.variables["ALLO_DECISION"] == "transfert"


@pytest.mark.parametrize("version", ["20.14.0", "23.4.1"])
async def test_a_host_dying_mid_call_sends_the_caller_to_the_queue_not_to_the_next(
    version: str, tmp_path: Path
) -> None:
    """The bot took the call and talked, then its socket closed without a decision (a host
    killed mid-call): the caller reaches a person, no second greeting."""
    dying = TinyBot(decision=None, end="close", talk_s=TALKED_S)
    second = TinyBot(decision="raccrocher")
    async with emulated_hosts([dying, second], tmp_path, version) as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=30)
    assert len(dying.calls) == 1 and second.calls == []
    assert result.app_status == {"TRYSTATUS": "SUCCESS"}
    assert result.ending == "queue"
    assert "robot_indisponible" not in result.callerid_name


@pytest.mark.parametrize("talk_s", [0.0, 1.0])
async def test_on_older_asterisk_a_socket_closed_without_0x00_leaves_the_caller_in_silence(
    talk_s: float, tmp_path: Path
) -> None:
    """Before 20.14 / 21.9 / 22.4, AudioSocket() reads a closed socket as a null frame and
    goes on: the caller hears silence until they hang up, and nothing else is tried (seen on
    a real Asterisk 20.13.0, which also spun a core meanwhile). Why those versions are not
    supported for production (deploy/asterisk/README.md)."""
    closing = TinyBot(decision=None, end="close", talk_s=talk_s)
    second = TinyBot(decision="raccrocher")

    async def caller(media: Media) -> None:
        await media.play_silence(talk_s + 2.5)
        await media.hangup()

    async with emulated_hosts([closing, second], tmp_path, "20.13.0") as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, caller=caller, timeout_s=30)
    assert result.ending == "caller_hangup" and second.calls == []
    media = result.media
    assert isinstance(media, AudioSocketCaller) and media.ended_by == "caller"
    assert media.bot_closed_at is not None and media.bot_closed_at < talk_s + 1.0
    assert media.received_frames[-1][0] <= media.bot_closed_at  # silence after that


@pytest.mark.parametrize("version", ["20.14.0", "23.4.1"])
async def test_a_host_that_closes_at_once_is_skipped_for_the_next(
    version: str, tmp_path: Path
) -> None:
    """A host that accepts the connection and closes it at once (a server that is
    stopping) did not take the call: the next host does, on every Asterisk."""
    closing = TinyBot(decision=None, end="close", talk_s=0.0)
    second = TinyBot(decision="raccrocher")
    async with emulated_hosts([closing, second], tmp_path, version) as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=30)
    assert len(closing.calls) == 1 and len(second.calls) == 1
    assert result.ending == "hangup" and result.variables["ALLO_DECISION"] == "raccrocher"


@pytest.mark.parametrize("version", ["20.13.0", "23.4.1"])
async def test_a_failing_host_on_any_asterisk_hands_over_to_the_next(
    version: str, tmp_path: Path
) -> None:
    """Port closed on host 1, host 2 takes the call and its transfer is carried out."""
    second = TinyBot(decision="transfert", reason="demande")
    async with emulated_hosts([None, second], tmp_path, version) as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=30)
    assert len(media_targets(result)) == 2 and len(second.calls) == 1
    assert result.ending == "queue" and result.variables["ALLO_HANDOFF_REASON"] == "demande"


@pytest.mark.parametrize("version", OLDER + CURRENT)
async def test_older_audiosocket_drops_the_callers_keys(version: str) -> None:
    """Before 20.14 / 21.9 / 22.4 AudioSocket() does not forward DTMF: the bot never hears
    the « 0 » (deploy/asterisk/README.md says which versions to run)."""
    bot = TinyBot(decision="transfert", reason="dtmf", talk_s=1.0)

    async def caller(media: Media) -> None:
        await media.play_silence(0.2)
        await media.send_dtmf("0")
        await media.play_silence(5.0)

    async with emulated_pbx(bot, asterisk_version=version) as (pbx, _):
        await pbx.call("3939", caller_number=NUMBER, caller=caller, timeout_s=20)
    assert bot.calls[0].digits == ("0" if version in CURRENT else "")


def test_which_asterisk_releases_have_the_current_audiosocket() -> None:
    assert [audiosocket_is_current(v) for v in OLDER] == [False] * len(OLDER)
    assert [audiosocket_is_current(v) for v in CURRENT] == [True] * len(CURRENT)
    assert audiosocket_is_current("20.14") and not audiosocket_is_current("19.8.0")
    with pytest.raises(ValueError, match="not an Asterisk version"):
        audiosocket_is_current("latest")
    with pytest.raises(ValueError, match="not an Asterisk version"):
        AmiEmulator(asterisk_version="twenty")


async def test_one_host_by_default_down_means_the_queue() -> None:
    """The deployed file names one host: it is down, nothing else is tried, the queue."""
    async with emulated_pbx() as (pbx, _):
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=20)
    assert len(media_targets(result)) == 1
    assert result.ending == "queue"
    assert result.variables["ALLO_HANDOFF_REASON"] == "robot_indisponible"


# --- several bot hosts: calls are spread over them in turn --------------------------------------


@pytest.mark.parametrize("exten", ["3939", "3940"])
async def test_consecutive_calls_start_at_each_host_in_turn(exten: str, tmp_path: Path) -> None:
    bots = [TinyBot(decision="raccrocher") for _ in range(3)]
    async with emulated_hosts(list(bots), tmp_path) as (pbx, _):
        hosts = (
            [pbx.globals[f"ALLO_AUDIOSOCKET_{n}"] for n in (1, 2, 3)]
            if exten == "3939"
            else ["voicebot", "voicebot2", "voicebot3"]  # websocket_client.conf connections
        )
        results = [await pbx.call(exten, caller_number=NUMBER, timeout_s=30) for _ in range(5)]
    # One host tried per call (each answered), starting one further each time.
    assert [media_targets(r) for r in results] == [[hosts[i % 3]] for i in range(5)]
    assert [len(bot.calls) for bot in bots] == [2, 2, 1]
    assert all(r.ending == "hangup" for r in results)


@pytest.mark.parametrize("exten", ["3939", "3940"])
async def test_with_one_host_down_every_call_reaches_the_other(exten: str, tmp_path: Path) -> None:
    """A call whose turn is the dead host's tries it (refused at once), then the live one,
    which answers every call."""
    alive = TinyBot(decision="raccrocher")
    async with emulated_hosts([alive, None], tmp_path) as (pbx, _):
        results = [await pbx.call(exten, caller_number=NUMBER, timeout_s=30) for _ in range(4)]
    # After host 1, the next call's turn is host 2's: each call after the first tries it.
    assert [len(media_targets(r)) for r in results] == [1, 2, 2, 2]
    assert len(alive.calls) == 4
    assert all(r.ending == "hangup" and r.queue is None for r in results)


async def test_a_dead_hosts_share_is_spread_over_the_others(tmp_path: Path) -> None:
    """Three hosts, the second down: the next call starts after the host the previous one
    was last offered to, so the live hosts take calls in turn (not host 3 twice as many)."""
    first, third = TinyBot(decision="raccrocher"), TinyBot(decision="raccrocher")
    async with emulated_hosts([first, None, third], tmp_path) as (pbx, _):
        hosts = [pbx.globals[f"ALLO_AUDIOSOCKET_{n}"] for n in (1, 2, 3)]
        results = [await pbx.call("3939", caller_number=NUMBER, timeout_s=30) for _ in range(6)]
    assert [media_targets(r)[-1] for r in results] == [hosts[0], hosts[2]] * 3
    assert len(first.calls) == 3 and len(third.calls) == 3


async def test_the_host_list_ends_at_the_first_empty_name(tmp_path: Path) -> None:
    """ALLO_AUDIOSOCKET_1, _2, ... up to the first empty one: with _2 emptied, _3 is not a
    host, every call goes to _1."""
    first, third = TinyBot(decision="raccrocher"), TinyBot(decision="raccrocher")
    async with emulated_hosts([first, None, third], tmp_path) as (pbx, _):
        pbx.globals["ALLO_AUDIOSOCKET_2"] = ""
        results = [await pbx.call("3939", caller_number=NUMBER, timeout_s=30) for _ in range(2)]
    assert [len(media_targets(r)) for r in results] == [1, 1]
    assert len(first.calls) == 2 and third.calls == []


async def test_no_host_configured_means_the_queue(tmp_path: Path) -> None:
    async with emulated_hosts([None], tmp_path) as (pbx, _):
        pbx.globals["ALLO_AUDIOSOCKET_1"] = ""
        result = await pbx.call("3939", caller_number=NUMBER, timeout_s=10)
    assert media_targets(result) == []
    assert result.ending == "queue"
    assert result.variables["ALLO_HANDOFF_REASON"] == "robot_indisponible"
    assert result.callerid_name.startswith("robot_indisponible")  # the operator's phone
