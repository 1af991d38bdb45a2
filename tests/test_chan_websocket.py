"""chan_websocket control messages, on literals written from Asterisk's chan_websocket.c."""

from __future__ import annotations

import json

import pytest

from telephony.chan_websocket.codec import (
    JSON_FORMAT,
    PLAIN_TEXT,
    Command,
    DriverError,
    DriverStatus,
    DtmfEnd,
    MediaBufferingCompleted,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    QueueDrained,
    UnknownEvent,
    encode_command,
    encode_event,
    message_format,
    parse_command,
    parse_event,
)
from voicebot.core.errors import ProtocolError

# The format string of _create_event_MEDIA_START (plain text), filled in.
PLAIN_MEDIA_START = (
    "MEDIA_START connection_id:voicebot channel:WebSocket/voicebot/0x7f3a5c001230"
    " channel_id:1712345678.42 format:slin16 optimal_frame_size:640 ptime:20"
)
# The first release (Asterisk 20.15 / 22.5) had neither channel_id nor ptime.
OLD_MEDIA_START = (
    "MEDIA_START connection_id:a1b2 channel:WebSocket/voicebot/0x55d0 format:slin"
    " optimal_frame_size:320"
)
JSON_MEDIA_START = (
    '{"event":"MEDIA_START","connection_id":"voicebot","channel":"WebSocket/voicebot/0x7f3a",'
    '"channel_id":"1712345678.42","format":"slin16","optimal_frame_size":640,"ptime":20,'
    '"channel_variables":{"ALLO_UUID":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","X":"y"}}'
)


def test_plain_media_start() -> None:
    event = parse_event(PLAIN_MEDIA_START)
    assert event == MediaStart(
        connection_id="voicebot",
        channel="WebSocket/voicebot/0x7f3a5c001230",
        channel_id="1712345678.42",
        format="slin16",
        optimal_frame_size=640,
        ptime=20,
    )
    assert isinstance(event, MediaStart) and event.sample_rate == 16000
    assert message_format(PLAIN_MEDIA_START) == PLAIN_TEXT


def test_media_start_of_the_first_release() -> None:
    event = parse_event(OLD_MEDIA_START)
    assert isinstance(event, MediaStart)
    assert (event.format, event.optimal_frame_size, event.ptime, event.channel_id) == (
        "slin",
        320,
        20,
        "",
    )
    assert event.sample_rate == 8000


def test_json_media_start_with_channel_variables() -> None:
    event = parse_event(JSON_MEDIA_START)
    assert isinstance(event, MediaStart)
    assert event.channel == "WebSocket/voicebot/0x7f3a" and event.optimal_frame_size == 640
    assert event.channel_variables["ALLO_UUID"] == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    assert message_format(JSON_MEDIA_START) == JSON_FORMAT


def test_non_slin_formats_have_no_rate() -> None:
    event = parse_event(PLAIN_MEDIA_START.replace("slin16", "ulaw"))
    assert isinstance(event, MediaStart) and event.sample_rate is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MEDIA_XOFF", MediaXoff()),
        ("MEDIA_XON", MediaXon()),
        ("QUEUE_DRAINED", QueueDrained()),
        ("MEDIA_BUFFERING_COMPLETED", MediaBufferingCompleted("")),
        ("MEDIA_BUFFERING_COMPLETED prompt-1", MediaBufferingCompleted("prompt-1")),
        ("MEDIA_MARK_PROCESSED fin-accueil", MediaMarkProcessed("fin-accueil")),
        ("DTMF_END digit:0 channel_id:1712345678.42", DtmfEnd("0")),
        ("DTMF_END digit:#", DtmfEnd("#")),  # before channel_id was added
        (
            "STATUS channel_id:1.2 queue_length:12 xon_level:800 xoff_level:900"
            " queue_full:false bulk_media:true media_paused:false",
            DriverStatus(12, 800, 900, False, True, False),
        ),
        (
            "ERROR channel_id:1.2 error_text:Unable to parse JSON command: x",
            DriverError("Unable to parse JSON command: x"),
        ),
        ("  MEDIA_XON \r\n", MediaXon()),
    ],
)
def test_plain_text_events(text: str, expected: object) -> None:
    assert parse_event(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"event":"MEDIA_XOFF","channel_id":"1.2"}', MediaXoff()),
        ('{"event":"DTMF_END","channel_id":"1.2","digit":"5"}', DtmfEnd("5")),
        (
            '{"event":"MEDIA_MARK_PROCESSED","channel_id":"1.2","correlation_id":"m1"}',
            MediaMarkProcessed("m1"),
        ),
        (
            '{"event":"STATUS","channel_id":"1.2","queue_length":901,"xon_level":800,'
            '"xoff_level":900,"queue_full":true,"bulk_media":false,"media_paused":true}',
            DriverStatus(901, 800, 900, True, False, True),
        ),
        (
            '{"event":"ERROR","channel_id":"1.2","error_text":"FLUSH_MEDIA not allowed"}',
            DriverError("FLUSH_MEDIA not allowed"),
        ),
    ],
)
def test_json_events(text: str, expected: object) -> None:
    assert parse_event(text) == expected


def test_unknown_events_are_kept_not_fatal() -> None:
    assert parse_event("SOMETHING_NEW a:1") == UnknownEvent("SOMETHING_NEW", {"a": "1"})
    assert parse_event('{"event":"NEWER","x":2}') == UnknownEvent("NEWER", {"x": 2})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "{not json",
        "[1, 2]",
        '{"no_event": 1}',
        "MEDIA_START channel:x format:slin",  # no connection_id
        "MEDIA_START connection_id:a channel:b format:slin optimal_frame_size:big",
        "DTMF_END digit:12",
        "STATUS queue_full:maybe",
    ],
)
def test_malformed_events(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_event(text)


def test_commands_in_both_formats() -> None:
    assert encode_command("FLUSH_MEDIA") == "FLUSH_MEDIA"
    assert encode_command("HANGUP", PLAIN_TEXT) == "HANGUP"
    assert encode_command("MARK_MEDIA", PLAIN_TEXT, "fin-accueil") == "MARK_MEDIA fin-accueil"
    assert encode_command("GET_STATUS", JSON_FORMAT) == '{"command":"GET_STATUS"}'
    assert json.loads(encode_command("STOP_MEDIA_BUFFERING", JSON_FORMAT, "p1")) == {
        "command": "STOP_MEDIA_BUFFERING",
        "correlation_id": "p1",
    }


@pytest.mark.parametrize(
    ("name", "correlation_id", "fmt"),
    [
        ("PLAY_SOMETHING", None, PLAIN_TEXT),  # not a command
        ("HANGUP", "x", PLAIN_TEXT),  # takes no id
        ("MARK_MEDIA", "with space", PLAIN_TEXT),  # would split on Asterisk's side
        ("MARK_MEDIA", "x" * 65, PLAIN_TEXT),
        ("ANSWER", None, "xml"),
    ],
)
def test_bad_commands(name: str, correlation_id: str | None, fmt: str) -> None:
    with pytest.raises(ValueError):
        encode_command(name, fmt, correlation_id)


def test_commands_as_asterisk_reads_them() -> None:
    assert parse_command("MARK_MEDIA m-1") == Command("MARK_MEDIA", "m-1")
    assert parse_command("FLUSH_MEDIA") == Command("FLUSH_MEDIA")
    assert parse_command('{"command":"MARK_MEDIA","correlation_id":"m"}') == Command(
        "MARK_MEDIA", "m"
    )
    with pytest.raises(ProtocolError):
        parse_command('{"correlation_id":"m"}')


@pytest.mark.parametrize("fmt", [PLAIN_TEXT, JSON_FORMAT])
@pytest.mark.parametrize(
    "event",
    [
        MediaStart("voicebot", "WebSocket/voicebot/0x1", "9.9", "slin16", 640, 20, {}),
        MediaXoff(),
        MediaXon(),
        QueueDrained(),
        MediaBufferingCompleted("b1"),
        MediaMarkProcessed("m1"),
        DtmfEnd("*"),
        DriverStatus(3, 800, 900, False, False, True),
        DriverError("something: went wrong"),
    ],
)
def test_events_round_trip_through_the_emulator_encoder(fmt: str, event: object) -> None:
    text = encode_event(event, fmt, channel_id="9.9")  # type: ignore[arg-type]
    assert parse_event(text) == event
    assert message_format(text) == fmt


def test_plain_encoding_matches_asterisk_literally() -> None:
    start = parse_event(PLAIN_MEDIA_START)
    assert isinstance(start, MediaStart)
    assert encode_event(start) == PLAIN_MEDIA_START
    assert encode_event(DtmfEnd("4"), channel_id="1.2") == "DTMF_END digit:4 channel_id:1.2"
    assert (
        encode_event(DriverStatus(0, 800, 900, False, False, False), channel_id="1.2")
        == "STATUS channel_id:1.2 queue_length:0 xon_level:800 xoff_level:900"
        " queue_full:false bulk_media:false media_paused:false"
    )
