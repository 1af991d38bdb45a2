"""Settings: embedded defaults, YAML file, environment overrides, and clear errors."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from voicebot import cli
from voicebot.core.config import (
    Settings,
    default_caller_hash_key_file,
    load_settings,
    with_caller_hash_key,
)
from voicebot.core.errors import ConfigError


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


# --- the caller-number hashing key: environment, else a key file outside the repository -------

KEY = "0f" * 32
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "caller-hash-key.sh"


def _key_file(directory: Path, content: str = KEY + "\n", mode: int = 0o600) -> Path:
    path = directory / "caller-hash.key"
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_key_comes_from_the_environment_first(tmp_path: Path) -> None:
    other = _key_file(tmp_path, "not this one\n")
    env = {"VOICEBOT_CALLER_HASH_KEY": "from-env", "VOICEBOT_CALLER_HASH_KEY_FILE": str(other)}
    settings = with_caller_hash_key(load_settings(environ=env), env)
    assert settings.records.caller_hash_key == "from-env"


def test_the_key_comes_from_the_key_file_when_the_environment_has_none(tmp_path: Path) -> None:
    path = _key_file(tmp_path)
    env = {"VOICEBOT_CALLER_HASH_KEY_FILE": str(path)}
    loaded = load_settings(environ=env)
    assert loaded.records.caller_hash_key == ""  # read only by the commands that need it
    assert with_caller_hash_key(loaded, env).records.caller_hash_key == KEY  # newline stripped
    # the key file may also be named in a settings file: it is a path, not the secret
    config = tmp_path / "voicebot.yml"
    config.write_text(f"records:\n  caller_hash_key_file: {path}\n")
    assert with_caller_hash_key(load_settings(config, environ={})).records.caller_hash_key == KEY


def test_the_default_key_file_is_in_the_users_configuration_directory(tmp_path: Path) -> None:
    name = Path("allonantes-voicebot") / "caller-hash.key"
    home = {"HOME": str(tmp_path / "home")}
    assert default_caller_hash_key_file(home) == tmp_path / "home" / ".config" / name
    xdg = {**home, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert default_caller_hash_key_file(xdg) == tmp_path / "xdg" / name
    relative = {**home, "XDG_CONFIG_HOME": "relative/dir"}  # ignored, as the XDG spec says
    assert default_caller_hash_key_file(relative) == tmp_path / "home" / ".config" / name
    (tmp_path / "xdg" / "allonantes-voicebot").mkdir(parents=True)
    _key_file(tmp_path / "xdg" / "allonantes-voicebot")
    assert with_caller_hash_key(load_settings(environ=xdg), xdg).records.caller_hash_key == KEY


def test_no_key_is_a_clear_refusal(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    with pytest.raises(ConfigError) as caught:
        with_caller_hash_key(load_settings(environ=env), env)
    message = str(caught.value)
    assert "make setup" in message and "VOICEBOT_CALLER_HASH_KEY" in message
    assert str(tmp_path / ".config" / "allonantes-voicebot" / "caller-hash.key") in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_other_users_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, mode=mode)
    env = {"VOICEBOT_CALLER_HASH_KEY_FILE": str(path)}
    with pytest.raises(
        ConfigError, match=f"open to other users .*chmod 600 {re.escape(str(path))}"
    ):
        with_caller_hash_key(load_settings(environ=env), env)
    path.chmod(0o400)  # read-only for its owner is fine
    assert with_caller_hash_key(load_settings(environ=env), env).records.caller_hash_key == KEY


def test_an_empty_key_file_is_refused(tmp_path: Path) -> None:
    path = _key_file(tmp_path, "\n")
    env = {"VOICEBOT_CALLER_HASH_KEY_FILE": str(path)}
    with pytest.raises(ConfigError, match="is empty: remove it and run `make setup`"):
        with_caller_hash_key(load_settings(environ=env), env)


def _no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment with no key and no key file, whatever the test session set."""
    missing = tmp_path / "nowhere" / "caller-hash.key"
    monkeypatch.delenv("VOICEBOT_CALLER_HASH_KEY", raising=False)
    monkeypatch.setenv("VOICEBOT_CALLER_HASH_KEY_FILE", str(missing))
    monkeypatch.delenv("VOICEBOT_CONFIG", raising=False)
    return missing


@pytest.mark.parametrize("command", [["serve", "--no-web"], ["run"]])
def test_serve_and_run_refuse_to_start_without_a_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    missing = _no_key(monkeypatch, tmp_path)
    assert cli.main(command) == 2
    error = capsys.readouterr().err
    assert error.startswith("voicebot: error: no key to hash callers' numbers: run `make setup`")
    assert str(missing) in error and "VOICEBOT_CALLER_HASH_KEY" in error


def test_tools_that_store_no_caller_number_need_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_key(monkeypatch, tmp_path)
    assert cli.main(["models", "list"]) == 0
    assert "caller" not in capsys.readouterr().err


def test_make_setup_creates_a_private_key_once_where_the_settings_look(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home")}
    subprocess.run([str(SCRIPT)], env=env, check=True, capture_output=True, timeout=30)
    path = default_caller_hash_key_file(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    key = with_caller_hash_key(load_settings(environ=env), env).records.caller_hash_key
    assert len(key) == 64 and int(key, 16) >= 0  # 32 random bytes, in hex
    # a second run keeps the key: a new one would make every past caller unrecognisable
    subprocess.run([str(SCRIPT)], env=env, check=True, capture_output=True, timeout=30)
    assert path.read_text(encoding="utf-8").strip() == key
    other = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "other")}
    subprocess.run([str(SCRIPT)], env=other, check=True, capture_output=True, timeout=30)
    assert default_caller_hash_key_file(other).read_text(encoding="utf-8").strip() != key


def test_make_setup_never_writes_the_key_into_the_repository(tmp_path: Path) -> None:
    inside = SCRIPT.parent.parent / "var" / "caller-hash.key"
    env = {"PATH": os.environ["PATH"], "VOICEBOT_CALLER_HASH_KEY_FILE": str(inside)}
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "inside the repository" in done.stderr
    assert not inside.exists()


@pytest.mark.parametrize(
    ("cores", "configured", "threads"), [(2, 0, 2), (8, 0, 8), (1, 0, 2), (None, 0, 2), (2, 5, 5)]
)
def test_engine_threads_default_to_one_per_core(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, configured: int, threads: int
) -> None:
    # More engine threads than cores made the decoders fight the calls' audio for the cores
    # (docs/benchmarks.md); at least two, so the dialogue's load never holds the only one.
    from voicebot.call.runtime import make_executor

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    settings = load_settings(environ={"VOICEBOT_SERVER_WORKERS": str(configured)})
    executor = make_executor(settings)
    try:
        assert executor._max_workers == threads
    finally:
        executor.shutdown()
