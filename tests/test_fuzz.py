"""Property-based fuzzing of every decoder that reads bytes from outside (issue 15): arbitrary
input gives a valid result or the decoder's own error, nothing else. A short run per decoder
(``make test``); scripts/fuzz.py runs a million inputs each."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panoramisk.message import Message

from telephony.ami import AmiError, list_replies, status_caller_line
from telephony.audiosocket import codec as audiosocket
from telephony.chan_websocket import codec as chan_websocket
from voicebot.console.api import _console_command
from voicebot.console.board import LiveBoard
from voicebot.console.context import BadMessage, WebLimits
from voicebot.console.softphone import parse_start
from voicebot.core.config import PROJECT_ROOT, load_settings
from voicebot.core.errors import ConfigError, KnowledgeBaseError, ProtocolError
from voicebot.core.events import CallHub
from voicebot.dialogue.knowledge import KnowledgeBase

# Modest and never timed: a busy machine must not fail these.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW_FUZZ = settings(FUZZ, max_examples=25)
CALL = uuid.UUID("6f1c2a4e-93b1-4d6e-9a57-0c8e1f2d3b4a")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A valid input, then truncated, with bytes replaced, or with bytes inserted."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(data)))
            how = draw(st.sampled_from(["truncate", "replace", "insert"]))
            if how == "truncate":
                del data[at:]
            elif how == "replace" and at < len(data):
                data[at] = draw(st.integers(0, 255))
            else:
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
        return bytes(data)

    return build()


# --- AudioSocket -----------------------------------------------------------------------------


@st.composite
def audiosocket_stream(draw: st.DrawFn) -> bytes:
    parts = [audiosocket.encode_uuid(CALL)]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["audio", "dtmf", "hangup", "error", "raw"]))
        if kind == "audio":
            rate = draw(st.sampled_from(sorted(audiosocket.RATE_AUDIO_KINDS)))
            samples = draw(st.integers(1, audiosocket.max_audio_bytes(rate) // 2))
            parts.append(audiosocket.encode_audio(bytes(2 * samples), rate))
        elif kind == "dtmf":
            parts.append(audiosocket.encode_dtmf(draw(st.sampled_from("0123456789*#ABCD"))))
        elif kind == "hangup":
            parts.append(audiosocket.encode_hangup())
        elif kind == "error":
            parts.append(audiosocket.encode_error(draw(st.none() | st.integers(0, 255))))
        else:  # any kind with any declared length, huge ones included
            length = draw(st.sampled_from([0, 1, 2, 319, 321, 1600, 1601, 0x7FFF, 0xFFFF]))
            body = draw(st.binary(max_size=64))
            parts.append(audiosocket.HEADER.pack(draw(st.integers(0, 255)), length) + body)
    return b"".join(parts)


def _audiosocket(data: bytes, cut: int) -> list[Any] | str:
    decoder = audiosocket.AudioSocketDecoder()
    messages: list[Any] = []
    try:
        for chunk in (data[:cut], data[cut:]):
            messages += decoder.feed(chunk)
            assert decoder.pending_bytes <= 3 + audiosocket.max_audio_bytes(192000)
        decoder.eof()
    except ProtocolError:
        return "refused"
    return messages


@FUZZ
@given(data=st.binary(max_size=2048) | mutated(audiosocket_stream()), cut=st.integers(0, 4096))
def test_audiosocket_decoder(data: bytes, cut: int) -> None:
    whole = _audiosocket(data, len(data))
    assert _audiosocket(data, min(cut, len(data))) == whole  # any split, same messages
    if whole != "refused":
        kinds = (
            audiosocket.Uuid,
            audiosocket.Audio,
            audiosocket.Dtmf,
            audiosocket.Hangup,
            audiosocket.Error,
        )
        assert all(isinstance(message, kinds) for message in whole)


# --- chan_websocket --------------------------------------------------------------------------

EVENT_NAMES = [
    "MEDIA_START",
    "MEDIA_XOFF",
    "MEDIA_XON",
    "QUEUE_DRAINED",
    "MEDIA_BUFFERING_COMPLETED",
    "MEDIA_MARK_PROCESSED",
    "DTMF_END",
    "STATUS",
    "ERROR",
    "SOMETHING_NEW",
]
FIELDS = [
    "connection_id",
    "channel",
    "channel_id",
    "format",
    "optimal_frame_size",
    "ptime",
    "channel_variables",
    "correlation_id",
    "digit",
    "queue_length",
    "xon_level",
    "queue_full",
    "error_text",
]


@st.composite
def json_control(draw: st.DrawFn) -> bytes:
    """A JSON control message with known names and fields of any JSON type."""
    body = {"event": draw(st.sampled_from(EVENT_NAMES) | json_values)}
    body.update(draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)))
    return json.dumps(body).encode()


@st.composite
def plain_control(draw: st.DrawFn) -> bytes:
    words = [draw(st.sampled_from(EVENT_NAMES))]
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6)):
        value = draw(st.sampled_from(["", "-1", "0", "1", "20", "1e999", "slin16", "true", "x"]))
        words.append(f"{name}:{value}")
    return " ".join(words).encode()


@FUZZ
@given(
    data=st.binary(max_size=512)
    | mutated(json_control())
    | mutated(plain_control())
    | st.integers(1, 3000).map(lambda n: b'{"event":' + b"[" * n)
)
def test_chan_websocket_control_messages(data: bytes) -> None:
    try:
        event = chan_websocket.parse_event(data.decode("utf-8", "replace"))
    except ProtocolError:
        return
    if isinstance(event, chan_websocket.MediaStart) and event.sample_rate is not None:
        frame = event.optimal_frame_size or event.sample_rate * event.ptime // 1000 * 2
        assert 0 < frame <= chan_websocket.MAX_FRAME_BYTES and frame % 2 == 0


# --- AMI -------------------------------------------------------------------------------------


@st.composite
def ami_status(draw: st.DrawFn) -> bytes:
    lines = ["Event: Status"]
    for _ in range(draw(st.integers(0, 5))):
        header = draw(st.sampled_from(["Variable", "Channel", "CallerIDNum", "Event", "X"]))
        value = draw(
            st.sampled_from([f"ALLO_UUID={CALL}", f"ALLO_UUID={str(CALL).upper()}", "<unknown>"])
            | st.text(max_size=20)
        )
        lines.append(f"{header}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")


@FUZZ
@given(
    responses=st.lists(
        st.binary(max_size=200)
        | mutated(ami_status())
        | st.just(b"Response: Error\r\nMessage: Permission denied\r\n\r\n"),
        max_size=5,
    )
)
def test_ami_status_replies(responses: list[bytes]) -> None:
    text = b"".join(responses).decode("ascii", "ignore")  # as panoramisk reads the wire
    messages = [m for m in (Message.from_line(c.strip()) for c in text.split("\r\n\r\n")) if m]
    if not messages:
        return
    try:
        replies = list_replies(messages if len(messages) > 1 else messages[0], "Status")
    except AmiError:
        return
    line = status_caller_line(replies, str(CALL))
    if line is not None and line.caller_number is not None:
        assert line.caller_number.lstrip("+").isdigit()


# --- console and softphone -------------------------------------------------------------------


class _Outbox:
    def offer(self, item: object) -> bool:
        return True


client_messages = (
    st.binary(max_size=256).map(lambda b: b.decode("utf-8", "replace"))
    | st.dictionaries(
        st.sampled_from(["type", "call_id", "sample_rate", "text", "digit"]),
        st.sampled_from(["take", "ping", "start", "text", "dtmf"]) | json_values,
        max_size=4,
    ).map(json.dumps)
    | st.integers(1, 5000).map(lambda n: '{"type":' + "[" * n)
)


@FUZZ
@given(text=client_messages)
def test_console_messages(text: str) -> None:
    board = LiveBoard(CallHub(), WebLimits())
    board.queue["appel-1"] = {"call_id": "appel-1"}
    with contextlib.suppress(BadMessage):
        _console_command(board, cast(Any, _Outbox()), text)


@FUZZ
@given(text=client_messages)
def test_softphone_start_message(text: str) -> None:
    try:
        rate = parse_start(text)
    except BadMessage:
        return
    assert 8000 <= rate <= 192000


# --- settings --------------------------------------------------------------------------------

SECTIONS = ["asr", "vad", "tts", "policy", "paths", "report", "transparency", "server", "x"]
KEYS = ["engine", "volume", "end_silence_ms", "timezone", "data_dir", "max_call_seconds", "y"]
yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.dates().map(str),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@st.composite
def settings_yaml(draw: st.DrawFn) -> bytes:
    """Known sections and keys with values of any YAML type, nested ones included."""
    doc = draw(
        st.dictionaries(
            st.sampled_from(SECTIONS) | st.integers() | st.booleans() | st.none(),
            st.dictionaries(st.sampled_from(KEYS), yaml_values, max_size=3) | yaml_values,
            max_size=3,
        )
    )
    return yaml.safe_dump(doc, allow_unicode=True).encode()


@SLOW_FUZZ
@given(
    data=st.binary(max_size=300)
    | mutated(settings_yaml())
    | st.sampled_from([b"a: &a [x, x]\nb: *a\n", b"vad: {end_silence_ms: .inf}\n"]),
    env=st.dictionaries(
        st.sampled_from(["VOICEBOT_VAD_END_SILENCE_MS", "VOICEBOT_ASR_ENGINE", "VOICEBOT_X"]),
        st.text(max_size=10).map(lambda t: t.replace("\x00", "")),
        max_size=2,
    ),
)
def test_settings_loader(tmp_path_factory: pytest.TempPathFactory, data: bytes, env: Any) -> None:
    path = tmp_path_factory.mktemp("settings") / "voicebot.yml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_settings(path, environ=env)


# --- knowledge base --------------------------------------------------------------------------

VALID_ENTRY = {
    "topic": "decheterie",
    "answer": "Les déchèteries ouvrent à 9 heures.",
    "ask_for": "lieu",
    "variants": {"lieu": {"Prairie de Mauves": "Prairie de Mauves : 9 h - 18 h."}},
    "source": "exemple",
    "verified_on": "2026-11-25",
}


@st.composite
def knowledge_yaml(draw: st.DrawFn) -> bytes:
    entry: dict[str, Any] = dict(VALID_ENTRY)
    for key in draw(st.lists(st.sampled_from([*VALID_ENTRY, "other"]), max_size=2)):
        entry[key] = draw(yaml_values)
    return yaml.safe_dump({"entries": [entry]}, allow_unicode=True).encode()


PROMPTS = (PROJECT_ROOT / "nlu" / "prompts.yml").read_bytes()


@SLOW_FUZZ
@given(
    data=st.binary(max_size=300)
    | mutated(knowledge_yaml())
    | st.sampled_from([b"entries: [&a {topic: x}, *a]\n", b"entries: " + b"[" * 3000])
)
def test_knowledge_loader(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    nlu = tmp_path_factory.mktemp("nlu")
    (nlu / "knowledge").mkdir()
    (nlu / "knowledge" / "fuzz.yml").write_bytes(data)
    (nlu / "prompts.yml").write_bytes(PROMPTS)
    with contextlib.suppress(KnowledgeBaseError):
        KnowledgeBase.load(nlu, {"decheterie"}, {"lieu": {"Prairie de Mauves"}}, {})


# --- the fuzz command itself ------------------------------------------------------------------

SCRIPT = PROJECT_ROOT / "scripts" / "fuzz.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("voicebot_fuzz_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_fuzz_command_runs_every_decoder(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--inputs",
            "30",
            "--no-progress",
            "--crash-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in _script().targets():
        assert f"| {name} | 30 |" in result.stdout
    assert not list(tmp_path.iterdir())


def test_fuzz_command_saves_a_crash_and_fails(tmp_path: Path) -> None:
    fuzz = _script()

    def broken(data: bytes) -> None:
        if len(data) > 3:
            raise KeyError("not the decoder's own error")

    target = fuzz.Target("broken", broken, (ProtocolError,), [b"abcdef"], [b"x"])
    result = fuzz.run_target(target, 50, 1, tmp_path, 5.0)
    assert result.crashes > 0
    assert list(result.signatures) == [f"KeyError at {Path(__file__).name}:{_line(broken)}"]
    saved = sorted(tmp_path.glob("broken-*.bin"))
    assert saved and all(len(path.read_bytes()) > 3 for path in saved)
    assert fuzz.replay(target, saved[0]) == 1


def _line(function: Any) -> int:
    return int(function.__code__.co_firstlineno) + 2
