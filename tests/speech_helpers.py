"""Test audio: real French prompts, espeak-ng speech, tones, and independent references.

French recognition and VAD timing are judged on real recordings (asterisk-core-sounds-fr-wav,
8 kHz French speech); espeak-ng makes speech for engines whose stand-in is not French (the
Korean Vosk model). Every external program runs with an argument list, never a shell.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from voicebot.core.audio import SAMPLE_RATE, read_wav, resample

FRENCH_SOUNDS = Path("/usr/share/asterisk/sounds/fr")


def french_prompt(name: str) -> Path:
    """A real French prompt, e.g. "agent-pass" (8 kHz mono WAV)."""
    path = FRENCH_SOUNDS / f"{name}.wav"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: install asterisk-core-sounds-fr-wav (make setup)")
    return path


def french_prompt_pcm(name: str, rate: int = SAMPLE_RATE) -> bytes:
    return read_wav(french_prompt(name), rate)


def espeak_pcm(
    text: str, voice: str, rate: int = SAMPLE_RATE, words_per_minute: int = 150
) -> bytes:
    """Speech synthesised by espeak-ng, as 16-bit mono PCM at ``rate``."""
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), "--", text],
            check=True,
            capture_output=True,
        )
        return read_wav(wav, rate)


def tone(
    frequency: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 0.5
) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * t) * amplitude * 32767).astype("<i2").tobytes()


def silence(seconds: float, rate: int = SAMPLE_RATE) -> bytes:
    return bytes(int(seconds * rate) * 2)


def line_noise(
    seconds: float, rate: int = SAMPLE_RATE, dbfs: float = -60.0, seed: int = 7
) -> bytes:
    """Low white noise, like an idle phone line (digital zero is not realistic)."""
    rng = np.random.default_rng(seed)
    amplitude = 32767 * 10 ** (dbfs / 20)
    return (rng.standard_normal(int(seconds * rate)) * amplitude).astype("<i2").tobytes()


def mix(*tracks: bytes) -> bytes:
    """Sum 16-bit tracks (the shorter ones padded with silence)."""
    arrays = [np.frombuffer(t, dtype="<i2").astype(np.int32) for t in tracks]
    length = max(len(a) for a in arrays)
    total = np.zeros(length, dtype=np.int32)
    for a in arrays:
        total[: len(a)] += a
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()


def gain(pcm: bytes, db: float) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * 10 ** (db / 20)
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def spectrum_peak(pcm: bytes, rate: int) -> float:
    """The frequency (Hz) holding the most energy."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    window = np.hanning(len(samples))
    magnitude = np.abs(np.fft.rfft(samples * window))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(magnitude))])


def band_energy_db(pcm: bytes, rate: int, low: float, high: float) -> float:
    """Energy in [low, high] Hz relative to the whole signal, in dB."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    power = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = power[(freqs >= low) & (freqs <= high)].sum()
    return float(10 * np.log10(max(band, 1e-30) / max(power.sum(), 1e-30)))


def sox_speech_bounds(
    pcm: bytes, rate: int = SAMPLE_RATE, level: str = "-35d"
) -> tuple[float, float]:
    """Onset and offset of the sound (seconds), by sox's own silence detection.

    sox trims leading silence (``silence 1 0.02 LEVEL``) then, on the reversed audio, the
    trailing silence; the trimmed lengths give the onset and the offset. An independent
    reference for the VAD's timing.
    """
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.wav"
        head = Path(folder) / "head.wav"
        tail = Path(folder) / "tail.wav"
        _write(source, pcm, rate)
        subprocess.run(["sox", str(source), str(head), "silence", "1", "0.02", level], check=True)
        subprocess.run(
            ["sox", str(source), str(tail), "reverse", "silence", "1", "0.02", level, "reverse"],
            check=True,
        )
        total = len(pcm) / (2 * rate)
        onset = total - _duration(head)
        offset = _duration(tail)
        return onset, offset


def _write(path: Path, pcm: bytes, rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def _duration(path: Path) -> float:
    import wave

    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def write_wav_file(path: Path, pcm: bytes, rate: int = SAMPLE_RATE) -> Path:
    _write(path, pcm, rate)
    return path


def correlation(a: bytes, b: bytes) -> float:
    """Normalised correlation of two equal-length 16-bit signals (1.0 = identical shape)."""
    x = np.frombuffer(a, dtype="<i2").astype(np.float64)
    y = np.frombuffer(b, dtype="<i2").astype(np.float64)
    n = min(len(x), len(y))
    x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))


def best_lag_correlation(reference: bytes, other: bytes, max_lag: int) -> tuple[int, float]:
    """Best correlation of ``other`` against ``reference`` over lags 0..max_lag samples."""
    best = (0, -1.0)
    ref = np.frombuffer(reference, dtype="<i2")
    oth = np.frombuffer(other, dtype="<i2")
    for lag in range(max_lag + 1):
        n = min(len(ref), len(oth) - lag)
        if n <= 0:
            break
        value = correlation(ref[:n].tobytes(), oth[lag : lag + n].tobytes())
        if value > best[1]:
            best = (lag, value)
    return best


def to_rate(pcm: bytes, rate: int) -> bytes:
    return resample(pcm, SAMPLE_RATE, rate)
