"""Audio frames and format edges (voicebot.core.audio): resampling correctness and WAV input."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.speech_helpers import band_energy_db, french_prompt, spectrum_peak, tone
from voicebot.core.audio import (
    FRAME_BYTES,
    AudioFormat,
    AudioFrame,
    FrameSplitter,
    RateEdge,
    Resampler,
    read_wav,
    resample,
    to_frames,
    write_wav,
)
from voicebot.core.errors import AudioInputError


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(8000, 16000), (16000, 8000), (22050, 8000), (44100, 8000), (8000, 48000)],
)
def test_a_tone_keeps_its_frequency(in_rate: int, out_rate: int) -> None:
    source = tone(1000.0, 1.0, rate=in_rate)
    converted = resample(source, in_rate, out_rate)
    assert abs(len(converted) / 2 - out_rate) <= 2  # one second stays one second
    assert abs(spectrum_peak(converted, out_rate) - 1000.0) < 3.0


def test_downsampling_removes_what_8khz_cannot_carry() -> None:
    # 6 kHz cannot exist at 8 kHz: a naive decimation folds it to 2 kHz (aliasing).
    rate = 44100
    wanted = tone(1000.0, 1.0, rate=rate, amplitude=0.3)
    too_high = tone(6000.0, 1.0, rate=rate, amplitude=0.3)
    mixed = (
        (np.frombuffer(wanted, "<i2").astype(np.int32) + np.frombuffer(too_high, "<i2"))
        .astype("<i2")
        .tobytes()
    )
    converted = resample(mixed, rate, 8000)
    assert band_energy_db(converted, 8000, 1900, 2100) < -60  # no alias at 2 kHz
    assert band_energy_db(converted, 8000, 950, 1050) > -1  # the 1 kHz tone is all that is left
    # What this guards against: keeping one sample in 5 (8820 Hz) folds 6 kHz to 2820 Hz.
    naive = np.frombuffer(mixed, "<i2")[::5].tobytes()
    assert band_energy_db(naive, rate / 5, 2700, 2950) > -6


def test_streaming_resampler_matches_one_shot() -> None:
    source = tone(440.0, 1.0, rate=8000) + tone(880.0, 1.0, rate=8000)
    stream = Resampler(8000, 16000)
    pieces = [
        stream.process(source[i : i + FRAME_BYTES]) for i in range(0, len(source), FRAME_BYTES)
    ]
    streamed = b"".join(pieces) + stream.flush()
    whole = resample(source, 8000, 16000)
    assert abs(len(streamed) - len(whole)) <= 4
    a = np.frombuffer(streamed, "<i2")[1000:-1000].astype(float)
    b = np.frombuffer(whole, "<i2")[1000 : 1000 + len(a)].astype(float)
    assert np.max(np.abs(a - b)) < 40  # same signal up to rounding (no clicks at chunk edges)


def test_same_rate_is_a_no_op() -> None:
    data = tone(300.0, 0.1)
    assert resample(data, 8000, 8000) is data
    assert Resampler(8000, 8000).process(data) == data


def test_frames_are_20_ms_and_the_last_is_padded() -> None:
    pcm = bytes(range(256)) * 5  # 1280 bytes = 4 frames
    frames = to_frames(pcm + b"\x01\x02")
    assert [len(f.pcm) for f in frames] == [FRAME_BYTES] * 5
    assert frames[-1].pcm == b"\x01\x02" + bytes(FRAME_BYTES - 2)
    assert frames[0].duration_s == pytest.approx(0.02)
    splitter = FrameSplitter()
    assert list(splitter.push(b"\x00" * 100)) == []
    assert len(list(splitter.push(b"\x00" * 600))) == 2
    assert splitter.flush() == bytes(FRAME_BYTES)  # 60 bytes left, padded
    assert splitter.flush() == b""


def test_a_frame_carries_its_format() -> None:
    wide = AudioFormat(rate=16000)
    frame = AudioFrame.silence(wide)
    assert len(frame.pcm) == 640 and frame.duration_s == pytest.approx(0.02)


# --- RateEdge: a peer's rate and frame size on one side, the bot's 20 ms 8 kHz on the other -


def _noise(n_bytes: int, seed: int = 3) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()


def test_an_8khz_peer_passes_through_byte_exact() -> None:
    edge = RateEdge(8000, quality="MQ")
    assert edge.passes_through
    pcm = _noise(FRAME_BYTES * 10)
    frames = [edge.to_internal(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm), FRAME_BYTES)]
    assert all(len(pushed) == 1 for pushed in frames)
    assert b"".join(f.pcm for pushed in frames for f in pushed) == pcm
    back = [edge.to_peer(f) for pushed in frames for f in pushed]
    assert b"".join(chunk for chunks in back for chunk in chunks) == pcm
    assert all(len(chunks) == 1 and len(chunks[0]) == FRAME_BYTES for chunks in back)


def test_odd_chunks_at_8khz_keep_their_order_and_remainder() -> None:
    # A whole frame arriving after a partial one must not jump the queue (no fast path then).
    edge = RateEdge(8000, quality="MQ")
    pcm = _noise(100 + FRAME_BYTES + 220 + FRAME_BYTES + 5, seed=4)
    cuts = [100, 100 + FRAME_BYTES, 100 + FRAME_BYTES + 220, len(pcm) - 5, len(pcm)]
    out: list[bytes] = []
    start = 0
    for end in cuts:
        out += [f.pcm for f in edge.to_internal(pcm[start:end])]
        start = end
    assert [len(chunk) for chunk in out] == [FRAME_BYTES] * 3
    assert b"".join(out) == pcm[: 3 * FRAME_BYTES]  # the last 5 bytes wait for more
    assert [f.pcm for f in edge.to_internal(_noise(FRAME_BYTES - 5, seed=5))] == [
        pcm[3 * FRAME_BYTES :] + _noise(FRAME_BYTES - 5, seed=5)
    ]


def test_peer_frames_of_another_size_keep_the_remainder() -> None:
    # chan_websocket at slin 8 kHz with a 30 ms ptime: 480-byte frames, re-cut byte-exact.
    edge = RateEdge(8000, 480, quality="MQ")
    assert not edge.passes_through
    frames = [AudioFrame(_noise(FRAME_BYTES, seed=i)) for i in range(3)]
    sent = [edge.to_peer(frame) for frame in frames]
    assert [len(chunks) for chunks in sent] == [0, 1, 1]
    assert b"".join(chunk for chunks in sent for chunk in chunks) == b"".join(f.pcm for f in frames)


def test_reset_output_drops_what_was_not_sent() -> None:
    edge = RateEdge(8000, 480, quality="MQ")
    assert edge.to_peer(AudioFrame(_noise(FRAME_BYTES, seed=1))) == []  # 320 of 480 waiting
    edge.reset_output()
    fresh = [AudioFrame(_noise(FRAME_BYTES, seed=i)) for i in (7, 8, 9)]
    sent = [chunk for frame in fresh for chunk in edge.to_peer(frame)]
    assert sent == [fresh[0].pcm + fresh[1].pcm[:160], fresh[1].pcm[160:] + fresh[2].pcm]


@pytest.mark.parametrize("rate", [16000, 48000])
def test_frame_sizes_and_remainders_at_higher_rates(rate: int) -> None:
    edge = RateEdge(rate, quality="MQ")
    assert edge.peer_frame_bytes == rate // 50 * 2
    source = tone(700.0, 1.0, rate=rate)
    frames: list[AudioFrame] = []
    for i in range(0, len(source), 250):  # 250 bytes: never a whole frame on either side
        frames += edge.to_internal(source[i : i + 250])
    assert all(len(f.pcm) == FRAME_BYTES and f.format.rate == 8000 for f in frames)
    # One second is 50 frames; the filter's delay and the last partial frame hold back a few.
    assert 45 <= len(frames) <= 50
    sent = [chunk for frame in frames for chunk in edge.to_peer(frame)]
    assert all(len(chunk) == edge.peer_frame_bytes for chunk in sent)
    assert len(frames) - 5 <= len(sent) <= len(frames)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_a_tone_keeps_its_frequency_across_the_edge(rate: int) -> None:
    edge = RateEdge(rate, quality="MQ")
    source = tone(1000.0, 1.0, rate=rate)
    step = edge.peer_frame_bytes
    frames = [
        f for i in range(0, len(source), step) for f in edge.to_internal(source[i : i + step])
    ]
    inside = b"".join(f.pcm for f in frames)
    assert abs(spectrum_peak(inside, 8000) - 1000.0) < 3.0
    back = b"".join(chunk for frame in frames for chunk in edge.to_peer(frame))
    assert abs(spectrum_peak(back, rate) - 1000.0) < 3.0


def test_an_edge_refuses_bad_sizes_and_foreign_frames() -> None:
    with pytest.raises(ValueError, match="whole samples"):
        RateEdge(16000, 641, quality="MQ")
    with pytest.raises(ValueError, match="positive"):
        RateEdge(0, quality="MQ")
    with pytest.raises(ValueError, match="8 kHz mono"):
        RateEdge(16000, quality="MQ").to_peer(AudioFrame.silence(AudioFormat(rate=16000)))


# --- read_wav: any caller WAV is converted or refused with a plain reason -----------------


def _write(path: Path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path


def test_stereo_44k_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    rate = 44100
    left = np.frombuffer(tone(1000.0, 1.0, rate, 0.4), "<i2")
    right = np.zeros_like(left)
    stereo = np.column_stack([left, right]).reshape(-1).astype("<i2")
    pcm = read_wav(_write(tmp_path / "stereo.wav", stereo, rate, channels=2))
    assert abs(len(pcm) / 2 - 8000) <= 2
    assert abs(spectrum_peak(pcm, 8000) - 1000.0) < 3.0
    peak = np.max(np.abs(np.frombuffer(pcm, "<i2")))
    assert 0.15 * 32767 < peak < 0.25 * 32767  # averaged with the silent channel: half


def test_8_and_24_bit_wavs_are_converted(tmp_path: Path) -> None:
    reference = np.frombuffer(tone(500.0, 0.5, 8000, 0.5), "<i2").astype(np.int32)
    eight = ((reference >> 8) + 128).astype(np.uint8)
    pcm8 = read_wav(_write(tmp_path / "u8.wav", eight, 8000, width=1))
    assert abs(spectrum_peak(pcm8, 8000) - 500.0) < 3.0
    as24 = reference << 8
    packed = np.frombuffer(b"".join(struct.pack("<i", int(v))[:3] for v in as24), np.uint8)
    pcm24 = read_wav(_write(tmp_path / "s24.wav", packed, 8000, width=3))
    assert np.max(np.abs(np.frombuffer(pcm24, "<i2").astype(np.int32) - reference)) <= 1


def test_zero_seconds_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.wav", np.zeros(0, "<i2"), 8000)
    with pytest.raises(AudioInputError, match="0 seconds"):
        read_wav(path)


def test_a_truncated_wav_keeps_what_it_has(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.wav", np.frombuffer(tone(440.0, 1.0), "<i2"), 8000)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(
        data[: 44 + 4001]
    )  # the header still claims one second; half a sample at the end
    pcm = read_wav(cut)
    assert len(pcm) == 4000  # every whole sample, nothing invented
    assert pcm == data[44 : 44 + 4000]


def test_a_wav_cut_inside_its_header_is_refused(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.wav", np.frombuffer(tone(440.0, 0.1), "<i2"), 8000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:30])
    with pytest.raises(AudioInputError, match="not a readable PCM WAV"):
        read_wav(cut)


@pytest.mark.parametrize(
    "content", [b"", b"ID3\x03\x00 this is an mp3", b"hello world, not audio" * 10]
)
def test_not_a_wav_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    with pytest.raises(AudioInputError, match="not a readable PCM WAV"):
        read_wav(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="no such file"):
        read_wav(tmp_path / "absent.wav")


def test_a_real_prompt_roundtrips(tmp_path: Path) -> None:
    pcm = read_wav(french_prompt("agent-pass"))
    out = tmp_path / "copy.wav"
    write_wav(out, pcm)
    assert read_wav(out) == pcm
    assert read_wav(out, rate=16000) == resample(pcm, 8000, 16000)
