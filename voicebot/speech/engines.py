"""Loading the speech engines of the process, once: ASR, voice (with its cache), VAD factory.

What to load comes from voicebot.speech.models.resolve_asr / resolve_tts (settings first, then the
official models, then the stand-ins). The ASR is None only when no ASR model can be loaded
at all: the bot then still answers DTMF and typed turns, and says so in the log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

from voicebot.core.config import Settings, VadSettings
from voicebot.core.errors import ModelError
from voicebot.core.interfaces import Asr, Tts, Vad
from voicebot.core.stages import StageTimes
from voicebot.speech.models import DEFAULT_ASR_MODEL, ResolvedModel, resolve_asr, resolve_tts

log = logging.getLogger(__name__)

TTS_CACHE_DIR = "tts-cache"


@dataclass
class Engines:
    asr: Asr | None
    tts: Tts
    vad_factory: Callable[[], Vad]
    asr_description: str
    tts_description: str
    stages: StageTimes  # how long the ASR and the voice took to load


def silero_factory(settings: VadSettings) -> Callable[[], Vad]:
    """One detector per call, all on the process's one Silero model. Raises ModelError."""
    from voicebot.speech.vad import SileroModel, SileroVad

    model = SileroModel.load()
    return partial(SileroVad, settings, model)


def import_speech_libraries() -> None:
    """Import every speech engine's library now (a fifth of a second), on this thread.

    ``voicebot.call.runtime.load_runtime`` then imports TensorFlow on another thread while
    this one loads the models: two threads importing packages with shared dependencies at
    the same moment can leave one of them a half-initialised module (Python breaks an import
    deadlock that way). Loading the models then imports little else."""
    import voicebot.speech.asr_vosk
    import voicebot.speech.tts
    import voicebot.speech.vad

    # Optional engines: a broken one is reported by load_asr / PiperTts.load if it is chosen.
    with contextlib.suppress(Exception):
        import voicebot.speech.asr_whisper  # noqa: F401
    with contextlib.suppress(Exception):
        import piper  # noqa: F401


def load_asr(settings: Settings, executor: Executor, chosen: ResolvedModel) -> Asr:
    """Load the chosen ASR model. Raises ModelError (with the fix) if it cannot be loaded."""
    assert chosen.path is not None  # noqa: S101 — a resolved model has a path; narrows the type
    if chosen.engine == "vosk":
        from voicebot.speech.asr_vosk import VoskAsr

        return VoskAsr.load(chosen.path, settings.asr, executor)
    try:
        from voicebot.speech.asr_whisper import WhisperAsr
    except ImportError as exc:
        raise ModelError(f"the Whisper engine is not available ({exc})") from None
    whisper: Asr = WhisperAsr.load(chosen.path, settings.asr, executor)
    return whisper


def load_engines(settings: Settings, executor: Executor) -> Engines:
    """ASR, voice and VAD for the process. Raises ModelError when a configured model is broken."""
    from voicebot.speech.tts import CachedTts, EspeakTts, PiperTts

    chosen_tts = resolve_tts(settings)  # cheap checks first: a bad voice path fails at once
    explicit_asr = bool(settings.asr.model)
    asr: Asr | None = None
    asr_description = "aucune (pas de modèle de reconnaissance installé)"
    stages = StageTimes()
    try:
        chosen_asr = resolve_asr(settings)
        with stages.timed("ASR"):
            asr = load_asr(settings, executor, chosen_asr)
        asr_description = getattr(asr, "description", chosen_asr.description)
        if chosen_asr.origin == "standin":
            asr_description += " — modèle de remplacement"
    except ModelError as exc:
        if explicit_asr:
            raise  # a model the operator asked for must load, or the bot must not start
        log.error(
            "no ASR model installed: run voicebot models pull %s (%s)", DEFAULT_ASR_MODEL, exc
        )
        asr = None

    engine: PiperTts | EspeakTts
    with stages.timed("voice"):
        if chosen_tts.engine == "piper":
            assert chosen_tts.path is not None  # noqa: S101 — a resolved Piper voice has a path; narrows the type
            engine = PiperTts.load(chosen_tts.path, settings.tts, executor)
        else:
            engine = EspeakTts(settings.tts, executor)
        tts = CachedTts(engine, settings.paths.data_dir / TTS_CACHE_DIR)
    tts_description = chosen_tts.description
    if chosen_tts.origin == "standin":
        tts_description += " — voix de remplacement"
    return Engines(
        asr=asr,
        tts=tts,
        vad_factory=silero_factory(settings.vad),
        asr_description=asr_description,
        tts_description=tts_description,
        stages=stages,
    )
