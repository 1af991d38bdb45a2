"""One emulated call: the caller's real-time 20 ms stream and every bot frame it received,
on one clock (the emulator's), and what it keeps once hung up (``CallResult``)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voicebot.tools.bench.clips import FRAME_S, Clip
from voicebot.tools.bench.lines import LINE_NOISE_DBFS, Line, LineNoise
from voicebot.tools.bench.targets import label

VOICE_PEAK = 500  # a bot frame whose peak exceeds this (≈ -36 dBFS) is speech, not silence


@dataclass
class Spoken:
    """What the caller did in one turn, as logged during the call."""

    kind: str  # "speech", "barge_in" or "dtmf"
    clip: str  # clip key, or "dtmf:<digit>"
    first_frame: int  # its first frame's index in the caller's stream (-1: never sent)
    over_bot: bool  # it started while the bot was speaking
    active_calls: int
    key_sent: float | None = None  # call clock, for a key


@dataclass
class CallResult:
    """Everything one call sent and received, on the emulator's clock (s since connect)."""

    call_id: str
    slot: int
    transport: str
    rate: int
    t0: float  # loop clock of the connection
    wall0: float  # epoch seconds at t0
    duration_s: float
    ended_by: str | None
    violations: list[str]
    greeting_ms: float | None
    sent: list[float]  # send time of every caller frame
    spoken: list[Spoken]
    times: list[float]  # arrival of every bot audio message
    durations: list[float]
    voiced: list[bool]
    noise: LineNoise | None = None  # what was mixed under the caller's frames
    target: str = ""  # host:port of the server the call was placed on

    @property
    def arrivals(self) -> list[tuple[float, float]]:
        return list(zip(self.times, self.durations, strict=True))


class BenchCall:
    """One emulated call: a 20 ms caller stream, and what the bot sent, on one clock."""

    def __init__(self, line: Line, slot: int, noise_dbfs: float = LINE_NOISE_DBFS) -> None:
        self.line = line
        self.slot = slot
        self.frame_bytes = line.rate * 20 // 1000 * 2
        self.noise = LineNoise(noise_dbfs, self.frame_bytes, seed=slot)
        self.t0 = 0.0
        self.wall0 = 0.0
        self.target = ""  # host:port, once placed
        self.sent: list[float] = []  # send time of every caller frame
        self.spoken: list[Spoken] = []
        self.times: list[float] = []  # arrival of every bot audio message
        self.voiced: list[bool] = []
        self.durations: list[float] = []
        self.greeting_ms: float | None = None
        self.last_voiced: float | None = None  # arrival of the latest voiced bot frame
        self._next_message = 0
        self._queue: deque[bytes] = deque()
        self._utterance_sent: list[float] = []
        self._speaking: Spoken | None = None
        self._said: asyncio.Future[list[float]] | None = None
        self._changed = asyncio.Event()
        self._pacer: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str:
        return self.line.call_id

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    async def place(self, host: str, port: int) -> None:
        self.target = label((host, port))
        await self.line.connect(host, port)
        # connect() returns right after the emulator has set its time 0 (no await between).
        self.t0 = asyncio.get_running_loop().time()
        self.wall0 = time.time()
        self._pacer = asyncio.create_task(self._pace(), name=f"bench-caller-{self.call_id}")

    async def hang_up(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pacer
        with contextlib.suppress(Exception):
            await self.line.peer.hangup()
        with contextlib.suppress(Exception):
            await self.line.peer.close()
        self._sync()

    # --- caller side ------------------------------------------------------------------------

    def say(self, clip: Clip, spoken: Spoken) -> asyncio.Future[list[float]]:
        """Queue an utterance (logged as ``spoken``); the future gives the send time of each
        of its frames."""
        if clip.rate != self.line.rate:
            raise ValueError(
                f"clip {clip.key} is for a {clip.rate} Hz line, not {self.line.rate} Hz"
            )
        self.spoken.append(spoken)  # its first frame is numbered when it is sent
        self._speaking = spoken
        self._queue.extend(clip.frames)
        self._utterance_sent = []
        self._said = asyncio.get_running_loop().create_future()
        return self._said

    async def send_dtmf(self, digit: str, spoken: Spoken) -> float:
        await self.line.peer.send_dtmf(digit)
        spoken.key_sent = self.now()
        spoken.first_frame = len(self.sent)
        self.spoken.append(spoken)
        return spoken.key_sent

    async def _pace(self) -> None:
        """One caller frame every 20 ms on absolute deadlines, as Asterisk streams a call."""
        loop = asyncio.get_running_loop()
        silence = bytes(self.frame_bytes)
        next_at = loop.time()
        while not self.line.ended:
            speaking = bool(self._queue)
            if speaking and not self._utterance_sent and self._speaking is not None:
                self._speaking.first_frame = len(self.sent)
            payload = self._queue.popleft() if speaking else silence
            await self.line.peer.play(self.noise.over(payload, len(self.sent)), False)
            self.sent.append(self.now())
            if speaking and self._said is not None:
                self._utterance_sent.append(self.sent[-1])
                if not self._queue and not self._said.done():
                    self._said.set_result(self._utterance_sent)
            self._sync()
            next_at += FRAME_S
            delay = next_at - loop.time()
            if delay < -0.2:  # starved: restart the schedule rather than burst
                next_at = loop.time()
            await asyncio.sleep(max(delay, 0.0))
        if self._said is not None and not self._said.done():
            self._said.cancel()
        self._changed.set()

    # --- bot side -----------------------------------------------------------------------------

    def _sync(self) -> None:
        new, self._next_message = self.line.audio_since(self._next_message)
        for t, payload in new:
            voiced = is_voiced(payload)
            self.times.append(t)
            self.voiced.append(voiced)
            self.durations.append(len(payload) / (2 * self.line.rate))
            if voiced:
                self.last_voiced = t
        if new or self.line.ended:
            self._changed.set()

    async def _changed_or(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))

    async def wait_voice(self, after: float, timeout: float) -> float | None:
        """Arrival time of the first voiced bot frame that arrived after ``after``."""
        deadline = self.now() + timeout
        index = bisect.bisect_right(self.times, after)
        while True:
            self._sync()
            while index < len(self.times):
                if self.voiced[index]:
                    return self.times[index]
                index += 1
            remaining = deadline - self.now()
            if remaining <= 0 or self.line.ended:
                return None
            await self._changed_or(remaining)

    def last_voice_before(self, t: float) -> float | None:
        return last_voice_before(self.times, self.voiced, t)

    def bot_speaking(self, within_s: float = 0.3) -> bool:
        self._sync()
        return self.last_voiced is not None and self.now() - self.last_voiced <= within_s

    async def wait_quiet(self, quiet_s: float, max_s: float) -> None:
        """Until the bot has been silent for ``quiet_s`` (or ``max_s`` has passed)."""
        deadline = self.now() + max_s
        while not self.line.ended and self.now() < deadline:
            self._sync()
            last = self.last_voiced
            silent_for = self.now() - last if last is not None else self.now()
            if silent_for >= quiet_s:
                return
            await self._changed_or(min(quiet_s - silent_for, deadline - self.now()))

    def result(self, duration_s: float) -> CallResult:
        self._sync()
        return CallResult(
            call_id=self.call_id,
            slot=self.slot,
            transport=self.line.transport,
            rate=self.line.rate,
            t0=self.t0,
            wall0=self.wall0,
            duration_s=duration_s,
            ended_by=self.line.ended_by,
            violations=self.line.violations,
            greeting_ms=self.greeting_ms,
            sent=list(self.sent),
            spoken=list(self.spoken),
            times=list(self.times),
            durations=list(self.durations),
            voiced=list(self.voiced),
            noise=self.noise,
            target=self.target,
        )


def is_voiced(payload: bytes) -> bool:
    """A bot frame is speech when its peak exceeds VOICE_PEAK."""
    samples = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
    return bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) > VOICE_PEAK


def last_voice_before(times: Sequence[float], voiced: Sequence[bool], t: float) -> float | None:
    index = bisect.bisect_right(times, t) - 1
    while index >= 0:
        if voiced[index]:
            return times[index]
        index -= 1
    return None
