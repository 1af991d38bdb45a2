"""``EmulatedPbx``: runs emulated calls through the project's ``extensions.conf``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from telephony.emulator.ami import AmiEmulator
from telephony.emulator.dialplan.apps import Interpreter
from telephony.emulator.dialplan.common import (
    Call,
    CallerScript,
    Ending,
    Leg,
    Media,
    QueueEntry,
    Step,
)
from telephony.emulator.dialplan.media import MediaLegs
from telephony.emulator.dialplan.parse import Dialplan, ini_sections


@dataclass
class CallResult:
    ending: Ending
    # The caller channel's variables when the call left the dialplan, read back without
    # their "_"/"__" prefix; raw_variables keeps the names as stored (prefix included).
    variables: dict[str, str]
    raw_variables: dict[str, str]
    app_status: dict[str, str]  # TRYSTATUS / DIALSTATUS / QUEUESTATUS, those set
    trace: list[Step]
    callerid_num: str
    callerid_name: str  # what the operator's phone shows
    media: Media | None  # None when the dialplan started no media session
    channel: str
    uniqueid: str
    hangup_cause: int | None  # Hangup(cause); None when not hung up by Hangup()
    queue: QueueEntry | None  # set when the call reached Queue()
    # The Queue b() pre-dial handler, run on an emulated operator's channel (which only
    # inherits "_"/"__" variables): the SIP headers it added, and its steps.
    operator_headers: dict[str, str] = field(default_factory=dict)
    operator_trace: list[Step] = field(default_factory=list)


class EmulatedPbx:
    """Runs emulated calls through a dialplan file. Several calls may run at once."""

    def __init__(
        self,
        *,
        ami: AmiEmulator,
        extensions: Path,
        globals_override: Mapping[str, str] | None = None,
        websocket_uri: str | None = None,
        websocket_connect_timeout_s: float = 2.0,
        websocket_uris: Mapping[str, str] | None = None,
    ) -> None:
        """``websocket_uri`` replaces the URI of every websocket_client.conf connection (the
        test's bot port); ``websocket_uris`` that of some connections by name (several bot
        hosts), before ``websocket_uri``. The Asterisk emulated where versions differ (how
        AudioSocket() ends, whether it forwards keys) is ``ami.asterisk_version``."""
        self.ami = ami
        self.extensions = extensions
        self.dialplan = Dialplan.load(extensions)
        self.globals = {**self.dialplan.globals, **(globals_override or {})}
        self.websocket_uri = websocket_uri
        self.websocket_uris = dict(websocket_uris or {})
        self.websocket_connect_timeout_s = websocket_connect_timeout_s
        # The neighbouring configuration files, when present, are checked like Asterisk
        # would use them: websocket_client.conf connections, queues.conf queues.
        self._websocket_clients = ini_sections(extensions.parent / "websocket_client.conf")
        self._queues = ini_sections(extensions.parent / "queues.conf")
        self._channel_numbers = itertools.count(1)

    async def call(
        self,
        exten: str,
        *,
        caller: CallerScript | None = None,
        caller_number: str = "",
        caller_name: str = "",
        context: str = "allonantes-entrant",
        variables: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> CallResult:
        """An incoming call to ``exten`` in ``context``, run until it leaves the dialplan.

        ``caller`` runs once the bot's media is connected (once per media session): it may
        play audio, send DTMF, wait, or ``await media.hangup()``; it is cancelled when the
        media session ends, and an exception it raises is raised here. ``variables`` are on
        the channel when it enters the dialplan (as an endpoint's ``set_var`` would put them).
        Raises ``DialplanError`` for what the emulator does not model, ``TimeoutError`` after
        ``timeout_s``."""
        loop = asyncio.get_running_loop()
        name = f"PJSIP/trunk-{next(self._channel_numbers):08x}"
        channel = self.ami.add_channel(
            name,
            callerid_num=caller_number,
            callerid_name=caller_name,
            state="Ring",
            **dict(variables or {}),
        )
        channel.context, channel.exten, channel.priority = context, exten, 1
        channel.application = channel.data = ""
        call = Call(channel, caller, loop.time() + timeout_s)
        try:
            await asyncio.wait_for(
                self._interpreter().run(call, Leg(channel), context, exten, 1, subroutine=False),
                max(0.0, call.deadline - loop.time()) + 1.0,
            )
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"the call was still in the dialplan after {timeout_s} s "
                f"(last step: {call.trace[-1] if call.trace else None})"
            ) from None
        finally:
            self.ami.remove_channel(name)
            if call.media is not None:
                await call.media.close()
        assert call.ending is not None
        return CallResult(
            ending=call.ending,
            variables=channel.read_back(),
            raw_variables=dict(channel.variables),
            app_status={
                key: value
                for key in ("TRYSTATUS", "DIALSTATUS", "QUEUESTATUS")
                if (value := channel.get_variable(key)) is not None
            },
            trace=call.trace,
            callerid_num=channel.callerid_num,
            callerid_name=channel.callerid_name,
            media=call.media,
            channel=name,
            uniqueid=channel.uniqueid,
            hangup_cause=call.hangup_cause,
            queue=call.queue,
            operator_headers=call.operator_headers,
            operator_trace=call.operator_trace,
        )

    def _interpreter(self) -> Interpreter:
        """What runs one call, with the PBX's settings as they are when the call starts."""
        return Interpreter(
            dialplan=self.dialplan,
            globals=self.globals,
            queues=self._queues,
            media=MediaLegs(
                ami=self.ami,
                websocket_uri=self.websocket_uri,
                websocket_uris=self.websocket_uris,
                websocket_connect_timeout_s=self.websocket_connect_timeout_s,
                websocket_clients=self._websocket_clients,
                asterisk_version=self.ami.asterisk_version,
            ),
        )
