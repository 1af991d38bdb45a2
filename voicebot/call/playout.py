"""Audio out: the bot's speech, synthesised into a queue that one frame at a time drains.

The pacer sends one 20 ms frame every 20 ms, the bot's speech or silence, whatever else
happens (AudioSocket hangs up after 2 s without traffic; Asterisk does not re-time it). In
lockstep (offline simulation) the listener sends one frame per caller frame instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from voicebot.call.context import FRAME_S, LOGGER_NAME, TICK_FRAMES, CallContext, State
from voicebot.call.report import TurnRecord
from voicebot.call.turn_end import asks_a_question
from voicebot.core.audio import SILENCE_FRAME, AudioFrame

# A frame the pacer sends later than this after its due time is an underrun: the caller
# hears a gap (Asterisk does not re-time the audio).
UNDERRUN_TOLERANCE_S = 0.040


class Speaker:
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


class Playout:
    """What the bot says, from text to paced frames on the transport."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.speaker = Speaker()
        self.producer: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """True while the bot talks or is still synthesising what it will say."""
        return self.speaker.active

    async def say_prompt(self, name: str) -> float | None:
        """Speak a named prompt (written down as a bot turn); returns when its first frame was
        sent (None if the prompt is empty)."""
        prompt = self.ctx.services.prompt
        text = prompt(name) if prompt is not None else ""
        if not text:
            return None
        await self.ctx.book.turn(TurnRecord.spoken_prompt(name, text))
        return await self.speak((text,))

    async def speak(self, texts: tuple[str, ...]) -> float | None:
        """Queue the speech of ``texts``; returns when the first frame has been sent."""
        if not texts:
            return None
        self.ctx.bot_asked = asks_a_question(texts)
        self.ctx.set_state(State.SPEAKING)
        loop = asyncio.get_running_loop()
        first_sent: asyncio.Future[float] = loop.create_future()
        self.speaker.first_frame_sent = first_sent
        self.speaker.producing += 1
        self.speaker.idle.clear()
        producer = asyncio.create_task(self._produce(texts))
        self.producer = producer
        waiting: list[asyncio.Future[Any]] = [first_sent, producer]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if producer.done() and not first_sent.done():
            if producer.cancelled():
                return None  # barge-in before the first frame
            error = producer.exception()
            if error is not None:
                raise error
            if self.speaker.frames:  # all synthesised already; wait for the pacer
                hung_up = asyncio.ensure_future(self.ctx.hung_up.wait())
                await asyncio.wait([first_sent, hung_up], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
                hung_up.cancel()
        return first_sent.result() if first_sent.done() else None

    async def _produce(self, texts: tuple[str, ...]) -> None:
        try:
            for text in texts:
                async for frame in self.ctx.services.tts.speak(text):
                    self.speaker.frames.append(frame)
                    self.ctx.done_thinking()
        finally:
            self.speaker.producing -= 1
            if not self.speaker.frames and self.speaker.producing == 0:
                self.speaker.idle.set()
            self.ctx.done_thinking()

    def stop(self) -> None:
        """Barge-in or a key press: drop the rest of what the bot was saying, at once."""
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()
        self.speaker.clear()
        flush = asyncio.ensure_future(self.ctx.transport.flush())
        flush.add_done_callback(_ignore_result)

    async def wait_spoken(self) -> None:
        """Wait until every queued frame has gone out (or the caller hung up)."""
        hung_up = asyncio.ensure_future(self.ctx.hung_up.wait())
        idle = asyncio.ensure_future(self.speaker.idle.wait())
        await asyncio.wait({hung_up, idle}, return_when=asyncio.FIRST_COMPLETED)
        hung_up.cancel()
        idle.cancel()

    async def next_ready(self) -> None:
        """Lockstep: wait while TTS is synthesising the next sentence."""
        while self.speaker.producing > 0 and not self.speaker.frames:
            await asyncio.sleep(0.002)

    async def pace(self) -> None:
        """Send one frame every 20 ms in real time, speech or silence. A frame that leaves
        more than UNDERRUN_TOLERANCE_S after its due time is published as an "underrun"."""
        loop = asyncio.get_running_loop()
        next_at = due = loop.time()
        while True:
            late_s = loop.time() - due
            if late_s > UNDERRUN_TOLERANCE_S:
                self.ctx.book.publish("underrun", late_ms=round(late_s * 1000.0, 1))
            await self.send_next_frame()
            next_at += FRAME_S
            due = next_at
            delay = next_at - loop.time()
            if delay < -0.2:  # the loop was starved: restart the schedule, never burst
                next_at = loop.time()  # (the next frame still counts late against ``due``)
                delay = 0
            await asyncio.sleep(max(delay, 0.0))

    async def send_next_frame(self) -> None:
        ctx = self.ctx
        frame = self.speaker.next_frame()
        if frame is None:
            frame = SILENCE_FRAME
            if ctx.state is State.SPEAKING:
                ctx.set_state(State.LISTENING)
        else:
            ctx.quiet_since = ctx.clock()
        await ctx.transport.send(frame)
        ctx.report.frames_sent += 1
        if ctx.report.frames_sent % TICK_FRAMES == 0:
            ctx.turns.put_nowait(("tick", None, time.perf_counter()))


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(LOGGER_NAME).debug("flush failed: %s", task.exception())
