"""Whisper speech recognition (faster-whisper on CTranslate2, CPU, int8).

Whisper does not stream: the stream buffers the caller's utterance as the VAD delimits it,
and ``finalize`` decodes it whole in the engine executor (language "fr", no VAD of its own,
no conditioning on a previous text). More accurate than Vosk's small model, costlier: the
whole decode happens after the caller stops speaking.

Bounded cost. Whisper can loop on a short, hard utterance ("le fait que le fait que ..." for
one second of "treize") until its 448-token limit, and its temperature fallback then retries
up to five times: 8-20 s for one word. Each decode here may emit at most
``16 + 10 tokens per second of audio`` (the corpus prompts need 5 on average, at most 9),
which stops a loop early and keeps the fallback, which repairs many of them, within a few
seconds.

Confidence. Whisper gives each word a probability (the mean probability of its tokens), each
segment the average log-probability of all the tokens it emitted (punctuation and the end of
text included) and the probability that it holds no speech at all. The utterance confidence
the handoff policy reads combines the three::

    words      = Σ_w d_w · p_w / Σ_w d_w        (d_w: word duration, at least 20 ms)
    sequence   = exp(avg_logprob)               (duration-weighted over segments)
    confidence = √(words · sequence) · (1 − no_speech)

Long content words weigh more than short clitics, whose probabilities are noisy; the
sequence term catches a decode that went wrong as a whole (a wrong stop, an invented
continuation) even when each word looks likely; no_speech discounts noise mistaken for
speech. On 120 prompts of the French corpus this ranks utterances by accuracy about as well
as the best single signal (see docs/asr.md). Without aligned words, ``words`` is left out.

Concurrency. One ``WhisperModel`` per process, shared by every call's stream. CTranslate2's
model is thread-safe: each of its ``num_workers`` replicas (settings ``whisper_workers``)
takes decode requests from a queue, so concurrent ``finalize`` calls from several executor
threads are queued (one worker) or run in parallel (several workers) with no lock of ours;
``WhisperModel.transcribe`` keeps no per-call state on the model object (its tokenizer and
options are built per call).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
from faster_whisper import WhisperModel

from voicebot.core.audio import SAMPLE_RATE, SAMPLE_WIDTH, TELEPHONE, AudioFrame, resample
from voicebot.core.config import AsrSettings
from voicebot.core.errors import AudioInputError, ModelError
from voicebot.core.interfaces import Utterance, Word
from voicebot.core.logs import call_logger, redact_numbers

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
MIN_WORD_S = 0.02
# Token budget of one decode (see the module docstring).
MAX_TOKENS_BASE = 16
MAX_TOKENS_PER_S = 10
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # Whisper's fallback when a decode looks poor
WINDOW_S = 30.0  # Whisper decodes at most 30 s at a time; the budget is per window
MIN_CONFIDENCE = 1e-4  # a word's confidence stays in (0, 1] even if its probability underflows
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")


class WordLike(Protocol):
    start: float
    end: float
    word: str
    probability: float


class SegmentLike(Protocol):
    text: str
    avg_logprob: float
    no_speech_prob: float
    start: float
    end: float

    @property
    def words(self) -> Sequence[WordLike] | None: ...


def token_budget(audio_s: float) -> int:
    """Most tokens one decoding window may emit (≤ 316: within Whisper's 448 with the prompt)."""
    return MAX_TOKENS_BASE + math.ceil(MAX_TOKENS_PER_S * min(audio_s, WINDOW_S))


def _check_model_dir(model_dir: Path) -> None:
    fix = (
        "lancez `make setup` (modèle de test Whisper base) ou `voicebot models list` "
        "puis `voicebot models pull <modèle faster-whisper>`"
    )
    if not model_dir.is_dir():
        raise ModelError(f"modèle Whisper introuvable : {model_dir} n'est pas un dossier ; {fix}")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in ("vocabulary.json", "vocabulary.txt")):
        missing.append("vocabulary.json")
    if missing:
        raise ModelError(
            f"modèle Whisper incomplet dans {model_dir} (manque : {', '.join(missing)}) ; {fix}"
        )


def utterance_confidence(segments: Sequence[SegmentLike], words: Sequence[Word]) -> float:
    """The formula of the module docstring: words and sequence, discounted by no-speech."""
    if not segments:
        return 0.0
    segment_s = [max(s.end - s.start, MIN_WORD_S) for s in segments]
    total_s = sum(segment_s)
    no_speech = (
        sum(d * s.no_speech_prob for d, s in zip(segment_s, segments, strict=True)) / total_s
    )
    avg_logprob = sum(d * s.avg_logprob for d, s in zip(segment_s, segments, strict=True)) / total_s
    heard = math.exp(avg_logprob)
    if words:
        durations = [max(w.end_s - w.start_s, MIN_WORD_S) for w in words]
        word_score = sum(d * w.confidence for d, w in zip(durations, words, strict=True)) / sum(
            durations
        )
        heard = math.sqrt(word_score * heard)
    return min(1.0, max(0.0, float(heard * (1.0 - no_speech))))


def utterance_from_segments(segments: Sequence[SegmentLike], audio_s: float) -> Utterance:
    """Whisper's segments as an Utterance: text, words in range, confidences in (0, 1]."""
    text = " ".join(" ".join(s.text.split()) for s in segments).strip()
    words: list[Word] = []
    for segment in segments:
        for raw in segment.words or ():
            word_text = _EDGE_PUNCTUATION.sub("", raw.word.strip())
            if not word_text:
                continue  # a lone punctuation mark is not a word the caller said
            # Plain floats: faster-whisper hands out numpy scalars, which JSON refuses.
            start = min(max(float(raw.start), 0.0), audio_s)
            end = min(max(float(raw.end), start), audio_s)
            confidence = min(1.0, max(MIN_CONFIDENCE, float(raw.probability)))
            words.append(Word(word_text, start, end, confidence))
    if not text:
        return Utterance(text="", audio_s=audio_s)
    return Utterance(
        text=text,
        words=tuple(words),
        confidence=utterance_confidence(segments, words),
        audio_s=audio_s,
    )


class WhisperAsr:
    """One Whisper model per process; one ``WhisperStream`` per call."""

    name = "whisper"

    def __init__(
        self, model: WhisperModel, model_dir: Path, settings: AsrSettings, executor: Executor
    ) -> None:
        self.model = model
        self.model_dir = model_dir
        self.settings = settings
        self.executor = executor
        self.description = (
            f"Whisper {model_dir.name}, int8, {settings.whisper_threads} threads, "
            f"faisceau {settings.whisper_beam_size}"
        )

    @classmethod
    def load(cls, model_dir: Path, settings: AsrSettings, executor: Executor) -> WhisperAsr:
        """Load the model (blocking, about a second). Raises ModelError naming the fix."""
        model_dir = Path(model_dir)
        _check_model_dir(model_dir)
        started = time.perf_counter()
        try:
            model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=settings.whisper_threads,
                num_workers=settings.whisper_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(
                f"modèle Whisper illisible dans {model_dir} ({exc}) ; réinstallez-le : "
                "`make setup` pour le modèle de test, sinon `voicebot models pull <modèle>`"
            ) from None
        log.info("Whisper model %s loaded in %.1f s", model_dir, time.perf_counter() - started)
        return cls(model, model_dir, settings, executor)

    def start_stream(self, call_id: str) -> WhisperStream:
        return WhisperStream(self, call_id)

    def decode(self, pcm: bytes) -> Utterance:
        """Decode one utterance of telephone PCM (blocking: run it in the executor)."""
        audio_s = len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
        if not pcm:
            return Utterance(text="", audio_s=0.0)
        wide = resample(pcm, SAMPLE_RATE, WHISPER_RATE)
        samples = np.frombuffer(wide, dtype="<i2").astype(np.float32) / 32768.0
        segments, _info = self.model.transcribe(
            samples,
            language="fr",
            beam_size=self.settings.whisper_beam_size,
            temperature=TEMPERATURES,
            max_new_tokens=token_budget(audio_s),
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        # The segments are a lazy generator: the decoding happens here, in this thread.
        return utterance_from_segments(list(segments), audio_s)


class WhisperStream:
    """One caller's utterance buffer; decoded whole when the VAD says the caller stopped."""

    def __init__(self, asr: WhisperAsr, call_id: str) -> None:
        self._asr = asr
        self._log = call_logger(__name__, call_id)
        self._max_bytes = int(asr.settings.max_utterance_s * SAMPLE_RATE) * SAMPLE_WIDTH
        self._pcm = bytearray()
        self._truncated = False  # warned once per utterance

    async def push(self, frame: AudioFrame) -> str | None:
        """Buffer 20 ms of telephone audio. Whisper gives no partial transcripts: None."""
        if frame.format != TELEPHONE:
            raise AudioInputError(
                "Whisper attend l'audio interne (8 kHz mono 16 bits), pas "
                f"{frame.format.rate} Hz sur {frame.format.channels} canal(aux)"
            )
        room = self._max_bytes - len(self._pcm)
        if room < len(frame.pcm) and not self._truncated:
            self._truncated = True
            self._log.warning(
                "utterance longer than %.0f s: the rest is not transcribed",
                self._asr.settings.max_utterance_s,
            )
        if room > 0:
            self._pcm += frame.pcm[:room]
        return None

    async def finalize(self) -> Utterance:
        """Decode the buffered utterance in the executor; the stream is then empty again."""
        started = time.perf_counter()
        pcm = bytes(self._pcm)
        self._reset()
        if not pcm:
            return Utterance(text="")
        loop = asyncio.get_running_loop()
        utterance = await loop.run_in_executor(self._asr.executor, self._asr.decode, pcm)
        utterance = replace(utterance, decode_s=time.perf_counter() - started)
        self._log.debug(
            "whisper: %r (confidence %.2f, %.1f s of audio decoded in %.2f s)",
            redact_numbers(utterance.text),
            utterance.confidence,
            utterance.audio_s,
            utterance.decode_s,
        )
        return utterance

    def close(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pcm = bytearray()
        self._truncated = False
