"""The settings loader's decoding: YAML text to values, environment text to typed values,
the nesting guard, and the errors that name where a bad value came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voicebot.core.config import (
    MAX_YAML_NESTING,
    _coerce,
    load_settings,
    yaml_nesting,
)
from voicebot.core.errors import ConfigError


def settings_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "voicebot.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={} if environ is None else environ)
    return str(caught.value)


# --- the nesting guard ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ("vad:\n  threshold: 0.5\n", 0),
        ("[", 1),
        ("{", 1),
        ("[]{}[]", 1),
        ("[[]]", 2),
        ("{a: [b, {c: d}]}", 3),
        ("[{[", 3),
        ("'[[[' ", 3),  # brackets in strings count too: an upper bound
        ("]]]", 0),
        ("]][", 1),  # a closing bracket never takes the depth below zero
        ("}[[", 2),
        ("[]][", 1),
        ("[[]][[[]]]", 3),
        ("[[][[", 3),  # each closing bracket takes one level off
        ("XX: [x]", 1),  # only brackets and braces count
        ("[[X[", 3),
    ],
)
def test_yaml_nesting(text: str, depth: int) -> None:
    assert yaml_nesting(text) == depth


def test_nesting_up_to_the_limit_is_parsed(tmp_path: Path) -> None:
    inner = MAX_YAML_NESTING - 1  # inside the section's { }
    path = settings_file(tmp_path, "vad: {threshold: " + "[" * inner + "]" * inner + "}\n")
    assert refused(path) == (
        f"{path}: vad.threshold: expected a single value, got list"
    )  # parsed: the value reached the field


def test_nesting_past_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    deeper = MAX_YAML_NESTING  # one more with the section's { }
    path = settings_file(tmp_path, "vad: {threshold: " + "[" * deeper + "]" * deeper + "}\n")
    assert refused(path) == f"settings file {path}: values nested too deeply"


def test_the_limit_is_100() -> None:
    assert MAX_YAML_NESTING == 100


# --- the file -------------------------------------------------------------------------------


def test_values_are_read_from_the_file_and_typed(tmp_path: Path) -> None:
    path = settings_file(
        tmp_path,
        "vad:\n  end_silence_ms: '700'\n  threshold: 1e-1\n"
        "server: {host: 10.0.0.1, audiosocket_port: 19092}\n"
        "paths:\n  data_dir: /srv/allo\n"
        "ami:\n  host: 192.168.1.2\n  username: 42\n",
    )
    settings = load_settings(path, environ={})
    assert settings.vad.end_silence_ms == 700
    assert isinstance(settings.vad.end_silence_ms, int)
    assert settings.vad.threshold == 0.1
    assert settings.server.host == "10.0.0.1"
    assert settings.server.audiosocket_port == 19092
    assert settings.paths.data_dir == Path("/srv/allo")
    assert settings.ami.host == "192.168.1.2"
    assert settings.ami.username == "42"
    assert settings.vad.start_speech_ms == 100  # untouched fields keep their defaults


def test_a_float_setting_given_as_a_whole_number_is_a_float(tmp_path: Path) -> None:
    settings = load_settings(settings_file(tmp_path, "tts:\n  volume: 1\n"), environ={})
    assert settings.tts.volume == 1.0
    assert isinstance(settings.tts.volume, float)


def test_a_path_setting_expands_the_home_folder(tmp_path: Path) -> None:
    settings = load_settings(settings_file(tmp_path, "paths:\n  data_dir: ~/allo\n"), environ={})
    assert settings.paths.data_dir == Path.home() / "allo"


@pytest.mark.parametrize("text", ["", "\n", "# rien\n", "~\n", "null\n", "---\n"])
def test_an_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_settings(settings_file(tmp_path, text), environ={}) == load_settings(environ={})


def test_the_file_named_by_voicebot_config(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad:\n  end_silence_ms: 700\n")
    assert load_settings(environ={"VOICEBOT_CONFIG": str(path)}).vad.end_silence_ms == 700
    other = tmp_path / "other.yml"
    other.write_text("vad:\n  end_silence_ms: 900\n", encoding="utf-8")
    # an explicit file wins over VOICEBOT_CONFIG
    assert load_settings(other, environ={"VOICEBOT_CONFIG": str(path)}).vad.end_silence_ms == 900
    assert load_settings(environ={"VOICEBOT_CONFIG": ""}).vad.end_silence_ms == 650


@pytest.mark.parametrize("text", ["- vad\n- asr\n", "vad\n", "12\n"])
def test_the_file_must_hold_a_mapping(tmp_path: Path, text: str) -> None:
    path = settings_file(tmp_path, text)
    assert refused(path) == f"settings file {path} must hold a mapping of sections"


@pytest.mark.parametrize("text", ["vad: 650\n", "vad:\n", "vad: [end_silence_ms]\n"])
def test_each_section_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = settings_file(tmp_path, text)
    assert refused(path) == f"{path}: section 'vad' must be a mapping"


def test_an_unknown_section(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad: {}\n1: {}\n")
    message = refused(path)
    assert message.startswith(f"{path}: unknown section '1' (known: paths, asr, tts, vad,")


@pytest.mark.parametrize(
    ("section", "key"), [("ami", "secret"), ("console", "token"), ("records", "caller_hash_key")]
)
def test_secrets_are_refused_in_a_file(tmp_path: Path, section: str, key: str) -> None:
    path = settings_file(tmp_path, f"{section}:\n  {key}: hunter2\n")
    assert refused(path) == (
        f"{path}: {section}.{key} is a secret: set it in the environment, not in a file"
    )


def test_a_secrets_file_setting_is_not_a_secret(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "records:\n  caller_hash_key_file: /etc/allo/key\n")
    assert load_settings(path, environ={}).records.caller_hash_key_file == "/etc/allo/key"


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    assert refused(path) == f"cannot read settings file {path}: No such file or directory"


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    assert refused(tmp_path) == f"cannot read settings file {tmp_path}: Is a directory"


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = settings_file(tmp_path, b"vad:\n  end_silence_ms: 7\xe900\n")
    assert refused(path) == f"settings file {path} is not UTF-8 text"


def test_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad: [1, 2\n")
    assert refused(path).startswith(f"settings file {path} is not valid YAML: ")


def test_a_value_yaml_cannot_build(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "report:\n  timezone: 2026-02-30\n")
    assert refused(path).startswith(f"settings file {path} holds an invalid value: ")


# --- a section's values ---------------------------------------------------------------------


def test_an_unknown_setting_names_the_first_in_order(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad:\n  zz: 1\n  end_silence_ms: 700\n  aa: 2\n")
    message = refused(path)
    assert message.startswith(f"{path}: unknown setting vad.aa (known: barge_in_min_dbfs, ")


def test_a_bad_value_names_the_file_the_section_and_the_field(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad:\n  end_silence_ms: soon\n")
    assert refused(path) == f"{path}: vad.end_silence_ms: expected a number, got 'soon'"


@pytest.mark.parametrize(
    ("value", "shown"), [("true", "True"), ("1.5", "'1.5'"), ("1.5e3", "'1.5e3'")]
)
def test_a_whole_number_setting(tmp_path: Path, value: str, shown: str) -> None:
    # YAML reads 1.5 as a float: int(1.5) would be 1, so the text is refused, not rounded
    path = settings_file(tmp_path, "vad:\n  end_silence_ms: '" + value + "'\n")
    if value == "true":
        path = settings_file(tmp_path, "vad:\n  end_silence_ms: " + value + "\n")
    assert refused(path) == f"{path}: vad.end_silence_ms: expected a number, got {shown}"


def test_a_number_overflowing_a_whole_number(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad:\n  end_silence_ms: .inf\n")
    assert refused(path) == f"{path}: vad.end_silence_ms: expected a number, got inf"


@pytest.mark.parametrize(
    ("value", "kind"), [("[1, 2]", "list"), ("{a: 1}", "dict"), ("!!set {a, b}", "set")]
)
def test_a_setting_holds_a_single_value(tmp_path: Path, value: str, kind: str) -> None:
    for field in ("tts.voice", "tts.volume", "paths.data_dir"):
        section, key = field.split(".")
        path = settings_file(tmp_path, f"{section}:\n  {key}: {value}\n")
        assert refused(path) == f"{path}: {field}: expected a single value, got {kind}"


def test_a_sections_own_rule_names_the_file_and_the_section(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "tts:\n  volume: 1.5\n")
    assert refused(path) == f"{path}: tts: volume must be in (0, 1], not 1.5"
    path = settings_file(tmp_path, "policy:\n  silence_action: wait\n")
    assert refused(path) == (
        f"{path}: policy: silence_action must be one of hangup, transfer, hangup_if_answered, "
        "not 'wait'"
    )


# --- the environment ------------------------------------------------------------------------


def test_every_section_field_from_its_variable() -> None:
    settings = load_settings(
        environ={
            "VOICEBOT_VAD_END_SILENCE_MS": "700",
            "VOICEBOT_POLICY_MAX_CALL_SECONDS": " 600 ",
            "VOICEBOT_TTS_VOLUME": "0.5",
            "VOICEBOT_PATHS_NLU_DIR": "/srv/nlu",
            "VOICEBOT_REPORT_TIMEZONE": "Europe/Paris",
            "VOICEBOT_SERVER_HOST": "0.0.0.0",  # noqa: S104 — a value to decode, not a bind
        }
    )
    assert settings.vad.end_silence_ms == 700
    assert settings.policy.max_call_seconds == 600
    assert settings.tts.volume == 0.5
    assert settings.paths.nlu_dir == Path("/srv/nlu")
    assert settings.report.timezone == "Europe/Paris"
    assert settings.server.host == "0.0.0.0"  # noqa: S104


@pytest.mark.parametrize(
    ("variable", "section", "key"),
    [
        ("VOICEBOT_ASR_MODEL", "asr", "model"),
        ("VOICEBOT_ASR_ENGINE", "asr", "engine"),
        ("VOICEBOT_TTS_VOICE", "tts", "voice"),
        ("VOICEBOT_DATABASE_URL", "records", "database_url"),
        ("VOICEBOT_AMI_HOST", "ami", "host"),
        ("VOICEBOT_AMI_USERNAME", "ami", "username"),
        ("VOICEBOT_CALLER_HASH_KEY_FILE", "records", "caller_hash_key_file"),
        ("VOICEBOT_AMI_SECRET", "ami", "secret"),
        ("VOICEBOT_CONSOLE_TOKEN", "console", "token"),
        ("VOICEBOT_CALLER_HASH_KEY", "records", "caller_hash_key"),
    ],
)
def test_short_names_and_secrets(variable: str, section: str, key: str) -> None:
    value = "whisper" if key == "engine" else "valeur-de-test"
    settings = load_settings(environ={variable: value})
    assert getattr(getattr(settings, section), key) == value


def test_the_data_dir_short_name() -> None:
    assert load_settings(environ={"VOICEBOT_DATA_DIR": "/srv/allo"}).paths.data_dir == Path(
        "/srv/allo"
    )


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "ami:\n  host: 10.0.0.1\n  port: 5039\n")
    settings = load_settings(path, environ={"VOICEBOT_AMI_HOST": "10.0.0.2"})
    assert (settings.ami.host, settings.ami.port) == ("10.0.0.2", 5039)


@pytest.mark.parametrize(
    "variable",
    [
        "VOICEBOT_VAD_NO_SUCH_FIELD",
        "VOICEBOT_NOSECTION_END_SILENCE_MS",
        "VOICEBOT_END_SILENCE_MS",
        "VOICEBOT_VADEND_SILENCE_MS",
        "VOICEBOT_CONFIG_VAD_END_SILENCE_MS",
        "MYAPPXYZ_VAD_END_SILENCE_MS",  # nine characters, like VOICEBOT_, but not it
        "voicebot_vad_end_silence_ms",
        "VAD_END_SILENCE_MS",
    ],
)
def test_other_variables_are_not_settings(variable: str) -> None:
    assert load_settings(environ={variable: "123"}) == load_settings(environ={})


def test_voicebot_config_is_not_a_setting(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad:\n  end_silence_ms: 700\n")
    assert load_settings(path, environ={"VOICEBOT_CONFIG": str(path)}).vad.end_silence_ms == 700


def test_a_bad_environment_value_names_the_field() -> None:
    message = refused(None, {"VOICEBOT_SERVER_AUDIOSOCKET_PORT": "ninety"})
    assert message == "defaults: server.audiosocket_port: expected a number, got 'ninety'"


def test_a_bad_environment_value_with_a_file_names_the_file(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "vad:\n  end_silence_ms: 700\n")
    message = refused(path, {"VOICEBOT_SERVER_AUDIOSOCKET_PORT": "ninety"})
    assert message == f"{path}: server.audiosocket_port: expected a number, got 'ninety'"


def test_a_sections_rule_broken_by_the_environment() -> None:
    message = refused(None, {"VOICEBOT_ASR_ENGINE": "google"})
    assert message == "defaults: asr: engine must be 'vosk' or 'whisper', not 'google'"


# --- one value to its field's type ------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "1", "true", "True", " yes ", "on", "oui", "OUI", 1])
def test_true(value: Any) -> None:
    assert _coerce(value, bool, "x") is True


@pytest.mark.parametrize("value", [False, "0", "false", "no", "off", "non", "", "  ", 0])
def test_false(value: Any) -> None:
    assert _coerce(value, bool, "x") is False


@pytest.mark.parametrize("value", ["2", "vrai", "y", "n", "none", 2])
def test_neither_true_nor_false(value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        _coerce(value, bool, "vad.flag")
    assert str(caught.value) == f"vad.flag: expected true/false, got {value!r}"


def test_numbers() -> None:
    assert _coerce("12", int, "x") == 12
    assert _coerce(" 12\n", int, "x") == 12
    assert _coerce(12.0, int, "x") == 12
    assert _coerce("1e3", float, "x") == 1000.0
    assert _coerce("-.5", float, "x") == -0.5
    assert type(_coerce(2, float, "x")) is float
    with pytest.raises(ConfigError, match=r"^x: expected a number, got False$"):
        _coerce(False, float, "x")


def test_text() -> None:
    assert _coerce(12, str, "x") == "12"
    assert _coerce("  a b ", str, "x") == "  a b "


def test_an_empty_value_is_empty_text_and_no_value_for_anything_else(tmp_path: Path) -> None:
    """`host:` with nothing after it is YAML's null: never the text "None", which would make
    AMI look configured with a host named None."""
    settings = load_settings(settings_file(tmp_path, "ami:\n  host:\n"), environ={})
    assert settings.ami.host == ""
    for target in (int, float, bool, Path):
        with pytest.raises(ConfigError) as caught:
            _coerce(None, target, "a.b")
        assert str(caught.value) == "a.b: no value (leave the line out to keep the default)"
    with pytest.raises(ConfigError, match=r"vad\.end_silence_ms: no value"):
        load_settings(settings_file(tmp_path, "vad:\n  end_silence_ms:\n"), environ={})


def test_paths() -> None:
    assert _coerce("/srv/allo", Path, "x") == Path("/srv/allo")
    assert _coerce(12, Path, "x") == Path("12")


@pytest.mark.parametrize(
    ("value", "kind"), [([1], "list"), ({"a": 1}, "dict"), ({1}, "set"), ((1,), "tuple")]
)
def test_containers_are_refused_whatever_the_field(value: Any, kind: str) -> None:
    for target in (str, int, float, bool, Path):
        with pytest.raises(ConfigError) as caught:
            _coerce(value, target, "a.b")
        assert str(caught.value) == f"a.b: expected a single value, got {kind}"


def test_an_unsupported_field_type() -> None:
    with pytest.raises(ConfigError) as caught:
        _coerce("1", bytes, "a.b")
    assert str(caught.value) == "a.b: unsupported setting type <class 'bytes'>"


@pytest.mark.parametrize(
    ("variable", "section", "key"),
    [("VOICEBOT_AMI_SECRET", "ami", "secret"), ("VOICEBOT_CONSOLE_TOKEN", "console", "token")],
)
def test_secrets_from_a_private_file(tmp_path: Path, variable: str, section: str, key: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  s3cret\n", encoding="utf-8")
    secret.chmod(0o600)
    settings = load_settings(environ={f"{variable}_FILE": str(secret)})
    assert getattr(getattr(settings, section), key) == "s3cret"
    # the other sections are untouched
    assert (
        load_settings(environ={f"{variable}_FILE": str(secret)}).vad
        == load_settings(environ={}).vad
    )
