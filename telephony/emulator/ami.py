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
  ``Hangup``, ``CoreSettings`` (``AsteriskVersion``; ``Permission denied`` unless the
  user's write classes include ``system`` or ``reporting``), ``Logoff``
  (``Goodbye``/``Thanks for all the fish.`` then close); an unknown action gets
  ``Invalid/unknown command``;
* channel variables follow ``pbx_builtin_setvar_helper`` (main/pbx_variables.c): a name is
  stored with its ``_``/``__`` inheritance prefix, compared and read back without it, and
  setting ``X`` replaces ``__X`` (and the other way round); ``CALLERID(num)``/``(name)`` are
  the channel's caller id, trailing blanks trimmed (func_callerid.c);
* ``Status`` events carry the fields of ``ast_manager_build_channel_state_string`` and
  ``generate_status`` (main/manager_channels.c, main/manager.c): the channel's real
  ``CallerIDNum``/``CallerIDName`` (``<unknown>`` when empty), state, dialplan location and
  current application, which ``telephony.emulator.dialplan.EmulatedPbx`` keeps up to date;
* events can be pushed to logged-in clients (``emit_event``).

For tests it also keeps every action received, can drop every connection (an Asterisk
restart or a network cut; ``cut_on``: when a chosen action arrives, before it is carried
out), and can go silent (``mute``) to test timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from telephony.audiosocket.versions import audiosocket_is_current

AMI_VERSION = "13.0.0"
# The Asterisk emulated unless told otherwise: the release the project tried by hand.
DEFAULT_ASTERISK_VERSION = "23.4.1"
EOL = "\r\n"


# ast_state2str (main/channel.c): the states an emulated channel goes through.
CHANNEL_STATES = {"Down": 0, "Ring": 4, "Up": 6}


@dataclass
class EmulatedChannel:
    name: str
    uniqueid: str
    # Stored names keep their inheritance prefix ("__ALLO_INTENT"), as Asterisk stores them.
    variables: dict[str, str] = field(default_factory=dict)
    context: str = "allonantes"
    exten: str = "s"
    priority: int = 3
    application: str = "AudioSocket"
    data: str = ""
    callerid_num: str = ""
    callerid_name: str = ""
    state: str = "Up"  # a key of CHANNEL_STATES
    created: float = field(default_factory=time.monotonic)
    # Set by AMI actions, for whoever runs the channel's dialplan (EmulatedPbx) to act on.
    hungup: bool = False
    redirect: tuple[str, str, int] | None = None

    def set_variable(self, name: str, value: str) -> None:
        """Asterisk's ``pbx_builtin_setvar_helper`` on a channel, for a plain variable or
        ``CALLERID(num|name)``; any other function raises ``ValueError``."""
        if name.endswith(")"):
            setattr(self, _callerid_attribute(name), _trim_blanks(value))
            return
        bare = _bare_name(name)
        for stored in [n for n in self.variables if _bare_name(n) == bare]:
            del self.variables[stored]
        self.variables[name] = value

    def unset_variable(self, name: str) -> None:
        """``pbx_builtin_setvar_helper(chan, name, NULL)``: the variable is removed."""
        bare = _bare_name(name)
        for stored in [n for n in self.variables if _bare_name(n) == bare]:
            del self.variables[stored]

    def get_variable(self, name: str) -> str | None:
        """A variable's value as ``${name}`` reads it (None when unset): ``name`` is compared
        with each stored name stripped of its prefix, so ``${__X}`` finds nothing."""
        if name.endswith(")"):
            return str(getattr(self, _callerid_attribute(name)))
        for stored, value in self.variables.items():
            if _bare_name(stored) == name:
                return value
        return None

    def read_back(self) -> dict[str, str]:
        """Every variable under the name the dialplan reads it by (without ``_``/``__``)."""
        return {_bare_name(name): value for name, value in self.variables.items()}


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
        asterisk_version: str = DEFAULT_ASTERISK_VERSION,
        write_classes: Collection[str] = ("call", "reporting"),
    ) -> None:
        """``asterisk_version``: the Asterisk this is (CoreSettings says it; the emulated
        dialplan's AudioSocket() behaves as it does). ``write_classes``: the user's
        ``write =`` classes in manager.conf, checked for the actions that need more than
        ``call``."""
        audiosocket_is_current(asterisk_version)  # a bad version fails here, not mid-call
        self.username = username
        self.secret = secret
        self.version = version
        self.asterisk_version = asterisk_version
        self.write_classes = frozenset(write_classes)
        self.auth_fail_delay_s = auth_fail_delay_s
        self.channels: dict[str, EmulatedChannel] = {}
        self.actions: list[dict[str, str]] = []  # every message received, in order
        self.logins: list[tuple[str, bool]] = []
        self.connection_times: list[float] = []  # loop time of each accepted connection
        self.mute = False  # True: read everything, answer nothing (a hung Asterisk)
        # A network cut at a chosen moment: the first message this returns True for is not
        # answered (nor carried out): every connection is cut instead, once.
        self.cut_on: Callable[[dict[str, str]], bool] | None = None
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

    def add_channel(
        self,
        name: str,
        *,
        callerid_num: str = "",
        callerid_name: str = "",
        state: str = "Up",
        **variables: str,
    ) -> EmulatedChannel:
        self._uniqueid += 1
        channel = EmulatedChannel(
            name,
            f"{self._uniqueid}.1",
            dict(variables),
            callerid_num=callerid_num,
            callerid_name=callerid_name,
            state=state,
        )
        self.channels[name] = channel
        return channel

    def remove_channel(self, name: str) -> None:
        """The channel is gone (hung up): AMI no longer lists it."""
        self.channels.pop(name, None)

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
        if self.cut_on is not None and self.cut_on(message):
            self.cut_on = None
            await self.drop_connections()
            return False
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
        elif name == "coresettings":
            # manager.c: registered with EVENT_FLAG_SYSTEM | EVENT_FLAG_REPORTING, and
            # process_message runs an action when the user's write classes share one bit.
            if not self.write_classes & {"system", "reporting", "all"}:
                self._reply(session, action_id, "Error", "Permission denied")
            else:
                lines = [
                    "Response: Success",
                    *_id_line(action_id),
                    f"AMIversion: {self.version}",
                    f"AsteriskVersion: {self.asterisk_version}",
                    "SystemName: ",
                ]
                self._write(session, lines)
        elif name in ("redirect", "hangup"):
            channel = self.channels.get(message.get("Channel", ""))
            if channel is None:
                self._reply(session, action_id, "Error", "No such channel")
            elif name == "redirect":
                channel.context = message.get("Context", channel.context)
                channel.exten = message.get("Exten", channel.exten)
                channel.priority = int(message.get("Priority", "1") or 1)
                channel.redirect = (channel.context, channel.exten, channel.priority)
                self._reply(session, action_id, "Success", "Redirect successful")
            else:
                channel.hungup = True
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
        try:
            channel.set_variable(variable, message.get("Value", ""))
        except ValueError:
            self._reply(session, action_id, "Error", "Variable not set")
            return
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
                f"ChannelState: {CHANNEL_STATES.get(channel.state, 6)}",
                f"ChannelStateDesc: {channel.state}",
                f"CallerIDNum: {channel.callerid_num or '<unknown>'}",
                f"CallerIDName: {_escape_c(channel.callerid_name) or '<unknown>'}",
                "ConnectedLineNum: <unknown>",
                "ConnectedLineName: <unknown>",
                "Language: fr",
                "AccountCode: ",
                f"Context: {channel.context}",
                f"Exten: {channel.exten}",
                f"Priority: {channel.priority}",
                f"Uniqueid: {channel.uniqueid}",
                f"Linkedid: {channel.uniqueid}",
                f"Type: {channel.name.partition('/')[0]}",
                "DNID: ",
                "EffectiveConnectedLineNum: <unknown>",
                "EffectiveConnectedLineName: <unknown>",
                "TimeToHangup: 0",
                "BridgeID: ",
                f"Application: {channel.application}",
                f"Data: {channel.data}",
                "Nativeformats: (slin)",
                "Readformat: slin",
                "Readtrans: ",
                "Writeformat: slin",
                "Writetrans: ",
                "Callgroup: 0",
                "Pickupgroup: 0",
                f"Seconds: {int(time.monotonic() - channel.created)}",
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
    # Unset, or a function the emulator does not know: Asterisk answers an empty value.
    try:
        return channel.get_variable(variable) or ""
    except ValueError:
        return ""


def _callerid_attribute(function: str) -> str:
    """The channel attribute behind ``CALLERID(num[ber])``/``CALLERID(name)``; ValueError for
    any other function, which the emulator does not model."""
    name, _, args = function.partition("(")
    member = args[:-1].strip().lower()
    if name.upper() == "CALLERID" and member.startswith("num"):
        return "callerid_num"
    if name.upper() == "CALLERID" and member == "name":
        return "callerid_name"
    raise ValueError(f"the emulator does not model {function}")


def _bare_name(name: str) -> str:
    """A variable's name without its inheritance prefix (``ast_var_name``: at most two)."""
    return name[2:] if name.startswith("__") else name[1:] if name.startswith("_") else name


def _trim_blanks(value: str) -> str:
    # ast_trim_blanks: trailing characters at or below the space go (func_callerid.c).
    return value.rstrip("".join(chr(c) for c in range(33)))


def _escape_c(text: str) -> str:
    """``ast_escape_c`` (main/utils.c): what Status does to CallerIDName, so that one header
    stays on one line."""
    return "".join(_C_ESCAPES.get(ch, ch) for ch in text)


_C_ESCAPES = {
    ch: "\\" + code for ch, code in zip("\a\b\f\n\r\t\v\\'\"?", "abfnrtv\\'\"?", strict=True)
}
