"""An AMI server that speaks Asterisk's manager protocol (``main/manager.c``) over TCP.

What it does, as Asterisk does it:

* on connect, the banner ``Asterisk Call Manager/<version>\\r\\n``; then messages of
  ``Key: Value`` lines ended by an empty line, answers carrying the request's ``ActionID``;
* ``Login``: ``Success``/``Authentication accepted``, or ``Error``/``Authentication
  failed`` and the connection is closed (Asterisk sleeps 1 s first: ``auth_fail_delay_s``);
  any other action before login gets ``Permission denied``;
* ``Ping`` (``Ping: Pong`` and a timestamp), ``Setvar`` (``Variable Set``, ``No such
  channel``), ``Getvar``, ``Status`` (a list: ``Channel status will follow``, one ``Status``
  event per channel with the requested ``Variables``, ``StatusComplete``), ``Redirect``,
  ``Hangup``, ``Logoff`` (``Goodbye``/``Thanks for all the fish.`` then close); an unknown
  action gets ``Invalid/unknown command``;
* events can be pushed to logged-in clients (``emit_event``).

For tests it also keeps every action received, can drop every connection (an Asterisk
restart or a network cut), and can go silent (``mute``) to test timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

AMI_VERSION = "13.0.0"
EOL = "\r\n"


@dataclass
class EmulatedChannel:
    name: str
    uniqueid: str
    variables: dict[str, str] = field(default_factory=dict)
    context: str = "allonantes"
    exten: str = "s"
    priority: int = 3
    application: str = "AudioSocket"
    data: str = ""


@dataclass(eq=False)  # one per connection, kept in a set
class _Session:
    writer: asyncio.StreamWriter
    authenticated: bool = False
    username: str = ""
    events: bool = True


class AmiEmulator:
    def __init__(
        self,
        *,
        username: str = "voicebot",
        secret: str = "secret-de-test",
        version: str = AMI_VERSION,
        auth_fail_delay_s: float = 0.0,
    ) -> None:
        self.username = username
        self.secret = secret
        self.version = version
        self.auth_fail_delay_s = auth_fail_delay_s
        self.channels: dict[str, EmulatedChannel] = {}
        self.actions: list[dict[str, str]] = []  # every message received, in order
        self.logins: list[tuple[str, bool]] = []
        self.connection_times: list[float] = []  # loop time of each accepted connection
        self.mute = False  # True: read everything, answer nothing (a hung Asterisk)
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[_Session] = set()
        self._uniqueid = 1712345678

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (``port=0``: a free port, kept for restarts); returns the port."""
        self._server = await asyncio.start_server(self._serve, host, port or self.port)
        self.host = host
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection (Asterisk is down)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_connections()

    async def drop_connections(self) -> None:
        """Cut every client connection without a word (a restart or a network cut)."""
        for session in list(self._sessions):
            session.writer.transport.abort()
        self._sessions.clear()
        await asyncio.sleep(0)

    @property
    def connection_count(self) -> int:
        return len(self._sessions)

    # --- the PBX's state -----------------------------------------------------------------------

    def add_channel(self, name: str, **variables: str) -> EmulatedChannel:
        self._uniqueid += 1
        channel = EmulatedChannel(name, f"{self._uniqueid}.1", dict(variables))
        self.channels[name] = channel
        return channel

    def actions_named(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action", "").lower() == name.lower()]

    def emit_event(self, name: str, **headers: str) -> None:
        """Send an event to every logged-in client that asked for events."""
        lines = [f"Event: {name}", *(f"{k}: {v}" for k, v in headers.items())]
        for session in list(self._sessions):
            if session.authenticated and session.events:
                self._write(session, lines)

    # --- protocol -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self._sessions.add(session)
        self.connection_times.append(asyncio.get_running_loop().time())
        writer.write(f"Asterisk Call Manager/{self.version}{EOL}".encode())
        try:
            headers: dict[str, str] = {}
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip()] = value.strip()
                    continue
                if not headers:
                    continue
                message, headers = headers, {}
                if not await self._handle(session, message):
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._sessions.discard(session)
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, session: _Session, message: dict[str, str]) -> bool:
        """Answer one message; False closes the connection."""
        self.actions.append(message)
        if self.mute:
            return True
        action = message.get("Action", "")
        action_id = message.get("ActionID")
        if not action:
            self._reply(session, action_id, "Error", "Missing action in request")
            return True
        name = action.lower()
        if not session.authenticated and name not in ("login", "logoff", "challenge"):
            self._reply(session, action_id, "Error", "Permission denied")
            return True
        if name == "login":
            return await self._login(session, message, action_id)
        if name == "logoff":
            self._reply(session, action_id, "Goodbye", "Thanks for all the fish.")
            return False
        if name == "ping":
            now = time.time()
            lines = [
                "Response: Success",
                *_id_line(action_id),
                "Ping: Pong",
                f"Timestamp: {now:.6f}",
            ]
            self._write(session, lines)
        elif name == "setvar":
            self._setvar(session, message, action_id)
        elif name == "getvar":
            self._getvar(session, message, action_id)
        elif name == "status":
            self._status(session, message, action_id)
        elif name in ("redirect", "hangup"):
            channel = self.channels.get(message.get("Channel", ""))
            if channel is None:
                self._reply(session, action_id, "Error", "No such channel")
            elif name == "redirect":
                channel.context = message.get("Context", channel.context)
                channel.exten = message.get("Exten", channel.exten)
                channel.priority = int(message.get("Priority", "1") or 1)
                self._reply(session, action_id, "Success", "Redirect successful")
            else:
                del self.channels[channel.name]
                self._reply(session, action_id, "Success", "Channel Hungup")
        else:
            self._reply(
                session,
                action_id,
                "Error",
                f"Invalid/unknown command: {action}. Use Action: ListCommands to show available commands.",
            )
        return True

    async def _login(
        self, session: _Session, message: dict[str, str], action_id: str | None
    ) -> bool:
        if session.authenticated:
            self._reply(session, action_id, "Success", "Already authenticated")
            return True
        username = message.get("Username", "")
        ok = username == self.username and message.get("Secret", "") == self.secret
        self.logins.append((username, ok))
        if not ok:
            await asyncio.sleep(self.auth_fail_delay_s)
            self._reply(session, action_id, "Error", "Authentication failed")
            return False
        session.authenticated = True
        session.username = username
        session.events = message.get("Events", "on").lower() not in ("off", "no", "false")
        self._reply(session, action_id, "Success", "Authentication accepted")
        return True

    def _setvar(self, session: _Session, message: dict[str, str], action_id: str | None) -> None:
        variable = message.get("Variable", "")
        if not variable:
            self._reply(session, action_id, "Error", "No variable specified")
            return
        channel = self.channels.get(message.get("Channel", ""))
        if channel is None:
            self._reply(session, action_id, "Error", "No such channel")
            return
        channel.variables[variable] = message.get("Value", "")
        self._reply(session, action_id, "Success", "Variable Set")

    def _getvar(self, session: _Session, message: dict[str, str], action_id: str | None) -> None:
        variable = message.get("Variable", "")
        if not variable:
            self._reply(session, action_id, "Error", "No variable specified")
            return
        channel = self.channels.get(message.get("Channel", ""))
        if channel is None:
            self._reply(session, action_id, "Error", "No such channel")
            return
        value = _lookup(channel, variable)
        lines = [
            "Response: Success",
            *_id_line(action_id),
            f"Variable: {variable}",
            f"Value: {value}",
        ]
        self._write(session, lines)

    def _status(self, session: _Session, message: dict[str, str], action_id: str | None) -> None:
        wanted = [v.strip() for v in message.get("Variables", "").split(",") if v.strip()]
        name = message.get("Channel", "")
        if name and name not in self.channels:
            self._reply(session, action_id, "Error", "No such channel")
            return
        listed = [self.channels[name]] if name else list(self.channels.values())
        self._write(
            session,
            [
                "Response: Success",
                *_id_line(action_id),
                "EventList: start",
                "Message: Channel status will follow",
            ],
        )
        for channel in listed:
            lines = [
                "Event: Status",
                "Privilege: Call",
                f"Channel: {channel.name}",
                "ChannelState: 6",
                "ChannelStateDesc: Up",
                "CallerIDNum: <unknown>",
                f"Uniqueid: {channel.uniqueid}",
                f"Linkedid: {channel.uniqueid}",
                f"Context: {channel.context}",
                f"Exten: {channel.exten}",
                f"Priority: {channel.priority}",
                "Type: PJSIP",
                f"Application: {channel.application}",
                f"Data: {channel.data}",
                *(f"Variable: {v}={_lookup(channel, v)}" for v in wanted),
                *_id_line(action_id),
            ]
            self._write(session, lines)
        self._write(
            session,
            [
                "Event: StatusComplete",
                *_id_line(action_id),
                "EventList: Complete",
                f"ListItems: {len(listed)}",
                f"Items: {len(listed)}",
            ],
        )

    def _reply(self, session: _Session, action_id: str | None, response: str, text: str) -> None:
        self._write(session, [f"Response: {response}", *_id_line(action_id), f"Message: {text}"])

    @staticmethod
    def _write(session: _Session, lines: list[str]) -> None:
        if not session.writer.is_closing():
            session.writer.write((EOL.join(lines) + EOL + EOL).encode())


def _id_line(action_id: str | None) -> list[str]:
    return [f"ActionID: {action_id}"] if action_id else []


def _lookup(channel: EmulatedChannel, variable: str) -> str:
    # Inherited variables are read back without their "_"/"__" prefix, as in Asterisk.
    for prefix in ("", "_", "__"):
        if prefix + variable in channel.variables:
            return channel.variables[prefix + variable]
    return channel.variables.get(variable.lstrip("_"), "")
