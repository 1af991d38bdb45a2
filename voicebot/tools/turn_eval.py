"""``python -m voicebot.tools.turn_eval``: the end-of-turn rule measured on real French speech.

Each usable recording of the built-in corpus (asterisk-core-sounds-fr, real 8 kHz French
prompts, voicebot.tools.asr_eval) becomes two caller turns: a **complete sentence** (the
recording, then 1.5 s of line), which should end once, after the last word, with a short
*end wait* (last voiced frame → the VAD's decision); and a **paused sentence** (500-800 ms of
line spliced at one word boundary, never after the first word nor before the last), which
should not end in that pause. Line: the bench's white noise at -65 dBFS (LineNoise) under
every frame of the turn, frame n always the same noise, so both conditions hear the same audio.

Each turn goes through a fresh Silero VAD, frame by frame, "before" (the fixed wait
``vad.end_silence_ms``: ``turn.enabled`` false) and "after" (voicebot.call.turn_end, settings
as loaded). Once a pause reaches READ_AT_PAUSE_MS, as in the live listener, the wait is
set from the words heard so far (Whisper's words that have ended by then: one decode per
recording, with word timestamps), the NLU's reading of them and the pitch where the voice
ended (voicebot.speech.intonation, last 3 s of the turn). Both are read instantly here; the
live listener gets them some 15-60 ms later (the NLU runs on its event loop).

Run: ``python -m voicebot.tools.turn_eval [--limit N] [--seed S] [--json] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from voicebot.call.listener import INTONATION_WINDOW_FRAMES
from voicebot.call.turn_end import READ_AT_PAUSE_MS, TurnEnd, silence_needed
from voicebot.core.audio import (
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    TELEPHONE,
    read_wav,
    resample,
    to_frames,
)
from voicebot.core.config import Settings, TurnSettings, VadSettings, load_settings
from voicebot.core.errors import VoicebotError
from voicebot.core.interfaces import Dialogue, SpeechEnded, SpeechStarted, Understanding, Word
from voicebot.speech import asr_whisper
from voicebot.speech.asr_whisper import WhisperAsr
from voicebot.speech.intonation import final_pitch_semitones
from voicebot.speech.vad import SileroVad
from voicebot.tools.asr_eval import CorpusEntry
from voicebot.tools.bench.lines import LINE_NOISE_DBFS, LineNoise

FRAME_S = FRAME_MS / 1000
TAIL_FRAMES = 75  # 1.5 s of line after the sentence
MIN_REFERENCE_WORDS = 4
MIN_HEARD_WORDS = 3
PAUSE_MIN_MS, PAUSE_MAX_MS = 500, 800
CUT_AT_PAUSE, CUT_ELSEWHERE, WHOLE, NO_END = "cut_at_pause", "cut_elsewhere", "whole", "no_end"
KINDS = (CUT_AT_PAUSE, CUT_ELSEWHERE, WHOLE, NO_END)
NLU_TIMING = "NLU and pitch read instantly at the pause (live: some 15-60 ms later)"

Noise = Callable[[bytes, int], bytes]  # (frame, frame index) -> the frame with line noise


@dataclass(frozen=True)
class Timeline:
    """One simulated turn's audio, the words on its clock and the inserted pause (if any)."""

    pcm: bytes
    words: tuple[Word, ...]
    pause_start_s: float | None = None
    pause_end_s: float | None = None


@dataclass(frozen=True)
class TurnOutcome:
    kind: str  # one of KINDS
    end_wait_ms: float | None = None  # whole turns: the VAD's decision minus the voice's end
    why: str = ""  # the end-of-turn decision in force when the turn ended
    heard: str = ""  # the words heard when the turn ended


@dataclass(frozen=True)
class RecordingResult:
    """One recording under one condition."""

    key: str
    pause_ms: int
    paused: TurnOutcome
    complete: TurnOutcome


# --- pure pieces ----------------------------------------------------------------------------


def cut_frame_between(words: Sequence[Word], boundary: int) -> int:
    """The frame at the middle of the gap between word ``boundary`` and the next one."""
    middle_s = (words[boundary].end_s + words[boundary + 1].start_s) / 2
    return round(middle_s / FRAME_S)


def pick_pause(words: Sequence[Word], seed: int, key: str) -> tuple[int, int] | None:
    """(boundary, pause ms): the pause goes after word ``boundary``, neither after the first
    word nor before the last; None when the recording has no such boundary (3 words)."""
    if len(words) < 4:
        return None
    rng = random.Random(f"{seed}:{key}")  # noqa: S311 — reproducible test data, not secrets
    boundary = rng.randint(1, len(words) - 3)
    pause_ms = round(rng.uniform(PAUSE_MIN_MS, PAUSE_MAX_MS) / FRAME_MS) * FRAME_MS
    return boundary, pause_ms


def splice(
    pcm: bytes,
    words: Sequence[Word],
    cut_frame: int,
    pause_frames: int,
    noise: Noise,
    tail_frames: int = TAIL_FRAMES,
) -> Timeline:
    """``pcm`` (padded to whole frames) with ``pause_frames`` of line inserted before frame
    ``cut_frame`` and ``tail_frames`` appended, ``noise`` mixed under every frame; the words
    whose middle lies after the cut move by the pause."""
    frames = [frame.pcm for frame in to_frames(pcm)]
    if not 0 <= cut_frame <= len(frames) or pause_frames < 0:
        raise ValueError(f"cut at frame {cut_frame} of {len(frames)}, pause {pause_frames}")
    line = bytes(FRAME_BYTES)
    timeline = (
        frames[:cut_frame] + [line] * pause_frames + frames[cut_frame:] + [line] * tail_frames
    )
    mixed = b"".join(noise(frame, index) for index, frame in enumerate(timeline))
    cut_s, pause_s = cut_frame * FRAME_S, pause_frames * FRAME_S
    moved = tuple(
        replace(w, start_s=w.start_s + pause_s, end_s=w.end_s + pause_s)
        if (w.start_s + w.end_s) / 2 >= cut_s
        else w
        for w in words
    )
    if not pause_frames:
        return Timeline(mixed, moved)
    return Timeline(mixed, moved, round(cut_s, 3), round(cut_s + pause_s, 3))


def words_heard(words: Sequence[Word], now_s: float) -> str:
    """The transcript at ``now_s``: the words, in order, that have ended by then."""
    heard: list[str] = []
    for word in words:
        if word.end_s > now_s + 1e-9:
            break
        heard.append(word.text)
    return " ".join(heard)


def classify(ended: SpeechEnded | None, timeline: Timeline) -> str:
    """Where the turn ended. Whole: the voice ended after the last word had begun (Whisper's
    last word end often runs on into the silence, its start is the safer mark). Cut at the
    inserted pause: the voice ended before the pause was over and the decision came in it or
    after. Otherwise cut elsewhere, at a natural pause."""
    if ended is None:
        return NO_END
    if ended.at_s > timeline.words[-1].start_s:
        return WHOLE
    start, end = timeline.pause_start_s, timeline.pause_end_s
    if start is not None and end is not None and ended.at_s <= end and ended.decided_at_s > start:
        return CUT_AT_PAUSE
    return CUT_ELSEWHERE


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def summarize(results: Sequence[RecordingResult]) -> dict[str, Any]:
    """One condition's figures: outcome counts and shares, end waits and reasons."""
    total = len(results)
    paused = Counter(r.paused.kind for r in results)
    complete = Counter(r.complete.kind for r in results)
    whole = [r.complete for r in results if r.complete.kind == WHOLE]
    waits = [o.end_wait_ms for o in whole if o.end_wait_ms is not None]
    return {
        "recordings": total,
        "paused": {
            "counts": {kind: paused[kind] for kind in KINDS},
            "cut_at_pause": _share(paused[CUT_AT_PAUSE], total),
            "cut_elsewhere": _share(paused[CUT_ELSEWHERE], total),
            # the figure: a turn ended before the sentence did, wherever
            "cut_too_early": _share(paused[CUT_AT_PAUSE] + paused[CUT_ELSEWHERE], total),
        },
        "complete": {
            "counts": {kind: complete[kind] for kind in KINDS},
            "cut_elsewhere": _share(complete[CUT_ELSEWHERE], total),
            "end_wait_ms": {
                "p50": percentile(waits, 50),
                "p95": percentile(waits, 95),
                "mean": sum(waits) / len(waits) if waits else None,
            },
            "why": dict(sorted(Counter(o.why for o in whole).items())),
        },
    }


def pause_distribution(pauses: Sequence[int]) -> dict[str, Any]:
    return {
        "count": len(pauses),
        "min": min(pauses, default=None),
        "p50": percentile(pauses, 50),
        "max": max(pauses, default=None),
        "mean": sum(pauses) / len(pauses) if pauses else None,
        "by_length": {str(ms): n for ms, n in sorted(Counter(pauses).items())},
    }


# --- engines and the simulation ---------------------------------------------------------------


def whisper_words(asr: WhisperAsr, pcm: bytes) -> tuple[Word, ...]:
    """The recording's words with their times: the engine's decode options plus word
    timestamps (the bot's own decode asks for none, so its Utterance has no words)."""
    wide = resample(pcm, SAMPLE_RATE, asr_whisper.WHISPER_RATE)
    segments, _info = asr.model.transcribe(
        np.frombuffer(wide, dtype="<i2").astype(np.float32) / 32768.0,
        language="fr",
        beam_size=asr.settings.whisper_beam_size,
        temperature=asr_whisper.TEMPERATURE,
        word_timestamps=True,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    audio_s = TELEPHONE.duration_s(len(pcm))
    return asr_whisper.utterance_from_segments(list(segments), audio_s).words


async def simulate_turn(
    timeline: Timeline,
    turn: TurnSettings,
    vad_settings: VadSettings,
    read: Callable[[str], Awaitable[Understanding | None]],
) -> TurnOutcome:
    """Feed the timeline to a fresh VAD, retuning its wait at each pause; up to the first
    end of speech."""
    vad = SileroVad(vad_settings)
    default_ms = vad_settings.end_silence_ms
    audio: deque[bytes] = deque(maxlen=INTONATION_WINDOW_FRAMES)
    decision = TurnEnd(default_ms, "default")
    heard = ""
    for frame in to_frames(timeline.pcm):
        event = vad.feed(frame)
        if isinstance(event, SpeechEnded):
            kind = classify(event, timeline)
            wait_ms = round((event.decided_at_s - event.at_s) * 1000, 1)
            return TurnOutcome(kind, wait_ms if kind == WHOLE else None, decision.why, heard)
        if isinstance(event, SpeechStarted):  # as the listener: pre-roll, then the default
            audio.clear()
            audio.extend(f.pcm for f in event.preroll)
            heard = ""
            decision = silence_needed(turn, default_ms, heard)
            vad.end_silence_ms = decision.wait_ms
        elif vad.in_speech and vad.pause_ms == READ_AT_PAUSE_MS:
            heard = words_heard(timeline.words, vad.frames * FRAME_S)
            pitch = final_pitch_semitones(b"".join(audio))
            decision = silence_needed(turn, default_ms, heard, await read(heard), False, pitch)
            vad.end_silence_ms = decision.wait_ms
        if vad.in_speech:
            audio.append(frame.pcm)
    return TurnOutcome(NO_END, heard=heard)


async def evaluate(
    entries: Iterable[CorpusEntry],
    asr: WhisperAsr,
    reader: Dialogue,
    settings: Settings,
    seed: int = 0,
    limit: int | None = None,
    names: tuple[str, str, str] = ("", "", ""),
    progress: bool = False,
) -> dict[str, Any]:
    """The report (plain data) on the first ``limit`` usable entries; ``names`` are the
    corpus, ASR and NLU descriptions it states."""
    noise = LineNoise(LINE_NOISE_DBFS, FRAME_BYTES, seed=seed).over
    readings: dict[str, Understanding | None] = {}

    async def read(text: str) -> Understanding | None:
        if text and text not in readings:
            readings[text] = await reader.understand(text)
        return readings.get(text)

    conditions = {"before": replace(settings.turn, enabled=False), "after": settings.turn}
    results: dict[str, list[RecordingResult]] = {name: [] for name in conditions}
    seen, few_words, no_boundary = 0, 0, 0
    details: list[dict[str, Any]] = []
    for entry in entries:
        if limit is not None and len(details) >= limit:
            break
        if len(entry.reference.split()) < MIN_REFERENCE_WORDS:
            continue
        seen += 1
        pcm = read_wav(entry.wav)
        words = whisper_words(asr, pcm)
        picked = pick_pause(words, seed, entry.key) if len(words) >= MIN_HEARD_WORDS else None
        if picked is None:
            few_words += len(words) < MIN_HEARD_WORDS
            no_boundary += len(words) >= MIN_HEARD_WORDS
            continue
        boundary, pause_ms = picked
        cut = cut_frame_between(words, boundary)
        paused = splice(pcm, words, cut, pause_ms // FRAME_MS, noise)
        whole = splice(pcm, words, 0, 0, noise)
        detail: dict[str, Any] = {
            "key": entry.key,
            "heard": " ".join(w.text for w in words),
            "pause_after": " ".join(w.text for w in words[: boundary + 1]),
            "pause_ms": pause_ms,
        }
        for name, turn in conditions.items():
            outcomes = [await simulate_turn(t, turn, settings.vad, read) for t in (paused, whole)]
            results[name].append(RecordingResult(entry.key, pause_ms, *outcomes))
            detail[name] = {"paused": asdict(outcomes[0]), "complete": asdict(outcomes[1])}
        details.append(detail)
        if progress and len(details) % 10 == 0:
            print(f"  {len(details)} recordings…", file=sys.stderr, flush=True)
    corpus, asr_name, nlu_name = names
    return {
        "corpus": corpus,
        "asr": asr_name or asr.description,
        "nlu": nlu_name,
        "timing": NLU_TIMING,
        "line_noise": f"white noise at {LINE_NOISE_DBFS} dBFS under every frame (bench LineNoise)",
        "seed": seed,
        "tail_ms": TAIL_FRAMES * FRAME_MS,
        "fixed_wait_ms": settings.vad.end_silence_ms,
        "turn_settings": asdict(settings.turn),
        "recordings": {
            "looked_at": seen,
            "used": len(details),
            "skipped_fewer_than_3_words": few_words,
            "skipped_3_words_no_allowed_boundary": no_boundary,
        },
        "pause_ms": pause_distribution([r.pause_ms for r in results["after"]]),
        "conditions": {name: summarize(results[name]) for name in conditions},
        "results": details,
    }


# --- output and command line ---------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _cells(condition: dict[str, Any]) -> dict[str, str]:
    """One condition's column of the table, by row label."""
    paused, complete = condition["paused"], condition["complete"]
    waits = complete["end_wait_ms"]
    return {
        "Paused: cut at the inserted pause": _pct(paused["cut_at_pause"]),
        "Paused: cut elsewhere": _pct(paused["cut_elsewhere"]),
        "Paused: cut too early (both)": _pct(paused["cut_too_early"]),
        "Paused: whole / no end (count)": f"{paused['counts'][WHOLE]} / {paused['counts'][NO_END]}",
        "Complete: cut elsewhere": _pct(complete["cut_elsewhere"]),
        "Complete: whole / no end (count)": f"{complete['counts'][WHOLE]} / "
        f"{complete['counts'][NO_END]}",
        **{f"Complete: end wait {stat}": _ms(waits[stat]) for stat in ("p50", "p95", "mean")},
    }


def format_report(report: dict[str, Any]) -> str:
    """The readable table (the default output)."""
    rec, pauses = report["recordings"], report["pause_ms"]
    before, after = report["conditions"]["before"], report["conditions"]["after"]
    lines = [
        f"End of turn on {report['corpus']} (seed {report['seed']})",
        f"ASR: {report['asr']}, word timestamps; NLU: {report['nlu']}",
        f"Timing: {report['timing']}",
        f"Line: {report['line_noise']}; {report['tail_ms']} ms after the sentence",
        f"Recordings: {rec['used']} used of {rec['looked_at']} with >= 4 reference words; "
        f"skipped {rec['skipped_fewer_than_3_words']} (Whisper heard < 3 words), "
        f"{rec['skipped_3_words_no_allowed_boundary']} (3 words: no boundary allowed)",
        f"Inserted pauses: {pauses['count']}, {pauses['min']}-{pauses['max']} ms, "
        f"median {_ms(pauses['p50'])}, mean {_ms(pauses['mean'])}; by length: "
        + " ".join(f"{ms}x{n}" for ms, n in pauses["by_length"].items()),
        "",
        f"{'':34}{'before (fixed ' + str(report['fixed_wait_ms']) + ' ms)':>22}{'after (rule)':>16}",
    ]

    after_cells = _cells(after)
    for label, cell in _cells(before).items():
        lines.append(f"{label:34}{cell:>22}{after_cells[label]:>16}")
    for name, condition in (("before", before), ("after", after)):
        whys = ", ".join(f"{why} {n}" for why, n in condition["complete"]["why"].items())
        lines.append(f"End reasons of whole complete turns, {name}: {whys or '-'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--limit", type=int, default=None, help="first N usable recordings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    from voicebot.dialogue.agent import RasaDialogue, model_path
    from voicebot.speech.standins import whisper_base_dir
    from voicebot.tools.asr_eval import builtin_corpus

    try:
        settings = load_settings()
        corpus = builtin_corpus()
        configured = settings.asr.engine == "whisper" and settings.asr.model
        model_dir = Path(settings.asr.model) if configured else whisper_base_dir()
        with ThreadPoolExecutor(1) as executor:
            asr = WhisperAsr.load(model_dir, settings.asr, executor)
            dialogue = RasaDialogue.load(settings)
            nlu = f"Rasa {model_path(settings).name}"
            asr_name = asr.description + ("" if configured else " (stand-in)")
            names = (corpus.name, asr_name, nlu)
            run = evaluate(
                corpus.entries, asr, dialogue, settings, args.seed, args.limit, names, not args.json
            )
            report = asyncio.run(run)
    except VoicebotError as exc:
        print(f"turn_eval: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, ensure_ascii=False, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
