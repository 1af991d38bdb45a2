"""Where the caller's voice ended (voicebot.speech.intonation), on real French recordings and
on tones whose pitch is known."""

from __future__ import annotations

import numpy as np
import pytest

from tests.speech_helpers import french_prompt_pcm
from voicebot.core.audio import SAMPLE_RATE
from voicebot.speech.intonation import final_pitch_semitones


def glide(start_hz: float, end_hz: float, seconds: float = 1.5) -> bytes:
    """A voiced tone (with harmonics, as a voice has) gliding from one pitch to another."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    hz = np.geomspace(start_hz, end_hz, len(t))
    phase = 2 * np.pi * np.cumsum(hz) / SAMPLE_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (0.2 * wave / np.max(np.abs(wave)) * 32767).astype("<i2").tobytes()


def test_a_falling_and_a_rising_tone() -> None:
    falling = final_pitch_semitones(glide(220, 110))
    rising = final_pitch_semitones(glide(110, 220))
    assert falling is not None and rising is not None
    # one octave over the glide: the end sits about 6 semitones from the median
    assert falling == pytest.approx(-6, abs=1.0)
    assert rising == pytest.approx(6, abs=1.0)
    assert final_pitch_semitones(glide(150, 150)) == pytest.approx(0, abs=0.5)


def test_finished_french_statements_end_low() -> None:
    for name in ("agent-loginok", "conf-getpin", "vm-goodbye"):
        pitch = final_pitch_semitones(french_prompt_pcm(name))
        assert pitch is not None and pitch < -4, name


def test_too_little_voice_is_unknown_not_a_guess() -> None:
    assert final_pitch_semitones(b"") is None
    assert final_pitch_semitones(bytes(2 * SAMPLE_RATE)) is None  # a second of silence
    noise = np.random.default_rng(0).normal(0, 3000, SAMPLE_RATE).astype("<i2").tobytes()
    assert final_pitch_semitones(noise) is None
    # the voice ended long before the end of the audio: nothing to read at the pause
    late = glide(220, 110) + bytes(2 * SAMPLE_RATE)
    assert final_pitch_semitones(late) is None
