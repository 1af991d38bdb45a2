"""Settings: embedded defaults, YAML file, environment overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebot.config import Settings, load_settings
from voicebot.errors import ConfigError


def test_defaults_need_no_file_and_bind_to_loopback() -> None:
    settings = load_settings(environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.audiosocket_port == 9092
    assert settings.server.websocket_port == 9093
    assert settings.asr.engine == "vosk"
    assert settings.ami.secret == ""


def test_file_then_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "voicebot.yml"
    config.write_text("vad:\n  end_silence_ms: 700\nserver:\n  audiosocket_port: 19092\n")
    env = {"VOICEBOT_VAD_END_SILENCE_MS": "800", "VOICEBOT_ASR_MODEL": "/models/vosk-fr"}
    settings = load_settings(config, environ=env)
    assert settings.vad.end_silence_ms == 800  # environment wins over the file
    assert settings.server.audiosocket_port == 19092
    assert settings.asr.model == "/models/vosk-fr"


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.vad.end_silence_ms = 1  # type: ignore[misc]
    changed = settings.replace("vad", end_silence_ms=500)
    assert changed.vad.end_silence_ms == 500 and settings.vad.end_silence_ms == 650


def test_secrets_only_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "voicebot.yml"
    config.write_text("ami:\n  secret: hunter2\n")
    with pytest.raises(ConfigError, match="secret"):
        load_settings(config, environ={})
    settings = load_settings(environ={"VOICEBOT_AMI_SECRET": "s3cret"})
    assert settings.ami.secret == "s3cret"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("vad: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("nonsense:\n  a: 1\n", "unknown section 'nonsense'"),
        ("vad:\n  end_silense_ms: 3\n", "unknown setting vad.end_silense_ms"),
        ("vad:\n  end_silence_ms: soon\n", "vad.end_silence_ms: expected a number"),
        ("vad:\n  threshold: 1.5\n", "threshold must be between 0 and 1"),
        ("asr:\n  engine: google\n", "engine must be 'vosk' or 'whisper'"),
    ],
)
def test_broken_settings_file_gives_a_clear_error(
    tmp_path: Path, content: str, message: str
) -> None:
    config = tmp_path / "voicebot.yml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(config, environ={})
    assert str(config) in str(caught.value) or "YAML" in str(caught.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"server\.audiosocket_port"):
        load_settings(environ={"VOICEBOT_SERVER_AUDIOSOCKET_PORT": "ninety"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(tmp_path / "absent.yml", environ={})


def test_the_deployment_example_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "voicebot.example.yml"
    settings = load_settings(example, environ={})
    assert settings.ami.host == "127.0.0.1"
    assert settings.records.retention_days == 30
