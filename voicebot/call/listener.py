"""Listening: what comes from the caller, from the transport to turns.

The receiver reads the transport: caller audio goes to the VAD always, and to the ASR only
between speech start (with pre-roll) and speech end; DTMF and typed text become turns. The
ASR is fed off the receiver's path, and its final result becomes a turn.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from voicebot.call.context import FRAME_S, CallContext, State
from voicebot.call.playout import Playout
from voicebot.core.audio import AudioFrame
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
    Vad,
)
from voicebot.core.logs import redact_numbers

# A final result that takes longer than this (plus so much per second of speech) is a hung
# recognizer, not a slow one: far beyond a decode queued behind every other call's on a
# loaded machine (issue 10 bounds one decode to max(2x the speech, 3 s)).
ASR_HANG_GUARD_S = 30.0
ASR_HANG_PER_SECOND = 2.0


class Listener:
    """The caller's side of one call: VAD, ASR feed, barge-in, DTMF and typed turns."""

    def __init__(self, ctx: CallContext, playout: Playout) -> None:
        self.ctx = ctx
        self.playout = playout
        self.vad: Vad | None = None
        self.asr_stream: AsrStream | None = None
        # speech frames, or the wall-clock time of the VAD's end-of-speech decision
        self.asr_queue: asyncio.Queue[AudioFrame | float] = asyncio.Queue()
        self.utterance_open = False
        self.endpoint_wait_ms = 0.0

    def open(self) -> None:
        """The call has started: its own recognizer and VAD."""
        services = self.ctx.services
        if services.asr is not None:
            self.asr_stream = services.asr.start_stream(self.ctx.call_id)
        self.vad = services.vad_factory()

    def close(self) -> None:
        if self.asr_stream is not None:
            self.asr_stream.close()

    @property
    def busy(self) -> bool:
        """True while the caller speaks or what they said is still being recognised."""
        return (
            self.utterance_open
            or self.asr_queue.qsize() > 0
            or (self.vad is not None and self.vad.in_speech)
        )

    async def drained(self) -> None:
        """Lockstep: an engine slower than real time is not a silence."""
        await self.asr_queue.join()

    async def receive(self, events: Any) -> None:
        ctx = self.ctx
        try:
            async for event in events:
                if isinstance(event, AudioIn):
                    if ctx.lockstep:
                        await self.playout.send_next_frame()
                    self._on_audio(event.frame)
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

    def _on_audio(self, frame: AudioFrame) -> None:
        vad = self.vad
        if vad is None:
            return
        ctx = self.ctx
        was_speaking = vad.in_speech
        event = vad.feed(frame, bot_speaking=self.playout.active)
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
                self.asr_queue.put_nowait(time.perf_counter())  # finalize marker
            return
        if self.utterance_open and (vad.in_speech or was_speaking):
            self.asr_queue.put_nowait(frame)
        if vad.in_speech:
            ctx.quiet_since = ctx.clock()

    def _start_utterance(self, preroll: tuple[AudioFrame, ...]) -> None:
        if self.asr_stream is None or self.utterance_open:
            return
        self.utterance_open = True
        self.ctx.book.publish("state", state="l'appelant parle")
        for frame in preroll:
            self.asr_queue.put_nowait(frame)

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
                finally:
                    self.asr_queue.task_done()
                continue
            length_s = pushed * FRAME_S
            pushed = 0
            decided = frame
            ctx.begin_thinking()
            self.asr_queue.task_done()
            try:
                utterance = await asyncio.wait_for(
                    stream.finalize(), ASR_HANG_GUARD_S + ASR_HANG_PER_SECOND * length_s
                )
            except Exception as exc:
                # The recognizer raised or hangs: the turn would never come and the caller
                # would wait in silence (a bot that is thinking is not a silent line). The
                # conversation gets the failure and hands the caller to a person.
                if isinstance(exc, asyncio.TimeoutError):
                    exc = TimeoutError(f"no ASR result after {length_s:.1f} s of speech")
                ctx.log.error("ASR failed (%s): %s", type(exc).__name__, exc)
                ctx.turns.put_nowait(("error", exc, time.perf_counter()))
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
