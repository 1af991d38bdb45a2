"""The media legs of a call: ``AudioSocket()`` run by an ``AudioSocketCaller`` and
``Dial(WebSocket/...)`` run by a ``ChanWebSocketPeer``, with the caller's script alongside."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping

from websockets.exceptions import WebSocketException

from telephony.audiosocket.versions import audiosocket_is_current
from telephony.chan_websocket.codec import JSON_FORMAT, PLAIN_TEXT, SLIN_FORMAT_RATES
from telephony.emulator.ami import DEFAULT_ASTERISK_VERSION, AmiEmulator
from telephony.emulator.audiosocket import NO_TRAFFIC_TIMEOUT_S, AudioSocketCaller
from telephony.emulator.chan_websocket import ChanWebSocketPeer
from telephony.emulator.dialplan.common import Call, DialplanError, Media
from telephony.emulator.dialplan.expand import parse_options, separate_args, uri_verify_encoded

# app_audiosocket's ast_audiosocket_connect waits this long for the TCP connection
# (res/res_audiosocket.c: MAX_CONNECT_TIMEOUT_MSEC).
AUDIOSOCKET_CONNECT_TIMEOUT_S = 2.0
# How often a running media session looks at the AMI side (a Hangup or Redirect action).
_POLL_S = 0.02


class MediaLegs:
    """The media applications of an ``EmulatedPbx``: ``AudioSocket()`` and
    ``Dial(WebSocket/...)``, each a session with the bot that the caller's script joins."""

    def __init__(
        self,
        *,
        ami: AmiEmulator,
        websocket_uri: str | None,
        websocket_connect_timeout_s: float,
        websocket_clients: dict[str, dict[str, str]] | None,
        websocket_uris: Mapping[str, str] | None = None,
        asterisk_version: str = DEFAULT_ASTERISK_VERSION,
    ) -> None:
        self.ami = ami
        self.audiosocket_current = audiosocket_is_current(asterisk_version)
        self.websocket_uri = websocket_uri
        self.websocket_uris = dict(websocket_uris or {})
        self.websocket_connect_timeout_s = websocket_connect_timeout_s
        self._websocket_clients = websocket_clients

    async def audiosocket(self, call: Call, args: str, where: str) -> int:
        """app_audiosocket.c ``audiosocket_exec``/``audiosocket_run``: -1 when the UUID is
        invalid, the channel is not answered, the bot is unreachable or silent for 2 s (the
        AudioSocketCaller enforces that) or breaks the protocol; when the bot sends the
        hangup kind or closes the socket, 0 since 20.14 / 21.9 / 22.4; before, -1 on the
        hangup kind, and a closed socket does not end the session at all."""
        parts = separate_args(args, max_args=2)
        call_id = parts[0] if parts else ""
        server = parts[1] if len(parts) > 1 else ""
        if not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", call_id):
            return -1  # uuid_parse refuses it
        host, port = _host_port(server)
        # Before those releases the receive loop also waited without a timeout (ms = -1),
        # and read a closed socket as a null frame: a bot that accepts and never speaks, or
        # closes without 0x00 (a host killed mid-call), holds the caller until they hang up.
        media = AudioSocketCaller(
            forwards_dtmf=self.audiosocket_current,
            no_traffic_timeout_s=NO_TRAFFIC_TIMEOUT_S if self.audiosocket_current else None,
            eof_ends_session=self.audiosocket_current,
        )
        call.media = media
        if host is None:
            return -1
        try:
            if call.channel.state != "Up":
                # audiosocket_run refuses an unanswered channel after the TCP connection is
                # made and before the UUID is sent: the bot sees a connection close, empty.
                await asyncio.wait_for(media.open_raw(host, port), AUDIOSOCKET_CONNECT_TIMEOUT_S)
                return -1
            await asyncio.wait_for(
                media.connect(host, port, call_id), AUDIOSOCKET_CONNECT_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError):
            return -1
        how = await self._converse(call, media)
        if how in ("bot_hangup", "bot_close") and self.audiosocket_current:
            return 0
        return -1

    async def dial(self, call: Call, args: str, where: str) -> int:
        """app_dial.c ``dial_exec_full`` for one ``WebSocket/`` peer, with chan_websocket.c's
        ``webchan_request``/``webchan_call``: an unreachable bot gives CHANUNAVAIL and the
        dialplan goes on; the bot is answered at once (auto answer, unless ``n``); when it
        hangs up, ``g`` goes on in the dialplan with DIALSTATUS=ANSWER, without ``g`` the
        caller is hung up."""
        parts = separate_args(args, max_args=4)
        peers = parts[0] if parts else ""
        timeout = parts[1] if len(parts) > 1 else ""
        options = parse_options(parts[2]) if len(parts) > 2 else {}
        unknown = set(options) - {"g"}
        if unknown:
            raise DialplanError(f"{where}: Dial options {sorted(unknown)} are not emulated")
        if "&" in peers or not peers.startswith("WebSocket/"):
            raise DialplanError(f"{where}: only Dial(WebSocket/...) to one peer is emulated")
        channel = call.channel
        connection_id, *rest = separate_args(peers[len("WebSocket/") :], "/", max_args=2)
        ws_options = parse_options(rest[0]) if rest else {}
        unknown = set(ws_options) - {"c", "v", "f", "n"}
        if unknown:
            raise DialplanError(f"{where}: WebSocket options {sorted(unknown)} are not emulated")
        codec = ws_options.get("c") or "slin"
        if codec not in SLIN_FORMAT_RATES:
            raise DialplanError(f"{where}: codec {codec} is not emulated")
        params = ws_options.get("v") or ""
        uri = self._websocket_connection(connection_id)
        if uri is None or (params and not self._valid_uri_params(params)):
            channel.set_variable("DIALSTATUS", "CHANUNAVAIL")  # the request fails
            return 0
        if params:
            # Commas separate the pairs in the dial string (a '&' would be a second peer):
            # chan_websocket turns them back into '&'.
            uri += ("&" if "?" in uri else "?") + params.replace(",", "&")
        peer_channel = self.ami.add_channel(f"WebSocket/{connection_id}/0x{id(call):012x}")
        # Dial's outgoing channel runs no dialplan: it shows as app_dial's "AppDial".
        peer_channel.application, peer_channel.data = "AppDial", "(Outgoing Line)"
        peer_channel.context, peer_channel.exten, peer_channel.priority = channel.context, "s", 1
        # Dial makes the bot's channel inherit the caller's variables; chan_websocket's
        # set_channel_variables adds its own two.
        peer_channel.variables.update(inherited(channel.variables))
        peer_channel.variables["MEDIA_WEBSOCKET_CONNECTION_ID"] = connection_id
        peer_channel.variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] = str(
            SLIN_FORMAT_RATES[codec] // 50 * 2
        )
        media = ChanWebSocketPeer(
            codec=codec,
            control_format=JSON_FORMAT
            if (ws_options.get("f") or "").lower() == "json"
            else PLAIN_TEXT,
            connection_id=connection_id,
            channel=peer_channel.name,
            channel_id=peer_channel.uniqueid,
            channel_variables=_bare(peer_channel.variables),
        )
        call.media = media
        try:
            try:
                await asyncio.wait_for(media.connect(uri), self.websocket_connect_timeout_s)
            except (OSError, asyncio.TimeoutError, WebSocketException):
                channel.set_variable("DIALSTATUS", "CHANUNAVAIL")
                return 0
            if "n" in ws_options and not await self._wait_answer(call, media, timeout):
                channel.set_variable("DIALSTATUS", "NOANSWER")
                await media.close()
                return 0
            how = await self._converse(call, media)
        finally:
            self.ami.remove_channel(peer_channel.name)
        channel.set_variable("DIALSTATUS", "ANSWER")
        if how in ("bot_hangup", "bot_close"):
            return 0 if "g" in options else -1
        return -1

    async def _wait_answer(self, call: Call, media: ChanWebSocketPeer, timeout: str) -> bool:
        loop = asyncio.get_running_loop()
        seconds = float(timeout) if re.fullmatch(r"\d+(\.\d+)?", timeout.strip()) else None
        deadline = call.deadline if seconds is None else min(call.deadline, loop.time() + seconds)
        while not media.answered and not media.closed and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
        return media.answered

    async def _converse(self, call: Call, media: Media) -> str:
        """The media session, until the bot or the caller ends it (or AMI hangs the channel
        up, or redirects it). The caller's script runs alongside and is cancelled at the end;
        an exception it raised is raised here."""
        script: asyncio.Future[None] | None = None
        if call.script is not None:
            script = asyncio.ensure_future(call.script(media))
        loop = asyncio.get_running_loop()
        how = ""
        try:
            while True:
                if script is not None and script.done():
                    script.result()  # the script's own failure is the test's failure
                    script = None
                ended = media.ended_by if isinstance(media, AudioSocketCaller) else media.closed_by
                if ended is not None:
                    how = ended
                    break
                if call.channel.hungup or call.channel.redirect is not None:
                    how = "ami"
                    break
                if loop.time() > call.deadline:
                    raise TimeoutError("the media session outlived the call's timeout")
                await asyncio.sleep(_POLL_S)
        finally:
            await media.close()
            if script is not None:
                script.cancel()  # no effect on a finished script
                with contextlib.suppress(asyncio.CancelledError):
                    await script  # raises what the script raised
        if how == "caller":
            call.ending = "caller_hangup"
            call.channel.hungup = True
        return how

    def _websocket_connection(self, connection_id: str) -> str | None:
        """The URI of a websocket_client.conf connection (``websocket_uri`` replaces it for
        the test's port); None when that file exists and does not define it."""
        if self._websocket_clients is not None and connection_id not in self._websocket_clients:
            return None  # chan_websocket: no such connection, the request fails
        if connection_id in self.websocket_uris:
            return self.websocket_uris[connection_id]
        if self.websocket_uri is not None:
            return self.websocket_uri
        if self._websocket_clients is not None:
            return self._websocket_clients[connection_id].get("uri")
        return None

    @staticmethod
    def _valid_uri_params(params: str) -> bool:
        # chan_websocket.c validate_uri_parameters: each name and value already encoded.
        return all(
            uri_verify_encoded(piece) for pair in params.split(",") for piece in pair.split("=")
        )


def _host_port(server: str) -> tuple[str | None, int]:
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", server.strip())
    if match is None:
        return None, 0
    host = match.group(1) or match.group(3)
    return host, int(match.group(2) or match.group(4))


def inherited(variables: Mapping[str, str]) -> dict[str, str]:
    """ast_channel_inherit_variables: "__X" stays "__X", "_X" becomes "X" (inherited once),
    a variable without prefix is not inherited."""
    inherited = {}
    for name, value in variables.items():
        if name.startswith("__"):
            inherited[name] = value
        elif name.startswith("_"):
            inherited[name[1:]] = value
    return inherited


def _bare(variables: Mapping[str, str]) -> dict[str, str]:
    return {name.lstrip("_"): value for name, value in variables.items()}
