"""What to load: the configured model, else the official one if pulled, else a stand-in."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.speech.models.checks import (
    installed_problem,
    piper_voice_problem,
    vosk_model_problem,
    whisper_model_problem,
)
from voicebot.speech.models.manifest import (
    DEFAULT_ASR_MODEL,
    DEFAULT_VOICE,
    is_installed,
    load_manifest,
    manifest_path,
    model_dir,
)

log = logging.getLogger(__name__)

# Preference among installed official models when the settings name none.
VOSK_PREFERENCE = (DEFAULT_ASR_MODEL, "vosk-model-fr-0.22")
WHISPER_PREFERENCE = ("faster-whisper-small", "faster-whisper-base")
VOICE_PREFERENCE = (DEFAULT_VOICE, "fr_FR-upmc-medium", "fr_FR-tom-medium")


@dataclass(frozen=True)
class ResolvedModel:
    """What an engine should load, and where the choice came from."""

    engine: str  # "vosk" | "whisper" | "piper" | "espeak"
    path: Path | None
    origin: str  # "settings" | "official" | "standin"
    description: str


def resolve_asr(settings: Settings) -> ResolvedModel:
    """The ASR model to load. Raises ModelError if a configured one is broken or none exists."""
    engine = settings.asr.engine
    if settings.asr.model:
        path = Path(settings.asr.model).expanduser()
        problem = vosk_model_problem(path) if engine == "vosk" else whisper_model_problem(path)
        if problem:
            raise ModelError(
                f"ASR model from settings/VOICEBOT_ASR_MODEL is unusable: {problem}. Fix the "
                f"path, or unset it and run `voicebot models pull {DEFAULT_ASR_MODEL}`"
            )
        return ResolvedModel(engine, path, "settings", f"{engine} {path}")
    manifest = load_manifest(manifest_path(settings))
    preference = VOSK_PREFERENCE if engine == "vosk" else WHISPER_PREFERENCE
    for name in preference:
        entry = manifest.get(name)
        if entry is None or not is_installed(settings, name):
            continue
        problem = installed_problem(settings, entry)
        if problem:
            raise ModelError(
                f"the installed model {name} is broken: {problem}. Run "
                f"`voicebot models pull {name}` again (and `voicebot models verify`)"
            )
        return ResolvedModel(
            entry.kind, model_dir(settings, name), "official", f"{entry.kind} {name}"
        )
    from voicebot.speech.standins import whisper_base_dir

    wanted = DEFAULT_ASR_MODEL if engine == "vosk" else WHISPER_PREFERENCE[0]
    try:
        standin = whisper_base_dir()
    except (ModelError, OSError) as exc:
        raise ModelError(
            f"no ASR model installed: run `voicebot models pull {wanted}` ({exc})"
        ) from None
    log.warning(
        "no official ASR model installed: using the Whisper base stand-in (slower, less "
        "accurate on the phone). Run `voicebot models pull %s`",
        wanted,
    )
    return ResolvedModel("whisper", standin, "standin", "whisper base (stand-in)")


def resolve_tts(settings: Settings) -> ResolvedModel:
    """The voice to load. Raises ModelError if a configured one is broken or none exists."""
    if settings.tts.voice:
        onnx = Path(settings.tts.voice).expanduser()
        problem = piper_voice_problem(onnx)
        if problem:
            raise ModelError(
                f"voice from settings/VOICEBOT_TTS_VOICE is unusable: {problem}. Fix the path, "
                f"or unset it and run `voicebot models pull {DEFAULT_VOICE}`"
            )
        return ResolvedModel("piper", onnx, "settings", f"piper {onnx.stem}")
    manifest = load_manifest(manifest_path(settings))
    for name in VOICE_PREFERENCE:
        entry = manifest.get(name)
        if entry is None or not is_installed(settings, name):
            continue
        problem = installed_problem(settings, entry)
        if problem:
            raise ModelError(
                f"the installed voice {name} is broken: {problem}. Run "
                f"`voicebot models pull {name}` again"
            )
        onnx = model_dir(settings, name) / f"{name}.onnx"
        return ResolvedModel("piper", onnx, "official", f"piper {name}")
    if shutil.which("espeak-ng") is None:
        raise ModelError(
            f"no voice at all: no Piper voice installed (run `voicebot models pull "
            f"{DEFAULT_VOICE}`) and espeak-ng is missing (apt-get install espeak-ng)"
        )
    log.warning(
        "no Piper voice installed: speaking with the espeak-ng French voice (robotic). "
        "Run `voicebot models pull %s`",
        DEFAULT_VOICE,
    )
    return ResolvedModel(
        "espeak", None, "standin", f"espeak-ng {settings.tts.espeak_voice} (stand-in)"
    )
