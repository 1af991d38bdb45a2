"""chan_websocket control messages, on literals written from Asterisk's chan_websocket.c."""

from __future__ import annotations

import dataclasses
import json

import pytest

from telephony.chan_websocket.codec import (
    JSON_FORMAT,
    PLAIN_TEXT,
    SLIN_FORMAT_RATES,
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


# --- what mutation testing showed unpinned (`make mutation`) -------------------------------
# Every literal below is written from Asterisk's channels/chan_websocket.c (its #defines and
# the format strings of _create_event_*) and main/codec_builtin.c (each codec's rate,
# default_ms and minimum_bytes, from which chan_websocket computes optimal_frame_size as
# default_ms * minimum_bytes / minimum_ms).
ASTERISK_COMMANDS = [
    "ANSWER",  # ANSWER_CHANNEL
    "HANGUP",  # HANGUP_CHANNEL
    "START_MEDIA_BUFFERING",
    "STOP_MEDIA_BUFFERING",
    "MARK_MEDIA",
    "FLUSH_MEDIA",
    "GET_STATUS",  # GET_DRIVER_STATUS
    "REPORT_QUEUE_DRAINED",
    "PAUSE_MEDIA",
    "CONTINUE_MEDIA",
]
# handle_command reads a correlation id for these two only.
ASTERISK_COMMANDS_WITH_ID = ["STOP_MEDIA_BUFFERING", "MARK_MEDIA"]


@pytest.mark.parametrize("name", ASTERISK_COMMANDS)
def test_every_asterisk_command_in_both_formats(name: str) -> None:
    assert encode_command(name) == name
    assert encode_command(name, JSON_FORMAT) == f'{{"command":"{name}"}}'
    assert parse_command(name) == Command(name, None)
    assert parse_command(f'{{"command":"{name}"}}') == Command(name, None)
    if name not in ASTERISK_COMMANDS_WITH_ID:
        with pytest.raises(ValueError, match=f"{name} takes no correlation id"):
            encode_command(name, PLAIN_TEXT, "id1")


@pytest.mark.parametrize("name", ASTERISK_COMMANDS_WITH_ID)
def test_commands_with_a_correlation_id(name: str) -> None:
    longest = "aZ09_.:-" * 8  # 64 characters, every kind allowed
    assert encode_command(name, PLAIN_TEXT, longest) == f"{name} {longest}"
    assert encode_command(name, JSON_FORMAT, "m-1") == (
        f'{{"command":"{name}","correlation_id":"m-1"}}'
    )
    assert parse_command(f"  {name}   m-1  ") == Command(name, "m-1")
    for bad in ["", longest + "x", "a b", "é", "a/b"]:
        with pytest.raises(ValueError, match="correlation id must be 1-64"):
            encode_command(name, JSON_FORMAT, bad)


def test_commands_unknown_or_badly_formatted() -> None:
    with pytest.raises(ValueError, match="not a chan_websocket command: 'SET_VOLUME'"):
        encode_command("SET_VOLUME")
    with pytest.raises(ValueError, match="unknown control message format 'xml'"):
        encode_command("ANSWER", "xml")
    with pytest.raises(ProtocolError, match="empty command"):
        parse_command(" \n")
    with pytest.raises(ProtocolError, match="JSON command without a 'command'"):
        parse_command('{"command": 1}')
    # A correlation id that is not a string is not one.
    assert parse_command('{"command":"MARK_MEDIA","correlation_id":7}') == Command("MARK_MEDIA")
    assert message_format('  \t{"command":"ANSWER"}') == JSON_FORMAT
    assert message_format("ANSWER {") == PLAIN_TEXT


@pytest.mark.parametrize(
    ("fmt", "rate", "frame"),
    [
        ("slin", 8000, 320),
        ("slin12", 12000, 480),
        ("slin16", 16000, 640),
        ("slin24", 24000, 960),
        ("slin32", 32000, 1280),
        ("slin44", 44100, 1764),
        ("slin48", 48000, 1920),
        ("slin96", 96000, 3840),
        ("slin192", 192000, 7680),
    ],
)
def test_media_start_of_every_signed_linear_format(fmt: str, rate: int, frame: int) -> None:
    text = (
        f"MEDIA_START connection_id:c1 channel:WebSocket/voicebot/0x1 channel_id:1.2"
        f" format:{fmt} optimal_frame_size:{frame} ptime:20"
    )
    event = parse_event(text)
    assert event == MediaStart("c1", "WebSocket/voicebot/0x1", "1.2", fmt, frame, 20)
    assert isinstance(event, MediaStart) and event.sample_rate == rate
    assert SLIN_FORMAT_RATES[fmt] == rate


def test_media_start_with_another_ptime() -> None:
    # G.723.1: default_ms 30, minimum_bytes 20 over minimum_ms 30, so 20-byte frames every 30 ms.
    plain = (
        "MEDIA_START connection_id:c2 channel:WebSocket/voicebot/0x2 channel_id:3.4"
        " format:g723 optimal_frame_size:20 ptime:30"
    )
    expected = MediaStart("c2", "WebSocket/voicebot/0x2", "3.4", "g723", 20, 30)
    assert parse_event(plain) == expected
    assert encode_event(expected) == plain
    as_json = (
        '{"event":"MEDIA_START","connection_id":"c2","channel":"WebSocket/voicebot/0x2",'
        '"channel_id":"3.4","format":"g723","optimal_frame_size":20,"ptime":30,'
        '"channel_variables":{}}'
    )
    assert parse_event(as_json) == expected
    assert encode_event(expected, JSON_FORMAT) == as_json
    start = parse_event(as_json)
    assert isinstance(start, MediaStart) and start.sample_rate is None


def test_media_start_fields_are_read_not_defaulted() -> None:
    event = parse_event(
        '{"event":"MEDIA_START","connection_id":"c3","channel":"WebSocket/x/0x3",'
        '"channel_id":"5.6","format":"slin16","optimal_frame_size":960,"ptime":30,'
        '"channel_variables":{"A":1,"B":"two"}}'
    )
    assert event == MediaStart(
        "c3", "WebSocket/x/0x3", "5.6", "slin16", 960, 30, {"A": "1", "B": "two"}
    )
    # The first release sent neither channel_id nor ptime: 20 ms then, as every slin codec.
    old = parse_event(
        '{"event":"MEDIA_START","connection_id":"c","channel":"W","format":"slin",'
        '"optimal_frame_size":320,"channel_variables":null}'
    )
    assert old == MediaStart("c", "W", "", "slin", 320, 20, {})
    # channel_id, when the event lacks one, comes from the encoder's argument.
    no_id = MediaStart("c", "W", "", "slin", 320, 20)
    assert encode_event(no_id, channel_id="7.8").endswith(
        " channel_id:7.8 format:slin optimal_frame_size:320 ptime:20"
    )
    assert '"channel_id":"7.8"' in encode_event(no_id, JSON_FORMAT, channel_id="7.8")


@pytest.mark.parametrize(
    ("fields", "valid"),
    [
        ("format:slin optimal_frame_size:0 ptime:20", True),  # passthrough: no framing
        ("format:slin192 optimal_frame_size:384000 ptime:1000", True),  # our bounds, inclusive
        ("format:g723 optimal_frame_size:21 ptime:30", True),  # odd sizes only for slin
        ("format:slin optimal_frame_size:320 ptime:1", True),
        ("format:slin optimal_frame_size:-2 ptime:20", False),
        ("format:slin192 optimal_frame_size:384002 ptime:20", False),
        ("format:ulaw optimal_frame_size:384001 ptime:20", False),
        ("format:slin optimal_frame_size:321 ptime:20", False),
        ("format:slin optimal_frame_size:320 ptime:0", False),
        ("format:slin optimal_frame_size:320 ptime:1001", False),
        ("format:slin optimal_frame_size:320 ptime:-20", False),
    ],
)
def test_media_start_framing_bounds(fields: str, valid: bool) -> None:
    text = f"MEDIA_START connection_id:c channel:W {fields}"
    if valid:
        assert isinstance(parse_event(text), MediaStart)
    else:
        with pytest.raises(ProtocolError, match="malformed MEDIA_START message"):
            parse_event(text)


def test_status_fields_are_read_not_defaulted() -> None:
    # xon_level and xoff_level are QUEUE_LENGTH_XON_LEVEL (800) and _XOFF_LEVEL (900) in
    # today's Asterisk; the decoder must report what it is sent, not its own defaults.
    plain = (
        "STATUS channel_id:1.2 queue_length:850 xon_level:700 xoff_level:950"
        " queue_full:true bulk_media:false media_paused:true"
    )
    expected = DriverStatus(850, 700, 950, True, False, True)
    assert parse_event(plain) == expected
    assert encode_event(expected, channel_id="1.2") == plain
    as_json = (
        '{"event":"STATUS","channel_id":"1.2","queue_length":850,"xon_level":700,'
        '"xoff_level":950,"queue_full":true,"bulk_media":false,"media_paused":true}'
    )
    assert parse_event(as_json) == expected
    assert encode_event(expected, JSON_FORMAT, channel_id="1.2") == as_json
    assert parse_event("STATUS queue_length:1 bulk_media:true") == DriverStatus(
        1, 800, 900, False, True, False
    )
    assert parse_event('{"event":"STATUS"}') == DriverStatus(0, 800, 900, False, False, False)


@pytest.mark.parametrize("flag", ["queue_full", "bulk_media", "media_paused"])
def test_status_flags_as_asterisk_writes_them(flag: str) -> None:
    # S_COR(flag, "true", "false") in plain text, s:b (a JSON boolean) in JSON.
    for text, value in [("true", True), ("false", False)]:
        assert getattr(parse_event(f"STATUS {flag}:{text}"), flag) is value
        assert getattr(parse_event(f'{{"event":"STATUS","{flag}":{text}}}'), flag) is value
    with pytest.raises(ProtocolError, match=r"malformed STATUS message .*not a boolean: 'maybe'"):
        parse_event(f"STATUS {flag}:maybe")


def test_plain_events_written_as_asterisk_writes_them() -> None:
    assert encode_event(MediaXoff()) == "MEDIA_XOFF"
    assert encode_event(MediaXon()) == "MEDIA_XON"
    assert encode_event(QueueDrained()) == "QUEUE_DRAINED"
    # "%s%s%s", name, S_COR(id, " ", ""), S_OR(id, "")
    assert encode_event(MediaBufferingCompleted("b1")) == "MEDIA_BUFFERING_COMPLETED b1"
    assert encode_event(MediaBufferingCompleted()) == "MEDIA_BUFFERING_COMPLETED"
    assert encode_event(MediaMarkProcessed("m1")) == "MEDIA_MARK_PROCESSED m1"
    assert encode_event(MediaMarkProcessed()) == "MEDIA_MARK_PROCESSED"
    assert encode_event(DriverError("x: y z"), channel_id="1.2") == (
        "ERROR channel_id:1.2 error_text:x: y z"
    )
    # Without a channel_id the emulator writes an empty one (never a made-up value).
    assert encode_event(DtmfEnd("4")) == "DTMF_END digit:4 channel_id:"
    assert encode_event(MediaXon(), JSON_FORMAT) == '{"event":"MEDIA_XON","channel_id":""}'
    with pytest.raises(ValueError, match="unknown control message format 'xml'"):
        encode_event(MediaXon(), "xml")
    for fmt in (PLAIN_TEXT, JSON_FORMAT):
        with pytest.raises(ValueError, match="cannot encode"):
            encode_event(UnknownEvent("NEW"), fmt)


def test_json_events_written_as_asterisk_writes_them() -> None:
    # ast_json_pack then ast_json_dump_string_format(AST_JSON_COMPACT): keys in pack order.
    def encoded(event: object) -> str:
        return encode_event(event, JSON_FORMAT, channel_id="1.2")  # type: ignore[arg-type]

    assert encoded(MediaXoff()) == '{"event":"MEDIA_XOFF","channel_id":"1.2"}'
    assert encoded(MediaXon()) == '{"event":"MEDIA_XON","channel_id":"1.2"}'
    assert encoded(QueueDrained()) == '{"event":"QUEUE_DRAINED","channel_id":"1.2"}'
    assert encoded(MediaBufferingCompleted("b1")) == (
        '{"event":"MEDIA_BUFFERING_COMPLETED","channel_id":"1.2","correlation_id":"b1"}'
    )
    assert encoded(MediaMarkProcessed("")) == (
        '{"event":"MEDIA_MARK_PROCESSED","channel_id":"1.2","correlation_id":""}'
    )
    assert encoded(DtmfEnd("#")) == '{"event":"DTMF_END","channel_id":"1.2","digit":"#"}'
    assert encoded(DriverError("bad")) == (
        '{"event":"ERROR","channel_id":"1.2","error_text":"bad"}'
    )


def test_correlation_ids_and_error_texts_as_asterisk_sends_them() -> None:
    # JSON: correlation_id is "" when the command had none (S_OR(id, "")).
    assert parse_event(
        '{"event":"MEDIA_BUFFERING_COMPLETED","channel_id":"1.2","correlation_id":""}'
    ) == MediaBufferingCompleted("")
    assert parse_event(
        '{"event":"MEDIA_BUFFERING_COMPLETED","channel_id":"1.2","correlation_id":"b9"}'
    ) == MediaBufferingCompleted("b9")
    assert parse_event("MEDIA_MARK_PROCESSED") == MediaMarkProcessed("")
    assert parse_event("MEDIA_BUFFERING_COMPLETED a b") == MediaBufferingCompleted("a")
    # error_text runs to the end of the line, spaces and colons included.
    assert parse_event("ERROR channel_id:1.2 error_text:FLUSH_MEDIA: not allowed: x") == (
        DriverError("FLUSH_MEDIA: not allowed: x")
    )
    assert parse_event("ERROR channel_id:1.2 error_text:") == DriverError("")
    assert parse_event("ERROR something went wrong") == DriverError("something went wrong")
    assert parse_event('{"event":"ERROR","channel_id":"1.2"}') == DriverError("")


def test_dtmf_end_needs_one_digit() -> None:
    assert parse_event("DTMF_END digit:* channel_id:1.2") == DtmfEnd("*")
    for text in [
        "DTMF_END channel_id:1.2",
        "DTMF_END digit: channel_id:1.2",
        '{"event":"DTMF_END"}',
    ]:
        with pytest.raises(ProtocolError, match="malformed DTMF_END message"):
            parse_event(text)


def test_plain_text_that_is_not_a_control_message() -> None:
    for text in ["media_start connection_id:a", "1ABC", "HELLO-WORLD x"]:
        with pytest.raises(ProtocolError, match="not a control message"):
            parse_event(text)
    with pytest.raises(ProtocolError, match="invalid JSON control message"):
        parse_event("{" * 100_000)  # nested too deeply for the json module
    with pytest.raises(ProtocolError, match="JSON message without an 'event'"):
        parse_event('{"event": null}')


def test_unknown_events_keep_their_fields_and_arguments_are_not_fields() -> None:
    assert parse_event("SET_MEDIA_DIRECTION_DONE x y:1 z_w:a:b") == UnknownEvent(
        "SET_MEDIA_DIRECTION_DONE", {"y": "1", "z_w": "a:b"}
    )
    assert parse_event("NEW_EVENT Key:1") == UnknownEvent("NEW_EVENT", {})  # not a key: an argument


def test_messages_are_frozen_values() -> None:
    for message in (
        MediaStart("c", "W"),
        MediaBufferingCompleted("b"),
        MediaMarkProcessed("m"),
        DtmfEnd("1"),
        DriverStatus(),
        DriverError("e"),
        UnknownEvent("X"),
        Command("ANSWER"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, dataclasses.fields(message)[0].name, None)
    assert DriverStatus() == DriverStatus(0, 800, 900, False, False, False)
    assert MediaStart("c", "W") == MediaStart("c", "W", "", "", 0, 20, {})
