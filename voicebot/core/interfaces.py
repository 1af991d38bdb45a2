"""The small interfaces between the rooms of the bot, and the values that cross them.

Each interface has a real implementation (Vosk/Whisper, Silero, Piper/espeak-ng, Rasa,
AudioSocket/chan_websocket, AMI). Tests use the real engines with stand-in models; the only
fakes live at the process boundary (the Asterisk emulator).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicebot.core.audio import AudioFrame

# --- speech recognition -------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Utterance:
    """What the caller said, as the ASR heard it."""

    text: str
    words: tuple[Word, ...] = ()
    confidence: float = 0.0  # 0..1, derived from word confidences; used by the handoff policy
    audio_s: float = 0.0
    decode_s: float = 0.0  # time from end of speech to the final result

    @property
    def is_empty(self) -> bool:
        return not self.text.strip()


class AsrStream(Protocol):
    """One caller's recognizer. Fed only while the caller speaks."""

    async def push(self, frame: AudioFrame) -> str | None:
        """Feed 20 ms of speech; returns a partial transcript when it changed."""

    async def settle(self) -> str | None:
        """The caller pauses, perhaps for good: get the final transcript of what was said so
        far ready now, so that ``finalize`` is quick if the turn ends here. More speech
        after it continues the same utterance. Returns the words so far (None: not known
        before ``finalize``)."""

    async def finalize(self) -> Utterance:
        """End of the utterance: the final transcript. The stream can then be reused."""

    def close(self) -> None: ...


class Asr(Protocol):
    name: str

    def start_stream(self, call_id: str) -> AsrStream: ...


# --- voice activity -----------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    at_s: float  # stream time of the first voiced frame
    preroll: tuple[AudioFrame, ...] = ()  # frames just before it, for the ASR


@dataclass(frozen=True)
class SpeechEnded:
    at_s: float  # stream time of the last voiced frame
    decided_at_s: float  # stream time when the silence was long enough to decide


@dataclass(frozen=True)
class BargeIn:
    at_s: float  # stream time when the interruption began
    preroll: tuple[AudioFrame, ...] = ()  # the interruption's audio so far, for the ASR


SpeechEvent = SpeechStarted | SpeechEnded | BargeIn


class Vad(Protocol):
    # The silence that ends the current turn, in ms: vad.end_silence_ms when a turn begins,
    # then set by the end-of-turn rule as the caller's words come (voicebot.call.turn_end).
    end_silence_ms: int

    def feed(self, frame: AudioFrame, bot_speaking: bool = False) -> SpeechEvent | None: ...

    @property
    def in_speech(self) -> bool: ...

    @property
    def pause_ms(self) -> int: ...

    def reset(self) -> None: ...


# --- speech synthesis ---------------------------------------------------------------------


class Tts(Protocol):
    name: str

    def speak(self, text: str) -> AsyncIterator[AudioFrame]:
        """Telephone-format 20 ms frames; cached renderings first, else sentence by sentence."""


# --- dialogue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Handoff:
    """The structured signal that the call must go to a human, with what they need to know."""

    reason: (
        str  # "demande", "dtmf", "urgence", "incompréhension", "confiance_asr", "durée", "erreur"
    )
    intent: str | None = None
    entities: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    last_utterances: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "intent": self.intent,
            "entities": dict(self.entities),
            "summary": self.summary,
            "last_utterances": list(self.last_utterances),
        }


@dataclass(frozen=True)
class BotReply:
    texts: tuple[str, ...]
    intent: str | None = None
    confidence: float = 0.0
    entities: dict[str, str] = field(default_factory=dict)
    handoff: Handoff | None = None
    end_call: bool = False  # the caller said goodbye: hang up after speaking
    model_version: str | None = None  # the dialogue model that read the turn, when known


@dataclass(frozen=True)
class Understanding:
    """What the NLU read in one text, before any dialogue state: the end-of-turn rule reads
    the caller's words as they come, and the turn reuses it when the final words match."""

    text: str
    intent: str | None
    confidence: float
    # the engine's own result, handed back to it by Dialogue.turn (opaque elsewhere)
    raw: Mapping[str, Any] = field(default_factory=dict)


class Dialogue(Protocol):
    async def greet(self, call_id: str) -> BotReply: ...

    async def understand(self, text: str) -> Understanding: ...

    async def turn(
        self, call_id: str, text: str, understood: Understanding | None = None
    ) -> BotReply: ...

    async def dtmf(self, call_id: str, digit: str) -> BotReply: ...

    async def end(self, call_id: str) -> None: ...


# --- telephony ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallStarted:
    call_id: str
    channel: str | None = None  # Asterisk channel name, when the transport knows it
    caller_number: str | None = None  # never logged raw; hashed in records


@dataclass(frozen=True)
class AudioIn:
    frame: AudioFrame


@dataclass(frozen=True)
class DtmfIn:
    digit: str


@dataclass(frozen=True)
class TextIn:
    """A typed caller turn (browser softphone's text box, simulations): skips VAD and ASR."""

    text: str


@dataclass(frozen=True)
class CallerActive:
    """The caller is busy in a way the bot cannot hear (typing in the browser softphone's text
    box): not a silence. Phone transports never send it."""


@dataclass(frozen=True)
class CallerHungUp:
    reason: str = "hangup"


TransportEvent = CallStarted | AudioIn | DtmfIn | TextIn | CallerActive | CallerHungUp


class MediaTransport(Protocol):
    """One call's media path to Asterisk."""

    name: str
    # True when, after ``end()``, Asterisk's dialplan goes on and carries out the bot's decision
    # (hang up, or queue): the AudioSocket and chan_websocket transports. False when the end of
    # the media is the end of the call (browser softphone, simulations, microphone).
    dialplan_continues: bool

    def events(self) -> AsyncIterator[TransportEvent]: ...

    async def send(self, frame: AudioFrame) -> None:
        """Send 20 ms of telephone audio (the session paces calls in real time)."""

    async def flush(self) -> None:
        """Drop audio already queued towards the caller (barge-in)."""

    async def end(self) -> None:
        """End the media session; Asterisk's dialplan continues (the handoff point)."""


# Runs one transport as a call, until the call is over: how a server that accepts calls (the
# AudioSocket and chan_websocket servers, the browser softphone) hands each one to the bot.
OnCall = Callable[[MediaTransport], Awaitable[None]]


class CallControl(Protocol):
    """How the bot tells Asterisk what happens to the caller when the media session ends.

    Each decision is set on the caller's channel *before* the media ends; the dialplan reads it
    at its next priority. False means Asterisk did not get it (AMI down or slow): the dialplan
    then queues the caller — the fail-safe is always a person."""

    async def caller_number(self, call_id: str) -> str | None:
        """The caller's number as Asterisk knows it (CALLERID(num)); None if unknown."""

    async def handoff(self, call_id: str, channel: str | None, handoff: Handoff) -> bool:
        """The caller goes to the operators' queue, with this context."""

    async def hang_up(self, call_id: str, channel: str | None) -> bool:
        """Asterisk hangs the caller up (the bot has said goodbye)."""
