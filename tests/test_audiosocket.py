"""The AudioSocket codec, on byte literals written from Asterisk's res_audiosocket.c."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from telephony.audiosocket.codec import (
    AUDIO_KIND_RATES,
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


# --- what mutation testing showed unpinned (`make mutation`) -------------------------------
# Asterisk's enum ast_audiosocket_msg_kind (include/asterisk/res_audiosocket.h) and the rate
# of each signed-linear format it names (main/codec_builtin.c: slin 8 kHz … slin192).
ASTERISK_AUDIO_KINDS = {
    0x10: 8000,  # AST_AUDIOSOCKET_KIND_AUDIO (slin)
    0x11: 12000,  # _AUDIO_SLIN12
    0x12: 16000,  # _AUDIO_SLIN16
    0x13: 24000,  # _AUDIO_SLIN24
    0x14: 32000,  # _AUDIO_SLIN32
    0x15: 44100,  # _AUDIO_SLIN44
    0x16: 48000,  # _AUDIO_SLIN48
    0x17: 96000,  # _AUDIO_SLIN96
    0x18: 192000,  # _AUDIO_SLIN192
}
ASTERISK_KINDS = {0x00, 0x01, 0x03, 0xFF, *ASTERISK_AUDIO_KINDS}


def test_the_kind_table_is_asterisks() -> None:
    assert AUDIO_KIND_RATES == ASTERISK_AUDIO_KINDS
    for kind in range(256):
        decoder = AudioSocketDecoder(require_uuid_first=False)
        if kind in ASTERISK_KINDS:
            assert decoder.feed(bytes([kind])) == []  # a known kind: wait for its length
            assert decoder.pending_bytes == 1
        else:
            with pytest.raises(ProtocolError, match=f"unknown message kind 0x{kind:02x}$"):
                decoder.feed(bytes([kind]))


@pytest.mark.parametrize(("kind", "rate"), sorted(ASTERISK_AUDIO_KINDS.items()))
def test_the_largest_frame_is_100_ms_at_each_rate(kind: int, rate: int) -> None:
    # Our bound, not Asterisk's (it sends 20 ms): 100 ms of 16-bit samples at the kind's rate.
    limit = rate // 10 * 2
    assert max_audio_bytes(rate) == limit
    frame = bytes([kind]) + limit.to_bytes(2, "big") + bytes(limit)
    assert started().feed(frame) == [Audio(bytes(limit), rate)]
    assert encode_audio(bytes(limit), rate) == frame
    too_long = bytes([kind]) + (limit + 2).to_bytes(2, "big")
    with pytest.raises(ProtocolError, match=rf"{limit + 2}-byte payload \(expected 1 to {limit}\)"):
        started().feed(too_long)  # refused on the header alone
    with pytest.raises(ValueError, match=f"more than 100 ms at {rate} Hz"):
        encode_audio(bytes(limit + 2), rate)


def test_a_legal_1600_byte_frame_and_the_smallest() -> None:
    decoder = started()
    assert decoder.feed(b"\x10\x06\x40" + b"\x01\x02" * 800) == [Audio(b"\x01\x02" * 800, 8000)]
    assert decoder.feed(b"\x10\x00\x02\xff\x7f") == [Audio(b"\xff\x7f", 8000)]
    assert encode_audio(b"\xff\x7f") == b"\x10\x00\x02\xff\x7f"


def test_a_one_byte_audio_length_waits_for_its_payload() -> None:
    # Asterisk refuses only a length under 1 (res_audiosocket.c: `*length < 1`): a one-byte
    # audio header is not refused on its own; the odd payload is, once it arrives.
    decoder = started()
    assert decoder.feed(b"\x10\x00\x01") == []
    with pytest.raises(ProtocolError, match=r"odd-sized 16-bit audio payload \(1 bytes\)"):
        decoder.feed(b"\x00")


def test_error_payloads() -> None:
    # Asterisk's protocol: an error message, with an optional one-byte application code.
    decoder = started()
    assert decoder.feed(b"\xff\x00\x00" + b"\xff\x00\x01\x01" + b"\xff\x00\x01\x04") == [
        Error(None),
        Error(1),
        Error(4),
    ]
    # Longer codes are read big-endian like the length; 64 bytes is our bound for them.
    assert started().feed(b"\xff\x00\x02\x01\x02") == [Error(0x0102)]
    assert started().feed(b"\xff\x00\x40" + bytes(63) + b"\x07") == [Error(7)]
    with pytest.raises(ProtocolError, match=r"65-byte payload \(expected at most 64\)"):
        started().feed(b"\xff\x00\x41")
    assert encode_error(0xFF) == b"\xff\x00\x01\xff"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"\x01\x00\x0f", r"kind 0x01 with a 15-byte payload \(expected 16\)"),
        (b"\x03\x00\x02", r"kind 0x03 with a 2-byte payload \(expected 1\)"),
        (b"\x00\x00\x01", r"kind 0x00 with a 1-byte payload \(expected 0\)"),
        (b"\x12\x00\x00", r"kind 0x12 with a 0-byte payload \(expected 1 to 3200\)"),
    ],
)
def test_length_errors_name_the_kind_and_the_lengths(message: bytes, expected: str) -> None:
    with pytest.raises(ProtocolError, match=expected):
        AudioSocketDecoder(require_uuid_first=False).feed(message)


def test_every_dtmf_key_asterisk_sends() -> None:
    # ast_audiosocket_send_frame writes the digit's ASCII byte (f->subclass.integer).
    keys = "0123456789*#ABCD"
    stream = b"".join(b"\x03\x00\x01" + key.encode() for key in keys)
    assert started().feed(stream) == [Dtmf(key) for key in keys]
    assert [encode_dtmf(key) for key in keys] == [b"\x03\x00\x01" + k.encode() for k in keys]
    for byte in b"E e\x00\xff":
        with pytest.raises(ProtocolError, match=f"DTMF byte 0x{byte:02x} is not a key"):
            started().feed(b"\x03\x00\x01" + bytes([byte]))
    for bad in ["", "12", "E"]:
        with pytest.raises(ValueError, match="not a DTMF key"):
            encode_dtmf(bad)


def test_uuid_rules_without_and_with_require_uuid_first() -> None:
    decoder = AudioSocketDecoder(require_uuid_first=False)
    assert decoder.feed(b"\x00\x00\x00" + UUID_MESSAGE) == [Hangup(), Uuid(CALL)]
    with pytest.raises(ProtocolError, match="second UUID message on the same connection"):
        decoder.feed(UUID_MESSAGE)
    decoder = AudioSocketDecoder()
    with pytest.raises(ProtocolError, match=r"expected the UUID message \(kind 0x01\) first"):
        decoder.feed(b"\x00\x00\x00")
    decoder = started()  # after the UUID, any kind may come
    assert decoder.feed(b"\x00\x00\x00") == [Hangup()]


def test_a_failed_decoder_keeps_its_error_and_drops_its_buffer() -> None:
    decoder = started()
    assert decoder.feed(b"\x03\x00") == []
    assert decoder.pending_bytes == 2
    with pytest.raises(ProtocolError) as first:
        decoder.feed(b"\x01Z")
    assert decoder.pending_bytes == 0
    with pytest.raises(ProtocolError) as again:
        decoder.feed(b"")
    assert again.value is first.value
    decoder.eof()  # already failed: no second error at the end of the stream


def test_eof_reports_the_pending_bytes() -> None:
    decoder = started()
    decoder.feed(b"\x03\x00")
    with pytest.raises(ProtocolError, match=r"inside a message \(2 bytes pending\)"):
        decoder.eof()


def test_messages_are_frozen_values() -> None:
    for message in (Uuid(CALL), Audio(b"\x00\x00"), Dtmf("1"), Error(1)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, dataclasses.fields(message)[0].name, None)
    assert Audio(b"\x00\x00") == Audio(b"\x00\x00", 8000)  # the rate defaults to slin's
    assert Error() == Error(None)
    assert len({Hangup(), Hangup()}) == 1
