"""Bookkeeping: what a call leaves behind, written in one place.

Each turn is one ``TurnRecord``, made once; the three ways it is written all derive from it
here: the ``CallReport`` entry (``voicebot call``, tests, the benchmark), the hub event(s) the
console and the softphone follow live, and the row in the call records.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from voicebot.core.events import CallEvent, CallHub
from voicebot.core.interfaces import BotReply, Handoff, Utterance
from voicebot.core.logs import CallLogger

TurnSource = Literal["speech", "dtmf", "text", "reply", "prompt"]
CALLER_SOURCES = ("speech", "dtmf", "text")
SLOW_WRITE_S = 2.0  # a records write slower than this is logged (a locked or busy database)


class Recorder(Protocol):
    """What the session needs from the call records (voicebot.records.store.CallRecords)."""

    async def start_call(self, call_id: str, transport: str, caller_number: str | None) -> None: ...

    async def set_caller(self, call_id: str, caller_number: str | None) -> None: ...

    async def add_turn(
        self,
        call_id: str,
        speaker: str,
        text: str,
        intent: str | None = None,
        confidence: float | None = None,
        asr_confidence: float | None = None,
        latency_ms: float | None = None,
        model_version: str | None = None,
    ) -> None: ...

    async def end_call(
        self,
        call_id: str,
        outcome: str,
        handoff_reason: str | None = None,
        handoff: dict[str, Any] | None = None,
        context_delivered: bool | None = None,
        channel_end: str | None = None,
    ) -> None: ...


@dataclass
class TurnTiming:
    """Per-stage timings of one caller turn, in milliseconds (wall clock)."""

    endpoint_wait_ms: float = 0.0  # last voiced frame → VAD's end-of-speech decision
    asr_ms: float = 0.0  # decision → ASR final result
    nlu_ms: float = 0.0  # dialogue turn (Rasa)
    tts_first_ms: float = 0.0  # reply text → first bot frame ready
    response_ms: float = 0.0  # decision (or DTMF/text arrival) → first bot frame sent

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.__dict__.items()}


@dataclass
class CallReport:
    """What happened in one call: for `voicebot call`, tests and the benchmark."""

    call_id: str = ""
    outcome: str = "abandoned"
    handoff: Handoff | None = None
    context_delivered: bool | None = None
    # what happened to the caller's line: "hung_up_by_bot", "queued" or "caller_hung_up"
    channel_end: str | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    frames_sent: int = 0
    started_at: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0


@dataclass(frozen=True)
class TurnRecord:
    """One turn of the call, by the caller (speech, a key, typed text) or by the bot (a reply
    from the dialogue, a named prompt). Make it with one of the constructors below."""

    source: TurnSource
    text: str  # as recorded and shown: a reply's sentences joined, "[touche 0]" for a key
    sentences: tuple[str, ...] = ()  # a reply's sentences: one hub event each
    intent: str | None = None
    confidence: float | None = None  # the dialogue's (replies)
    entities: dict[str, str] = field(default_factory=dict)
    asr_confidence: float | None = None  # the recognizer's (speech)
    digit: str | None = None
    prompt: str | None = None
    # the dialogue model that read the caller's turn / wrote the reply (None for a prompt)
    model_version: str | None = None

    @classmethod
    def heard(cls, utterance: Utterance, model_version: str | None = None) -> TurnRecord:
        return cls(
            "speech",
            utterance.text,
            asr_confidence=utterance.confidence,
            model_version=model_version,
        )

    @classmethod
    def key(cls, digit: str, model_version: str | None = None) -> TurnRecord:
        return cls("dtmf", f"[touche {digit}]", digit=digit, model_version=model_version)

    @classmethod
    def typed(cls, text: str, model_version: str | None = None) -> TurnRecord:
        return cls("text", text, model_version=model_version)

    @classmethod
    def reply(cls, reply: BotReply) -> TurnRecord:
        return cls(
            "reply",
            " ".join(reply.texts),
            sentences=reply.texts,
            intent=reply.intent,
            confidence=reply.confidence,
            entities=dict(reply.entities),
            model_version=reply.model_version,
        )

    @classmethod
    def spoken_prompt(cls, name: str, text: str) -> TurnRecord:
        return cls("prompt", text, sentences=(text,), prompt=name)

    @property
    def speaker(self) -> str:
        return "caller" if self.source in CALLER_SOURCES else "bot"

    def report_entry(self) -> dict[str, Any]:
        """The entry in ``CallReport.turns``."""
        entry: dict[str, Any] = {"speaker": self.speaker}
        if self.source == "dtmf":
            entry["dtmf"] = self.digit
            return entry
        entry["text"] = self.text
        if self.source == "speech":
            entry["asr_confidence"] = _rounded(self.asr_confidence)
        elif self.source == "reply":
            entry["intent"] = self.intent
            entry["confidence"] = _rounded(self.confidence)
            entry["entities"] = dict(self.entities)
        elif self.source == "prompt":
            entry["prompt"] = self.prompt
        return entry

    def hub_events(self) -> list[tuple[str, dict[str, Any]]]:
        """The live events: ("caller", {text, asr_confidence}) for a caller turn; one
        ("bot", {text, intent, confidence, entities}) per sentence the bot says."""
        if self.speaker == "caller":
            return [
                ("caller", {"text": self.text, "asr_confidence": _rounded(self.asr_confidence)})
            ]
        return [
            (
                "bot",
                {
                    "text": sentence,
                    "intent": self.intent,
                    "confidence": _rounded(self.confidence),
                    "entities": dict(self.entities),
                },
            )
            for sentence in self.sentences
        ]

    def records_row(self) -> tuple[str, str, str | None, float | None, float | None]:
        """``Recorder.add_turn``'s arguments after the call id: speaker, text, intent,
        confidence, asr_confidence (unrounded)."""
        return (self.speaker, self.text, self.intent, self.confidence, self.asr_confidence)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class CallBook:
    """Writes what happens in one call: the report, the hub events and the call records.

    A records failure is logged and never costs the caller their call, and neither does a
    slow or locked database: the call's writes go out in order from a writer of their own,
    off the conversation's path (the call's end waits for them, once the caller has left)."""

    def __init__(
        self, report: CallReport, hub: CallHub, records: Recorder | None, log: CallLogger
    ) -> None:
        self.report = report
        self.hub = hub
        self.records = records
        self.log = log
        self.call_id = "?"
        self._writes: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    def start(self, call_id: str, log: CallLogger) -> None:
        self.call_id = call_id
        self.report.call_id = call_id
        self.log = log

    # ----- the three ways, derived from one record ---------------------------------------

    async def turn(self, turn: TurnRecord) -> None:
        self.report.turns.append(turn.report_entry())
        for kind, data in turn.hub_events():
            self.publish(kind, **data)
        # no latency_ms (the timings go to the report), then the model version
        await self.record("add_turn", self.call_id, *turn.records_row(), None, turn.model_version)

    def timing(self, timing: TurnTiming) -> None:
        """Every caller turn that gets an answer is timed, a "pardon ?" included."""
        self.report.timings.append(timing.as_dict())
        self.publish("timing", **timing.as_dict())

    async def call_started(self, transport: str, caller_number: str | None) -> None:
        self.publish("started", transport=transport)
        await self.record("start_call", self.call_id, transport, caller_number)

    async def call_ended(self) -> None:
        report = self.report
        handoff = report.handoff
        self.enqueue(
            "end_call",
            self.call_id,
            report.outcome,
            handoff.reason if handoff else None,
            handoff.as_dict() if handoff else None,
            report.context_delivered,
            report.channel_end,
        )
        await self.flush()
        self.publish(
            "ended",
            outcome=report.outcome,
            channel_end=report.channel_end,
            duration_s=round(report.duration_s, 2),
            handoff_reason=handoff.reason if handoff else None,
        )

    # ----- reading the report back -------------------------------------------------------

    def caller_texts(self) -> tuple[str, ...]:
        """The caller's last three sentences, for the operator's context."""
        texts = [
            t["text"] for t in self.report.turns if t.get("speaker") == "caller" and t.get("text")
        ]
        return tuple(texts[-3:])

    def last_intent(self) -> str | None:
        for turn in reversed(self.report.turns):
            intent = turn.get("intent")
            if turn.get("speaker") == "bot" and intent not in (None, "nlu_fallback"):
                return str(intent)
        return None

    # ----- plumbing ----------------------------------------------------------------------

    def publish(self, kind: str, **data: Any) -> None:
        self.hub.publish(CallEvent(self.call_id, kind, data))

    async def record(self, method: str, *args: Any) -> None:
        """Queue one write to the call records; returns at once (see the class docstring)."""
        self.enqueue(method, *args)

    def enqueue(self, method: str, *args: Any) -> None:
        if self.records is None:
            return
        self._writes.append((method, args))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_all())

    async def flush(self) -> None:
        """Wait until every queued write is done (or has failed, logged)."""
        while self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        records = self.records
        while self._writes and records is not None:
            method, args = self._writes.popleft()
            started = time.monotonic()
            try:
                await getattr(records, method)(*args)
            except Exception:
                # A records failure must never cost the caller their call.
                self.log.exception("call records: %s failed", method)
                continue
            waited = time.monotonic() - started
            if waited > SLOW_WRITE_S:
                self.log.warning(
                    "call records: %s took %.1f s (database busy or locked); "
                    "the call went on meanwhile",
                    method,
                    waited,
                )
