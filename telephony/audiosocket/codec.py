"""The AudioSocket wire protocol, as a pure codec: bytes in, typed messages out.

Facts from Asterisk's own source (``include/asterisk/res_audiosocket.h``,
``res/res_audiosocket.c``, ``apps/app_audiosocket.c``):

* every message is a 3-byte header, one byte *kind* then a 2-byte **big-endian** payload
  length, followed by the payload;
* ``0x01`` UUID: 16 raw bytes, always Asterisk's first message;
* ``0x10`` audio, signed linear 16-bit little-endian mono 8 kHz (320 bytes = 20 ms);
  ``0x11``-``0x18`` the same at 12, 16, 24, 32, 44.1, 48, 96 and 192 kHz (the channel
  driver with ``c(slin16)`` sends ``0x12``);
* ``0x03`` DTMF, one ASCII byte; ``0x00`` hangup (3 bytes, no payload); ``0xFF`` error,
  with an optional application-specific code;
* the bot may send only audio kinds or ``0x00``; anything else makes Asterisk hang up, and
  Asterisk rejects an audio message with an empty payload.

No sockets here: the server and the test emulator both wrap this codec.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from voicebot.core.errors import ProtocolError

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10  # slin, 8 kHz
KIND_ERROR = 0xFF

AUDIO_KIND_RATES: dict[int, int] = {
    0x10: 8000,
    0x11: 12000,
    0x12: 16000,
    0x13: 24000,
    0x14: 32000,
    0x15: 44100,
    0x16: 48000,
    0x17: 96000,
    0x18: 192000,
}
RATE_AUDIO_KINDS: dict[int, int] = {rate: kind for kind, rate in AUDIO_KIND_RATES.items()}

HEADER = struct.Struct(">BH")
UUID_BYTES = 16
DTMF_DIGITS = frozenset("0123456789*#ABCD")

# The largest audio payload accepted: 100 ms at the message's rate (1,600 bytes at 8 kHz,
# 38,400 at 192 kHz). Asterisk sends 20 ms frames (a few ptime settings reach 60 ms), so
# anything bigger is garbage, and refusing it on the header alone means a bogus 65,535-byte
# length is rejected at once instead of waiting for data that will never make sense.
MAX_AUDIO_MS = 100
MAX_ERROR_PAYLOAD = 64

HANGUP_MESSAGE = HEADER.pack(KIND_HANGUP, 0)


def max_audio_bytes(rate: int) -> int:
    return rate * MAX_AUDIO_MS // 1000 * 2


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uuid:
    uuid: uuid.UUID


@dataclass(frozen=True)
class Audio:
    pcm: bytes
    rate: int = 8000


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Error:
    # Asterisk's own codes: 0x01 the caller hung up, 0x02 frame forwarding, 0x04 memory.
    code: int | None = None


AudioSocketMessage = Uuid | Audio | Dtmf | Hangup | Error


# --- encoding -------------------------------------------------------------------------------


def encode_audio(pcm: bytes, rate: int = 8000) -> bytes:
    """One audio message (kind chosen from the rate)."""
    kind = RATE_AUDIO_KINDS.get(rate)
    if kind is None:
        raise ValueError(f"AudioSocket has no audio kind for {rate} Hz")
    if not pcm:
        raise ValueError("AudioSocket audio messages cannot be empty (Asterisk rejects them)")
    if len(pcm) % 2:
        raise ValueError(f"16-bit audio must have an even byte count, not {len(pcm)}")
    if len(pcm) > max_audio_bytes(rate):
        raise ValueError(f"{len(pcm)} bytes is more than {MAX_AUDIO_MS} ms at {rate} Hz")
    return HEADER.pack(kind, len(pcm)) + pcm


def encode_hangup() -> bytes:
    """The bot's end of the media session: Asterisk's dialplan then continues."""
    return HANGUP_MESSAGE


def encode_uuid(call_uuid: uuid.UUID | str) -> bytes:
    """Asterisk's first message (used by the emulator)."""
    value = call_uuid if isinstance(call_uuid, uuid.UUID) else uuid.UUID(str(call_uuid))
    return HEADER.pack(KIND_UUID, UUID_BYTES) + value.bytes


def encode_dtmf(digit: str) -> bytes:
    """A DTMF key as Asterisk sends it (used by the emulator)."""
    if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
        raise ValueError(f"not a DTMF key: {digit!r}")
    return HEADER.pack(KIND_DTMF, 1) + digit.upper().encode("ascii")


def encode_error(code: int | None = None) -> bytes:
    payload = b"" if code is None else bytes([code])
    return HEADER.pack(KIND_ERROR, len(payload)) + payload


# --- decoding -------------------------------------------------------------------------------


class AudioSocketDecoder:
    """Cuts a byte stream into AudioSocket messages, rejecting anything off-protocol.

    ``feed`` may be given any split of the stream (one byte at a time included). A
    ProtocolError is raised as soon as the bytes prove the peer is not speaking AudioSocket:
    an unknown kind (on its first byte), a length out of bounds for its kind (on the
    header, before any payload arrives), a first message that is not the UUID, a second
    UUID, an odd-sized audio payload or a bad DTMF byte. After an error the decoder stays
    failed.
    """

    def __init__(self, *, require_uuid_first: bool = True) -> None:
        self._buffer = bytearray()
        self._awaiting_uuid = require_uuid_first
        self._seen_uuid = False
        self._failed: ProtocolError | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[AudioSocketMessage]:
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        messages: list[AudioSocketMessage] = []
        try:
            while self._buffer:
                message = self._next_message()
                if message is None:
                    break
                messages.append(message)
        except ProtocolError as exc:
            self._failed = exc
            self._buffer.clear()
            raise
        return messages

    def eof(self) -> None:
        """The peer closed the stream: fine between messages, an error inside one."""
        if self._failed is None and self._buffer:
            raise ProtocolError(
                f"AudioSocket stream ended inside a message ({len(self._buffer)} bytes pending)"
            )

    def _next_message(self) -> AudioSocketMessage | None:
        kind = self._buffer[0]
        self._check_kind(kind)
        if len(self._buffer) < HEADER.size:
            return None
        _, length = HEADER.unpack_from(self._buffer)
        self._check_length(kind, length)
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return self._message(kind, payload)

    def _check_kind(self, kind: int) -> None:
        if self._awaiting_uuid and kind != KIND_UUID:
            raise ProtocolError(
                f"AudioSocket: expected the UUID message (kind 0x01) first, got byte 0x{kind:02x}"
            )
        if kind == KIND_UUID and self._seen_uuid:
            raise ProtocolError("AudioSocket: a second UUID message on the same connection")
        if (
            kind not in (KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR)
            and kind not in AUDIO_KIND_RATES
        ):
            raise ProtocolError(f"AudioSocket: unknown message kind 0x{kind:02x}")

    @staticmethod
    def _check_length(kind: int, length: int) -> None:
        if kind == KIND_UUID:
            valid, wanted = length == UUID_BYTES, f"{UUID_BYTES}"
        elif kind == KIND_DTMF:
            valid, wanted = length == 1, "1"
        elif kind == KIND_HANGUP:
            valid, wanted = length == 0, "0"
        elif kind == KIND_ERROR:
            valid, wanted = length <= MAX_ERROR_PAYLOAD, f"at most {MAX_ERROR_PAYLOAD}"
        else:
            limit = max_audio_bytes(AUDIO_KIND_RATES[kind])
            valid, wanted = 0 < length <= limit, f"1 to {limit}"
        if not valid:
            raise ProtocolError(
                f"AudioSocket: kind 0x{kind:02x} with a {length}-byte payload (expected {wanted})"
            )

    def _message(self, kind: int, payload: bytes) -> AudioSocketMessage:
        if kind == KIND_UUID:
            self._awaiting_uuid = False
            self._seen_uuid = True
            return Uuid(uuid.UUID(bytes=payload))
        if kind == KIND_DTMF:
            digit = chr(payload[0]).upper()
            if digit not in DTMF_DIGITS:
                raise ProtocolError(f"AudioSocket: DTMF byte 0x{payload[0]:02x} is not a key")
            return Dtmf(digit)
        if kind == KIND_HANGUP:
            return Hangup()
        if kind == KIND_ERROR:
            return Error(int.from_bytes(payload, "big") if payload else None)
        if len(payload) % 2:
            raise ProtocolError(
                f"AudioSocket: odd-sized 16-bit audio payload ({len(payload)} bytes)"
            )
        return Audio(payload, AUDIO_KIND_RATES[kind])
