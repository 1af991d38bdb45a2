"""The end-of-turn measurement (voicebot.tools.turn_eval): its pure pieces on literal inputs,
then one run on three real French recordings with the real engines."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from voicebot.core.audio import FRAME_BYTES, read_wav
from voicebot.core.interfaces import SpeechEnded, Understanding, Word
from voicebot.speech.asr_whisper import WhisperAsr
from voicebot.tools.asr_eval import builtin_corpus
from voicebot.tools.bench.lines import LINE_NOISE_DBFS, LineNoise
from voicebot.tools.turn_eval import (
    CUT_AT_PAUSE,
    CUT_ELSEWHERE,
    NO_END,
    TAIL_FRAMES,
    WHOLE,
    RecordingResult,
    Timeline,
    TurnOutcome,
    classify,
    cut_frame_between,
    evaluate,
    format_report,
    pause_distribution,
    percentile,
    pick_pause,
    simulate_turn,
    splice,
    whisper_words,
    words_heard,
)

if TYPE_CHECKING:
    from voicebot.call.runtime import Runtime
    from voicebot.core.config import Settings
    from voicebot.dialogue.agent import RasaDialogue


def word(text: str, start_s: float, end_s: float) -> Word:
    return Word(text, start_s, end_s, 0.9)


def no_noise(frame: bytes, index: int) -> bytes:
    return frame


def frames_of(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


# --- the splice --------------------------------------------------------------------------------


def test_the_pause_is_spliced_at_the_cut_frame_and_the_words_after_it_move() -> None:
    originals = [bytes([k + 1]) * FRAME_BYTES for k in range(10)]
    words = (word("je", 0.0, 0.07), word("voudrais", 0.10, 0.18))
    timeline = splice(b"".join(originals), words, 4, 3, no_noise, tail_frames=5)
    frames = frames_of(timeline.pcm)
    silence = bytes(FRAME_BYTES)
    assert len(frames) == 10 + 3 + 5
    assert frames[:4] == originals[:4]
    assert frames[4:7] == [silence] * 3
    assert frames[7:13] == originals[4:]
    assert frames[13:] == [silence] * 5
    assert (timeline.pause_start_s, timeline.pause_end_s) == (0.08, 0.14)
    assert timeline.words[0] == words[0]  # its middle (35 ms) is before the cut (80 ms)
    assert timeline.words[1].start_s == pytest.approx(0.16)
    assert timeline.words[1].end_s == pytest.approx(0.24)
    assert timeline.words[1].text == "voudrais"


def test_a_complete_sentence_gets_the_tail_and_no_pause() -> None:
    pcm = b"\x01\x00" * 240  # a frame and a half: padded to two frames
    words = (word("oui", 0.0, 0.03),)
    timeline = splice(pcm, words, 0, 0, no_noise)
    assert len(timeline.pcm) == (2 + TAIL_FRAMES) * FRAME_BYTES
    assert TAIL_FRAMES * 20 == 1500
    assert timeline.pause_start_s is None and timeline.pause_end_s is None
    assert timeline.words == words
    assert timeline.pcm[:480] == pcm
    assert timeline.pcm[480:] == bytes(len(timeline.pcm) - 480)


def test_the_noise_is_mixed_under_every_frame_with_its_index() -> None:
    def index_noise(frame: bytes, index: int) -> bytes:
        return bytes([index % 256]) * len(frame)

    timeline = splice(bytes(4 * FRAME_BYTES), (), 2, 3, index_noise, tail_frames=2)
    assert frames_of(timeline.pcm) == [bytes([k]) * FRAME_BYTES for k in range(4 + 3 + 2)]


def test_the_bench_line_noise_puts_the_pause_at_minus_65_dbfs() -> None:
    noise = LineNoise(LINE_NOISE_DBFS, FRAME_BYTES, seed=0).over
    timeline = splice(bytes(10 * FRAME_BYTES), (), 5, 50, noise, tail_frames=0)
    pause = np.frombuffer(timeline.pcm, dtype="<i2")[5 * 160 : 55 * 160].astype(np.float64)
    level = 10 * math.log10(float(np.mean((pause / 32768.0) ** 2)))
    assert level == pytest.approx(LINE_NOISE_DBFS, abs=1.0)


def test_a_cut_outside_the_recording_is_refused() -> None:
    with pytest.raises(ValueError):
        splice(bytes(3 * FRAME_BYTES), (), 4, 1, no_noise)
    with pytest.raises(ValueError):
        splice(bytes(3 * FRAME_BYTES), (), 1, -1, no_noise)


def test_the_cut_is_the_middle_of_the_gap_rounded_to_a_frame() -> None:
    words = [word("a", 0.2, 0.5), word("b", 0.55, 1.0), word("c", 1.13, 1.4)]
    assert cut_frame_between(words, 0) == 26  # 0.525 s
    assert cut_frame_between(words, 1) == 53  # 1.065 s


def test_the_pause_is_reproducible_and_never_after_the_first_or_before_the_last_word() -> None:
    eight = [word(str(i), i * 0.3, i * 0.3 + 0.2) for i in range(8)]
    assert pick_pause(eight[:3], 0, "x") is None
    assert pick_pause(eight, 0, "x") == pick_pause(eight, 0, "x")
    picks = [pick_pause(eight, 0, f"key{i}") for i in range(300)]
    boundaries = {p[0] for p in picks if p is not None}
    pauses = {p[1] for p in picks if p is not None}
    assert boundaries == {1, 2, 3, 4, 5}  # after word 0 or before word 7: never
    assert min(pauses) == 500 and max(pauses) == 800
    assert all(ms % 20 == 0 for ms in pauses)
    assert len(pauses) == 16
    four = {pick_pause(eight[:4], 0, f"key{i}") for i in range(20)}
    assert {p[0] if p is not None else None for p in four} == {1}  # the one boundary allowed
    other_seed = [pick_pause(eight, 1, f"key{i}") for i in range(300)]
    assert other_seed != picks


# --- words heard, classification, summary -------------------------------------------------------


def test_the_words_heard_are_those_that_have_ended() -> None:
    words = [word("je", 0.0, 0.2), word("voudrais", 0.3, 0.5), word("un", 0.6, 0.9)]
    assert words_heard(words, 0.1) == ""
    assert words_heard(words, 0.2) == "je"
    assert words_heard(words, 0.55) == "je voudrais"
    assert words_heard(words, 5.0) == "je voudrais un"
    # a word that ends early after one still going is not heard before it
    assert words_heard([word("a", 0.0, 0.5), word("b", 0.1, 0.3)], 0.4) == ""


PAUSED = Timeline(b"", (word("a", 0.2, 0.9), word("b", 1.7, 1.9), word("c", 2.0, 2.4)), 1.0, 1.6)
COMPLETE = Timeline(b"", (word("a", 0.2, 0.9), word("b", 1.1, 1.9), word("c", 2.0, 2.4)))


def test_where_a_turn_ended() -> None:
    assert classify(None, PAUSED) == NO_END
    assert classify(SpeechEnded(at_s=2.5, decided_at_s=2.8), PAUSED) == WHOLE
    assert classify(SpeechEnded(at_s=0.98, decided_at_s=1.4), PAUSED) == CUT_AT_PAUSE
    # the VAD hears the next word late: decided just after the pause, still that pause
    assert classify(SpeechEnded(at_s=1.0, decided_at_s=1.64), PAUSED) == CUT_AT_PAUSE
    assert classify(SpeechEnded(at_s=0.5, decided_at_s=0.9), PAUSED) == CUT_ELSEWHERE
    assert classify(SpeechEnded(at_s=1.8, decided_at_s=1.98), PAUSED) == CUT_ELSEWHERE
    assert classify(SpeechEnded(at_s=1.0, decided_at_s=1.4), COMPLETE) == CUT_ELSEWHERE
    assert classify(SpeechEnded(at_s=2.3, decided_at_s=2.6), COMPLETE) == WHOLE


def test_the_nearest_rank_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 95) == 5.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0) == 1.0
    assert percentile([100.0, 200.0, 300.0, 400.0], 50) == 200.0


def test_the_summary_of_hand_made_results() -> None:
    from voicebot.tools.turn_eval import summarize

    whole = TurnOutcome(WHOLE)
    results = [
        RecordingResult("r1", 500, TurnOutcome(CUT_AT_PAUSE), TurnOutcome(WHOLE, 300, "complete")),
        RecordingResult("r2", 620, whole, TurnOutcome(WHOLE, 660, "fallen")),
        RecordingResult("r3", 800, TurnOutcome(CUT_ELSEWHERE), TurnOutcome(CUT_ELSEWHERE)),
        RecordingResult("r4", 520, whole, TurnOutcome(WHOLE, 900, "complete")),
    ]
    summary = summarize(results)
    assert summary["recordings"] == 4
    assert summary["paused"]["counts"] == {CUT_AT_PAUSE: 1, CUT_ELSEWHERE: 1, WHOLE: 2, NO_END: 0}
    assert summary["paused"]["cut_at_pause"] == 0.25
    assert summary["paused"]["cut_elsewhere"] == 0.25
    assert summary["paused"]["cut_too_early"] == 0.5
    assert summary["complete"]["counts"] == {CUT_AT_PAUSE: 0, CUT_ELSEWHERE: 1, WHOLE: 3, NO_END: 0}
    assert summary["complete"]["cut_elsewhere"] == 0.25
    assert summary["complete"]["end_wait_ms"] == {"p50": 660, "p95": 900, "mean": 620}
    assert summary["complete"]["why"] == {"complete": 2, "fallen": 1}
    empty = summarize([])
    assert empty["paused"]["cut_at_pause"] is None
    assert empty["complete"]["end_wait_ms"] == {"p50": None, "p95": None, "mean": None}


def test_the_pause_distribution() -> None:
    assert pause_distribution([520, 500, 800, 520]) == {
        "count": 4,
        "min": 500,
        "p50": 520,
        "max": 800,
        "mean": 585,
        "by_length": {"500": 1, "520": 2, "800": 1},
    }


# --- the real engines ---------------------------------------------------------------------------


def whisper_of(runtime: Runtime) -> WhisperAsr:
    asr = runtime.services.asr
    assert isinstance(asr, WhisperAsr)
    return asr


async def test_a_complete_request_read_by_the_nlu_ends_after_the_short_wait(
    call_settings: Settings, call_runtime: Runtime
) -> None:
    entry = next(e for e in builtin_corpus().entries if e.key == "agent-loggedoff")
    pcm = read_wav(entry.wav)
    words = whisper_words(whisper_of(call_runtime), pcm)
    assert len(words) >= 3 and all(w.end_s >= w.start_s for w in words)
    read_texts: list[str] = []

    async def complete(text: str) -> Understanding | None:  # an NLU sure of every reading
        read_texts.append(text)
        return Understanding(text, "some_request", 0.99) if text else None

    outcome = await simulate_turn(
        splice(pcm, words, 0, 0, no_noise), call_settings.turn, call_settings.vad, complete
    )
    assert outcome.kind == WHOLE
    assert outcome.why == "complete"
    assert outcome.heard == " ".join(w.text for w in words)
    assert outcome.end_wait_ms == pytest.approx(call_settings.turn.complete_silence_ms, abs=20)
    assert read_texts and all(outcome.heard.startswith(text) for text in read_texts)


async def test_three_real_recordings_before_and_after(
    call_settings: Settings, call_runtime: Runtime, rasa_dialogue: RasaDialogue
) -> None:
    names = ("asterisk-core-sounds-fr", "whisper stand-in", "rasa")
    report = await evaluate(
        builtin_corpus().entries,
        whisper_of(call_runtime),
        rasa_dialogue,
        call_settings,
        seed=0,
        limit=3,
        names=names,
    )
    assert set(report["conditions"]) == {"before", "after"}
    recordings = report["recordings"]
    assert recordings["used"] == 3 == len(report["results"])
    skipped = (
        recordings["skipped_fewer_than_3_words"] + recordings["skipped_3_words_no_allowed_boundary"]
    )
    assert recordings["looked_at"] == recordings["used"] + skipped
    assert report["pause_ms"]["count"] == 3
    assert 500 <= report["pause_ms"]["min"] <= report["pause_ms"]["max"] <= 800
    for condition in report["conditions"].values():
        assert condition["recordings"] == 3
        assert sum(condition["paused"]["counts"].values()) == 3
        assert sum(condition["complete"]["counts"].values()) == 3
        whole = condition["complete"]["counts"][WHOLE]
        assert sum(condition["complete"]["why"].values()) == whole
    fixed_ms = call_settings.vad.end_silence_ms
    before_whole = [
        outcome
        for result in report["results"]
        for outcome in result["before"].values()
        if outcome["kind"] == WHOLE
    ]
    assert before_whole  # the check below is not vacuous
    assert all(o["end_wait_ms"] >= fixed_ms and o["why"] == "disabled" for o in before_whole)
    after_whys = set(report["conditions"]["after"]["complete"]["why"])
    assert after_whys <= {"unfinished", "complete", "fallen", "held", "default"}
    text = format_report(report)
    assert f"before (fixed {fixed_ms} ms)" in text and "after (rule)" in text
    assert "whisper stand-in" in text and "instantly" in text
