"""Intonation at a pause: did the caller's voice fall, as at the end of a French statement?

A French sentence that is finished usually ends low: the pitch of its last syllables falls
well below the speaker's middle pitch. A sentence broken off mid-way (a search for a word,
« je voudrais… ») usually stays at mid pitch or rises, the voice "holding the floor". That
clue needs no words, so it works whatever the ASR understood, including with the stand-in
models; voicebot.call.turn_end weighs it after the words.

Measured on the 351 French prompts of asterisk-core-sounds-fr (one professional voice,
8 kHz): the last 30 ms of voiced pitch sits at a median of −7.6 semitones below the pitch
median of the speech before it at the end of a recording, −1.2 at a pause inside a
sentence (``python -m voicebot.tools.turn_eval`` recomputes the end-of-turn figures).

Pitch comes from Praat's autocorrelation tracker (praat-parselmouth): about 5 ms of CPU for
3 s of audio, so the listener runs it in the executor once per pause, not per frame.
"""

from __future__ import annotations

import numpy as np
import parselmouth

from voicebot.core.audio import SAMPLE_RATE

PITCH_FLOOR_HZ = 75.0  # below a deep male voice
PITCH_CEILING_HZ = 400.0  # above a high female voice on the phone band
PITCH_STEP_S = 0.01
END_FRAMES = 3  # the pitch of the last 30 ms of voiced speech
MIN_VOICED_FRAMES = 10  # under 100 ms of voiced pitch the median means little
END_WINDOW_S = 0.35  # the last voiced pitch must lie this close to the pause


def final_pitch_semitones(pcm: bytes, rate: int = SAMPLE_RATE) -> float | None:
    """Where the voice ended, in semitones from the median pitch of ``pcm``.

    ``pcm`` is the caller's speech up to the pause (16-bit mono). Negative means the voice
    fell; None when there is too little voiced speech to tell (a whisper, one short word,
    noise), so that the caller is not judged on nothing.
    """
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    if len(samples) < rate * MIN_VOICED_FRAMES * PITCH_STEP_S:
        return None
    pitch = parselmouth.Sound(samples, sampling_frequency=rate).to_pitch(
        time_step=PITCH_STEP_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ
    )
    frequencies = pitch.selected_array["frequency"]
    times = pitch.xs()
    voiced = frequencies > 0
    if voiced.sum() < MIN_VOICED_FRAMES:
        return None
    duration_s = len(samples) / rate
    if times[voiced][-1] < duration_s - END_WINDOW_S:
        return None  # the voice ended long before the pause: nothing to read at its end
    median_hz = float(np.median(frequencies[voiced]))
    end_hz = float(np.mean(frequencies[voiced][-END_FRAMES:]))
    return float(12.0 * np.log2(end_hz / median_hz))
