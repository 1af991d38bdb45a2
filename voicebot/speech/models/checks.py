"""Is a folder a usable model? The structural checks of Vosk, Piper and faster-whisper models."""

from __future__ import annotations

import json
from pathlib import Path

from voicebot.core.config import Settings
from voicebot.speech.models.manifest import DEFAULT_ASR_MODEL, ModelEntry, model_dir


def vosk_model_problem(path: Path) -> str | None:
    """Why ``path`` is not a Vosk model usable on 8 kHz audio, or None if it is."""
    if not path.is_dir():
        return f"{path} is not a folder"
    layouts = ((path / "am" / "final.mdl", path / "conf"), (path / "final.mdl", path))
    conf_dir = next((conf for model, conf in layouts if model.is_file()), None)
    if conf_dir is None:
        return f"{path} holds no Vosk acoustic model (am/final.mdl)"
    mfcc = conf_dir / "mfcc.conf"
    features = mfcc if mfcc.is_file() else conf_dir / "fbank.conf"
    if not features.is_file():
        return f"{path} has no feature configuration (conf/mfcc.conf)"
    return upsampling_problem(features)


def upsampling_problem(features_conf: Path) -> str | None:
    """Kaldi refuses audio below the model's rate unless the feature config allows upsampling.

    Phone audio is 8 kHz; most Vosk models are trained at 16 kHz. Without
    ``--allow-upsample=true`` the recognizer would fail on the first frame.
    """
    options: dict[str, str] = {}
    for line in features_conf.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("--") and "=" in line:
            key, value = line[2:].split("=", 1)
            options[key.strip()] = value.strip()
    try:
        model_rate = float(options.get("sample-frequency", "16000"))
    except ValueError:
        return f"{features_conf}: unreadable --sample-frequency={options['sample-frequency']!r}"
    if model_rate <= 8000:
        return None
    if options.get("allow-upsample", "false").lower() in ("true", "1"):
        return None
    return (
        f"{features_conf} does not allow upsampling (--allow-upsample=true is missing): this "
        f"model expects {model_rate:.0f} Hz audio and cannot decode 8 kHz phone audio. Use a "
        f"model that allows it, e.g. `voicebot models pull {DEFAULT_ASR_MODEL}`"
    )


def piper_voice_problem(onnx: Path) -> str | None:
    """Why ``onnx`` is not a usable Piper voice (model + JSON config), or None."""
    if onnx.suffix != ".onnx":
        return f"{onnx} is not a Piper voice (.onnx file expected)"
    if not onnx.is_file():
        return f"{onnx} does not exist"
    config_path = Path(f"{onnx}.json")
    if not config_path.is_file():
        return f"{onnx} has no {config_path.name} next to it (Piper needs both files)"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        int(config["audio"]["sample_rate"])
        str(config["espeak"]["voice"])
        dict(config["phoneme_id_map"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{config_path} is not a valid Piper voice config ({type(exc).__name__}: {exc})"
    return None


def whisper_model_problem(path: Path) -> str | None:
    if not path.is_dir():
        return f"{path} is not a folder"
    missing = [
        n for n in ("model.bin", "config.json", "tokenizer.json") if not (path / n).is_file()
    ]
    if missing:
        return f"{path} is not a faster-whisper model (missing {', '.join(missing)})"
    return None


def installed_problem(settings: Settings, entry: ModelEntry) -> str | None:
    folder = model_dir(settings, entry.name)
    if entry.kind == "vosk":
        return vosk_model_problem(folder)
    if entry.kind == "piper":
        return piper_voice_problem(folder / f"{entry.name}.onnx")
    return whisper_model_problem(folder)
