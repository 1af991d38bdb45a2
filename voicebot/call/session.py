"""One phone call with the bot, from the greeting to the goodbye or the handoff.

States: GREETING → LISTENING → THINKING → SPEAKING → (LISTENING | HANDOFF | ENDING).

Three tasks run per call:
- the receiver reads the transport: caller audio goes to the VAD always, and to the ASR only
  between speech start (with pre-roll) and speech end; DTMF and typed text become turns;
- the pacer sends one 20 ms frame every 20 ms, the bot's speech or silence, whatever else
  happens (AudioSocket hangs up after 2 s without traffic; Asterisk does not re-time it);
- the conversation handles turns one at a time: ASR final → dialogue → speech → decision.

Any exception inside a call ends in a handoff with reason "erreur": the caller reaches a
person, and no other call is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicebot.core.audio import SILENCE_FRAME, AudioFrame
from voicebot.core.config import Settings
from voicebot.core.events import CallEvent, CallHub
from voicebot.core.interfaces import (
    Asr,
    AsrStream,
    AudioIn,
    BargeIn,
    BotReply,
    CallControl,
    CallerActive,
    CallerHungUp,
    CallStarted,
    Dialogue,
    DtmfIn,
    Handoff,
    MediaTransport,
    SpeechEnded,
    SpeechStarted,
    TextIn,
    Tts,
    Utterance,
    Vad,
)
from voicebot.core.logs import call_logger, redact_numbers

FRAME_S = 0.02
TICK_FRAMES = 25  # the conversation checks silence and call duration every 0.5 s of call time


class State(enum.Enum):
    GREETING = "accueil"
    LISTENING = "écoute"
    THINKING = "réflexion"
    SPEAKING = "parole"
    HANDOFF = "transfert"
    ENDING = "fin"


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


class _Speaker:
    """The outgoing audio queue the pacer drains, one frame per tick."""

    def __init__(self) -> None:
        self.frames: deque[AudioFrame] = deque()
        self.producing = 0  # TTS generators still filling the queue
        self.idle = asyncio.Event()
        self.idle.set()
        self.first_frame_sent: asyncio.Future[float] | None = None

    @property
    def active(self) -> bool:
        return bool(self.frames) or self.producing > 0

    def next_frame(self) -> AudioFrame | None:
        if self.frames:
            frame = self.frames.popleft()
            if self.first_frame_sent is not None and not self.first_frame_sent.done():
                self.first_frame_sent.set_result(time.perf_counter())
            return frame
        if self.producing == 0:
            self.idle.set()
        return None

    def clear(self) -> None:
        self.frames.clear()


class CallSession:
    """Runs one call on one media transport. Create one per call; ``await run()``."""

    def __init__(
        self,
        services: SessionServices,
        transport: MediaTransport,
        *,
        lockstep: bool = False,
    ) -> None:
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
        self.log = call_logger(__name__, self.call_id)
        self._speaker = _Speaker()
        self._turns: asyncio.Queue[tuple[str, Any, float]] = asyncio.Queue()
        self._vad: Vad | None = None
        self._asr_stream: AsrStream | None = None
        # speech frames, or the wall-clock time of the VAD's end-of-speech decision
        self._asr_queue: asyncio.Queue[AudioFrame | float] = asyncio.Queue()
        self._utterance_open = False
        self._endpoint_wait_ms = 0.0
        self._quiet_since = 0.0  # call clock when neither side last spoke
        self._producer: asyncio.Task[None] | None = None
        self._last_reply: tuple[str, ...] = ()
        self._low_confidence_turns = 0
        self._silence_prompts = 0
        self._hung_up = asyncio.Event()
        self._finished = asyncio.Event()
        self.not_thinking = asyncio.Event()  # set while the bot is not computing a reply
        self.tasks: list[asyncio.Task[None]] = []

    # ----- lifecycle ------------------------------------------------------------------

    @property
    def bot_speaking(self) -> bool:
        return self._speaker.active

    async def lockstep_ready(self) -> None:
        """Lockstep only: wait until the bot has its next frame, so compute costs no call time."""
        await self.not_thinking.wait()
        await self._asr_queue.join()  # an engine slower than real time is not a silence
        await self.not_thinking.wait()
        while self._speaker.producing > 0 and not self._speaker.frames:
            await asyncio.sleep(0.002)  # TTS is synthesising the next sentence
        await asyncio.sleep(0)  # let the other tasks of the call run

    def request_handoff(self, why: str) -> None:
        """From outside the call (server shutdown): hand the caller to an operator."""
        self._turns.put_nowait(("shutdown", why, time.perf_counter()))

    async def run(self) -> CallReport:
        events = self.transport.events()
        try:
            first = await asyncio.wait_for(events.__anext__(), timeout=5.0)
        except (asyncio.TimeoutError, StopAsyncIteration):
            return self.report
        if not isinstance(first, CallStarted):
            self.log.warning("transport did not start with CallStarted: %r", type(first).__name__)
            return self.report
        self.call_id = first.call_id
        self.channel = first.channel
        self.report.call_id = self.call_id
        self.log = call_logger(__name__, self.call_id)
        self.log.info("call started on %s", self.transport.name)
        self._publish("started", transport=self.transport.name)
        await self._record("start_call", self.call_id, self.transport.name, first.caller_number)
        learn_caller = first.caller_number is None and self._asterisk_control() is not None
        if self.services.asr is not None:
            self._asr_stream = self.services.asr.start_stream(self.call_id)
        self._vad = self.services.vad_factory()

        receiver = asyncio.create_task(self._receive(events), name=f"recv-{self.call_id}")
        self.tasks = [receiver]
        if not self.lockstep:
            self.tasks.append(asyncio.create_task(self._pace(), name=f"pace-{self.call_id}"))
        if self._asr_stream is not None:
            self.tasks.append(asyncio.create_task(self._feed_asr(), name=f"asr-{self.call_id}"))
        if learn_caller:  # AudioSocket carries no number: AMI knows it, off the greeting's path
            self.tasks.append(asyncio.create_task(self._learn_caller_number()))
        try:
            await self._converse()
        except asyncio.CancelledError:
            self.report.decisions.append("annulé (arrêt du serveur)")
            raise
        except Exception as exc:
            self.log.exception("internal error: handing the call to a human")
            await self._fail_to_human(exc)
        finally:
            await self._finish(events)
        return self.report

    async def _finish(self, events: Any) -> None:
        tasks = [*self.tasks, *([self._producer] if self._producer else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await events.aclose()
        if self._asr_stream is not None:
            self._asr_stream.close()
        with contextlib.suppress(Exception):
            await self.services.dialogue.end(self.call_id)
        self.report.duration_s = time.monotonic() - self.report.started_at
        handoff = self.report.handoff
        await self._record(
            "end_call",
            self.call_id,
            self.report.outcome,
            handoff.reason if handoff else None,
            handoff.as_dict() if handoff else None,
            self.report.context_delivered,
            self.report.channel_end,
        )
        self._publish(
            "ended",
            outcome=self.report.outcome,
            channel_end=self.report.channel_end,
            duration_s=round(self.report.duration_s, 2),
            handoff_reason=handoff.reason if handoff else None,
        )
        self.log.info("call ended: %s after %.1f s", self.report.outcome, self.report.duration_s)
        self._finished.set()
        # A finished task keeps its exception, whose traceback keeps the task's frame, which
        # keeps this session (and its recognizer, ~18 MB): a cycle only a full garbage
        # collection frees, and those are rare. Dropping the tasks frees it all at once.
        self.tasks = []
        self._producer = None

    # ----- conversation -----------------------------------------------------------------

    def clock(self) -> float:
        """Call time in seconds: frames sent × 20 ms (real time live, virtual in lockstep)."""
        return self.report.frames_sent * FRAME_S

    async def _converse(self) -> None:
        policy = self.settings.policy
        reply = await self.services.dialogue.greet(self.call_id)
        if await self._deliver(reply, started=time.perf_counter(), timing=None):
            return
        while True:
            get_turn = asyncio.ensure_future(self._turns.get())
            hung_up = asyncio.ensure_future(self._hung_up.wait())
            done, _ = await asyncio.wait({get_turn, hung_up}, return_when=asyncio.FIRST_COMPLETED)
            if get_turn not in done:
                get_turn.cancel()
                self._mark_abandoned()
                return
            hung_up.cancel()
            kind, value, arrived = get_turn.result()
            if kind == "tick":
                if self.clock() >= policy.max_call_seconds:
                    await self._handoff(
                        Handoff(
                            reason="durée",
                            summary="Durée maximale d'un appel avec le robot atteinte.",
                            last_utterances=self._caller_texts(),
                        ),
                        prompt="max_duration",
                    )
                    return
                quiet_for = self.clock() - self._quiet_since
                silent = not self._caller_busy() and quiet_for >= policy.silence_prompt_s
                if silent and await self._on_silence():
                    return
                continue
            if kind == "shutdown":
                self._stop_speaking()
                await self._handoff(
                    Handoff(
                        reason="arrêt", summary=str(value), last_utterances=self._caller_texts()
                    ),
                    prompt="transfer",
                )
                return
            self._silence_prompts = 0
            ended = await self._handle_turn(kind, value, arrived)
            if self.lockstep:
                self.not_thinking.set()
            if ended:
                return

    def _begin_thinking(self) -> None:
        self._set_state(State.THINKING)
        if self.lockstep:
            self.not_thinking.clear()  # the simulated caller's time waits for the reply

    def _caller_busy(self) -> bool:
        """True while the caller speaks, the bot computes a reply or still talks: the caller
        waiting for the bot is not a silence."""
        return (
            self._speaker.active
            or self.state is State.THINKING
            or self._utterance_open
            or self._asr_queue.qsize() > 0
            or (self._vad is not None and self._vad.in_speech)
        )

    async def _on_silence(self) -> bool:
        self._silence_prompts += 1
        policy = self.settings.policy
        if self._silence_prompts > policy.silence_prompts_before_end:
            answered = self.report.outcome == "resolved"
            action = policy.silence_action
            if action == "hangup" or (action == "hangup_if_answered" and answered):
                await self._say_prompt("silence_goodbye")
                await self._hang_up("fin: silence prolongé")
                return True
            await self._handoff(
                Handoff(
                    reason="silence",
                    summary="L'appelant ne répond plus : ligne silencieuse.",
                    last_utterances=self._caller_texts(),
                ),
                prompt="silence_transfer",
            )
            return True
        self.report.decisions.append(f"relance silence {self._silence_prompts}")
        await self._say_prompt("silence_check")
        return False

    async def _handle_turn(self, kind: str, value: Any, arrived: float) -> bool:
        """One caller turn. Returns True when the call is over for the bot."""
        timing = TurnTiming()
        if kind == "utterance":
            utterance: Utterance = value
            timing.asr_ms = utterance.decode_s * 1000.0
            timing.endpoint_wait_ms = self._endpoint_wait_ms
            self._publish(
                "caller", text=utterance.text, asr_confidence=round(utterance.confidence, 3)
            )
            self.report.turns.append(
                {
                    "speaker": "caller",
                    "text": utterance.text,
                    "asr_confidence": round(utterance.confidence, 3),
                }
            )
            await self._record(
                "add_turn",
                self.call_id,
                "caller",
                utterance.text,
                None,
                None,
                utterance.confidence,
                None,
            )
            if utterance.confidence < self.settings.policy.min_asr_confidence:
                self._low_confidence_turns += 1
                self.report.decisions.append(
                    f"confiance ASR faible ({utterance.confidence:.2f} < {self.settings.policy.min_asr_confidence})"
                )
                if self._low_confidence_turns >= self.settings.policy.max_low_confidence_turns:
                    await self._handoff(
                        Handoff(
                            reason="confiance_asr",
                            summary="La reconnaissance vocale n'a pas compris l'appelant à deux reprises.",
                            last_utterances=self._caller_texts(),
                        ),
                        prompt="transfer",
                    )
                    return True
                tts_from = time.perf_counter()
                first_frame = await self._say_prompt("not_heard")
                self._close_timing(timing, arrived, tts_from, first_frame)
                return False
            self._low_confidence_turns = 0
            started = time.perf_counter()
            reply = await self.services.dialogue.turn(self.call_id, utterance.text)
        elif kind == "dtmf":
            self.report.turns.append({"speaker": "caller", "dtmf": value})
            self._publish("caller", text=f"[touche {value}]", asr_confidence=None)
            await self._record("add_turn", self.call_id, "caller", f"[touche {value}]")
            self._stop_speaking()
            started = time.perf_counter()
            reply = await self.services.dialogue.dtmf(self.call_id, value)
        else:
            text = str(value)
            self.report.turns.append({"speaker": "caller", "text": text})
            self._publish("caller", text=text, asr_confidence=None)
            await self._record("add_turn", self.call_id, "caller", text)
            started = time.perf_counter()
            reply = await self.services.dialogue.turn(self.call_id, text)
        timing.nlu_ms = (time.perf_counter() - started) * 1000.0
        return await self._deliver(
            reply, started=arrived, timing=timing, tts_from=time.perf_counter()
        )

    async def _deliver(
        self,
        reply: BotReply,
        started: float,
        timing: TurnTiming | None,
        tts_from: float | None = None,
    ) -> bool:
        """Speak a reply, then act on its decision. Returns True when the call is over."""
        self.report.turns.append(
            {
                "speaker": "bot",
                "text": " ".join(reply.texts),
                "intent": reply.intent,
                "confidence": round(reply.confidence, 3),
                "entities": dict(reply.entities),
            }
        )
        if reply.texts:
            self._last_reply = reply.texts
        for text in reply.texts:
            self._publish(
                "bot",
                text=text,
                intent=reply.intent,
                confidence=round(reply.confidence, 3),
                entities=dict(reply.entities),
            )
        await self._record(
            "add_turn",
            self.call_id,
            "bot",
            " ".join(reply.texts),
            reply.intent,
            reply.confidence,
            None,
            None,
        )
        first_frame = await self._speak(reply.texts)
        if timing is not None:
            self._close_timing(timing, started, tts_from or started, first_frame)
        if reply.handoff is not None:
            await self._handoff(reply.handoff, prompt=None)
            return True
        if reply.end_call:
            self.report.outcome = "resolved"
            await self._hang_up("fin: au revoir")
            return True
        if reply.intent not in (None, "nlu_fallback"):
            self.report.outcome = "resolved"  # answered at least once; a later hangup keeps it
        self._set_state(State.LISTENING)
        return False

    def _close_timing(
        self, timing: TurnTiming, started: float, tts_from: float, first_frame: float | None
    ) -> None:
        """Every caller turn that gets an answer is timed, a "pardon ?" included."""
        if first_frame is not None:
            timing.response_ms = (first_frame - started) * 1000.0
            timing.tts_first_ms = (first_frame - tts_from) * 1000.0
        self.report.timings.append(timing.as_dict())
        self._publish("timing", **timing.as_dict())

    # ----- speech out -------------------------------------------------------------------

    async def _say_prompt(self, name: str) -> float | None:
        """Speak a named prompt; returns when its first frame was sent (None if silent)."""
        prompt = self.services.prompt
        text = prompt(name) if prompt is not None else ""
        if not text:
            return None
        self.report.turns.append({"speaker": "bot", "text": text, "prompt": name})
        self._publish("bot", text=text, intent=None, confidence=None, entities={})
        await self._record("add_turn", self.call_id, "bot", text)
        return await self._speak((text,))

    async def _speak(self, texts: tuple[str, ...]) -> float | None:
        """Queue the speech of ``texts``; returns when the first frame has been sent."""
        if not texts:
            return None
        self._set_state(State.SPEAKING)
        loop = asyncio.get_running_loop()
        first_sent: asyncio.Future[float] = loop.create_future()
        self._speaker.first_frame_sent = first_sent
        self._speaker.producing += 1
        self._speaker.idle.clear()
        producer = asyncio.create_task(self._produce(texts))
        self._producer = producer
        waiting: list[asyncio.Future[Any]] = [first_sent, producer]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if producer.done() and not first_sent.done():
            if producer.cancelled():
                return None  # barge-in before the first frame
            error = producer.exception()
            if error is not None:
                raise error
            if self._speaker.frames:  # all synthesised already; wait for the pacer
                hung_up = asyncio.ensure_future(self._hung_up.wait())
                await asyncio.wait([first_sent, hung_up], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
                hung_up.cancel()
        return first_sent.result() if first_sent.done() else None

    async def _produce(self, texts: tuple[str, ...]) -> None:
        try:
            for text in texts:
                async for frame in self.services.tts.speak(text):
                    self._speaker.frames.append(frame)
                    if self.lockstep:
                        self.not_thinking.set()
        finally:
            self._speaker.producing -= 1
            if not self._speaker.frames and self._speaker.producing == 0:
                self._speaker.idle.set()
            if self.lockstep:
                self.not_thinking.set()

    def _stop_speaking(self) -> None:
        """Barge-in or a key press: drop the rest of what the bot was saying, at once."""
        if self._producer is not None and not self._producer.done():
            self._producer.cancel()
        self._speaker.clear()
        flush = asyncio.ensure_future(self.transport.flush())
        flush.add_done_callback(_ignore_result)

    async def _wait_spoken(self) -> None:
        """Wait until every queued frame has gone out (or the caller hung up)."""
        hung_up = asyncio.ensure_future(self._hung_up.wait())
        idle = asyncio.ensure_future(self._speaker.idle.wait())
        await asyncio.wait({hung_up, idle}, return_when=asyncio.FIRST_COMPLETED)
        hung_up.cancel()
        idle.cancel()

    async def _pace(self) -> None:
        """Send one frame every 20 ms in real time, speech or silence."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._send_next_frame()
            next_at += FRAME_S
            delay = next_at - loop.time()
            if delay < -0.2:  # the loop was starved: restart the schedule, never burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(max(delay, 0.0))

    async def _send_next_frame(self) -> None:
        frame = self._speaker.next_frame()
        if frame is None:
            frame = SILENCE_FRAME
            if self.state is State.SPEAKING:
                self._set_state(State.LISTENING)
        else:
            self._quiet_since = self.clock()
        await self.transport.send(frame)
        self.report.frames_sent += 1
        if self.report.frames_sent % TICK_FRAMES == 0:
            self._turns.put_nowait(("tick", None, time.perf_counter()))

    # ----- caller audio -----------------------------------------------------------------

    async def _receive(self, events: Any) -> None:
        try:
            async for event in events:
                if isinstance(event, AudioIn):
                    if self.lockstep:
                        await self._send_next_frame()
                    self._on_audio(event.frame)
                elif isinstance(event, DtmfIn):
                    self.log.info("DTMF %s", event.digit)
                    self._begin_thinking()
                    self._turns.put_nowait(("dtmf", event.digit, time.perf_counter()))
                elif isinstance(event, TextIn):
                    self._begin_thinking()
                    self._turns.put_nowait(("text", event.text, time.perf_counter()))
                elif isinstance(event, CallerActive):
                    self._quiet_since = self.clock()  # typing: not a silence, as speech
                elif isinstance(event, CallerHungUp):
                    self.log.info("caller hung up (%s)", event.reason)
                    break
        finally:
            self._hung_up.set()

    def _on_audio(self, frame: AudioFrame) -> None:
        vad = self._vad
        if vad is None:
            return
        was_speaking = vad.in_speech
        event = vad.feed(frame, bot_speaking=self._speaker.active)
        if isinstance(event, BargeIn):
            self.log.info("barge-in: the caller speaks over the bot")
            self.report.decisions.append("interruption (barge-in)")
            self._stop_speaking()
            self._set_state(State.LISTENING)
            self._start_utterance(event.preroll)
        elif isinstance(event, SpeechStarted):
            if self._speaker.active:
                return  # speech over the bot that is not a barge-in: not a turn
            self._start_utterance(event.preroll)
        if isinstance(event, SpeechEnded):
            if self._asr_stream is not None and self._utterance_open:
                self._utterance_open = False
                self._endpoint_wait_ms = max(0.0, (event.decided_at_s - event.at_s) * 1000.0)
                self._asr_queue.put_nowait(time.perf_counter())  # finalize marker
            return
        if self._utterance_open and (vad.in_speech or was_speaking):
            self._asr_queue.put_nowait(frame)
        if vad.in_speech:
            self._quiet_since = self.clock()

    def _start_utterance(self, preroll: tuple[AudioFrame, ...]) -> None:
        if self._asr_stream is None or self._utterance_open:
            return
        self._utterance_open = True
        self._publish("state", state="l'appelant parle")
        for frame in preroll:
            self._asr_queue.put_nowait(frame)

    async def _feed_asr(self) -> None:
        """Push speech to the ASR off the receiver's path; finalize on end of speech."""
        stream = self._asr_stream
        assert stream is not None
        max_frames = int(self.settings.asr.max_utterance_s / FRAME_S)
        pushed = 0
        while True:
            frame = await self._asr_queue.get()
            if isinstance(frame, AudioFrame):
                try:
                    if pushed >= max_frames:
                        continue  # too long: the rest waits for the end of speech
                    partial = await stream.push(frame)
                    pushed += 1
                    if partial:
                        self._publish("partial", text=partial)
                finally:
                    self._asr_queue.task_done()
                continue
            pushed = 0
            decided = frame
            self._begin_thinking()
            self._asr_queue.task_done()
            utterance = await stream.finalize()
            if utterance.is_empty:
                self.log.info("empty utterance ignored")
                self._set_state(State.LISTENING)
                if self.lockstep:
                    self.not_thinking.set()
                continue
            self.log.info(
                "heard %r (confidence %.2f)", redact_numbers(utterance.text), utterance.confidence
            )
            self._turns.put_nowait(("utterance", utterance, decided))

    # ----- decisions ----------------------------------------------------------------------

    def _caller_texts(self) -> tuple[str, ...]:
        texts = [
            t["text"] for t in self.report.turns if t.get("speaker") == "caller" and t.get("text")
        ]
        return tuple(texts[-3:])

    async def _handoff(self, handoff: Handoff, prompt: str | None) -> None:
        """Hand the caller to a human: context on the channel, then end the media session."""
        self._set_state(State.HANDOFF)
        self.report.handoff = handoff
        self.report.outcome = "transferred" if handoff.reason != "erreur" else "error"
        self.report.decisions.append(f"transfert: {handoff.reason}")
        self.log.info("handoff to an operator: %s", handoff.reason)
        if prompt is not None:
            with contextlib.suppress(Exception):
                await self._say_prompt(prompt)
        await self._wait_spoken()
        delivered = False
        control = self._asterisk_control()
        if control is not None:
            delivered = await self._carry_out(control.handoff(self.call_id, self.channel, handoff))
        self.report.context_delivered = delivered if control is not None else None
        if control is not None and not delivered:
            self.report.decisions.append("contexte non transmis (AMI indisponible)")
        self._publish("handoff", **handoff.as_dict(), context_delivered=delivered)
        self.report.channel_end = "queued"
        await self._end_media()

    async def _hang_up(self, decision: str) -> None:
        """The call ends here for the caller: once the goodbye is spoken, Asterisk hangs up.

        Over Asterisk the decision must reach the dialplan through AMI before the media ends;
        if it cannot, the dialplan queues the caller (the fail-safe), and the record says so."""
        self.report.decisions.append(decision)
        await self._wait_spoken()
        if self._hung_up.is_set():
            self._mark_abandoned()
            return
        control = self._asterisk_control()
        if not self.transport.dialplan_continues:
            self.report.channel_end = "hung_up_by_bot"  # the end of the media ends the call
        elif control is not None and await self._carry_out(
            control.hang_up(self.call_id, self.channel)
        ):
            self.report.channel_end = "hung_up_by_bot"
        else:
            self.log.warning("hang-up not delivered to Asterisk: the caller goes to the queue")
            await self._handoff(
                Handoff(
                    reason="fin_non_transmise",
                    summary=(
                        "Le robot avait terminé l'appel mais n'a pas pu demander à Asterisk "
                        "de raccrocher (AMI indisponible) : l'appelant arrive dans la file."
                    ),
                    intent=self._last_intent(),
                    last_utterances=self._caller_texts(),
                ),
                prompt=None,
            )
            return
        self._set_state(State.ENDING)
        self._publish("hangup", decision=decision)
        await self._end_media()

    def _asterisk_control(self) -> CallControl | None:
        """AMI, when this call runs over Asterisk and AMI is configured."""
        return self.services.call_control if self.transport.dialplan_continues else None

    async def _carry_out(self, decision: Awaitable[bool]) -> bool:
        """Await a CallControl decision, bounded: a slow AMI must not hold the caller."""
        try:
            return await asyncio.wait_for(decision, timeout=3.0)
        except Exception:
            self.log.warning("AMI decision failed: the caller reaches the queue")
            return False

    async def _learn_caller_number(self) -> None:
        control = self._asterisk_control()
        if control is None:
            return
        try:
            number = await asyncio.wait_for(control.caller_number(self.call_id), timeout=5.0)
        except Exception:
            self.log.warning("caller number unavailable from AMI")
            return
        if number is not None:
            await self._record("set_caller", self.call_id, number)

    def _last_intent(self) -> str | None:
        for turn in reversed(self.report.turns):
            intent = turn.get("intent")
            if turn.get("speaker") == "bot" and intent not in (None, "nlu_fallback"):
                return str(intent)
        return None

    async def _fail_to_human(self, exc: BaseException) -> None:
        handoff = Handoff(
            reason="erreur",
            summary=f"Incident technique pendant l'appel ({type(exc).__name__}).",
            last_utterances=self._caller_texts(),
        )
        self._stop_speaking()
        try:
            await asyncio.wait_for(self._handoff(handoff, prompt="transfer_error"), timeout=10.0)
        except Exception:
            self.log.exception("handoff after an error failed; ending the media session")
            with contextlib.suppress(Exception):
                await self._end_media()

    async def _end_media(self) -> None:
        self._set_state(State.ENDING)
        if not self._hung_up.is_set():
            await self.transport.end()

    def _mark_abandoned(self) -> None:
        if self.report.outcome != "resolved":
            self.report.outcome = "abandoned"
        self.report.channel_end = "caller_hung_up"
        self.report.decisions.append("raccroché par l'appelant")

    # ----- plumbing -----------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            if self.state is State.THINKING:
                self._quiet_since = self.clock()  # a long reply time is not the caller's silence
            self.state = state
            self._publish("state", state=state.value)

    def _publish(self, kind: str, **data: Any) -> None:
        self.services.hub.publish(CallEvent(self.call_id, kind, data))

    async def _record(self, method: str, *args: Any) -> None:
        records = self.services.records
        if records is None:
            return
        try:
            await getattr(records, method)(*args)
        except Exception:
            # A records failure must never cost the caller their call.
            self.log.exception("call records: %s failed", method)


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).debug("flush failed: %s", task.exception())


SessionRunner = Callable[[MediaTransport], Awaitable[None]]
