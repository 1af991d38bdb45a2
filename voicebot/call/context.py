"""What the parts of one call share: the services, the call's identity, clock and state, and
the queue of turns the conversation takes one at a time."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from voicebot.call.report import CallBook, CallReport, Recorder
from voicebot.core.config import Settings
from voicebot.core.events import CallHub
from voicebot.core.interfaces import (
    Asr,
    CallControl,
    CallStarted,
    Dialogue,
    MediaTransport,
    Tts,
    Vad,
)
from voicebot.core.logs import call_logger

FRAME_S = 0.02
TICK_FRAMES = 25  # the conversation checks silence and call duration every 0.5 s of call time
LOGGER_NAME = "voicebot.call.session"  # one log per call, whichever part of it writes

# (kind, value, arrival): "utterance", "dtmf", "text", "tick", "shutdown" or "error" (an
# exception from a part of the call outside the conversation, raised there); the wall-clock
# time (perf_counter) the turn arrived, or the VAD decided the caller had finished speaking.
Turn = tuple[str, Any, float]


class State(enum.Enum):
    GREETING = "accueil"
    LISTENING = "écoute"
    THINKING = "réflexion"
    SPEAKING = "parole"
    HANDOFF = "transfert"
    ENDING = "fin"


@dataclass
class SessionServices:
    """The per-process services every call shares (one model each, loaded once)."""

    settings: Settings
    dialogue: Dialogue
    tts: Tts
    vad_factory: Callable[[], Vad]
    asr: Asr | None = None
    call_control: CallControl | None = None
    hub: CallHub = field(default_factory=CallHub)
    records: Recorder | None = None
    prompt: Callable[[str], str] | None = None
    # Where the calls' VAD scores their frames, off the event loop (Listener._on_audio):
    # one thread per process; None = the loop's default executor.
    vad_executor: Executor | None = None


class CallContext:
    """One call's shared state. The parts of the call (listener, playout, turn policy,
    decisions) each hold it; it holds none of them."""

    def __init__(self, services: SessionServices, transport: MediaTransport, lockstep: bool):
        self.services = services
        self.settings = services.settings
        self.transport = transport
        # lockstep: one bot frame per caller frame (offline simulation, faster than real time);
        # otherwise a real-time pacer sends a frame every 20 ms.
        self.lockstep = lockstep
        self.call_id = "?"
        self.channel: str | None = None
        self.state = State.GREETING
        self.report = CallReport()
        self.log = call_logger(LOGGER_NAME, self.call_id)
        self.book = CallBook(self.report, services.hub, services.records, self.log)
        self.turns: asyncio.Queue[Turn] = asyncio.Queue()
        self.quiet_since = 0.0  # call clock when neither side last spoke
        self.hung_up = asyncio.Event()
        self.not_thinking = asyncio.Event()  # set while the bot is not computing a reply
        self.bot_asked = False  # the bot's last words were a question (voicebot.call.turn_end)

    def start(self, started: CallStarted) -> None:
        self.call_id = started.call_id
        self.channel = started.channel
        self.log = call_logger(LOGGER_NAME, self.call_id)
        self.book.start(self.call_id, self.log)

    def clock(self) -> float:
        """Call time in seconds: frames sent × 20 ms (real time live, virtual in lockstep)."""
        return self.report.frames_sent * FRAME_S

    def set_state(self, state: State) -> None:
        if state is not self.state:
            if self.state is State.THINKING:
                self.quiet_since = self.clock()  # a long reply time is not the caller's silence
            self.state = state
            self.book.publish("state", state=state.value)

    def begin_thinking(self) -> None:
        self.set_state(State.THINKING)
        if self.lockstep:
            self.not_thinking.clear()  # the simulated caller's time waits for the reply

    def done_thinking(self) -> None:
        if self.lockstep:
            self.not_thinking.set()

    def asterisk_control(self) -> CallControl | None:
        """AMI, when this call runs over Asterisk and AMI is configured."""
        return self.services.call_control if self.transport.dialplan_continues else None
