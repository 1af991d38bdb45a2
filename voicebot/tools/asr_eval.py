"""``voicebot asr eval``: word error rate and real-time factor of an ASR engine on a corpus.

The built-in corpus is real French telephone speech: Debian's ``asterisk-core-sounds-fr-wav``
(8 kHz prompts under /usr/share/asterisk/sounds/fr) with the transcripts that
``asterisk-core-sounds-fr`` ships in ``core-sounds-fr.txt.gz``. That file holds one prompt a
line, ``name: transcript`` (the name is the sound's path without extension, e.g.
``digits/7: sept``); ``;`` starts a comment. Transcripts that are only a stage direction —
``[ascending tones]``, ``(beep)``, ``[Son de singes qui crient]`` — are sound effects and
are skipped; so are prompts without a transcript and transcripts without a recording. Inside
a transcript, ``[...]`` and one-word ``(...)`` are directions (``Pour (emphase)``) and are
removed; longer parentheses are spoken and kept.

A custom corpus is a folder of WAV files (any rate, converted) with a ``transcripts.txt``
(or ``.txt.gz``) in the same format, names relative to the folder: ``accueil/bonjour: Bonjour
je voudrais ma carte grise`` for ``accueil/bonjour.wav``.

Each recording goes through the same ``AsrStream`` interface the bot uses (20 ms frames
pushed, then ``finalize``), one stream per utterance. Word errors are counted on the
normalised words of ``voicebot.tools.text_score``; the real-time factor is the processing time
(every push and the finalize) divided by the audio duration.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicebot.core.audio import SAMPLE_RATE, read_wav, to_frames
from voicebot.core.config import Settings
from voicebot.core.errors import AudioInputError, ModelError, VoicebotError
from voicebot.core.interfaces import Asr, Utterance
from voicebot.tools.text_score import WordErrors, score

log = logging.getLogger(__name__)

DEBIAN_SOUNDS_DIR = Path("/usr/share/asterisk/sounds/fr")
DEBIAN_TRANSCRIPTS_PACKAGE = "asterisk-core-sounds-fr"
DEBIAN_TRANSCRIPTS_NAME = "core-sounds-fr.txt.gz"
DEBIAN_TRANSCRIPTS_DEFAULT = (
    Path("/usr/share/doc/asterisk-core-sounds-fr") / DEBIAN_TRANSCRIPTS_NAME
)
CUSTOM_TRANSCRIPTS = ("transcripts.txt", "transcripts.txt.gz")
WORST_SHOWN = 10

_ENTRY = re.compile(r"^([\w./-]+):(.*)$")
# The Debian file has one line holding two prompts ("...dièse.vm-review-nonurgent: Pour...");
# a prompt name (lowercase, with a dash) glued after a sentence end starts a new entry.
_GLUED_ENTRY = re.compile(r"(?<=[.!?])([a-z0-9_/]+-[a-z0-9_/-]+): ")
_DIRECTION = re.compile(r"\[[^\]]*\]|\(\s*[^\s()]+\s*\)")
_SPOKEN = re.compile(r"\w")


@dataclass(frozen=True)
class CorpusEntry:
    key: str  # the recording's path relative to the corpus folder, without ".wav"
    wav: Path
    reference: str


@dataclass(frozen=True)
class Corpus:
    name: str
    entries: tuple[CorpusEntry, ...]
    sound_effects: tuple[str, ...] = ()  # transcripts that are only a stage direction
    without_transcript: tuple[str, ...] = ()  # recordings with no (or an empty) transcript
    without_audio: tuple[str, ...] = ()  # transcripts with no recording


def parse_transcripts(text: str, source: str) -> dict[str, str]:
    """``name: transcript`` lines → {name: raw transcript}. A later duplicate wins."""
    transcripts: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        match = _ENTRY.match(line)
        if match is None:
            raise VoicebotError(
                f"{source}, ligne {number} : attendu « nom: transcription », trouvé {line[:60]!r}"
            )
        key, rest = match.group(1), match.group(2)
        pieces = _GLUED_ENTRY.split(rest)
        transcripts[key] = pieces[0].strip()
        for glued_key, glued_text in zip(pieces[1::2], pieces[2::2], strict=True):
            transcripts[glued_key] = glued_text.strip()
    return transcripts


def clean_reference(raw: str) -> str | None:
    """The spoken words of a transcript, or None if it is a sound effect or empty."""
    spoken = " ".join(_DIRECTION.sub(" ", raw).split())
    return spoken if _SPOKEN.search(spoken) else None


def _read_text(path: Path) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as compressed:
                return compressed.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VoicebotError(f"fichier de transcriptions introuvable : {path}") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise VoicebotError(f"fichier de transcriptions illisible : {path} ({exc})") from None


def load_corpus(wav_dir: Path, transcripts_file: Path, name: str) -> Corpus:
    """Pair every WAV under ``wav_dir`` with its transcript."""
    if not wav_dir.is_dir():
        raise VoicebotError(f"dossier d'enregistrements introuvable : {wav_dir}")
    raw = parse_transcripts(_read_text(transcripts_file), str(transcripts_file))
    wavs = {
        path.relative_to(wav_dir).with_suffix("").as_posix(): path
        for path in sorted(wav_dir.rglob("*.wav"))
    }
    entries: list[CorpusEntry] = []
    effects: list[str] = []
    without_transcript: list[str] = []
    for key, path in wavs.items():
        if key not in raw:
            without_transcript.append(key)
            continue
        reference = clean_reference(raw[key])
        if reference is None:
            (effects if raw[key].strip() else without_transcript).append(key)
            continue
        entries.append(CorpusEntry(key, path, reference))
    without_audio = sorted(set(raw) - set(wavs))
    return Corpus(
        name, tuple(entries), tuple(effects), tuple(without_transcript), tuple(without_audio)
    )


def debian_transcripts_file() -> Path:
    """Where ``asterisk-core-sounds-fr`` installed core-sounds-fr.txt.gz (asks dpkg)."""
    try:
        listing = subprocess.run(  # noqa: S603 — a fixed argument list, no shell
            ["dpkg", "-L", DEBIAN_TRANSCRIPTS_PACKAGE],  # noqa: S607 — dpkg from PATH: a developer's evaluation tool, not the service
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        if line.endswith("/" + DEBIAN_TRANSCRIPTS_NAME):
            return Path(line)
    if DEBIAN_TRANSCRIPTS_DEFAULT.is_file():
        return DEBIAN_TRANSCRIPTS_DEFAULT
    raise VoicebotError(
        f"transcriptions {DEBIAN_TRANSCRIPTS_NAME} introuvables : installez le paquet Debian "
        f"{DEBIAN_TRANSCRIPTS_PACKAGE} (`make setup`)"
    )


def builtin_corpus() -> Corpus:
    if not DEBIAN_SOUNDS_DIR.is_dir():
        raise VoicebotError(
            f"enregistrements introuvables dans {DEBIAN_SOUNDS_DIR} : installez le paquet Debian "
            "asterisk-core-sounds-fr-wav (`make setup`)"
        )
    return load_corpus(DEBIAN_SOUNDS_DIR, debian_transcripts_file(), "asterisk-core-sounds-fr")


def custom_corpus(path: Path) -> Corpus:
    """A folder with a transcripts.txt, or the transcripts file itself (WAVs beside it)."""
    if path.is_file():
        return load_corpus(path.parent, path, path.parent.name)
    for name in CUSTOM_TRANSCRIPTS:
        if (path / name).is_file():
            return load_corpus(path, path / name, path.name)
    raise VoicebotError(
        f"{path} : ni dossier avec transcripts.txt, ni fichier de transcriptions "
        "(format : une ligne « nom: transcription » par enregistrement nom.wav)"
    )


# --- engine -------------------------------------------------------------------------------


def load_asr(settings: Settings, executor: ThreadPoolExecutor) -> tuple[Asr, str]:
    """The engine the bot itself would load for ``settings.asr.engine``, and its description.

    Unlike the bot, the benchmark does not fall back to another engine: scoring the Whisper
    stand-in under the name "vosk" would mislead.
    """
    from voicebot.speech.engines import load_asr as load_engine
    from voicebot.speech.models import resolve_asr

    resolved = resolve_asr(settings)
    if resolved.engine != settings.asr.engine or resolved.path is None:
        raise ModelError(
            f"aucun modèle {settings.asr.engine} installé (le bot se rabattrait sur "
            f"{resolved.description}) : `voicebot models list` puis `voicebot models pull <modèle>`"
        )
    asr = load_engine(settings, executor, resolved)
    description = str(getattr(asr, "description", ""))
    return asr, f"{resolved.description} ({description})" if description else resolved.description


# --- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UtteranceResult:
    key: str
    reference: str
    hypothesis: str
    errors: WordErrors
    errors_with_accents: WordErrors
    audio_s: float
    processing_s: float  # every push plus the finalize
    finalize_s: float  # from the end of speech to the final transcript
    confidence: float


async def transcribe(asr: Asr, entry: CorpusEntry) -> tuple[Utterance, float, float, float]:
    """(utterance, audio seconds, processing seconds, finalize seconds) of one recording."""
    try:
        pcm = read_wav(entry.wav, SAMPLE_RATE)
    except RuntimeError:  # the wave module's chunk reader on a truncated header
        raise AudioInputError(f"{entry.wav}: not a readable PCM WAV file") from None
    frames = to_frames(pcm)
    stream = asr.start_stream(f"eval-{entry.key}")
    try:
        processing_s = 0.0
        for frame in frames:
            started = time.perf_counter()
            await stream.push(frame)
            processing_s += time.perf_counter() - started
        started = time.perf_counter()
        utterance = await stream.finalize()
        finalize_s = time.perf_counter() - started
    finally:
        stream.close()
    audio_s = sum(frame.duration_s for frame in frames)
    return utterance, audio_s, processing_s + finalize_s, finalize_s


async def evaluate_corpus(
    asr: Asr, entries: tuple[CorpusEntry, ...], progress: bool = False
) -> tuple[list[UtteranceResult], list[str]]:
    """Every entry's result, and the keys of recordings that could not be read (skipped)."""
    results: list[UtteranceResult] = []
    unreadable: list[str] = []
    for index, entry in enumerate(entries, 1):
        try:
            utterance, audio_s, processing_s, finalize_s = await transcribe(asr, entry)
        except AudioInputError as exc:
            # One bad file must not throw away an hour of results: report it and go on.
            log.warning("skipping unreadable recording: %s", exc)
            unreadable.append(entry.key)
            continue
        results.append(
            UtteranceResult(
                key=entry.key,
                reference=entry.reference,
                hypothesis=utterance.text,
                errors=score(entry.reference, utterance.text),
                errors_with_accents=score(entry.reference, utterance.text, keep_accents=True),
                audio_s=audio_s,
                processing_s=processing_s,
                finalize_s=finalize_s,
                confidence=utterance.confidence,
            )
        )
        if progress and index % 50 == 0:
            print(f"  {index}/{len(entries)} énoncés…", file=sys.stderr, flush=True)
    return results, unreadable


def _percentile(values: list[float], fraction: float) -> float:
    """One of the values, the nearest to the fraction's rank (0 when there is none)."""
    if not values:
        return 0.0
    return float(np.percentile(values, 100 * fraction, method="nearest"))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(
    results: list[UtteranceResult],
    corpus: Corpus,
    engine: str,
    description: str,
    confidence_threshold: float = 0.45,
    unreadable: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The report, as plain data (what ``--json`` prints)."""
    total = sum((r.errors for r in results), WordErrors())
    accents = sum((r.errors_with_accents for r in results), WordErrors())
    audio_s = sum(r.audio_s for r in results)
    processing_s = sum(r.processing_s for r in results)
    worst = sorted(results, key=lambda r: (r.errors.rate, r.errors.errors), reverse=True)
    finalize = [r.finalize_s for r in results]
    return {
        "engine": engine,
        "model": description,
        "corpus": corpus.name,
        "utterances": len(results),
        "reference_words": total.reference_words,
        "wer": total.rate,
        "substitutions": total.substitutions,
        "deletions": total.deletions,
        "insertions": total.insertions,
        "wer_keeping_accents": accents.rate,
        "audio_s": audio_s,
        "processing_s": processing_s,
        "rtf": processing_s / audio_s if audio_s else 0.0,
        "finalize_median_s": _percentile(finalize, 0.5),
        "finalize_p95_s": _percentile(finalize, 0.95),
        # Does the confidence tell good transcripts from bad ones? (the handoff policy uses it)
        "confidence": {
            "threshold": confidence_threshold,
            "below_threshold": sum(1 for r in results if r.confidence < confidence_threshold),
            "mean_when_exact": _mean([r.confidence for r in results if r.errors.errors == 0]),
            "mean_when_wer_over_half": _mean(
                [r.confidence for r in results if r.errors.rate >= 0.5]
            ),
        },
        "skipped": {
            "sound_effects": list(corpus.sound_effects),
            "without_transcript": list(corpus.without_transcript),
            "without_audio": list(corpus.without_audio),
            "unreadable": list(unreadable),
        },
        "worst": [
            {
                "key": r.key,
                "reference": r.reference,
                "hypothesis": r.hypothesis,
                "wer": r.errors.rate,
                "errors": r.errors.errors,
                "confidence": r.confidence,
            }
            for r in worst[:WORST_SHOWN]
        ],
        "results": [
            {
                "key": r.key,
                "reference": r.reference,
                "hypothesis": r.hypothesis,
                "reference_words": r.errors.reference_words,
                "errors": r.errors.errors,
                "confidence": round(r.confidence, 4),
                "audio_s": round(r.audio_s, 3),
                "finalize_s": round(r.finalize_s, 3),
            }
            for r in results
        ],
    }


def _number(value: float, decimals: int) -> str:
    """A number written the French way: decimal comma."""
    return f"{value:.{decimals}f}".replace(".", ",")


def _percent(value: float) -> str:
    return _number(100 * value, 1) + " %"


def format_report(report: dict[str, Any]) -> str:
    skipped = report["skipped"]
    lines = [
        f"Moteur : {report['engine']} — {report['model']}",
        f"Corpus : {report['corpus']} — {report['utterances']} énoncés, "
        f"{report['reference_words']} mots de référence "
        f"(écartés : {len(skipped['sound_effects'])} effets sonores, "
        f"{len(skipped['without_transcript'])} sans transcription, "
        f"{len(skipped['without_audio'])} transcriptions sans enregistrement, "
        f"{len(skipped['unreadable'])} enregistrements illisibles)",
        f"WER : {_percent(report['wer'])} (substitutions {report['substitutions']}, "
        f"suppressions {report['deletions']}, insertions {report['insertions']}) ; "
        f"en gardant les accents : {_percent(report['wer_keeping_accents'])}",
        f"RTF : {_number(report['rtf'], 3)} ({_number(report['processing_s'], 1)} s de calcul "
        f"pour {_number(report['audio_s'], 1)} s d'audio) ; résultat final après la fin de "
        f"parole : médiane {_number(report['finalize_median_s'], 2)} s, "
        f"95e centile {_number(report['finalize_p95_s'], 2)} s",
    ]
    confidence = report["confidence"]
    if (
        confidence["mean_when_exact"] is not None
        and confidence["mean_when_wer_over_half"] is not None
    ):
        lines.append(
            f"Confiance ASR : moyenne {_number(confidence['mean_when_exact'], 2)} sur les "
            f"énoncés exacts, {_number(confidence['mean_when_wer_over_half'], 2)} sur ceux à "
            "WER ≥ 50 % ; "
            f"{confidence['below_threshold']} énoncés sous le seuil de transfert "
            f"{_number(confidence['threshold'], 2)}"
        )
    lines += ["", f"Les {len(report['worst'])} pires énoncés :"]
    for item in report["worst"]:
        lines.append(
            f"  {item['key']} — WER {_percent(item['wer'])}, "
            f"confiance {_number(item['confidence'], 2)}"
        )
        lines.append(f"    référence : {item['reference']}")
        lines.append(f"    entendu   : {item['hypothesis']}")
    return "\n".join(lines)


def _duration_s(wav: Path) -> float:
    """Seconds of audio in a WAV file; 0 if unreadable (the decoding step reports it)."""
    try:
        with wave.open(str(wav), "rb") as reader:
            return reader.getnframes() / reader.getframerate()
    except (OSError, wave.Error, EOFError, RuntimeError, ZeroDivisionError):
        return 0.0


def evaluate(
    settings: Settings,
    engine: str | None,
    corpus: Path | None,
    limit: int | None,
    as_json: bool,
) -> int:
    """Score the engine on the corpus and print the report. Returns the exit code."""
    if engine is not None:
        settings = settings.replace("asr", engine=engine)
    chosen = builtin_corpus() if corpus is None else custom_corpus(corpus)
    entries = chosen.entries if limit is None else chosen.entries[: max(limit, 0)]
    if not entries:
        raise VoicebotError(f"aucun énoncé à évaluer dans le corpus {chosen.name}")
    # The bot stops listening after max_utterance_s; a benchmark of recognition must not
    # count that cap as recognition errors, so it hears every recording to the end.
    longest_s = max(_duration_s(entry.wav) for entry in entries)
    if longest_s > settings.asr.max_utterance_s:
        settings = settings.replace("asr", max_utterance_s=longest_s + 1.0)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="asr-eval") as executor:
        asr, description = load_asr(settings, executor)
        results, unreadable = asyncio.run(evaluate_corpus(asr, entries, progress=True))
    if not results:
        raise VoicebotError(f"aucun enregistrement lisible dans le corpus {chosen.name}")
    report = summarize(
        results,
        chosen,
        settings.asr.engine,
        description,
        settings.policy.min_asr_confidence,
        tuple(unreadable),
    )
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
    return 0
