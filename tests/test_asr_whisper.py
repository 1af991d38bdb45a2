"""The Whisper engine on real French telephone recordings (Whisper base stand-in, int8)."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from faster_whisper.transcribe import Segment
from faster_whisper.transcribe import Word as WhisperWord

from voicebot.core.audio import AudioFormat, AudioFrame, read_wav, to_frames
from voicebot.core.config import AsrSettings
from voicebot.core.errors import AudioInputError, ModelError
from voicebot.core.interfaces import Utterance
from voicebot.speech.asr_whisper import (
    WhisperAsr,
    token_budget,
    utterance_confidence,
    utterance_from_segments,
)
from voicebot.speech.standins import whisper_base_dir
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


def test_words_have_timestamps_in_range_and_confidences(heard: dict[str, Utterance]) -> None:
    for name, wav in (("goodbye", GOODBYE), ("thanks", THANKS)):
        utterance = heard[name]
        duration = len(read_wav(wav)) / 16000
        assert utterance.audio_s == pytest.approx(duration, abs=0.021)  # whole 20 ms frames
        assert utterance.words, name
        previous_start = 0.0
        for word in utterance.words:
            assert 0.0 <= word.start_s <= word.end_s <= utterance.audio_s
            assert word.start_s >= previous_start
            previous_start = word.start_s
            assert 0.0 < word.confidence <= 1.0
            assert type(word.confidence) is float and type(word.start_s) is float
            assert word.text == word.text.strip(" .,!?")
        assert 0.0 < utterance.confidence <= 1.0 and type(utterance.confidence) is float
        assert utterance.decode_s > 0.0
    assert [w.text.lower() for w in heard["goodbye"].words] == ["au", "revoir"]


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
    assert token_budget(60.0) == token_budget(30.0) == 316  # per 30 s window, under 448


async def test_a_looping_decode_stays_within_the_token_budget(whisper: WhisperAsr) -> None:
    # One second of "treize": without a budget Whisper base loops ("le fait que le fait
    # que ...", 222 words) until its 448-token limit.
    utterance = await _recognize(whisper, SOUNDS / "digits" / "13.wav", "call-loop")
    assert len(utterance.words) <= token_budget(utterance.audio_s)
    assert len(normalize(utterance.text)) <= token_budget(utterance.audio_s)


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
