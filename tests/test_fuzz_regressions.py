"""Inputs that crashed a decoder under scripts/fuzz.py (issue 15), kept byte for byte: each
must now be refused with the decoder's own error, never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from telephony.chan_websocket.codec import MediaStart, parse_event
from telephony.chan_websocket.server import WebSocketTransport
from voicebot.console.api import _console_command
from voicebot.console.board import LiveBoard
from voicebot.console.context import BadMessage, WebLimits
from voicebot.console.softphone import BrowserTransport, parse_start
from voicebot.core.config import load_settings
from voicebot.core.errors import ConfigError, ProtocolError
from voicebot.core.events import CallHub

DEEP = b"[" * 5000  # past Python's recursion limit in json.loads and in PyYAML's composer


class _Outbox:
    def offer(self, item: object) -> bool:
        return True


def _media(fmt: str) -> WebSocketTransport:
    start = MediaStart("c", "WebSocket/bot", "1", fmt)
    return WebSocketTransport(cast(Any, object()), start, "plain-text", "regression")


# --- chan_websocket --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        # RecursionError out of json.loads
        b'{"event":"MEDIA_BUFFERING_COMPLETED","correlation_id":' + DEEP,
        # optimal_frame_size 1: the transport's RateEdge raised ValueError
        b"MEDIA_START connection_id:c2 channel:WebSocket/bot-0002 channel_id;:1700000000.12"
        b" format:slin optimal_frame_size:1 ptime:20",
        b"MEDIA_START connection_id:c channel:W format:slin16 optimal_frame_size:-640",
        b"MEDIA_START connection_id:c channel:W format:slin16 ptime:0",
        # Infinity is JSON to Python: int(inf) raised OverflowError
        b'{"event":"STATUS","queue_length":Infinity}',
        b'{"event":"MEDIA_START","connection_id":"c","channel":"W","format":"slin","ptime":-1e999}',
    ],
)
def test_chan_websocket_control_messages_refused(message: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_event(message.decode("utf-8", "replace"))


def test_media_start_accepted_by_the_codec_frames_audio() -> None:
    start = parse_event("MEDIA_START connection_id:c channel:W format:slin16 ptime:60")
    assert isinstance(start, MediaStart)
    transport = WebSocketTransport(cast(Any, object()), start, "plain-text", "regression")
    assert transport.frame_bytes == 16000 * 60 // 1000 * 2


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("slin16", b"\xf0(\x8c("[1:]),  # 3 bytes at 16 kHz: ValueError in the resampler
        ("slin48", bytes(41)),
        ("slin", b"\x00"),
    ],
)
def test_chan_websocket_odd_sized_audio_refused(fmt: str, message: bytes) -> None:
    transport = _media(fmt)
    with pytest.raises(ProtocolError, match="odd-sized"):
        transport.audio_in(message)
    assert transport.audio_in(bytes(640)) is not None  # the call goes on


# --- console and softphone -------------------------------------------------------------------


@pytest.mark.parametrize("message", [DEEP, b'{"type":"take","call_id":' + DEEP + b'"x"}'])
def test_console_deep_json_refused(message: bytes) -> None:
    board = LiveBoard(CallHub(), WebLimits())
    with pytest.raises(BadMessage, match="JSON attendu"):
        _console_command(board, cast(Any, _Outbox()), message.decode())


def test_softphone_deep_json_refused() -> None:
    message = b'{"type":"dtmf","digit<\xb9":' + DEEP + b'"#"}'
    text = message.decode("utf-8", "replace")
    with pytest.raises(BadMessage, match="JSON"):
        parse_start(text)
    phone = BrowserTransport("regression", 8000, cast(Any, _Outbox()), CallHub(), WebLimits())
    with pytest.raises(BadMessage, match="JSON attendu"):
        phone.receive_text(text)


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"reportl\n  timezone: epeat_\x80\x00ndow_h: 24\n", "not UTF-8"),  # UnicodeDecodeError
        (
            b"console: {}\npolicy: {on: trqnsfer, max_call_son: transfer, "
            b"max_call_ssilion: transfer, max_call_seconds: 0}\n",
            "unknown setting policy",  # keys True and str: sorted() raised TypeError
        ),
        (b"asr: {max_utterance_s: " + DEEP, "nested too deeply"),  # RecursionError
        (b"report:\n  timezone: 2026-02-30\n", "invalid value"),  # ValueError from PyYAML
        (b"vad:\n  start_speech_ms: " + b"9" * 5000 + b"\n", "invalid value"),
        (b"vad:\n  end_silence_ms: .inf\n", "expected a number"),  # OverflowError
        (b"tts:\n  voice: [a, b]\n", "single value"),
    ],
)
def test_settings_files_refused(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "voicebot.yml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=words):
        load_settings(path, environ={})


def test_settings_alias_bomb_refused_without_printing_it(tmp_path: Path) -> None:
    """Found reading the loader while fixing the fuzzer's finds: a path or a yes/no setting
    given as a list was turned into text whole, and YAML aliases make that list exponential
    (here a million items, a fraction of a second to print; nine levels would be 387 million)."""
    names = "abcdef"
    levels = ["&a [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 10) + "]" for i in range(1, 6)]
    path = tmp_path / "voicebot.yml"
    path.write_text("paths:\n  data_dir: [" + ", ".join(levels) + "]\n")
    with pytest.raises(ConfigError, match="single value"):
        load_settings(path, environ={})
