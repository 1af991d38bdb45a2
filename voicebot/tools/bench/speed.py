"""The machine's speed at the moment of a measurement, printed beside its figures.

Machines of the same kind differ several-fold in speed (a Vosk recognizer's first utterance
took 0.6-2.3 s of CPU on "2-core" machines), and a busy machine is a slower one: a latency or
capacity figure means little without the speed it was measured at. The reference is one Vosk
decode of a fixed French recording (/usr/share/asterisk/sounds/fr, 7.3 s) with the bench's
model, cold (a new recognizer's first utterance) and warm (the same recognizer's second),
timed before and after a run; the 1-minute load average is taken with it.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from voicebot.core.audio import read_wav, to_frames
from voicebot.core.config import Settings
from voicebot.speech.asr_vosk import VoskAsr
from voicebot.tools.bench.speech import PROMPT, decode, pick_vosk


def speed_reference(settings: Settings) -> dict[str, Any]:
    """Decode the fixed recording twice on one new stream (blocking: a few seconds)."""
    model, origin = pick_vosk(settings, None)
    frames = to_frames(read_wav(PROMPT))
    audio_s = len(frames) * 0.02
    with ThreadPoolExecutor(max_workers=1) as executor:
        asr = VoskAsr.load(model, settings.asr, executor)
        cold, warm = asyncio.run(decode(asr, "speed-reference", frames, 2))
    return {
        "what": f"Vosk ({origin}) decode of {PROMPT.name} ({audio_s:.1f} s of French)",
        "cold_seconds": round(cold, 3),
        "seconds": round(warm, 3),
        "rtf": round(warm / audio_s, 3),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def describe(reference: dict[str, Any]) -> str:
    """One line for a report."""
    return (
        f"{reference['what']}: cold {reference['cold_seconds']:.2f} s, warm "
        f"{reference['seconds']:.2f} s (RTF {reference['rtf']:.3f}), load "
        f"{reference['load_1min']}"
    )
