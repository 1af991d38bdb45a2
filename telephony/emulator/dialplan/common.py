"""What the dialplan package's modules share: the errors, the caller's side of a call, the
steps traced, and the state of a running call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from telephony.emulator.ami import EmulatedChannel
from telephony.emulator.audiosocket import AudioSocketCaller
from telephony.emulator.chan_websocket import ChanWebSocketPeer

Media = AudioSocketCaller | ChanWebSocketPeer
CallerScript = Callable[[Media], Awaitable[None]]
Ending = Literal["hangup", "queue", "caller_hangup", "ami_hangup"]


class DialplanError(Exception):
    """The dialplan does something the emulator does not model, or that Asterisk would
    refuse or warn about (a missing context, label or closing parenthesis)."""


class UnsupportedApplication(DialplanError):
    """An application the emulator does not know: add it to the emulator, faithfully."""


class Step(NamedTuple):
    """One executed priority: its location, application and arguments once substituted."""

    context: str
    exten: str
    priority: int
    app: str
    args: str


@dataclass(frozen=True)
class QueueEntry:
    """What ``Queue()`` was asked (apps/app_queue.c ``queue_exec`` arguments)."""

    name: str
    options: str
    timeout: str


# --- a running call ------------------------------------------------------------------------


@dataclass
class Leg:
    """The channel a dialplan runs on: the caller's, or an operator's in a pre-dial handler."""

    channel: EmulatedChannel
    operator: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    channel: EmulatedChannel
    script: CallerScript | None
    deadline: float
    trace: list[Step] = field(default_factory=list)
    operator_trace: list[Step] = field(default_factory=list)
    operator_headers: dict[str, str] = field(default_factory=dict)
    media: Media | None = None
    ending: Ending | None = None
    hangup_cause: int | None = None
    queue: QueueEntry | None = None
