"""Caller audio: the script's utterances as 20 ms line frames (espeak-ng questions, real French
prompts from asterisk-core-sounds-fr-wav), each analysed by the project's own VAD as the
server will hear it, so that the caller can be paced on where the bot will decide."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebot.core.audio import FRAME_BYTES, SAMPLE_RATE, read_wav, resample, write_wav
from voicebot.core.config import LAYOUT, VadSettings
from voicebot.core.errors import AudioInputError, VoicebotError
from voicebot.tools.bench.script import CYCLE, FIRST_STEP, QUESTIONS, REAL_PROMPTS

FRAME_S = 0.020  # one line frame
FRENCH_SOUNDS = Path("/usr/share/asterisk/sounds/fr")
ESPEAK_WPM = 160


@dataclass(frozen=True)
class Clip:
    """One caller utterance as sent on the line.

    ``voice_end``/``decision``/``barge_in`` say roughly where the bot's VAD will decide (from
    one pass over the clip after silence): they pace the caller. The measurements use the
    exact frames, from a replay of the whole call (replay_vad)."""

    key: str
    text: str
    rate: int  # the line's sample rate
    frames: tuple[bytes, ...]  # 20 ms at ``rate``: the speech, then silence past the decision
    voice_end: int  # frame index of the last voiced frame
    decision: int  # frame index of the end-of-speech decision
    barge_in: int | None  # frame index of a barge-in decision over the bot


def line_frames(speech: bytes, vad: VadSettings, rate: int) -> list[bytes]:
    """8 kHz speech as the caller sends it on a line at ``rate``: 20 ms frames, then enough
    silence for the VAD to decide."""
    tail = -(-vad.end_silence_ms // 20) + 25  # the VAD may hear voice a little past the end
    pcm = speech + bytes(tail * FRAME_BYTES)
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, SAMPLE_RATE, rate)
    frame_bytes = rate * 20 // 1000 * 2
    pcm += bytes(-len(pcm) % frame_bytes)
    return [pcm[i : i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]


def as_the_server_hears(frames: Sequence[bytes], rate: int) -> tuple[list[Any], list[int]]:
    """The 8 kHz frames the server's VAD gets from these line frames, and for each the index
    of the line frame whose arrival completed it: the same frames at 8 kHz; through the
    transport's own streaming resampler and re-framing on a wideband line."""
    from telephony.audiosocket.server import EDGE_QUALITY
    from voicebot.core.audio import AudioFrame, FrameSplitter, Resampler

    if rate == SAMPLE_RATE:
        return [AudioFrame(f) for f in frames], list(range(len(frames)))
    resampler = Resampler(rate, SAMPLE_RATE, EDGE_QUALITY)
    splitter = FrameSplitter(FRAME_BYTES)
    heard: list[Any] = []
    source: list[int] = []
    for index, frame in enumerate(frames):
        for pcm in splitter.push(resampler.process(frame)):
            heard.append(AudioFrame(pcm))
            source.append(index)
    return heard, source


def analyse_clip(
    key: str, text: str, speech: bytes, vad: VadSettings, rate: int = SAMPLE_RATE
) -> Clip:
    """One pass of the project's VAD over the clip after silence, as the server hears it.

    Raises AudioInputError unless the VAD hears exactly one utterance."""
    from voicebot.core.interfaces import BargeIn, SpeechEnded, SpeechStarted
    from voicebot.speech.vad import SileroVad

    frames = line_frames(speech, vad, rate)
    lead = 32  # 0.64 s of silence before, like the pause before a caller speaks
    heard, source = as_the_server_hears([bytes(len(frames[0]))] * lead + frames, rate)
    detector = SileroVad(vad)
    starts = 0
    ends: list[tuple[int, int]] = []
    for index, frame in enumerate(heard):
        event = detector.feed(frame)
        if isinstance(event, SpeechStarted):
            starts += 1
        elif isinstance(event, SpeechEnded):
            ends.append((source[frame_index(event.at_s)], source[index]))
    if starts != 1 or len(ends) != 1:
        raise AudioInputError(
            f"caller clip {key}: the VAD hears {starts} utterance(s) ending {len(ends)} time(s); "
            "the benchmark needs clips of exactly one utterance"
        )
    detector = SileroVad(vad)
    barge_in = None
    for index, frame in enumerate(heard):
        if isinstance(detector.feed(frame, bot_speaking=True), BargeIn):
            barge_in = source[index] - lead
            break
    voice_end, decision = ends[0][0] - lead, ends[0][1] - lead
    keep = min(len(frames), decision + 15)
    return Clip(key, text, rate, tuple(frames[:keep]), voice_end, decision, barge_in)


def frame_index(end_s: float) -> int:
    """The index of the 20 ms frame that ends at ``end_s`` (stream time)."""
    return round(end_s / FRAME_S) - 1


def _espeak() -> str:
    """espeak-ng's full path; VoicebotError with the fix when it is not installed."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise VoicebotError("espeak-ng is not installed: apt-get install espeak-ng")
    return found


def espeak_speech(text: str, cache_dir: Path) -> bytes:
    """French speech from espeak-ng (8 kHz), cached by text and espeak-ng version."""
    espeak = _espeak()
    version = subprocess.run(  # noqa: S603 — a fixed argument, no shell
        [espeak, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    key = hashlib.sha256(f"{version}|fr|{ESPEAK_WPM}|{text}".encode()).hexdigest()[:20]
    cached = cache_dir / f"espeak-{key}.wav"
    if cached.is_file():
        with contextlib.suppress(AudioInputError):
            return read_wav(cached)
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        try:
            subprocess.run(  # noqa: S603 — an argument list after `--`, no shell
                [espeak, "-v", "fr", "-s", str(ESPEAK_WPM), "-w", str(wav), "--", text],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise VoicebotError(
                f"espeak-ng could not make the caller audio ({exc}): apt-get install espeak-ng"
            ) from None
        pcm = read_wav(wav)
    with contextlib.suppress(OSError):
        write_wav(cached, pcm)
    return pcm


def prepare_clips(vad: VadSettings, cache_dir: Path, rate: int = SAMPLE_RATE) -> dict[str, Clip]:
    """Every caller clip of the script, for a line at ``rate``."""
    clips: dict[str, Clip] = {}
    for name, text in QUESTIONS.items():
        key = f"espeak:{name}"
        clips[key] = analyse_clip(key, text, espeak_speech(text, cache_dir), vad, rate)
    for name, text in REAL_PROMPTS.items():
        path = FRENCH_SOUNDS / f"{name}.wav"
        if not path.is_file():
            raise VoicebotError(
                f"{path} is missing: apt-get install asterisk-core-sounds-fr-wav (make setup)"
            )
        key = f"asterisk:{name}"
        clips[key] = analyse_clip(key, text, read_wav(path), vad, rate)
    for step in (FIRST_STEP, *CYCLE):
        if step.kind == "barge_in" and clips[step.clip].barge_in is None:
            raise VoicebotError(f"caller clip {step.clip} is too short to barge in")
    return clips


def audio_cache_dir() -> Path:
    folder = LAYOUT.bench_out_dir / "audio-cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "voicebot-bench-audio"
        folder.mkdir(parents=True, exist_ok=True)
    return folder
