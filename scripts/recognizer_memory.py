"""What a Vosk recognizer weighs as it hears speech (issue 14: the memory per call).

Loads the model once, builds ``--recognizers`` recognizers and feeds each the same real
French recordings (asterisk-core-sounds-fr, 8 kHz), one prompt after the other, each closed
by a final result as an utterance is. Every 10 s of speech it prints the process's RSS above
the loaded model, per recognizer; at the end, what is left once they are dropped and the
allocator's free pages handed back. Run it with 1 and with several recognizers: the
difference is what one more recognizer costs, whatever the process shares.

    PYTHONPATH=. .venv/bin/python scripts/recognizer_memory.py --recognizers 4 --seconds 60

The Korean stand-in by default (what the benches run); --model for another, such as the
official French model once pulled.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import psutil
import vosk

from voicebot.core.audio import SAMPLE_RATE, read_wav
from voicebot.core.memory import release_freed_memory
from voicebot.speech.asr_vosk import WARM_CHUNK_BYTES
from voicebot.speech.standins import vosk_ko_model_dir
from voicebot.tools.asr_eval import builtin_corpus


def recordings() -> Iterator[bytes]:
    """The French prompts of asterisk-core-sounds-fr that hold speech, in order."""
    for entry in builtin_corpus().entries:
        yield read_wav(entry.wav)


def feed(recognizers: list[vosk.KaldiRecognizer], clip: bytes) -> None:
    """One utterance through each recognizer (in a function of its own, so that no loop
    variable of ``main`` keeps a recognizer alive after they are dropped)."""
    for recognizer in recognizers:
        for start in range(0, len(clip), WARM_CHUNK_BYTES):
            recognizer.AcceptWaveform(clip[start : start + WARM_CHUNK_BYTES])
        recognizer.FinalResult()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recognizers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0, help="speech fed to each")
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model_dir = args.model or vosk_ko_model_dir()
    process = psutil.Process()
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(model_dir))
    loaded = process.memory_info().rss
    recognizers = [vosk.KaldiRecognizer(model, SAMPLE_RATE) for _ in range(args.recognizers)]

    def above_model(each: bool) -> str:
        extra = (process.memory_info().rss - loaded) / 1e6
        return f"{extra / len(recognizers):.1f} MB per recognizer" if each else f"{extra:.1f} MB"

    print(
        f"{model_dir}: {loaded / 1e6:.0f} MB loaded; {args.recognizers} new recognizers: "
        f"{above_model(True)}"
    )
    fed_bytes, next_report_s = 0, 10.0
    for clip in recordings():
        if fed_bytes >= args.seconds * SAMPLE_RATE * 2:
            break
        feed(recognizers, clip)
        fed_bytes += len(clip)
        if fed_bytes / (SAMPLE_RATE * 2) >= next_report_s:
            print(f"{fed_bytes / (SAMPLE_RATE * 2):5.0f} s of speech each: {above_model(True)}")
            next_report_s += 10.0
    recognizers.clear()
    release_freed_memory()
    print(f"dropped, free pages handed back: {above_model(False)} above the loaded model")


if __name__ == "__main__":
    main()
