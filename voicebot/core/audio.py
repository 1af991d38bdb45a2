"""Audio frames and the edges where audio changes format.

Inside the bot every piece of audio is 8 kHz, 16-bit signed little-endian, mono, cut in
20 ms frames (320 bytes): the telephone's own format, so the common AudioSocket case needs
no conversion at all. Other rates (a 16 kHz WebSocket channel, a 22.05 kHz Piper voice, a
44.1 kHz WAV file, the VAD's 16 kHz) are converted only at the edges, with soxr.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from voicebot.core.errors import AudioInputError

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH  # 320


@dataclass(frozen=True)
class AudioFormat:
    """The shape of PCM audio: signed 16-bit little-endian, interleaved channels."""

    rate: int = SAMPLE_RATE
    channels: int = 1

    def bytes_for_ms(self, ms: int) -> int:
        return self.rate * ms // 1000 * SAMPLE_WIDTH * self.channels

    def duration_s(self, n_bytes: int) -> float:
        return n_bytes / (self.rate * SAMPLE_WIDTH * self.channels)


TELEPHONE = AudioFormat()


@dataclass(frozen=True)
class AudioFrame:
    """A chunk of PCM audio that carries its own format."""

    pcm: bytes
    format: AudioFormat = TELEPHONE

    @property
    def duration_s(self) -> float:
        return self.format.duration_s(len(self.pcm))

    def samples(self) -> np.ndarray:
        return np.frombuffer(self.pcm, dtype="<i2")

    @classmethod
    def silence(cls, fmt: AudioFormat = TELEPHONE, ms: int = FRAME_MS) -> AudioFrame:
        return cls(bytes(fmt.bytes_for_ms(ms)), fmt)


SILENCE_FRAME = AudioFrame.silence()


class Resampler:
    """A streaming soxr resampler for 16-bit mono PCM (keeps filter state across chunks)."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, "int16", quality)
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return np.asarray(out, dtype="<i2").tobytes()

    def flush(self) -> bytes:
        return self.process(b"", last=True)


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole buffer of 16-bit mono PCM in one go."""
    if in_rate == out_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    out = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return np.asarray(out, dtype="<i2").tobytes()


class FrameSplitter:
    """Cuts a byte stream into fixed-size frames, keeping the remainder for the next push."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    def push(self, pcm: bytes) -> Iterator[bytes]:
        self._pending += pcm
        while len(self._pending) >= self.frame_bytes:
            yield bytes(self._pending[: self.frame_bytes])
            del self._pending[: self.frame_bytes]

    def flush(self) -> bytes:
        """The remainder, padded with silence to a whole frame (or b"" if none)."""
        if not self._pending:
            return b""
        rest = bytes(self._pending) + bytes(self.frame_bytes - len(self._pending))
        self._pending.clear()
        return rest


class RateEdge:
    """Where a peer's audio (any rate, its own frame size) meets the bot's 20 ms 8 kHz frames.

    ``to_internal`` resamples what the peer sends to 8 kHz and cuts it in 320-byte frames;
    ``to_peer`` resamples one bot frame to the peer's rate and cuts it in the peer's frame
    size. Both keep their remainders (and soxr's filter state) for the next push, so the
    bytes the peer sends in odd-sized chunks come out as whole frames, nothing lost. A peer
    at 8 kHz with 320-byte frames gets its bytes back untouched.
    """

    def __init__(
        self, peer_rate: int, peer_frame_bytes: int | None = None, *, quality: str
    ) -> None:
        if peer_rate <= 0:
            raise ValueError(f"the peer's sample rate must be positive, not {peer_rate}")
        frame_bytes = (
            peer_rate * FRAME_MS // 1000 * SAMPLE_WIDTH
            if peer_frame_bytes is None
            else peer_frame_bytes
        )
        if frame_bytes <= 0 or frame_bytes % SAMPLE_WIDTH:
            raise ValueError(f"the peer's frame size must be whole samples, not {frame_bytes}")
        self.peer_rate = peer_rate
        self.peer_frame_bytes = frame_bytes
        self.quality = quality
        self._in_resampler = Resampler(peer_rate, SAMPLE_RATE, quality)
        self._in_frames = FrameSplitter(FRAME_BYTES)
        self._out_resampler = Resampler(SAMPLE_RATE, peer_rate, quality)
        self._out_frames = FrameSplitter(frame_bytes)
        self._same_format = peer_rate == SAMPLE_RATE and frame_bytes == FRAME_BYTES
        # Bytes each splitter holds back: the fast path is only safe when nothing is waiting.
        self._in_held = 0
        self._out_held = 0

    @property
    def passes_through(self) -> bool:
        """True when the peer already speaks the bot's format (nothing to convert)."""
        return self._same_format

    def to_internal(self, pcm: bytes) -> list[AudioFrame]:
        """The peer's PCM as whole 8 kHz frames (a partial one waits for the next push)."""
        if self._same_format and len(pcm) == FRAME_BYTES and not self._in_held:
            return [AudioFrame(pcm)]
        resampled = self._in_resampler.process(pcm)
        self._in_held = (self._in_held + len(resampled)) % FRAME_BYTES
        return [AudioFrame(chunk) for chunk in self._in_frames.push(resampled)]

    def to_peer(self, frame: AudioFrame) -> list[bytes]:
        """One bot frame as whole peer frames (a partial one waits for the next frame)."""
        if frame.format != TELEPHONE:
            raise ValueError(f"the bot's frames are 8 kHz mono, not {frame.format}")
        if self._same_format and len(frame.pcm) == FRAME_BYTES and not self._out_held:
            return [frame.pcm]
        resampled = self._out_resampler.process(frame.pcm)
        self._out_held = (self._out_held + len(resampled)) % self.peer_frame_bytes
        return list(self._out_frames.push(resampled))

    def resample_to_peer(self, pcm: bytes) -> bytes:
        """8 kHz PCM at the peer's rate, not cut in frames (for a peer that re-frames it)."""
        return self._out_resampler.process(pcm)

    def reset_output(self) -> None:
        """Drop the bot audio not sent yet (barge-in): the partial frame and soxr's backlog."""
        self._out_frames = FrameSplitter(self.peer_frame_bytes)
        self._out_resampler = Resampler(SAMPLE_RATE, self.peer_rate, self.quality)
        self._out_held = 0


def to_frames(pcm: bytes, frame_bytes: int = FRAME_BYTES) -> list[AudioFrame]:
    """Telephone-format PCM as 20 ms frames, the last one padded with silence."""
    splitter = FrameSplitter(frame_bytes)
    frames = [AudioFrame(chunk) for chunk in splitter.push(pcm)]
    tail = splitter.flush()
    if tail:
        frames.append(AudioFrame(tail))
    return frames


def read_wav(path: Path, rate: int = SAMPLE_RATE) -> bytes:
    """A WAV file as 16-bit mono PCM at ``rate``: channels are mixed down, rates converted.

    Raises AudioInputError with a plain reason for anything that is not a usable WAV.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            in_rate = wav.getframerate()
            n_frames = wav.getnframes()
            raw = wav.readframes(n_frames)
    except FileNotFoundError:
        raise AudioInputError(f"{path}: no such file") from None
    except (wave.Error, EOFError, RuntimeError) as exc:
        # RuntimeError: what Python's chunk reader raises on a header cut short
        raise AudioInputError(f"{path}: not a readable PCM WAV file ({exc})") from None
    except IsADirectoryError:
        raise AudioInputError(f"{path}: is a folder, not a WAV file") from None
    if width not in (1, 2, 3, 4):
        raise AudioInputError(f"{path}: unsupported sample width {width} bytes")
    usable = len(raw) // (width * channels) * width * channels
    if usable == 0:
        raise AudioInputError(f"{path}: the file holds no audio (0 seconds)")
    raw = raw[:usable]  # a truncated file keeps every whole sample it has
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) * 256.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32)
    elif width == 3:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        as_int = (
            triples[:, 0].astype(np.int32)
            | (triples[:, 1].astype(np.int32) << 8)
            | (triples[:, 2].astype(np.int32) << 16)
        )
        as_int = np.where(as_int & 0x800000, as_int - 0x1000000, as_int)
        samples = as_int.astype(np.float32) / 256.0
    else:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 65536.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return resample(pcm, in_rate, rate)


def write_wav(path: Path, pcm: bytes, rate: int = SAMPLE_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(rate)
        wav.writeframes(pcm)
