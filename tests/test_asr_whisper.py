"""The Whisper engine on real French telephone recordings (Whisper base stand-in, int8)."""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from faster_whisper.transcribe import Segment
from faster_whisper.transcribe import Word as WhisperWord

from tests.speech_helpers import espeak_pcm, silence, write_wav_file
from voicebot.core.audio import SAMPLE_RATE, AudioFormat, AudioFrame, read_wav, resample, to_frames
from voicebot.core.config import AsrSettings, PolicySettings, VadSettings
from voicebot.core.errors import AudioInputError, ModelError
from voicebot.core.interfaces import SpeechEnded, SpeechStarted, Utterance, Word
from voicebot.speech.asr_whisper import (
    LOOP_CONFIDENCE,
    MAX_TOKENS_PER_WINDOW,
    PROMPT_TOKENS,
    WHISPER_RATE,
    WhisperAsr,
    find_loop,
    guard_repetitions,
    max_new_tokens,
    spoken_words,
    token_budget,
    utterance_confidence,
    utterance_from_segments,
)
from voicebot.speech.standins import whisper_base_dir
from voicebot.speech.vad import SileroVad
from voicebot.tools.text_score import normalize

SOUNDS = Path("/usr/share/asterisk/sounds/fr")
GOODBYE = SOUNDS / "vm-goodbye.wav"  # "Au revoir."
THANKS = SOUNDS / "queue-thankyou.wav"  # "Merci de votre patience."


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def whisper(executor: ThreadPoolExecutor) -> WhisperAsr:
    return WhisperAsr.load(whisper_base_dir(), AsrSettings(engine="whisper"), executor)


async def _recognize(asr: WhisperAsr, wav: Path, call_id: str) -> Utterance:
    stream = asr.start_stream(call_id)
    for frame in to_frames(read_wav(wav)):
        assert await stream.push(frame) is None  # Whisper has no partial transcripts
    utterance = await stream.finalize()
    stream.close()
    return utterance


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def heard(whisper: WhisperAsr) -> dict[str, Utterance]:
    # Two calls finalize at the same time on the one shared model, from two executor threads.
    goodbye, thanks = await asyncio.gather(
        _recognize(whisper, GOODBYE, "call-a"), _recognize(whisper, THANKS, "call-b")
    )
    return {"goodbye": goodbye, "thanks": thanks}


def test_french_recordings_are_transcribed(heard: dict[str, Utterance]) -> None:
    assert normalize(heard["goodbye"].text) == ["au", "revoir"]
    assert {"merci", "votre", "patience"} <= set(normalize(heard["thanks"].text))


def test_utterances_have_a_confidence_and_timings_but_no_word_alignment(
    heard: dict[str, Utterance],
) -> None:
    # Nothing in the bot reads per-word timings (they would cost a second decode pass);
    # the confidence comes from the decode's token probabilities.
    for name, wav in (("goodbye", GOODBYE), ("thanks", THANKS)):
        utterance = heard[name]
        duration = len(read_wav(wav)) / 16000
        assert utterance.audio_s == pytest.approx(duration, abs=0.021)  # whole 20 ms frames
        assert utterance.words == ()
        assert 0.0 < utterance.confidence <= 1.0 and type(utterance.confidence) is float
        assert utterance.decode_s > 0.0
    # Clean speech is heard: above the handoff policy's threshold.
    assert heard["goodbye"].confidence > PolicySettings().min_asr_confidence
    assert heard["thanks"].confidence > PolicySettings().min_asr_confidence


async def test_stream_is_empty_again_after_finalize(whisper: WhisperAsr) -> None:
    stream = whisper.start_stream("call-c")
    empty = await stream.finalize()
    assert empty.is_empty and empty.words == () and empty.confidence == 0.0
    for frame in to_frames(read_wav(GOODBYE)):
        await stream.push(frame)
    first = await stream.finalize()
    second = await stream.finalize()
    assert not first.is_empty
    assert second.is_empty and second.audio_s == 0.0
    stream.close()


async def test_utterance_is_capped_at_max_utterance_s(executor: ThreadPoolExecutor) -> None:
    settings = AsrSettings(engine="whisper", max_utterance_s=1.0)
    asr = WhisperAsr.load(whisper_base_dir(), settings, executor)
    stream = asr.start_stream("call-d")
    frames = to_frames(read_wav(SOUNDS / "vm-opts.wav"))  # about 8 s of speech
    assert len(frames) > 100
    for frame in frames:
        await stream.push(frame)
    utterance = await stream.finalize()
    assert utterance.audio_s == pytest.approx(1.0)
    assert all(word.end_s <= 1.0 for word in utterance.words)


def test_token_budget_grows_with_the_audio_within_whisper_limits() -> None:
    assert token_budget(0.5) == 21
    assert token_budget(10.0) == 116
    assert token_budget(20.0) == 216
    # CTranslate2 lets one decode emit at most half of Whisper's 448 positions.
    assert token_budget(60.0) == token_budget(30.0) == MAX_TOKENS_PER_WINDOW == 224
    # What faster-whisper is asked for, so that CTranslate2's halving grants the budget.
    assert max_new_tokens(21) == 42 - PROMPT_TOKENS
    assert max_new_tokens(224) == 448 - PROMPT_TOKENS


async def test_a_looping_decode_stays_within_the_token_budget(whisper: WhisperAsr) -> None:
    # One second of "treize": without a budget Whisper base loops ("le fait que le fait
    # que ...", 222 words) until its 448-token limit.
    utterance = await _recognize(whisper, SOUNDS / "digits" / "13.wav", "call-loop")
    assert len(normalize(utterance.text)) <= token_budget(utterance.audio_s)


# --- one decode per utterance, loops cut (issue 10) -----------------------------------------
# espeak-ng's French "répétez s'il vous plaît" at 190 words a minute, as a call hears it: a
# WAV file read like `voicebot call --wav` reads it, cut by the Silero VAD as the session cuts
# it. Whisper base decodes it as "Oui, pépé, pépé, pépé, …" until its token budget. The code
# before this test decoded it 2 or 3 times (timestamp seeks, temperature fallback) and let
# "Oui, pépé, pépé, pépé, pép" through with confidence 0.47-0.50, above the handoff
# threshold, in 6-11 s on the 2-core development machine (docs/asr.md). Timings are only
# compared with decodes of ordinary speech measured in the same test: a slow or busy machine
# slows both alike.

LOOPING_TEXT = "répétez s'il vous plaît"
LOOPING_WPM = 190  # Whisper loops on it as both Silero detectors cut it (ONNX and the old port)
MAX_COST_RATIO = 3.0  # an utterance may cost at most 3 plain decodes of that much speech


def looping_call_wav(folder: Path) -> Path:
    """The looping utterance as a caller recording (8 kHz WAV), for `voicebot call --wav`."""
    return write_wav_file(
        folder / "repetez.wav", espeak_pcm(LOOPING_TEXT, "fr", SAMPLE_RATE, LOOPING_WPM)
    )


def vad_cut(pcm: bytes, lead_s: float = 0.4) -> bytes:
    """The audio a call session hands the ASR for this speech: the VAD's pre-roll, the
    speech, and the frames until the VAD decides the caller stopped (as in session.py)."""
    vad = SileroVad(VadSettings())
    kept: list[bytes] = []
    opened = False
    for frame in to_frames(silence(lead_s) + pcm + silence(2.0)):
        was_speaking = vad.in_speech
        event = vad.feed(frame)
        if isinstance(event, SpeechStarted) and not opened:
            opened = True
            kept.extend(f.pcm for f in event.preroll)
        if isinstance(event, SpeechEnded):
            break
        if opened and (vad.in_speech or was_speaking):
            kept.append(frame.pcm)
    assert opened, "the VAD heard no speech"
    return b"".join(kept)


def plain_decode_s(asr: WhisperAsr, seconds: float) -> float:
    """Wall time of one plain Whisper decode (temperature 0, one pass) of ordinary French
    speech ("Merci de votre patience", padded or cut to ``seconds``), the timing reference."""
    speech = read_wav(THANKS) + silence(seconds)
    pcm = speech[: int(seconds * SAMPLE_RATE) * 2]
    wide = resample(pcm, SAMPLE_RATE, WHISPER_RATE)
    samples = np.frombuffer(wide, dtype="<i2").astype(np.float32) / 32768.0
    started = time.perf_counter()
    segments, _info = asr.model.transcribe(
        samples,
        language="fr",
        beam_size=1,
        temperature=0.0,
        without_timestamps=True,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    text = " ".join(segment.text for segment in segments)  # decoding happens here
    elapsed = time.perf_counter() - started
    assert "patience" in text.lower(), text  # it was ordinary speech, decoded to its end
    return elapsed


class CountingDecoder:
    """Wraps CTranslate2's Whisper model: counts decode passes and the tokens each emitted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.emitted: list[int] = []

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        results = self.inner.generate(*args, **kwargs)
        self.emitted.extend(len(r.sequences_ids[0]) for r in results)
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _decode_pcm(asr: WhisperAsr, pcm: bytes, call_id: str) -> Utterance:
    stream = asr.start_stream(call_id)
    for frame in to_frames(pcm):
        await stream.push(frame)
    utterance = await stream.finalize()
    stream.close()
    return utterance


async def test_a_looping_utterance_costs_one_bounded_decode_and_is_not_heard(
    whisper: WhisperAsr, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pcm = vad_cut(read_wav(looping_call_wav(tmp_path)))
    decoder = CountingDecoder(whisper.model.model)
    monkeypatch.setattr(whisper.model, "model", decoder)
    looped: list[Utterance] = []
    reference_s: list[float] = []
    for attempt in range(2):  # interleaved, so that a burst of load hits both alike
        decoder.emitted.clear()
        looped.append(await _decode_pcm(whisper, pcm, f"call-loop-{attempt}"))
        budget = token_budget(looped[-1].audio_s)
        # Exactly one decode pass, within the budget: no fallback, no second window.
        assert len(decoder.emitted) == 1, decoder.emitted
        assert decoder.emitted[0] <= budget
        reference_s.append(plain_decode_s(whisper, looped[-1].audio_s))
    utterance = looped[0]
    assert looped[1].text == utterance.text  # temperature 0: the same decode every time
    # The loop was reached and cut: at most one "pépé" is left, and it is not heard.
    assert decoder.emitted[0] == budget, "Whisper no longer loops on this audio"
    words = normalize(utterance.text)
    assert 0 < words.count("pepe") <= 1 and len(words) <= 4, utterance.text
    assert utterance.confidence <= LOOP_CONFIDENCE
    assert utterance.confidence < PolicySettings().min_asr_confidence
    cost = min(u.decode_s for u in looped)
    assert cost <= MAX_COST_RATIO * min(reference_s), (cost, reference_s)


def test_loops_are_found_where_they_start_repeating() -> None:
    def cut(text: str, unfinished: bool = False) -> str | None:
        words = [word.group().lower() for word in spoken_words(text)]
        at = find_loop(words, unfinished)
        return None if at is None else " ".join(words[:at])

    assert cut("Je vous préserve, je vous prépare, je vous prépare, je vous prépare.") == (
        "je vous préserve je vous prépare"
    )
    assert cut("Oui, pépé, pépé, pépé, pépé, pépé,") == "oui pépé"
    assert cut("à la coupe de la coupe de la coupe de la coupe") == "à la coupe de"
    # Whisper glues some loops with hyphens (seen on the corpus: "quatorzième").
    assert cut("Quatre-quatre-quatre-quatre-quatre") == "quatre"
    assert cut("qu'on a fait qu'on a fait qu'on a fait") == "qu'on a fait"
    # Repeats a caller makes are not loops; in a decode cut by its budget, two copies are.
    assert cut("non non non") is None
    assert cut("au revoir au revoir") is None
    assert cut("c'est le deux deux deux") is None
    assert cut("mais on va pas n'a pas n'a") is None
    assert cut("mais on va pas n'a pas n'a", unfinished=True) == "mais on va pas n'a"
    assert cut("Sainte-de-de", unfinished=True) == "sainte de"
    assert cut("") is None


def test_a_failed_decode_keeps_a_cut_text_and_a_low_confidence() -> None:
    heard = Utterance(text="Oui, pépé, pépé, pépé, pépé, pépé", confidence=0.55, audio_s=1.9)
    cut, loop_cut = guard_repetitions(heard, unfinished=True)
    assert loop_cut and cut.text == "Oui, pépé" and cut.confidence == LOOP_CONFIDENCE
    hyphenated = replace(heard, text="Quatre-quatre-quatre-quatre-quatre-quatre")
    assert guard_repetitions(hyphenated, unfinished=False)[0].text == "Quatre"
    # Aligned words (segments with word timestamps) are cut with the text.
    aligned = tuple(Word(w, i / 4, (i + 1) / 4, 0.9) for i, w in enumerate(["Oui", "pépé"] * 3))
    cut, _ = guard_repetitions(replace(heard, words=aligned), unfinished=False)
    assert [w.text for w in cut.words] == ["Oui", "pépé"]
    # Stopped by its budget without a visible loop: the text stays, unsure.
    unfinished, loop_cut = guard_repetitions(replace(heard, text="Je vous le dis"), True)
    assert not loop_cut and unfinished.text == "Je vous le dis"
    assert unfinished.confidence == LOOP_CONFIDENCE
    fine = replace(heard, text="Merci de votre patience.")
    assert guard_repetitions(fine, unfinished=False) == (fine, False)


async def test_other_audio_formats_are_refused(whisper: WhisperAsr) -> None:
    stream = whisper.start_stream("call-e")
    with pytest.raises(AudioInputError, match="8 kHz"):
        await stream.push(AudioFrame.silence(AudioFormat(rate=16000)))


def test_missing_model_dir_names_the_fix(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    with pytest.raises(ModelError, match="make setup"):
        WhisperAsr.load(tmp_path / "absent", AsrSettings(), executor)


def test_incomplete_model_dir_names_missing_files(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    shutil.copyfile(whisper_base_dir() / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match=r"model\.bin.*tokenizer\.json.*vocabulary\.json"):
        WhisperAsr.load(tmp_path, AsrSettings(), executor)


def test_broken_model_file_is_a_model_error(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(whisper_base_dir() / name, tmp_path / name)
    with (whisper_base_dir() / "model.bin").open("rb") as source:
        (tmp_path / "model.bin").write_bytes(source.read(100_000))  # a truncated download
    with pytest.raises(ModelError, match="illisible"):
        WhisperAsr.load(tmp_path, AsrSettings(), executor)


def _segment(start: float, end: float, words: list[WhisperWord], no_speech: float) -> Segment:
    return Segment(
        id=0, seek=0, start=start, end=end, text=" " + " ".join(w.word.strip() for w in words),
        tokens=[], avg_logprob=-0.3, compression_ratio=1.0, no_speech_prob=no_speech,
        words=words, temperature=0.0,
    )  # fmt: skip


def test_confidence_combines_words_sequence_and_no_speech() -> None:
    words = [
        WhisperWord(start=0.0, end=0.2, word=" au", probability=0.3),
        WhisperWord(start=0.2, end=0.8, word=" revoir.", probability=0.9),
        WhisperWord(start=0.8, end=0.9, word=" !", probability=0.5),
    ]
    utterance = utterance_from_segments([_segment(0.0, 1.0, words, no_speech=0.1)], audio_s=0.85)
    assert [w.text for w in utterance.words] == ["au", "revoir"]  # lone "!" is not a word
    assert utterance.words[1].end_s == 0.8
    weighted = (0.2 * 0.3 + 0.6 * 0.9) / 0.8
    sequence = math.exp(-0.3)  # the segment's avg_logprob
    assert utterance.confidence == pytest.approx(math.sqrt(weighted * sequence) * (1 - 0.1))
    clamped = utterance_from_segments(
        [_segment(0.0, 1.0, [WhisperWord(0.5, 1.4, " oui", 0.0)], no_speech=0.0)], audio_s=1.0
    )
    assert clamped.words[0].end_s == 1.0 and 0.0 < clamped.words[0].confidence <= 1.0


def test_confidence_without_words_uses_the_segment_log_probability() -> None:
    segment = _segment(0.0, 1.0, [], no_speech=0.5)
    assert utterance_confidence([segment], []) == pytest.approx(math.exp(-0.3) * 0.5)
    assert utterance_confidence([], []) == 0.0
