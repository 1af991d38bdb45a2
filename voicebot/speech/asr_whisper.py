"""Whisper speech recognition (faster-whisper on CTranslate2, CPU, int8).

Whisper does not stream: the stream buffers the caller's utterance as the VAD delimits it,
and ``finalize`` decodes it whole in the engine executor (language "fr", no VAD of its own,
no conditioning on a previous text). More accurate than Vosk's small model, costlier: the
whole decode happens after the caller stops speaking.

Bounded cost: one decode per utterance. A caller waits for the whole decode after they stop
speaking, so each utterance (up to 30 s: one Whisper window) is decoded exactly once, in a
time bounded by its length (docs/asr.md, "One decode per utterance"):

- temperature 0 only, no fallback. Whisper re-decodes a result that looks poor (low
  probability, or repetitive) at temperatures 0.2 ... 1.0, five sampled hypotheses each: on
  audio it is unsure of, common on a phone line, that is up to six decodes (10-20 s for a
  3 s utterance). The retries repair a few transcripts, but on the whole French corpus the
  single decode is as accurate (WER 23.8 % against 24.0 %), and a poor decode is now
  reported as such: a low confidence, so the dialogue asks the caller to repeat;
- no timestamp tokens, and no word timestamps. With timestamps, a decode that ends before
  the end of the audio makes faster-whisper seek there and decode the rest again; with word
  timestamps, it also aligns every word and then seeks to the last word's end (a second
  pass, about twice the cost). Nothing in the bot reads word timings;
- a token budget of ``16 + 10 tokens per second of audio`` (the corpus prompts need 5 on
  average, at most 9), so that a decode stuck in a loop stops early;
- repetition guard: a transcript that repeats the same words ("de la coupe de la coupe de la
  coupe ...") or that used its whole budget (Whisper never said it was done) is a failed
  decode. The repeats are cut, the text kept for the transcript, and the confidence capped
  at ``LOOP_CONFIDENCE``, so the dialogue treats it as not heard. Forbidding repeats while
  decoding (CTranslate2's ``no_repeat_ngram_size``, ``repetition_penalty``) was not used: it
  turns a loop into other invented words that look like a transcript, and it penalises the
  repeats French needs ("de la ... de la", phone numbers).

Confidence. The utterance confidence the handoff policy reads is the geometric-mean
probability of the emitted tokens (end of text included), discounted by the probability
that the audio holds no speech at all (both weighted by duration over segments)::

    confidence = exp(avg_logprob) · (1 − no_speech)

On 120 prompts of the corpus this signal alone ranked utterances by accuracy better (ROC
area 0.93) than combined with word probabilities (0.90); on the whole corpus it gives 0.89
(docs/asr.md). Segments that carry word timestamps (``utterance_from_segments`` accepts
them, the engine does not ask for them) add the duration-weighted mean word probability:
``√(words · sequence) · (1 − no_speech)``.

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
from dataclasses import dataclass, replace
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
# Whisper's decoder holds 448 positions, and CTranslate2 (4.x, whisper.cc) lets one decode
# generate at most half of what it is asked for: min(asked / 2, asked - prompt). faster-whisper
# asks for prompt + max_new_tokens, so we ask for twice the budget (minus the prompt) to get
# the budget itself, and no decode can ever emit more than 224 tokens.
WHISPER_MAX_LENGTH = 448
MAX_TOKENS_PER_WINDOW = WHISPER_MAX_LENGTH // 2
PROMPT_TOKENS = 4  # <|startoftranscript|> <|fr|> <|transcribe|> <|notimestamps|>
TEMPERATURE = 0.0  # one greedy decode, no fallback (see the module docstring)
WINDOW_S = 30.0  # Whisper decodes at most 30 s at a time; the budget is per window
# Repetition guard. A run of the same words repeated this many times is a decoding loop:
# three copies of two words or more ("je vous prépare, je vous prépare, je vous prépare"),
# four of a single word (callers do say "non non non"). When the decode used its whole
# budget the text was cut in the middle of the loop, so two copies suffice.
MAX_LOOP_PERIOD = 8  # words in the repeated unit
MIN_LOOP_COPIES = 3
MIN_SINGLE_WORD_COPIES = 4
MIN_UNFINISHED_COPIES = 2
# Confidence of a failed decode (a loop, or no end of text): well under any sane handoff
# threshold (policy.min_asr_confidence, 0.45 by default), so the bot says it did not hear.
LOOP_CONFIDENCE = 0.05
MIN_CONFIDENCE = 1e-4  # a word's confidence stays in (0, 1] even if its probability underflows
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")
_WORD = re.compile(r"\w+(?:['’]\w+)*['’]?")  # "l'on", "aujourd'hui", "qu'": one word each


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


@dataclass(frozen=True)
class DecodeStats:
    """What one utterance's decode did, for the logs and the tests."""

    budget: int  # most tokens one window could emit
    tokens: int  # text tokens emitted, all windows together
    unfinished: bool  # a window used its whole budget: Whisper never reached its end of text
    loop_cut: bool  # repeated words were cut from the transcript

    @property
    def failed(self) -> bool:
        return self.unfinished or self.loop_cut


def token_budget(audio_s: float) -> int:
    """Most text tokens one decoding window may emit (at most 224, see WHISPER_MAX_LENGTH)."""
    wanted = MAX_TOKENS_BASE + math.ceil(MAX_TOKENS_PER_S * min(audio_s, WINDOW_S))
    return min(wanted, MAX_TOKENS_PER_WINDOW)


def max_new_tokens(budget: int) -> int:
    """What to ask faster-whisper for so that CTranslate2 lets a decode emit ``budget`` tokens."""
    return min(2 * budget - PROMPT_TOKENS, WHISPER_MAX_LENGTH - PROMPT_TOKENS)


def find_loop(words: Sequence[str], unfinished: bool = False) -> int | None:
    """Where a repetition loop starts repeating: the index of the first word to cut, or None.

    ``words`` are compared as given (lower-cased words of the text, see ``spoken_words``). A
    loop is a run that is periodic (the same 1 to ``MAX_LOOP_PERIOD`` words over and over)
    for ``MIN_LOOP_COPIES`` copies, ``MIN_SINGLE_WORD_COPIES`` for a single word, or
    ``MIN_UNFINISHED_COPIES`` when it reaches the end of an ``unfinished`` decode. The first
    copy is kept: the cut is where the second one starts.
    """
    earliest: int | None = None
    for period in range(1, MAX_LOOP_PERIOD + 1):
        needed = MIN_SINGLE_WORD_COPIES if period == 1 else MIN_LOOP_COPIES
        run = 0  # words[i - run + 1 .. i + period] repeat with this period
        for i in range(len(words) - period):
            run = run + 1 if words[i] == words[i + period] else 0
            if not run:
                continue
            copies = (run + period) / period
            at_end = i + period == len(words) - 1
            if copies >= needed or (unfinished and at_end and copies >= MIN_UNFINISHED_COPIES):
                cut = i - run + 1 + period
                earliest = cut if earliest is None else min(earliest, cut)
                break  # the earliest loop of this period
    return earliest


def spoken_words(text: str) -> list[re.Match[str]]:
    """The words of a transcript, hyphenated parts apart ("Quatre-quatre-quatre" is a loop)."""
    return list(_WORD.finditer(text))


def guard_repetitions(utterance: Utterance, unfinished: bool) -> tuple[Utterance, bool]:
    """Cut a decoding loop and mark a failed decode: (utterance, whether words were cut).

    A failed decode (a loop, or a decode stopped by its budget) keeps its text, for the
    transcript and the operator, but its confidence is capped at ``LOOP_CONFIDENCE``.
    """
    if utterance.is_empty:
        return utterance, False
    words = spoken_words(utterance.text)
    cut = find_loop([word.group().lower() for word in words], unfinished)
    if cut is None and not unfinished:
        return utterance, False
    confidence = min(utterance.confidence, LOOP_CONFIDENCE)
    if cut is None:
        return replace(utterance, confidence=confidence), False
    end = words[cut - 1].end()  # the text up to the last word of the first copy
    kept = _words_within(utterance.words, cut)  # aligned words, when segments had them
    return replace(utterance, text=utterance.text[:end], words=kept, confidence=confidence), True


def _words_within(aligned: Sequence[Word], count: int) -> tuple[Word, ...]:
    """The aligned words that hold only the first ``count`` spoken words of the text."""
    kept: list[Word] = []
    for word in aligned:
        count -= len(_WORD.findall(word.text))
        if count < 0:
            break
        kept.append(word)
    return tuple(kept)


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
        return self.decode_with_stats(pcm)[0]

    def decode_with_stats(self, pcm: bytes) -> tuple[Utterance, DecodeStats]:
        """``decode``, and what the decode did (tokens, budget, loop cut)."""
        audio_s = len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
        budget = token_budget(audio_s)
        if not pcm:
            return Utterance(text="", audio_s=0.0), DecodeStats(budget, 0, False, False)
        wide = resample(pcm, SAMPLE_RATE, WHISPER_RATE)
        samples = np.frombuffer(wide, dtype="<i2").astype(np.float32) / 32768.0
        segments, _info = self.model.transcribe(
            samples,
            language="fr",
            beam_size=self.settings.whisper_beam_size,
            # One temperature: a decode that looks poor is not retried (no fallback).
            temperature=TEMPERATURE,
            max_new_tokens=max_new_tokens(budget),
            # Text tokens only: one decode per 30 s window, never a second pass.
            without_timestamps=True,
            # No word timestamps: nothing in the bot reads word timings, and with them
            # faster-whisper aligns every word, then decodes again from the last word's end.
            word_timestamps=False,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        # The segments are a lazy generator: the decoding happens here, in this thread.
        # Without timestamps each window gives one segment holding all its tokens.
        decoded = list(segments)
        unfinished = any(len(segment.tokens) >= budget for segment in decoded)
        utterance, loop_cut = guard_repetitions(
            utterance_from_segments(decoded, audio_s), unfinished
        )
        tokens = sum(len(segment.tokens) for segment in decoded)
        return utterance, DecodeStats(budget, tokens, unfinished, loop_cut)


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

    async def settle(self) -> str | None:
        """Nothing ahead of time: Whisper reads the utterance whole, and a decode at every
        pause would cost a second decode whenever the caller goes on (seconds of CPU)."""
        return None

    async def finalize(self) -> Utterance:
        """Decode the buffered utterance in the executor; the stream is then empty again."""
        started = time.perf_counter()
        pcm = bytes(self._pcm)
        self._reset()
        if not pcm:
            return Utterance(text="")
        loop = asyncio.get_running_loop()
        utterance, stats = await loop.run_in_executor(
            self._asr.executor, self._asr.decode_with_stats, pcm
        )
        utterance = replace(utterance, decode_s=time.perf_counter() - started)
        if stats.failed:
            self._log.info(
                "whisper: failed decode (%s, %d/%d tokens): %r kept, confidence %.2f",
                "repetition loop cut" if stats.loop_cut else "no end of text",
                stats.tokens,
                stats.budget,
                redact_numbers(utterance.text),
                utterance.confidence,
            )
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
