"""A minimal bot-side call handler for transport tests and benchmarks (not the project's
call session): it plays a prompt then silence, paced every 20 ms in real time, optionally
echoes the caller, records every transport event, flushes on one DTMF key and ends the media
session on another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

from voicebot.core.audio import SILENCE_FRAME, AudioFrame, to_frames
from voicebot.core.interfaces import (
    AudioIn,
    CallerHungUp,
    CallStarted,
    DtmfIn,
    MediaTransport,
    TransportEvent,
)

FRAME_S = 0.020


@dataclass
class CallRecord:
    call_id: str = ""
    channel: str | None = None
    events: list[TransportEvent] = field(default_factory=list)
    frames_in: int = 0
    hung_up: str | None = None  # CallerHungUp.reason
    ended_by_bot: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def digits(self) -> str:
        return "".join(e.digit for e in self.events if isinstance(e, DtmfIn))


class PacedBot:
    def __init__(
        self,
        prompt_pcm: bytes = b"",
        *,
        echo: bool = False,
        end_on: str | None = "0",
        flush_on: str | None = None,
    ) -> None:
        self.prompt = to_frames(prompt_pcm) if prompt_pcm else []
        self.echo = echo
        self.end_on = end_on
        self.flush_on = flush_on
        self.calls: list[CallRecord] = []
        self.transports: list[MediaTransport] = []
        self.new_call = asyncio.Event()

    async def __call__(self, transport: MediaTransport) -> None:
        record = CallRecord()
        self.calls.append(record)
        self.transports.append(transport)
        self.new_call.set()
        outgoing: deque[AudioFrame] = deque(self.prompt)
        pacer = asyncio.create_task(self._pace(transport, outgoing))
        try:
            async for event in transport.events():
                record.events.append(event)
                if isinstance(event, CallStarted):
                    record.call_id, record.channel = event.call_id, event.channel
                elif isinstance(event, AudioIn):
                    record.frames_in += 1
                    if self.echo:
                        outgoing.append(event.frame)
                elif isinstance(event, DtmfIn):
                    if event.digit == self.flush_on:
                        outgoing.clear()
                        await transport.flush()
                    if event.digit == self.end_on:
                        record.ended_by_bot = True
                        await transport.end()
                        break
                elif isinstance(event, CallerHungUp):
                    record.hung_up = event.reason
                    break
        finally:
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacer
            record.done.set()

    async def wait_for_calls(self, count: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.calls) < count:
            if loop.time() > deadline:
                return False
            self.new_call.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.new_call.wait(), deadline - loop.time())
        return True

    @staticmethod
    async def _pace(transport: MediaTransport, outgoing: deque[AudioFrame]) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            await transport.send(outgoing.popleft() if outgoing else SILENCE_FRAME)
            next_tick += FRAME_S
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
