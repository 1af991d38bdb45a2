"""The AudioSocket codec, on byte literals written from Asterisk's res_audiosocket.c."""

from __future__ import annotations

import uuid

import pytest

from telephony.audiosocket.codec import (
    Audio,
    AudioSocketDecoder,
    Dtmf,
    Error,
    Hangup,
    Uuid,
    encode_audio,
    encode_dtmf,
    encode_error,
    encode_hangup,
    encode_uuid,
    max_audio_bytes,
)
from voicebot.core.errors import ProtocolError

CALL = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
# What ast_audiosocket_init() writes: kind 0x01, length 0x0010, the 16 raw UUID bytes.
UUID_MESSAGE = b"\x01\x00\x10" + bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")


def started() -> AudioSocketDecoder:
    decoder = AudioSocketDecoder()
    assert decoder.feed(UUID_MESSAGE) == [Uuid(CALL)]
    return decoder


def test_uuid_message_is_decoded_from_raw_bytes() -> None:
    assert AudioSocketDecoder().feed(UUID_MESSAGE) == [Uuid(CALL)]
    assert encode_uuid(CALL) == UUID_MESSAGE
    assert encode_uuid(str(CALL)) == UUID_MESSAGE


def test_every_kind_from_asterisk() -> None:
    decoder = started()
    stream = (
        b"\x10\x00\x04\x01\x00\xff\x7f"  # slin 8 kHz, 2 samples
        + b"\x12\x00\x02\x34\x12"  # slin16
        + b"\x18\x00\x02\x00\x80"  # slin192
        + b"\x03\x00\x01#"  # DTMF '#'
        + b"\xff\x00\x01\x02"  # error, code 0x02
        + b"\xff\x00\x00"  # error without a code
        + b"\x00\x00\x00"  # hangup
    )
    assert decoder.feed(stream) == [
        Audio(b"\x01\x00\xff\x7f", 8000),
        Audio(b"\x34\x12", 16000),
        Audio(b"\x00\x80", 192000),
        Dtmf("#"),
        Error(2),
        Error(None),
        Hangup(),
    ]


@pytest.mark.parametrize(
    ("kind", "rate"),
    [(0x10, 8000), (0x11, 12000), (0x12, 16000), (0x13, 24000), (0x14, 32000),
     (0x15, 44100), (0x16, 48000), (0x17, 96000), (0x18, 192000)],
)  # fmt: skip
def test_audio_kinds_map_to_rates_both_ways(kind: int, rate: int) -> None:
    pcm = bytes(range(8))
    assert encode_audio(pcm, rate) == bytes([kind, 0x00, 0x08]) + pcm
    assert started().feed(encode_audio(pcm, rate)) == [Audio(pcm, rate)]


def test_length_is_big_endian() -> None:
    pcm = bytes(320)
    assert encode_audio(pcm)[:3] == b"\x10\x01\x40"  # 320 = 0x0140
    decoder = started()
    # 0x0140 read as little-endian would be 16,385 bytes: only big-endian yields a frame.
    assert decoder.feed(b"\x10\x01\x40" + pcm) == [Audio(pcm, 8000)]


def test_one_byte_at_a_time() -> None:
    decoder = AudioSocketDecoder()
    stream = UUID_MESSAGE + encode_audio(b"\x05\x00" * 160) + b"\x03\x00\x017" + b"\x00\x00\x00"
    messages = []
    for byte in stream:
        messages += decoder.feed(bytes([byte]))
    assert messages == [Uuid(CALL), Audio(b"\x05\x00" * 160, 8000), Dtmf("7"), Hangup()]
    assert decoder.pending_bytes == 0
    decoder.eof()  # between messages: a clean end


def test_split_header_and_payload_across_reads() -> None:
    decoder = started()
    assert decoder.feed(b"\x10") == []
    assert decoder.feed(b"\x00") == []
    assert decoder.feed(b"\x04\x01\x02") == []
    assert decoder.feed(b"\x03\x04\x03\x00") == [Audio(b"\x01\x02\x03\x04", 8000)]
    assert decoder.feed(b"\x01*") == [Dtmf("*")]


def test_eof_mid_frame_is_an_error() -> None:
    decoder = started()
    decoder.feed(b"\x10\x01\x40" + bytes(100))
    with pytest.raises(ProtocolError, match="inside a message"):
        decoder.eof()


def test_eof_mid_header_is_an_error() -> None:
    decoder = started()
    decoder.feed(b"\x10\x01")
    with pytest.raises(ProtocolError):
        decoder.eof()


def test_unknown_kind_is_refused_on_its_first_byte() -> None:
    decoder = started()
    with pytest.raises(ProtocolError, match="unknown message kind 0x02"):
        decoder.feed(b"\x02")


def test_garbage_before_the_uuid() -> None:
    with pytest.raises(ProtocolError, match=r"UUID message .* first, got byte 0x47"):
        AudioSocketDecoder().feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProtocolError, match="first"):
        AudioSocketDecoder().feed(b"\x10\x00\x02\x00\x00")


def test_oversized_length_is_refused_on_the_header() -> None:
    decoder = started()
    with pytest.raises(ProtocolError, match="65535-byte payload"):
        decoder.feed(b"\x10\xff\xff")  # no payload needed to know it is wrong
    assert max_audio_bytes(8000) == 1600
    decoder = started()
    assert decoder.feed(b"\x10\x06\x40" + bytes(1600)) == [Audio(bytes(1600), 8000)]
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x10\x06\x42")  # 1602 bytes: more than 100 ms at 8 kHz


@pytest.mark.parametrize(
    "header",
    [
        b"\x01\x00\x0f",  # a 15-byte UUID
        b"\x01\x00\x11",  # a 17-byte UUID
    ],
)
def test_bad_uuid_lengths(header: bytes) -> None:
    with pytest.raises(ProtocolError, match="kind 0x01"):
        AudioSocketDecoder().feed(header)


@pytest.mark.parametrize(
    "message",
    [
        b"\x03\x00\x02",  # DTMF with two bytes
        b"\x03\x00\x00",  # DTMF without its byte
        b"\x00\x00\x01",  # hangup with a payload
        b"\x10\x00\x00",  # empty audio (Asterisk refuses it too)
        b"\xff\x01\x00",  # a 256-byte error payload
    ],
)
def test_lengths_that_do_not_fit_the_kind(message: bytes) -> None:
    with pytest.raises(ProtocolError):
        started().feed(message)


def test_odd_audio_and_bad_dtmf_payloads() -> None:
    with pytest.raises(ProtocolError, match="odd-sized"):
        started().feed(b"\x10\x00\x03\x00\x00\x00")
    with pytest.raises(ProtocolError, match="not a key"):
        started().feed(b"\x03\x00\x01Z")
    assert started().feed(b"\x03\x00\x01a") == [Dtmf("A")]


def test_second_uuid_is_refused() -> None:
    with pytest.raises(ProtocolError, match="second UUID"):
        started().feed(UUID_MESSAGE)


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = started()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x42")
    with pytest.raises(ProtocolError):
        decoder.feed(encode_audio(bytes(320)))


def test_emulator_side_decoder_does_not_require_a_uuid() -> None:
    decoder = AudioSocketDecoder(require_uuid_first=False)
    assert decoder.feed(encode_audio(b"\x00\x01") + encode_hangup()) == [
        Audio(b"\x00\x01", 8000),
        Hangup(),
    ]


def test_encoders() -> None:
    assert encode_hangup() == b"\x00\x00\x00"
    assert encode_dtmf("5") == b"\x03\x00\x015"
    assert encode_dtmf("b") == b"\x03\x00\x01B"
    assert encode_error(1) == b"\xff\x00\x01\x01"
    assert encode_error() == b"\xff\x00\x00"
    for bad_pcm, rate in [(b"", 8000), (b"\x00", 8000), (bytes(1602), 8000), (b"\x00\x00", 11025)]:
        with pytest.raises(ValueError):
            encode_audio(bad_pcm, rate)
    with pytest.raises(ValueError):
        encode_dtmf("x")
