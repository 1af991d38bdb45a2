"""One emulated caller kept on an AudioSocket line for the length of a call: a 20 ms stream
of silence, with speech queued into it (``say``), and the bot's audio as it arrived. The
fault matrix (scripts/fault_matrix.py) and its short version (tests/test_faults.py) probe
live calls through it: did the bot answer, was the line ever dead, were frames late."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

from telephony.audiosocket.codec import encode_audio
from telephony.emulator import AudioSocketCaller
from voicebot.core.audio import FRAME_BYTES
from voicebot.tools.bench.call import is_voiced
from voicebot.tools.bench.underruns import pacing

FRAME_S = 0.02
# Behind its schedule by more than this (a starved machine), the stream starts a new one
# instead of bursting the frames it owes: Asterisk would not burst either.
RESCHEDULE_S = 0.2
POLL_S = 0.05


class PacedCallerLine:
    def __init__(self, media: AudioSocketCaller) -> None:
        self.media = media
        self.speech: deque[bytes] = deque()

    @property
    def call_id(self) -> str:
        return str(self.media.call_uuid)

    async def stream(self) -> None:
        """Send a frame every 20 ms until the call ends (run it as a task)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        silence = bytes(FRAME_BYTES)
        while not self.media.ended:
            await self.media.send_raw(
                encode_audio(self.speech.popleft() if self.speech else silence)
            )
            next_at += FRAME_S
            delay = next_at - loop.time()
            if delay < -RESCHEDULE_S:
                next_at = loop.time()
            await asyncio.sleep(max(delay, 0.0))

    def say(self, pcm: bytes) -> None:
        """Queue 8 kHz speech into the stream, after what is already queued."""
        self.speech.extend(
            pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
            for i in range(0, len(pcm), FRAME_BYTES)
        )

    def now(self) -> float:
        """The call clock: seconds since the line connected."""
        return asyncio.get_running_loop().time() - self.media._t0

    def voiced_times(self) -> list[float]:
        """Arrival times of the bot's voiced frames."""
        return [m.t for m in self.media.audio_messages() if is_voiced(m.payload)]

    async def voice_after(self, t: float, timeout: float) -> float | None:
        """Arrival of the bot's first voiced frame after ``t`` (call clock), or None if the
        call ends or ``timeout`` passes first."""
        for _ in range(int(timeout / POLL_S)):
            later = [v for v in self.voiced_times() if v > t]
            if later:
                return later[0]
            if self.media.ended:
                return None
            await asyncio.sleep(POLL_S)
        return None

    def quiet_after_voice(self, quiet_s: float) -> int | None:
        """How many voiced frames the bot sent, once it has spoken and been quiet ``quiet_s``
        since; None before."""
        voiced = self.voiced_times()
        if voiced and self.now() - voiced[-1] >= quiet_s:
            return len(voiced)
        return None

    def end_or_now(self) -> float:
        return self.media._end_t if self.media._end_t is not None else self.now()

    def underruns(self, start: float, end: float) -> int:
        """Late frames in [start, end) of the call clock (the bench's measure)."""
        arrivals = [
            (m.t, len(m.payload) / 16000) for m in self.media.audio_messages() if start <= m.t < end
        ]
        return pacing(arrivals).underruns

    def longest_gap(self, start: float) -> float:
        """The longest time without any audio message from the bot (speech, or the silence it
        sends while it listens) from ``start`` to the end of the call, or now."""
        times = [m.t for m in self.media.audio_messages() if m.t >= start]
        return max(
            (b - a for a, b in itertools.pairwise([start, *times, self.end_or_now()])),
            default=0.0,
        )
